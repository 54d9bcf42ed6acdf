"""Build options, and ``assemble``: the one place a run is wired.

``BuildOptions`` is what a build uses beyond its spec: the labelers, the verifiers, their
backend settings, the LLM that chooses enhancement tools, the executor, and the settings of
this process (workers, device). It is stored with the run as one record (meta ``options``,
JSON), never with the credentials a base URL may hold, so that ``--resume`` labels the rest of
the run the same way.

``assemble`` builds every backend the options name from the ``BACKENDS`` registry (the offline
``folder-name`` and ``seed`` included), assigns them their roles (classifiers, detectors, the
box segmenter, the embedder, the seed learner, the verifiers, the tool policy), runs the
preflight checks and returns an ``Assembly``, from which the pipeline makes its agents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datasetagent.agents.labeling import DataLabelAgent, LabelerSet, no_labeler_message
from datasetagent.agents.verification import Verification
from datasetagent.errors import NoLabelerError, UsageError
from datasetagent.models import (
    BACKENDS,
    Adapting,
    Backend,
    BackendConfig,
    BoxSegmenter,
    ImageClassifier,
    ImageEmbedder,
    LabelVerifier,
    Learner,
    ObjectDetector,
    backend_applies,
    build_backend,
    class_queries,
    default_labelers,
    factory_flag,
    known_labelers,
    load_builtin_backends,
    parse_labeler,
)
from datasetagent.models.llm_call import CallGate
from datasetagent.models.llm_endpoint import redact_url
from datasetagent.runtime.local import Executor, LocalExecutor
from datasetagent.spec import DatasetSpec, describe_validation_error

if TYPE_CHECKING:
    from datasetagent.agents.processing import ToolPolicy
    from datasetagent.records import Sample
    from datasetagent.store import BlobStore, RunStore

#: A backend setting's value.
Setting = str | int | float | bool
#: Backend settings by labeler name, e.g. ``{"llm": {"base_url": "http://..."}}``.
BackendOptions = dict[str, dict[str, Setting]]
#: The run store's meta key of the options record.
OPTIONS_META = "options"


class Reporter(Protocol):
    """Receives progress; the CLI renders it, the library never prints."""

    def stage(self, name: str, round_: int, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def note(self, message: str) -> None: ...


class NullReporter:
    def stage(self, name: str, round_: int, total: int | None = None) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None

    def note(self, message: str) -> None:
        return None


class BuildOptions(BaseModel):
    """How a run is built, beyond its spec. ``None`` means "not given": a new run then takes
    the default (the offline labelers that apply, no verifier), a resumed one what it stored.
    ``workers``, ``device``, ``executor`` and ``ray_address`` belong to the process and are
    never taken from the store: a run may resume under either executor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``NAME[:MODEL]`` each; None or empty: the offline labelers (``folder-name``, ``seed``).
    labelers: tuple[str, ...] | None = None
    #: Independent checkers of every new label, ``NAME[:MODEL]`` each.
    verifiers: tuple[str, ...] | None = None
    backend_options: BackendOptions | None = None
    #: The MLLM that chooses each image's enhancement tools and judges usability.
    tool_llm: str | None = None
    executor: Literal["local", "ray"] = "local"
    #: ``HOST[:PORT]`` each: the non-public addresses web sources may fetch from (``--allow-host``).
    allow_hosts: tuple[str, ...] | None = None
    device: str | None = None
    workers: int | None = Field(default=None, ge=1)
    #: The Ray cluster to join (``--ray-address``; default ``RAY_ADDRESS``, else a local one).
    ray_address: str | None = None

    @model_validator(mode="after")
    def _ray_address(self) -> BuildOptions:
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        return self

    @classmethod
    def parse(cls, **fields: object) -> BuildOptions:
        """The options from keyword values, a bad one refused in one line."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise UsageError(f"build option {describe_validation_error(exc)}") from exc

    @property
    def models_given(self) -> bool:
        return not (
            self.labelers is None and self.verifiers is None and self.backend_options is None
        )

    def record(self) -> str:
        """The JSON stored with the run: every ``base_url`` without its credentials."""
        data = self.model_dump(mode="json")
        for opts in (data["backend_options"] or {}).values():
            if isinstance(opts.get("base_url"), str):
                opts["base_url"] = redact_url(opts["base_url"])
        return json.dumps(data)


def stored_options(store: RunStore) -> BuildOptions | None:
    """The options stored with the run; a run started before they were one record stored
    meta ``labelers`` (labelers, verifiers, options) and ``tool_llm``: those are read."""
    raw = store.get_meta(OPTIONS_META)
    if raw is not None:
        return BuildOptions.model_validate_json(raw)
    old, tool_llm = store.get_meta("labelers"), store.get_meta("tool_llm")
    if old is None and tool_llm is None:
        return None
    saved = json.loads(old) if old is not None else {}
    return BuildOptions.parse(
        labelers=saved.get("labelers"),
        verifiers=saved.get("verifiers"),
        backend_options=saved.get("options"),
        tool_llm=tool_llm,
    )


def run_options(store: RunStore, given: BuildOptions) -> BuildOptions:
    """The options the build uses, stored for a resume: the labelers, verifiers and backend
    settings given now, or, where none of them is given, the stored ones (a base URL that held
    credentials must be given again then); the tool LLM given now, else the stored one."""
    stored = stored_options(store)
    update: dict[str, object] = {}
    if stored is not None and not given.models_given:
        for name, opts in (stored.backend_options or {}).items():
            if "***" in str(opts.get("base_url", "")):
                raise UsageError(
                    f"the {name} base URL of this run held credentials, which are not stored: "
                    f"resume with the same --llm MODEL --llm-base-url URL (or --labeler-option "
                    f"{name}.base_url=URL) again"
                )
        update = {
            "labelers": stored.labelers,
            "verifiers": stored.verifiers,
            "backend_options": stored.backend_options,
        }
    if given.tool_llm is None and stored is not None:
        update["tool_llm"] = stored.tool_llm
    if given.allow_hosts is None and stored is not None:
        update["allow_hosts"] = stored.allow_hosts
    used = given.model_copy(update=update)
    store.set_meta(OPTIONS_META, used.record())
    return used


def check_labelers(names: Sequence[str]) -> None:
    """Refuse unknown labeler names, and a model given to a labeler that takes none."""
    load_builtin_backends()
    for text in names:
        name, model = parse_labeler(text)
        if name not in BACKENDS:
            raise UsageError(f"unknown labeler {name!r}; known: {', '.join(known_labelers())}")
        if model is not None and not factory_flag(name, "takes_model"):
            raise UsageError(f"labeler {name!r} takes no model (got {text!r})")


def check_executor(options: BuildOptions) -> None:
    """Before a run does any work: the executor it names can run here (Ray Data installed,
    the cluster to join answering)."""
    if options.executor == "ray":
        from datasetagent.runtime.ray import preflight

        preflight(options.ray_address)


def open_executor(options: BuildOptions) -> Executor:
    """The executor of the per-image stages: local worker processes, or Ray Data (imported
    here, only for a run that uses it)."""
    if options.executor == "ray":
        from datasetagent.runtime.ray import RayExecutor

        return RayExecutor(options.workers, options.ray_address)
    return LocalExecutor(options.workers)


@dataclass
class Assembly:
    """A run's parts, wired: every backend built once, by role."""

    spec: DatasetSpec
    #: The labelers, in the order named (the ones that do not apply left out).
    labelers: tuple[Backend, ...]
    #: The labelers' model roles for the spec's task.
    roles: LabelerSet
    #: The labeler that learns from the seed examples, fitted by ``fit_learner``.
    learner: Learner | None
    checkers: tuple[LabelVerifier, ...]
    auditors: tuple[LabelVerifier, ...]
    tool_policy: ToolPolicy | None
    #: Every LLM request of the run passes it (the budget per request).
    gate: CallGate
    #: The backends whose usage the run reports, by the text they were named with.
    metered: dict[str, Backend]
    #: How to build each backend again elsewhere (an actor of a model pool), by ``id``: the
    #: ones that load a model and need nothing of this process (not an LLM, whose requests
    #: the run's budget gates here, nor a labeler that learns or uses its peers).
    recipes: dict[int, tuple[str, BackendConfig]] = field(default_factory=dict)

    @property
    def embedder(self) -> ImageEmbedder | None:
        return next((b for b in self.labelers if isinstance(b, ImageEmbedder)), None)

    def check_collected(self, store: RunStore) -> None:
        """After collecting: stop before doing work when collected images that carry no
        class could never be labelled."""
        if self.spec.task != "classification" or self.learner is not None:
            return
        if self.roles.classifiers:
            return
        unhinted = store.pending_hints("collected").get(None, 0)
        if unhinted:
            raise NoLabelerError(no_labeler_message(unhinted))

    def fit_learner(
        self, store: RunStore, blobs: BlobStore, reporter: Reporter
    ) -> ImageClassifier | None:
        """The seed learner fitted on the run's labelled existing samples, or None where there
        is none or the seeds cannot teach it (fine while the other labelers cover the work)."""
        learner = self.learner
        if learner is None or not isinstance(learner, ImageClassifier):
            return None
        images: list[Image.Image] = []
        labels: list[str] = []
        for s in store.samples(status=["labelled"], origin="existing"):
            if s.label is not None and self.spec.resolve_class(s.label) is not None:
                images.append(blobs.open_image(s.blob))
                labels.append(s.label)
        reporter.stage("fitting the seed labeler", 0)
        try:
            info = learner.fit(images, labels)
        except NoLabelerError:
            if store.pending_hints("collected").get(None, 0) and not self.roles.classifiers:
                raise
            return None  # every collected image carries its class folder
        missing = [c for c in self.spec.class_names if c not in info.classes]
        if missing:
            reporter.note(
                f"no seed examples for {', '.join(missing)}: the seed labeler "
                "cannot find those classes"
            )
        reporter.note(
            f"seed labeler: {info.examples} examples, out-of-fold accuracy {info.cv_accuracy:.3f}"
        )
        return learner

    def labeling(
        self,
        store: RunStore,
        blobs: BlobStore,
        learner: ImageClassifier | None,
        executor: Executor | None = None,
    ) -> DataLabelAgent:
        """The Data Label agent; the fitted learner, if any, is the first classifier. With an
        executor that runs model pools (Ray), its models run there when every one of them can
        be built again there (``recipes``) and no box segmenter needs the images here."""
        roles = self.roles
        if learner is not None:
            roles = LabelerSet((learner, *roles.classifiers), roles.detectors, roles.segmenter)
        runner = None
        pools = getattr(executor, "model_runner", None)
        if callable(pools) and roles.models and roles.segmenter is None:
            models: list[tuple[object, str]] = [(m, "classify") for m in roles.classifiers]
            models += [(m, "detect") for m in roles.detectors]
            if all(id(m) in self.recipes for m, _ in models):
                recipes = [(kind, *self.recipes[id(m)]) for m, kind in models]
                runner = pools(recipes, blobs.root, [m for m, _ in models])
        return DataLabelAgent(store, blobs, self.spec, roles, runner=runner)

    def verification(self, store: RunStore, load: Callable[[Sample], Image.Image]) -> Verification:
        return Verification(store, self.spec, load, list(self.checkers), self.auditors)


def assemble(
    spec: DatasetSpec,
    options: BuildOptions,
    *,
    auditors: Sequence[LabelVerifier] = (),
    reporter: Reporter | None = None,
) -> Assembly:
    """Build every backend ``options`` names (weights load here, before any work), give each
    its roles for ``spec``'s task and run the preflight checks that the labelers decide (the
    one that needs the collected images, ``Assembly.check_collected``, runs right after
    collecting)."""
    reporter = reporter or NullReporter()
    gate = CallGate()
    built: dict[str, Backend] = {}
    recipes: dict[int, tuple[str, BackendConfig]] = {}

    def make(text: str, peers: tuple[Backend, ...] = ()) -> Backend:
        if text in built:  # named both as labeler and as verifier: the same object
            return built[text]
        name, model = parse_labeler(text)
        config = BackendConfig(
            classes=class_queries(spec),
            model=model,
            device=options.device,
            options=(options.backend_options or {}).get(name, {}),
            seed=spec.splits.seed,
            peers=peers,
        )
        backend = build_backend(name, config)
        limit = getattr(backend, "limit", None)
        if callable(limit):  # a backend that makes model requests over the network
            limit(gate)
        if not factory_flag(name, "offline"):
            reporter.note(f"{backend.name} ready")
        built[text] = backend
        if not (
            callable(limit)
            or peers
            or factory_flag(name, "offline")
            or isinstance(backend, (Learner, Adapting))
        ):
            recipes[id(backend)] = (name, config)
        return backend

    names = [  # a labeler named twice is one labeler: each image goes to it once
        t
        for t in dict.fromkeys(options.labelers or default_labelers())
        if backend_applies(parse_labeler(t)[0], spec)
    ]
    later = [t for t in names if factory_flag(parse_labeler(t)[0], "uses_peers")]
    first = {t: make(t) for t in names if t not in later}
    peers = tuple(first.values())
    labelers = {**first, **{t: make(t, peers) for t in later}}
    ordered = tuple(labelers[t] for t in names)
    checkers: list[LabelVerifier] = []
    for text in options.verifiers or ():
        b = make(text)
        if not isinstance(b, LabelVerifier):
            raise UsageError(f"{b.name} cannot verify labels; verifiers: llm")
        checkers.append(b)
    learner = next((b for b in ordered if isinstance(b, Learner)), None)
    _preflight(spec, [b for b in ordered if b is not learner])
    roles = _roles(spec, [(t, labelers[t]) for t in names if labelers[t] is not learner])
    return Assembly(
        spec=spec,
        labelers=ordered,
        roles=roles,
        learner=learner,
        checkers=tuple(checkers),
        auditors=tuple(auditors),
        tool_policy=_tool_policy(spec, options),
        gate=gate,
        metered={
            t: b for t, b in built.items() if not factory_flag(parse_labeler(t)[0], "offline")
        },
        recipes=recipes,
    )


def _preflight(spec: DatasetSpec, backends: Sequence[Backend]) -> None:
    """Stop before doing work when the task's labels could never be made."""
    task = spec.task
    if task == "classification":
        return
    if not any(isinstance(b, ObjectDetector) for b in backends):
        raise NoLabelerError(
            f"{task} needs a detector and none is configured: add --labeler owlv2 "
            "or --labeler grounding-dino (weights: datasetagent models pull NAME), "
            "or --llm MODEL for a multimodal LLM that grounds objects"
        )
    if task == "segmentation" and not any(isinstance(b, BoxSegmenter) for b in backends):
        raise NoLabelerError(
            "segmentation needs a box segmenter: add --labeler sam "
            "(weights: datasetagent models pull sam)"
        )


def _roles(spec: DatasetSpec, labelers: Sequence[tuple[str, Backend]]) -> LabelerSet:
    """Each labeler's roles for the task; one that can play none is refused (an offline one,
    such as ``folder-name``, which the Data Label agent applies itself, is passed over)."""
    task = spec.task
    classifiers: list[ImageClassifier] = []
    detectors: list[ObjectDetector] = []
    segmenter: BoxSegmenter | None = None
    for text, b in labelers:
        if task == "classification" and isinstance(b, ImageClassifier):
            classifiers.append(b)
        elif task != "classification" and isinstance(b, ObjectDetector):
            detectors.append(b)
        elif task == "segmentation" and isinstance(b, BoxSegmenter) and segmenter is None:
            segmenter = b
        elif factory_flag(parse_labeler(text)[0], "offline"):
            continue
        elif not (task == "classification" and isinstance(b, ImageEmbedder)):
            raise UsageError(f"labeler {b.name} cannot help label {task}")
    return LabelerSet(tuple(classifiers), tuple(detectors), segmenter)


def _tool_policy(spec: DatasetSpec, options: BuildOptions) -> ToolPolicy | None:
    """The MLLM that chooses enhancement tools and judges usability, when one is named."""
    if options.tool_llm is None:
        return None
    from datasetagent.agents.processing_llm import LLMToolPolicy

    llm: Mapping[str, Setting] | None = (options.backend_options or {}).get("llm")
    return LLMToolPolicy(options.tool_llm, spec, options=llm)
