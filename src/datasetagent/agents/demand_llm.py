"""Demand Analysis with an LLM: request (+ existing dataset) -> DatasetSpec by structured output.

The model is not asked for a whole :class:`DatasetSpec`. It answers a small planning schema,
:class:`DatasetPlan`: what the request says (task, classes with a prompt and synonyms, counts,
formats, licence, split, image constraints), with null for what it does not say. The answer is
turned into the same :class:`RequestReading` the rule parser fills from text and built by
:func:`datasetagent.agents.demand.spec_from_reading`, so an LLM plan gets exactly the rule
path's checks (no classes, a class listed twice, counts that contradict each other, a format
that cannot hold the task, single-class classification), its defaults and its inheritance
from an existing dataset. Then each class takes the model's prompt and synonyms (for labelers
and search queries) and the spec is validated again (a synonym naming two classes).

A plan that fails any check is sent back to the model with the one-line error, up to the
``output_retries`` option (default 2) times; after that :class:`SpecError` says what was
wrong and how to fix the request. Connection, keys, retries and usage are ``LLMClient``'s.

Without an LLM the rule parser plans: :func:`plan` dispatches on ``llm``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datasetagent.agents.demand import Planned, existing_match, plan_reading
from datasetagent.agents.demand_text import (
    LICENCE_MODES,
    MAX_COUNT,
    MAX_SIDE,
    Count,
    Phrase,
    RequestReading,
    show,
)
from datasetagent.errors import BackendError, SpecError
from datasetagent.models import Usage
from datasetagent.models.llm_call import Failed, LLMClient
from datasetagent.spec import (
    ColorMode,
    DatasetProfile,
    DatasetSpec,
    SourceSpec,
    TaskKind,
    same_name,
)

__all__ = [
    "DatasetPlan", "LLMPlanner", "PlannedClass", "describe_existing",
    "planned_from_plan", "planning_prompt", "spec_from_plan",
]  # fmt: skip

FormatName = Literal["imagefolder", "coco", "yolo", "voc", "hf", "csv"]
LicenceMode = Literal["any", "open", "permissive"]
_Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
_Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
_Share = Annotated[float, Field(ge=0, le=1)]


class _Reply(BaseModel):
    # every field required (null where optional): strict JSON schema for hosted and local servers
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlannedClass(_Reply):
    """One class as the model plans it."""

    name: str = Field(
        description="the class name as the request gives it, lower case unless the request "
        "capitalises it; for a class the existing dataset has, its folder name exactly"
    )
    prompt: str = Field(
        description='a short caption a vision model can match, e.g. "a photo of a red fox"'
    )
    synonyms: list[str] = Field(
        description="up to 5 other names of exactly this class, used as search queries and "
        "labeler phrases; never a name or synonym of another class"
    )
    count: _Count | None = Field(
        description="images of this class the request asks for; null when it gives none"
    )


class PlannedSplit(_Reply):
    train: _Share
    val: _Share
    test: _Share


class PlannedSize(_Reply):
    width: _Side
    height: _Side


class DatasetPlan(_Reply):
    """What the request asks for; null where it does not say (defaults or the existing
    dataset fill it in)."""

    task: TaskKind | None = Field(
        description="classification (one label per image), detection (boxes) or segmentation "
        "(masks); null when the request does not say"
    )
    classes: list[PlannedClass] = Field(description="each class the request names, once")
    images_per_class: _Count | None = Field(
        description="images per class when the request gives one count for every class"
    )
    total_images: _Count | None = Field(
        description="images in total when the request gives a total"
    )
    counts_add_to_existing: bool = Field(
        description='true when the counts come on top of the existing dataset ("add 50 per '
        'class", "100 more"); false when they are final ("to 300 per class") or nothing exists'
    )
    formats: list[FormatName] = Field(description="export formats the request names, or []")
    licence: LicenceMode = Field(
        description='"permissive" for commercial use, "open" for openly licensed / creative '
        'commons, else "any"'
    )
    split: PlannedSplit | None = Field(
        description="train/val/test shares adding up to 1, if the request gives a split"
    )
    min_side: _Side | None = Field(description="minimum shorter image side in pixels, if asked")
    size: PlannedSize | None = Field(
        description="the width and height every image is fitted to, if asked"
    )
    color_mode: ColorMode | None = Field(
        description='"L" for greyscale, "RGB" for colour, null if not said'
    )
    enhance: Literal["auto", "off"] | None = Field(
        description='"off" when the request asks to keep pixels as they are (no enhancement), '
        '"auto" when it asks for enhancement, null if not said'
    )


INSTRUCTIONS = """\
You plan image datasets for a tool that collects real images, labels them and exports them.
Read the request, and the summary of the existing dataset when there is one, and answer with
the plan in the requested format. Record what the request says; do not add what it does not:
null (or [] for formats) leaves a field to the tool's defaults or to the existing dataset.

* classes: each class the request names, once, in its order. Do not invent classes. When
  expanding an existing dataset, name its classes by their folder names exactly; list one of
  them only when the request asks something of it (a count) or you describe it, and list the
  new classes the request adds. prompt and synonyms help vision models and image search
  recognise the class; a synonym never names another class.
* Counts: a count given for each class goes in images_per_class; a count for one class in its
  count; a total in total_images. Give both images_per_class and total_images only when the
  request states both.
* When the tool says the plan cannot be used, correct what you misread. If the request itself
  asks for the impossible, keep to what it says."""


def describe_existing(profile: DatasetProfile) -> str:
    """The summary of an existing dataset the model is given when a request expands it."""
    counts = ", ".join(f"{show(name)}: {n}" for name, n in profile.class_counts.items())
    size = (
        f"all {profile.common_size[0]}x{profile.common_size[1]} px"
        if profile.common_size
        else f"sizes vary, shorter side from {profile.min_side} px"
    )
    colour = "greyscale (L)" if profile.color_mode == "L" else "colour (RGB)"
    lines = [
        "Existing dataset to expand (its images are kept; the plan says what it should become):",
        f"- task: {profile.task}",
        "- format: imagefolder (a folder per class, optionally inside split folders)",
        f"- classes (folder name: images): {counts}",
        f"- images: {size}; {colour}",
    ]
    if profile.split_counts:
        splits = ", ".join(f"{name}: {n}" for name, n in profile.split_counts.items())
        lines.append(f"- splits (images): {splits}")
    return "\n".join(lines)


def planning_prompt(request: str, existing: DatasetProfile | None = None) -> str:
    """The user message: the request, then the existing dataset's summary if there is one."""
    context = describe_existing(existing) if existing else "There is no existing dataset."
    return f"Request:\n{request.strip()}\n\n{context}"


def _reading(plan: DatasetPlan, request: str, existing: DatasetProfile | None) -> RequestReading:
    """The plan as the rule parser's reading of the request."""
    add = plan.counts_add_to_existing and existing is not None
    old = existing.class_counts if existing is not None else {}
    reading = RequestReading(request)
    reading.phrases = [
        Phrase(" ".join(c.name.split()), c.count, add, explicit=True)
        for c in plan.classes
        # an existing class the request asks nothing of is inherited, as by the rule parser
        if c.count is not None or existing_match(c.name, old) is None
    ]
    reading.tasks = {plan.task} if plan.task else set()
    reading.formats = list(dict.fromkeys(plan.formats))
    reading.licence = LICENCE_MODES.index(plan.licence)
    reading.enhance = plan.enhance
    if plan.split is not None:
        shares = plan.split.model_dump()
        total = sum(shares.values())
        if abs(total - 1) > 1e-3:
            raise SpecError(f"the split shares add up to {total:g}, not 1 (e.g. 0.8/0.1/0.1)")
        reading.split = {k: v / total for k, v in shares.items()}
    reading.min_side = plan.min_side
    reading.size = (plan.size.width, plan.size.height) if plan.size else None
    reading.color = plan.color_mode
    if plan.images_per_class is not None:
        reading.per_class = Count(plan.images_per_class, add)
    if plan.total_images is not None:
        reading.total = Count(plan.total_images, add)
    for field, value in plan.model_dump(exclude={"classes"}).items():
        if value not in (None, [], "any", False):
            reading.note(f"plan.{field}", f"{field}: {value}")
    return reading


def spec_from_plan(
    plan: DatasetPlan,
    request: str,
    *,
    existing: DatasetProfile | None = None,
    sources: Sequence[SourceSpec] = (),
) -> DatasetSpec:
    """Build and check the spec of a plan; :class:`SpecError` (one line) if it is unusable."""
    return planned_from_plan(plan, request, existing=existing, sources=sources).spec


def planned_from_plan(
    plan: DatasetPlan,
    request: str,
    *,
    existing: DatasetProfile | None = None,
    sources: Sequence[SourceSpec] = (),
) -> Planned:
    """:func:`spec_from_plan` with the plan's fields as the readings (``plan.FIELD``)."""
    result = plan_reading(
        _reading(plan, request, existing), existing=existing, sources=sources, leading_total=False
    )
    spec = result.spec
    described: dict[str, PlannedClass] = {}
    for planned in plan.classes:
        name = spec.resolve_class(" ".join(planned.name.split()))
        if name is not None:
            described.setdefault(name, planned)
    classes: list[dict[str, Any]] = []
    for cls in spec.classes:
        entry = cls.model_dump()
        planned_cls = described.get(cls.name)
        if planned_cls is not None:
            synonyms: list[str] = []
            for raw in (*planned_cls.synonyms, *cls.synonyms):
                text = " ".join(raw.split())
                if text and not any(same_name(text, s) for s in (cls.name, *synonyms)):
                    synonyms.append(text)
            entry["prompt"] = " ".join(planned_cls.prompt.split()) or cls.prompt
            entry["synonyms"] = synonyms
        classes.append(entry)
    final = DatasetSpec.validated({**spec.model_dump(), "classes": classes}, origin="plan")
    return Planned(final, result.readings, result.unused)


class LLMPlanner:
    """Plans specs with one LLM (``llm``: a model string such as ``ollama:qwen2.5:7b`` or
    ``openai:gpt-4o-mini``; ``options`` as for the ``llm`` labeler). Building it checks the
    model string, options and key and makes no request; ``usage`` adds up every plan's calls.
    """

    def __init__(
        self,
        llm: str,
        *,
        options: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.client = LLMClient.from_model(llm, options, environ=environ)

    @property
    def usage(self) -> Usage:
        return self.client.usage

    def plan(
        self,
        request: str,
        *,
        existing: DatasetProfile | None = None,
        sources: Sequence[SourceSpec] = (),
    ) -> DatasetSpec:
        """One planning call (plus the retries of plans that fail the checks)."""
        return self.explain(request, existing=existing, sources=sources).spec

    def explain(
        self,
        request: str,
        *,
        existing: DatasetProfile | None = None,
        sources: Sequence[SourceSpec] = (),
    ) -> Planned:
        """:meth:`plan`, with the plan's fields as the readings."""
        from pydantic_ai import ModelRetry

        agent = self.client.agent(DatasetPlan, instructions=INSTRUCTIONS)

        @agent.output_validator
        def check(planned: DatasetPlan) -> DatasetPlan:
            try:
                spec_from_plan(planned, request, existing=existing, sources=sources)
            except SpecError as exc:
                raise ModelRetry(str(exc)) from exc
            return planned

        out = self.client.call(agent, planning_prompt(request, existing))
        label = self.client.endpoint.label
        if isinstance(out, Failed):
            if not out.invalid:
                raise BackendError(
                    f"llm model {label} gave no plan: {out.reason}; check the server, or plan "
                    "by rule without --llm"
                )
            n = self.client.options.output_retries + 1
            tries = f"{n} tries" if n > 1 else "1 try"
            raise SpecError(
                f"llm model {label} gave no usable plan for {show(request)} in {tries}; "
                f"last problem: {out.detail or out.reason}; say it plainly in the request, or "
                "plan by rule without --llm"
            )
        if not isinstance(out, DatasetPlan):
            raise BackendError(f"llm model {label} answered {type(out).__name__}, not a plan")
        return planned_from_plan(out, request, existing=existing, sources=sources)
