"""Model backends. Agent code reaches models only through the protocols defined here.

A backend is built by a factory registered in ``BACKENDS`` under a labeler name (``clip``,
``owlv2``, ``llm`` ...) from a ``BackendConfig``. Factories import their heavy libraries (torch,
transformers, pydantic-ai) when called, never when this package is imported, so that the core
install works without the ``models`` extra and nothing reaches the network at import.

One backend object may serve several roles: a CLIP model is an ``ImageClassifier`` and an
``ImageEmbedder``; an MLLM is a classifier, a ``LabelVerifier`` and an ``ObjectDetector``. The
Data Label agent asks for a role with ``isinstance(obj, Protocol)`` (the protocols are
runtime-checkable) and never for a concrete class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from datasetagent.registry import Registry

if TYPE_CHECKING:
    from datasetagent.spec import DatasetSpec

#: The label a classifier gives an image that shows none of the spec's classes.
NONE_LABEL = "none"

#: Prompt templates for zero-shot classification; each class phrase fills every template and
#: the text embeddings are averaged (a prompt ensemble).
PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a low resolution photo of a {}.",
)


@dataclass(frozen=True)
class Prediction:
    """One image's class prediction: the top class, its confidence, and every class's share.

    ``label`` is ``NONE_LABEL`` when the backend says the image shows none of the classes.
    """

    label: str
    confidence: float
    probs: dict[str, float]


@dataclass(frozen=True)
class Detection:
    """One object found in an image: class, score in [0, 1], box ``(x0, y0, x1, y1)`` in pixels
    of the image that was passed in, clipped to it."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Verdict:
    """A verifier's answer to "is this image a LABEL?"."""

    agree: bool
    confidence: float
    #: The class the verifier would give instead, when it disagrees and names one.
    suggested: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Usability:
    """Whether an image can serve the spec at all, and why not."""

    usable: bool
    reason: str = ""


@dataclass
class Usage:
    """What a backend consumed in this process: calls, images, tokens, retries."""

    calls: int = 0
    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    failures: int = 0

    def add(self, other: Usage) -> None:
        for name in ("calls", "images", "input_tokens", "output_tokens", "retries", "failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "images": self.images,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "retries": self.retries,
            "failures": self.failures,
        }


@runtime_checkable
class Backend(Protocol):
    """What every backend has: a name for provenance (e.g. ``clip:openai/clip-vit-base-patch32``)
    and its usage so far."""

    name: str
    usage: Usage


@runtime_checkable
class ImageClassifier(Protocol):
    """Predicts classes of whole images with confidences in [0, 1]."""

    name: str

    @property
    def classes(self) -> tuple[str, ...]: ...

    def predict(self, images: list[Image.Image]) -> list[Prediction]: ...


@runtime_checkable
class Adapting(Protocol):
    """A classifier that learns from the unlabelled images it is about to label (self-training,
    transductive refits). The Data Label agent calls ``adapt`` once per round, before any
    ``predict``, with that round's images in batches; it keeps what it needs (features, not
    images), so memory does not grow with the images' size."""

    def adapt(self, batches: Iterable[list[Image.Image]]) -> None: ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """Maps images to L2-normalised vectors, shape (n, dim), float32."""

    name: str

    def embed(self, images: list[Image.Image]) -> np.ndarray: ...


@runtime_checkable
class ObjectDetector(Protocol):
    """Finds objects of the configured classes; one list of detections per image."""

    name: str

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]: ...


@runtime_checkable
class BoxSegmenter(Protocol):
    """Turns boxes into masks: for each image, one boolean (height, width) array per box."""

    name: str

    def segment(
        self,
        images: list[Image.Image],
        boxes: list[list[tuple[float, float, float, float]]],
    ) -> list[list[np.ndarray]]: ...


@runtime_checkable
class LabelVerifier(Protocol):
    """Checks proposed labels independently of the labeler that proposed them."""

    name: str

    def verify(self, images: list[Image.Image], labels: list[str]) -> list[Verdict]: ...


@runtime_checkable
class UsabilityJudge(Protocol):
    """Says whether each image can serve the spec, and why not."""

    name: str

    def judge(self, images: list[Image.Image]) -> list[Usability]: ...


@dataclass
class Prepared:
    """A batch after CPU preprocessing, ready for the model.

    ``sizes`` are the (width, height) of the images passed in, for mapping outputs back;
    ``inputs`` holds the backend's arrays (pixel values, token ids ...).
    """

    sizes: list[tuple[int, int]]
    inputs: dict[str, Any]


@runtime_checkable
class Preparing(Protocol):
    """A backend whose preprocessing can run ahead of the model, on another thread.

    ``prepare`` does CPU work only (resize, normalise, tokenise) and is safe to call from a
    thread other than the one running the model; every role method of such a backend accepts a
    ``Prepared`` batch in place of its list of images.
    """

    def prepare(self, images: list[Image.Image]) -> Prepared: ...


@dataclass(frozen=True)
class ClassQuery:
    """A class as backends see it: its name and the phrases that describe it."""

    name: str
    #: The class prompt first, then the name and its synonyms; never empty, no repeats.
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class BackendConfig:
    """Everything a backend factory gets."""

    classes: tuple[ClassQuery, ...]
    #: Hub id, local folder or (for ``llm``) a model string such as ``ollama:qwen2.5vl:7b``;
    #: None takes the backend's documented default.
    model: str | None = None
    #: ``cuda``, ``mps``, ``cpu`` or None to choose automatically.
    device: str | None = None
    batch_size: int = 32
    #: Backend-specific settings (``base_url``, ``max_side``, ``timeout`` ...).
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    #: The run's random seed (``splits.seed``), for backends that learn.
    seed: int = 0
    #: The run's other labeler backends, built before this one, for a factory marked
    #: ``uses_peers`` (the seed labeler learns on an embedder's vectors when one is there).
    peers: tuple[Backend, ...] = ()

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)


class LearnerFit(Protocol):
    """What a learner reports of its fit."""

    @property
    def examples(self) -> int: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    #: Accuracy of out-of-fold predictions on the seed examples.
    @property
    def cv_accuracy(self) -> float: ...


@runtime_checkable
class Learner(Protocol):
    """A classifier that learns the spec's classes from the run's labelled seed examples
    (``--existing``) before it labels anything; ``fit`` raises ``NoLabelerError`` when they
    cannot teach it."""

    name: str

    def fit(self, images: list[Image.Image], labels: list[str]) -> LearnerFit: ...


BackendFactory = Callable[[BackendConfig], Backend]

#: Backends by labeler name, every labeler included. Built-ins live in ``models.offline``
#: (``folder-name``, ``seed``), ``models.hf`` and ``models.llm``; plugins register through the
#: ``datasetagent.backends`` entry-point group. A factory may carry these attributes (read with
#: ``factory_flag``; absent, the default in brackets):
#:
#: * ``offline`` [False]: needs no weights and makes no model call; the offline labelers are
#:   the run's labelers when none are named, and their usage is not metered;
#: * ``takes_model`` [True]: ``NAME:MODEL`` is accepted;
#: * ``uses_peers`` [False]: built after the run's other labelers, which it gets as
#:   ``BackendConfig.peers``;
#: * ``embeds`` [False]: the backend is an ``ImageEmbedder`` (``evaluate`` fits its linear
#:   probe on the embeddings of the first such labeler of a run);
#: * ``applies(spec) -> bool`` [always]: a labeler that serves some runs only (``seed`` needs
#:   ``--existing`` and classification) is left out, silently, where it does not;
#: * ``default_model`` and the first docstring line: what ``datasetagent models list`` shows.
BACKENDS: Registry[BackendFactory] = Registry("labeler", "datasetagent.backends")

_BUILTINS_LOADED = False


def load_builtin_backends() -> None:
    """Register the built-in backends (cheap: their modules import no heavy library)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib

    for module in (
        "datasetagent.models.offline",
        "datasetagent.models.hf",
        "datasetagent.models.llm",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a module not written yet or removed
            if exc.name != module:
                raise


def class_queries(spec: DatasetSpec) -> tuple[ClassQuery, ...]:
    """The spec's classes with their phrases: prompt, name, synonyms, in that order."""
    out = []
    for c in spec.classes:
        phrases: list[str] = []
        for phrase in (c.prompt, c.name.replace("_", " "), *c.synonyms):
            if phrase and phrase.strip() and phrase.strip() not in phrases:
                phrases.append(phrase.strip())
        out.append(ClassQuery(name=c.name, phrases=tuple(phrases)))
    return tuple(out)


def parse_labeler(text: str) -> tuple[str, str | None]:
    """``NAME[:MODEL]`` → (name, model). The model may itself hold colons
    (``llm:ollama:qwen2.5vl:7b``)."""
    name, sep, model = text.partition(":")
    name = name.strip()
    return name, (model.strip() or None) if sep else None


def factory_flag(name: str, flag: str) -> bool:
    """A registered factory's flag (``offline``, ``takes_model``, ``uses_peers``, ``embeds``; see
    ``BACKENDS``), with its default where the factory does not set it."""
    load_builtin_backends()
    return bool(getattr(BACKENDS.get(name), flag, flag == "takes_model"))


def backend_applies(name: str, spec: DatasetSpec) -> bool:
    """Whether the labeler ``name`` serves a run of ``spec`` at all (see ``BACKENDS``)."""
    load_builtin_backends()
    applies = getattr(BACKENDS.get(name), "applies", None)
    return bool(applies(spec)) if callable(applies) else True


def default_labelers() -> tuple[str, ...]:
    """The labelers of a run that names none: the offline ones, those that apply."""
    load_builtin_backends()
    return tuple(n for n in BACKENDS.names() if factory_flag(n, "offline"))


def known_labelers() -> list[str]:
    """Every registered labeler, the offline defaults first."""
    load_builtin_backends()
    defaults = default_labelers()
    return [*defaults, *(n for n in BACKENDS.names() if n not in defaults)]


def build_backend(name: str, config: BackendConfig) -> Backend:
    """Build the backend registered as ``name``."""
    load_builtin_backends()
    return BACKENDS.get(name)(config)


def softmax_prediction(classes: Sequence[str], scores: np.ndarray) -> Prediction:
    """The prediction for one row of class probabilities (already normalised)."""
    i = int(np.argmax(scores))
    return Prediction(
        label=classes[i],
        confidence=float(scores[i]),
        probs={c: float(p) for c, p in zip(classes, scores, strict=True)},
    )
