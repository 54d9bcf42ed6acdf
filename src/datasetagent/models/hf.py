"""Local vision models through transformers: CLIP/SigLIP, OWLv2, Grounding DINO, SAM.

Labeler names and what they give (``BackendConfig.options`` in brackets, with defaults):

* ``clip``, ``siglip`` -- zero-shot ``ImageClassifier`` and ``ImageEmbedder``: every phrase of
  every class fills every ``PROMPT_TEMPLATES`` template; a class's text embedding is the mean of
  its normalised prompt embeddings, normalised again. CLIP's confidence is the softmax of
  ``logit_scale`` × cosine over the classes (the model's own contrastive calibration); SigLIP's
  is its per-class sigmoid, ``sigmoid(logit_scale × cosine + logit_bias)``, divided by the sum
  over the classes. Neither is calibrated for the spec's classes: they rank well but a 0.9 from
  them is not 90 % right, and nothing here pretends otherwise.
* ``owlv2``, ``grounding-dino`` -- open-vocabulary ``ObjectDetector``: each class phrase is a
  query and a hit on any phrase is a hit on its class; a box keeps its best class, then boxes
  under the score threshold go, class-wise NMS runs and each class keeps its best few
  [``score_threshold`` 0.2 (OWLv2) / 0.3 (Grounding DINO), ``nms_iou`` 0.5,
  ``max_per_class`` 50]. Scores are the models' sigmoids, uncalibrated.
* ``sam`` -- ``BoxSegmenter``: one boolean mask per box at the image's size
  [``mask_threshold`` 0.0 on the mask logits].

Every backend also takes [``half`` true: float16 on a GPU]. The device is CUDA, else Apple MPS,
else the CPU, unless ``BackendConfig.device`` says otherwise; models run under
``torch.inference_mode()`` in batches of ``BackendConfig.batch_size``.

Weights come from a hub id or a local folder (``BackendConfig.model``; None takes
``DEFAULT_MODELS``); a hub id is resolved to its folder in the local Hugging Face cache,
downloaded once if missing, and both load through ``from_pretrained`` on a folder. Offline and
uncached, the error names the fix: ``datasetagent models pull NAME`` (``pull`` here).

Preprocessing runs in numpy/OpenCV (``hf_prep``), not in the processors' per-image PIL code,
and is exposed as ``prepare(images) -> Prepared`` (``Preparing``): every role method accepts a
``Prepared`` batch in place of its images, and ``run_overlapped`` prepares batch k+1 on a
background thread while the model runs batch k.

Importing this module imports neither torch nor transformers; the factories do.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from datasetagent.errors import BackendError
from datasetagent.models import BACKENDS, Backend, BackendConfig

if TYPE_CHECKING:
    from datasetagent.models.hf_base import HFBackend

log = logging.getLogger(__name__)

#: The model each labeler loads when ``BackendConfig.model`` is None.
DEFAULT_MODELS: dict[str, str] = {
    "clip": "openai/clip-vit-base-patch32",
    "siglip": "google/siglip-base-patch16-224",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "grounding-dino": "IDEA-Research/grounding-dino-tiny",
    "sam": "facebook/sam-vit-base",
}

VISION_EXTRA = "pip install 'datasetagent[vision]'"

#: What ``pull`` fetches from a repository: configs, tokenizer files and safetensors weights
#: (not the TensorFlow, Flax, ONNX or duplicate PyTorch copies many repositories also hold).
_ALLOW = ["*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*.tiktoken"]
_PT_WEIGHTS = ["pytorch_model*.bin"]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


# --- running preparation ahead of the model --------------------------------------------------


def run_overlapped(
    batches: Iterable[T],
    prepare: Callable[[T], P],
    infer: Callable[[P], R],
    *,
    ahead: int = 1,
    workers: int = 1,
) -> Iterator[R]:
    """Yield ``infer(prepare(b))`` for each batch in order, preparing the next ``ahead``
    batches on ``workers`` background threads while ``infer`` runs on the caller's thread.

    The point is throughput: decoding and resizing (numpy/OpenCV/Pillow, which release the
    GIL) overlap the model's forward pass instead of alternating with it. ``prepare`` must be
    thread-safe; an exception in either function is raised here, in order. Stopping early
    cancels the preparations not yet started.
    """
    if ahead < 1 or workers < 1:
        raise ValueError("ahead and workers must be at least 1")
    items = iter(batches)
    pending: deque[Future[P]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datasetagent-prepare")

    def submit_next() -> None:
        for item in islice(items, 1):
            pending.append(pool.submit(prepare, item))

    try:
        for _ in range(ahead):
            submit_next()
        while pending:
            prepared = pending.popleft().result()
            submit_next()  # batch k+1 is prepared while batch k is inferred below
            yield infer(prepared)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


# --- weights ---------------------------------------------------------------------------------


def _offline() -> bool:
    """Whether hub downloads are switched off. The environment is read now, not only through
    huggingface_hub's constants, which are fixed when it is first imported."""
    values = [os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", "")]
    if any(v.strip().lower() in {"1", "true", "yes", "on"} for v in values):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _model_id(name_or_model: str) -> str:
    """``clip`` → its default model; ``clip:org/name`` → ``org/name``; anything else as is."""
    text = name_or_model.strip()
    if text in DEFAULT_MODELS:
        return DEFAULT_MODELS[text]
    prefix, sep, rest = text.partition(":")
    if sep and prefix in DEFAULT_MODELS and rest.strip():
        return rest.strip()
    return text


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or os.sep in model.replace("/", "", 1)


def _one_line(exc: BaseException) -> str:
    """The root cause of ``exc`` in one short line (hub errors wrap a terse network error in
    paragraphs of advice)."""
    inner: BaseException | None = exc
    while inner is not None:
        exc, inner = inner, inner.__cause__ or inner.__context__
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


def _require_hub() -> None:
    if importlib.util.find_spec("huggingface_hub") is None:
        raise BackendError(f"downloading models needs the vision extra: {VISION_EXTRA}")


def pull(name_or_model: str) -> Path:
    """Download a model's files into the local Hugging Face cache and return their folder.

    ``name_or_model`` is a labeler name (its default model), ``NAME:HUB_ID`` or a hub id; a
    local folder is returned as it is. Only what ``from_pretrained`` needs is fetched. This is
    what ``datasetagent models pull`` runs; errors are one-line ``BackendError``s.
    """
    model = _model_id(name_or_model)
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if not _REPO_ID.match(model):
        raise BackendError(
            f"{name_or_model!r} is neither a labeler ({', '.join(DEFAULT_MODELS)}), a hub id "
            "like org/name, nor an existing folder"
        )
    _require_hub()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if _offline():
        raise BackendError(
            f"cannot download {model!r}: hub downloads are off (HF_HUB_OFFLINE); unset it "
            "where the hub is reachable and run the pull again"
        )
    try:
        path = Path(snapshot_download(model, allow_patterns=_ALLOW))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(model, allow_patterns=_ALLOW + _PT_WEIGHTS))
    except GatedRepoError as exc:
        raise BackendError(
            f"{model!r} is gated on the Hugging Face hub: accept its terms on the model page, "
            "log in with `hf auth login`, then pull again"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise BackendError(
            f"{model!r} was not found on the Hugging Face hub (or is private): check the id; "
            f"the defaults are {', '.join(sorted(DEFAULT_MODELS.values()))}"
        ) from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise BackendError(
            f"could not download {model!r} from the Hugging Face hub ({_one_line(exc)}); "
            f"check the network (or HF_ENDPOINT), then `datasetagent models pull {model}`"
        ) from exc
    log.info("model %s is in %s", model, path)
    return path


def resolve_model(backend: str, model: str | None) -> tuple[str, Path]:
    """(model id for provenance, local folder to load). A hub id comes from the local cache,
    or is downloaded when it is missing and downloads are allowed."""
    model = (model or DEFAULT_MODELS[backend]).strip()
    folder = Path(model).expanduser()
    if folder.is_dir():
        return model, folder
    if _looks_like_path(model) or not _REPO_ID.match(model):
        raise BackendError(
            f"{backend} model {model!r} is not an existing folder nor a hub id like org/name; "
            f"fix the path, or leave the model unset for {DEFAULT_MODELS[backend]}"
        )
    _require_hub()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return model, Path(snapshot_download(model, local_files_only=True, allow_patterns=_ALLOW))
    except LocalEntryNotFoundError:
        pass
    if _offline():
        raise BackendError(
            f"{backend} model {model!r} is not in the local Hugging Face cache and hub "
            f"downloads are off (HF_HUB_OFFLINE); fix: run `datasetagent models pull {model}` "
            "where the hub is reachable, or give a local folder as the model"
        )
    log.info("downloading %s from the Hugging Face hub (first use)", model)
    try:
        return model, pull(model)
    except BackendError as exc:
        raise BackendError(
            f"{backend} model {model!r} is not in the local Hugging Face cache and downloading "
            f"it failed: {exc}; or give a local folder as the model"
        ) from exc


# --- availability ---------------------------------------------------------------------------


def _libraries_error() -> str | None:
    for module in ("huggingface_hub", "torch", "transformers"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install raises anything; report it, do not crash
            return f"{module} does not import ({_one_line(exc)})"
    return None


def _is_cached(model: str) -> bool:
    folder = Path(model).expanduser()
    if folder.is_dir():
        return (folder / "config.json").is_file()
    if not _REPO_ID.match(model) or importlib.util.find_spec("huggingface_hub") is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    def have(name: str) -> bool:
        return isinstance(try_to_load_from_cache(model, name), str)

    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return have("config.json") and any(have(w) for w in weights)


def check(models: Mapping[str, str] | None = None) -> list[dict[str, str | bool]]:
    """For each vision labeler, without touching the network: do its libraries import, and are
    its weights (the default, or ``models[name]``) in the local Hugging Face cache?

    One row per labeler, shaped like ``models.llm.check``'s so the CLI prints both alike:
    ``backend``, ``model``, ``libraries``, ``cached``, ``ready`` and ``detail`` ("ready", or
    what is missing and the command that fixes it).
    """
    problem = _libraries_error()
    rows: list[dict[str, str | bool]] = []
    for backend, default in DEFAULT_MODELS.items():
        model = (models or {}).get(backend, default)
        cached = _is_cached(model)
        if problem is not None:
            detail = f"{problem}: {VISION_EXTRA}"
        elif not cached:
            detail = f"weights not downloaded: datasetagent models pull {model}"
        else:
            detail = "ready"
        rows.append(
            {
                "backend": backend,
                "model": model,
                "libraries": problem is None,
                "cached": cached,
                "ready": problem is None and cached,
                "detail": detail,
            }
        )
    return rows


# --- factories --------------------------------------------------------------------------------


def _require_vision(backend: str) -> None:
    """Fail fast, before any download, when the vision extra is missing."""
    for module in ("torch", "transformers", "huggingface_hub"):
        try:
            missing = importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a bad parent
            missing = True
        if missing:
            raise BackendError(
                f"the {backend} labeler needs the vision extra ({module} is not installed): "
                f"{VISION_EXTRA}"
            )


def _build(backend: str, module: str, cls: str, config: BackendConfig) -> HFBackend:
    _require_vision(backend)
    model_id, folder = resolve_model(backend, config.model)
    try:
        mod = importlib.import_module(f"datasetagent.models.{module}")
    except ImportError as exc:
        raise BackendError(
            f"the {backend} labeler cannot import its libraries ({_one_line(exc)}); "
            f"reinstall the vision extra: {VISION_EXTRA}"
        ) from exc
    built: HFBackend = getattr(mod, cls)(backend, config, model_id, folder)
    return built


class VisionFactory:
    """The registered factory of one transformers backend. Its first docstring line and
    ``default_model`` are what ``datasetagent models list`` shows."""

    def __init__(self, backend: str, module: str, cls: str, doc: str) -> None:
        self.backend = backend
        self.module = module
        self.cls = cls
        self.__doc__ = doc
        #: CLIP and SigLIP embed images (``ImageEmbedder``): ``evaluate`` probes on them.
        self.embeds = module == "hf_zeroshot"

    @property
    def default_model(self) -> str:
        return DEFAULT_MODELS[self.backend]

    def __call__(self, config: BackendConfig) -> Backend:
        return _build(self.backend, self.module, self.cls, config)


for _factory in (
    VisionFactory(
        "clip",
        "hf_zeroshot",
        "ZeroShotClassifier",
        "classification: CLIP zero-shot with prompt ensembles; image embeddings",
    ),
    VisionFactory(
        "siglip",
        "hf_zeroshot",
        "ZeroShotClassifier",
        "classification: SigLIP zero-shot with prompt ensembles; image embeddings",
    ),
    VisionFactory("owlv2", "hf_detect", "Owlv2Detector", "detection: OWLv2 open-vocabulary boxes"),
    VisionFactory(
        "grounding-dino",
        "hf_detect",
        "GroundingDinoDetector",
        "detection: Grounding DINO open-vocabulary boxes",
    ),
    VisionFactory("sam", "hf_sam", "SamSegmenter", "segmentation: SAM masks from boxes"),
):
    BACKENDS.add(_factory.backend, _factory)
