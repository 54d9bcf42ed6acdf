"""Data Label agent: classification labels, detection boxes and segmentation masks.

The agent is given a ``LabelerSet`` (built by the pipeline from what the user named and what is
available) and labels every processed sample of a round, in batches. While the models work on
one batch, the next is decoded and preprocessed on a background thread.

Classification, for each collected sample:

1. the source gave a class (its class folder): a weak label (``folder-name``, confidence 1.0,
   the user's assertion); every classifier checks it, and a confident disagreement sends the
   sample to review;
2. otherwise every classifier labels it. When they agree, the label is taken if their mean
   confidence reaches ``quality.min_confidence``; a confident "none of these" rejects the image
   as ``out_of_domain``; disagreement or low confidence is *uncertain*.

Detection: every detector runs; with two or more, boxes of the same class that overlap (IoU
≥ 0.5) across detectors are merged (score-weighted mean box) and a box needs a majority of
detectors behind it — a box only a minority found makes the image uncertain. No box at all is
uncertain too (``no_object``), as is a class folder whose class was not found.

Segmentation: detection as above, then the box segmenter turns each kept box into a mask.

Uncertain samples go to review or are rejected, as ``quality.uncertain`` says; they are never
forced into a class. Where two or more labelers ran, their agreement (share of them that agree
with the result, or share of merged boxes every detector found) is stored in
``scores["agreement"]`` for the Supervision agent. Samples of an existing dataset keep the
label of their class folder (``existing``), or the boxes and masks the dataset gives them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from datasetagent.metrics import compared
from datasetagent.models import (
    NONE_LABEL,
    Adapting,
    BoxSegmenter,
    Detection,
    ImageClassifier,
    ObjectDetector,
    Prediction,
    Prepared,
    Preparing,
)
from datasetagent.models.llm_call import BudgetSpent
from datasetagent.records import EXISTING_LABELER, Box, ClassLabel, Mask, Sample
from datasetagent.spec import WEB_SEARCH_SOURCES, DatasetSpec
from datasetagent.store import BlobStore, RunStore
from datasetagent.tools.boxes import iou

log = logging.getLogger(__name__)

FOLDER_LABELER = "folder-name"
#: The weak label of a URL list's ``label`` column.
LIST_LABELER = "url-list"


def hint_labeler(source_kind: str) -> tuple[str, str]:
    """The labeler name of the class a source gave a candidate, and what gave it, for
    messages: the class folder (``folder-name``), the web search that found it
    (``query:openverse``, ``query:wikimedia``) or a URL list's label (``url-list``)."""
    if source_kind in WEB_SEARCH_SOURCES:
        return f"query:{source_kind}", "query"
    if source_kind == "urls":
        return LIST_LABELER, "list"
    return FOLDER_LABELER, "folder"


BATCH = 64
#: Boxes of one class from two detectors are the same object at this IoU or more.
MERGE_IOU = 0.5

T = TypeVar("T")
U = TypeVar("U")


def no_labeler_message(unhinted: int) -> str:
    return (
        f"no labeler can label {unhinted} collected image(s) that carry no class: give seed "
        "examples with --existing DIR (one folder per class), put the images in one folder per "
        "class, or configure a model backend with --labeler"
    )


@dataclass(frozen=True)
class LabelerSet:
    """The models the agent may use, by role."""

    classifiers: tuple[ImageClassifier, ...] = ()
    detectors: tuple[ObjectDetector, ...] = ()
    segmenter: BoxSegmenter | None = None

    @property
    def models(self) -> tuple[object, ...]:
        seg = (self.segmenter,) if self.segmenter is not None else ()
        return (*self.classifiers, *self.detectors, *seg)

    def names(self) -> list[str]:
        return [str(getattr(m, "name", type(m).__name__)) for m in self.models]


class ModelRunner(Protocol):
    """Runs the agent's models somewhere else (``runtime.ray``: an actor pool that builds each
    model once per actor), one call for the round: for each batch of samples, in order, each
    model's outputs for them (classifiers' predictions, then detectors' detections, in the
    ``LabelerSet``'s order). The agent decides and stores the labels, as with local models."""

    def outputs(self, batches: Sequence[Sequence[Sample]]) -> Iterator[list[list[Any]]]: ...


@dataclass
class _Batch:
    samples: list[Sample]
    images: list[Image.Image]
    prepared: dict[int, Prepared] = field(default_factory=dict)
    #: Each model's outputs for the samples that need models, computed by a ``ModelRunner``.
    outputs: list[list[Any]] | None = None

    def inputs(self, model: object) -> Any:
        """What to hand ``model``: its prepared batch when it has one, else the images."""
        return self.prepared.get(id(model), self.images)


def prefetch(items: Sequence[T], work: Callable[[T], U]) -> Iterator[U]:
    """``work(item)`` for each item in order, computing the next one on a background thread
    while the caller consumes the current one (decoding overlaps the models)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-prefetch") as pool:
        pending: Future[U] = pool.submit(work, items[0])
        for nxt in items[1:]:
            current = pending.result()
            pending = pool.submit(work, nxt)
            yield current
        yield pending.result()


@dataclass
class MergedBox:
    """One object after merging detectors: its box, mean score and which detectors found it."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    found_by: set[int]


def merge_detections(per_detector: Sequence[Sequence[Detection]]) -> list[MergedBox]:
    """Cluster the detectors' boxes: greedily by descending score, a box joins the first
    cluster of its class that it overlaps at ``MERGE_IOU`` and that its detector has not joined
    yet. A cluster's box is the score-weighted mean; its score the mean over all detectors
    (a detector that missed it counts 0)."""
    pool = sorted(
        ((d.score, k, d) for k, dets in enumerate(per_detector) for d in dets),
        key=lambda t: -t[0],
    )
    clusters: list[tuple[list[Detection], set[int]]] = []
    heads: list[tuple[float, float, float, float]] = []  # each cluster's first box
    for _, k, det in pool:
        overlaps = iou(np.array(det.box), np.array(heads)) if heads else np.zeros(0)
        for (members, found), overlap in zip(clusters, overlaps, strict=True):
            if k not in found and members[0].label == det.label and overlap >= MERGE_IOU:
                members.append(det)
                found.add(k)
                break
        else:
            clusters.append(([det], {k}))
            heads.append(det.box)
    n = max(1, len(per_detector))
    out = []
    for members, found in clusters:
        w = np.array([max(m.score, 1e-6) for m in members])
        boxes = np.array([m.box for m in members], dtype=np.float64)
        # rounded so that one detector's box comes back exactly (24 * 0.95 / 0.95 is not 24)
        mean = np.round((boxes * w[:, None]).sum(axis=0) / w.sum(), 6)
        box = (float(mean[0]), float(mean[1]), float(mean[2]), float(mean[3]))
        score = float(sum(m.score for m in members) / n)
        out.append(MergedBox(members[0].label, box, score, found))
    return out


def _box_annotation(m: MergedBox, labeler: str, width: int, height: int) -> Box | None:
    x0, y0 = max(0.0, m.box[0]), max(0.0, m.box[1])
    x1, y1 = min(float(width), m.box[2]), min(float(height), m.box[3])
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:  # degenerate after clipping
        return None
    conf = min(1.0, max(0.0, m.score))
    return Box(label=m.label, confidence=conf, labeler=labeler, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


class DataLabelAgent:
    def __init__(
        self,
        store: RunStore,
        blobs: BlobStore,
        spec: DatasetSpec,
        labelers: LabelerSet | None = None,
        *,
        batch_size: int = BATCH,
        imported: Callable[[Sample], Sample] | None = None,
        runner: ModelRunner | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.spec = spec
        self.labelers = labelers or LabelerSet()
        self.batch_size = batch_size
        #: Gives an existing dataset's sample the labels (and source) the dataset has for it.
        self.imported = imported
        #: Why the last ``run_round`` stopped before labelling everything (budget), or None.
        self.stopped: str | None = None
        #: Runs the models elsewhere (every model of ``labelers``; none adapts to the round).
        self.runner = runner if self.labelers.models else None

    def load(self, sample: Sample) -> Image.Image:
        return self.blobs.open_image(sample.blob)

    def run_round(
        self,
        round_: int,
        after_batch: Callable[[], object] | None = None,
        *,
        progress: Callable[[int], object] | None = None,
        budget: Callable[[], str | None] | None = None,
        calls_left: Callable[[], int | None] | None = None,
    ) -> Counter[str]:
        """Label every processed, unlabelled sample of ``round_``; returns status counts.
        ``after_batch`` runs after each batch is stored (the pipeline saves model usage, so
        that a run killed mid-stage still counts the calls its stored labels cost);
        ``progress(n)`` after each batch with its size. ``budget()`` is asked before each
        batch and says why the budget is spent (or None); a spent budget, or a model request
        the budget refuses (``BudgetSpent``), ends the stage: the samples not labelled yet stay
        unlabelled (counted as ``budget_spent``) and ``stopped`` says why. ``calls_left()``
        (asked next) is how many more requests the budget pays for: with models that make a
        request per image (LLMs), a batch is cut to what that pays for, and the stage stops
        after it."""
        self.stopped = None
        todo = self.store.samples(status=["processed"], round_=round_)
        counts: Counter[str] = Counter()
        chunks = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        pool = [[s for s in chunk if self._needs_models(s)] for chunk in chunks]
        for model in self.labelers.classifiers:
            if isinstance(model, Adapting) and any(pool):
                model.adapt(prefetch(pool, lambda chunk: [self.load(s) for s in chunk]))
        left = len(todo)
        for batch in self._batches(chunks):
            try:
                self.stopped = budget() if budget is not None else None
                cut = self._affordable(batch, calls_left() if calls_left is not None else None)
                done = [] if self.stopped or not cut.samples else self._label(cut)
                if cut is not batch:
                    self.stopped = (budget() if budget is not None else None) or (
                        "budget spent: model calls"
                    )
            except BudgetSpent as exc:
                self.stopped, done = str(exc), []
            self.store.update_samples(done)
            counts.update(s.status for s in done)
            left -= len(done)
            if after_batch is not None:
                after_batch()
            if progress is not None:
                progress(len(done))
            if self.stopped:
                counts["budget_spent"] += left
                log.info("labelling stopped with %d samples left: %s", left, self.stopped)
                break
        return counts

    def _batches(self, chunks: list[list[Sample]]) -> Iterator[_Batch]:
        """The round's batches: images loaded (on a background thread) for local models, or
        the models' outputs from the runner."""
        if self.runner is None:
            yield from prefetch(chunks, self._load_batch)
            return
        work = [[s for s in chunk if self._needs_models(s)] for chunk in chunks]
        for chunk, outputs in zip(chunks, self.runner.outputs(work), strict=True):
            yield _Batch(list(chunk), [], outputs=outputs)

    def _affordable(self, batch: _Batch, calls: int | None) -> _Batch:
        """``batch``, or its first samples when its models make a request per image (those the
        run's budget gates: ``limit``) and ``calls`` would not pay for all of them."""
        per_image = sum(callable(getattr(m, "limit", None)) for m in self.labelers.models)
        if calls is None or not per_image or not batch.images:
            return batch
        todo = [s for s in batch.samples if self._needs_models(s)]
        k = calls // per_image
        if k >= len(todo):
            return batch
        keep = {s.id for s in todo[:k]}
        samples = [s for s in batch.samples if not self._needs_models(s) or s.id in keep]
        return _Batch(samples, batch.images[:k])  # models prepare the fewer images again

    def _needs_models(self, sample: Sample) -> bool:
        return sample.origin != "existing"

    def _load_batch(self, samples: Sequence[Sample]) -> _Batch:
        todo = [s for s in samples if self._needs_models(s)]
        images = [self.load(s) for s in todo] if self.labelers.models else []
        batch = _Batch(list(samples), images)
        if images:
            for model in self.labelers.models:
                if isinstance(model, Preparing):
                    batch.prepared[id(model)] = model.prepare(images)
        return batch

    def label_batch(self, samples: Sequence[Sample]) -> list[Sample]:
        """Label ``samples`` now (no prefetch); the policy described in the module docstring."""
        return self._label(self._load_batch(samples))

    def _label(self, batch: _Batch) -> list[Sample]:
        if self.imported is not None:
            apply = self.imported
            batch.samples = [apply(s) if s.origin == "existing" else s for s in batch.samples]
        if self.spec.task == "classification":
            return self._classify(batch)
        return self._locate(batch)

    # -- classification ------------------------------------------------------------------------
    def _classify(self, batch: _Batch) -> list[Sample]:
        todo = [s for s in batch.samples if self._needs_models(s)]
        per_model: list[list[Prediction]] = []
        if batch.outputs is not None:
            per_model = batch.outputs[: len(self.labelers.classifiers)]
        elif batch.images:
            per_model = [list(c.predict(batch.inputs(c))) for c in self.labelers.classifiers]
        preds = {s.id: [p[i] for p in per_model] for i, s in enumerate(todo)}
        return [self._classify_one(s, preds.get(s.id, [])) for s in batch.samples]

    def _classify_one(self, s: Sample, preds: list[Prediction]) -> Sample:
        min_conf = self.spec.quality.min_confidence
        names = [c.name for c in self.labelers.classifiers]
        hint = s.provenance.source_label
        if s.origin == "existing" and hint is not None:
            label = self.spec.resolve_class(hint) or hint
            ann = ClassLabel(label=label, confidence=1.0, labeler=EXISTING_LABELER)
            return self._with(s, (ann,), [])
        if hint is not None:
            labeler, what = hint_labeler(s.provenance.source_kind)
            ann = ClassLabel(label=hint, confidence=1.0, labeler=labeler)
            reasons = [
                f"{what} says {hint}, {name} says {p.label} ({p.confidence:.2f})"
                for name, p in zip(names, preds, strict=True)
                if p.label != hint and p.confidence >= min_conf
            ]
            agree = (sum(p.label == hint for p in preds) + 1, len(preds) + 1)
            return self._with(s, (ann,), reasons, agreement=agree if preds else None)
        if not preds:
            return self._uncertain(s, [no_labeler_message(1)])
        votes = Counter(p.label for p in preds)
        top, n_top = votes.most_common(1)[0]
        agreement = (n_top, len(preds)) if len(preds) > 1 else None
        if n_top < len(preds):
            said = ", ".join(
                f"{name} says {p.label} ({p.confidence:.2f})"
                for name, p in zip(names, preds, strict=True)
            )
            return self._uncertain(s, [f"labelers disagree: {said}"], agreement)
        conf = float(np.mean([p.confidence for p in preds]))
        if top == NONE_LABEL:
            if conf >= min_conf:
                return self._reject(
                    s,
                    f"out_of_domain: {' and '.join(names)} see none of the classes ({conf:.2f})",
                    agreement,
                )
            return self._uncertain(s, [f"no class fits ({conf:.2f})"], agreement)
        ann = ClassLabel(label=top, confidence=conf, labeler="+".join(names))
        if conf < min_conf:
            shown, floor = compared(conf, min_conf)
            return self._uncertain(s, [f"confidence {shown} < {floor}"], agreement, (ann,))
        return self._with(s, (ann,), [], agreement=agreement)

    # -- detection and segmentation ------------------------------------------------------------
    def _locate(self, batch: _Batch) -> list[Sample]:
        todo = [s for s in batch.samples if self._needs_models(s)]
        per_detector: list[list[list[Detection]]] = []
        if batch.outputs is not None:
            per_detector = batch.outputs[len(self.labelers.classifiers) :]
        elif batch.images:
            per_detector = [list(d.detect(batch.inputs(d))) for d in self.labelers.detectors]
        merged = {
            s.id: merge_detections([dets[i] for dets in per_detector]) for i, s in enumerate(todo)
        }
        masks: dict[str, list[np.ndarray]] = {}
        seg = self.labelers.segmenter
        if seg is not None and self.spec.task == "segmentation" and todo:
            kept = [self._kept(merged[s.id]) for s in todo]
            if any(kept):
                out = seg.segment(batch.images, [[m.box for m in k] for k in kept])
                masks = {s.id: list(ms) for s, ms in zip(todo, out, strict=True)}
        out_samples = []
        for s in batch.samples:
            if s.origin == "existing":  # imported labels, with any reason to review them
                out_samples.append(self._with(s, s.annotations, list(s.review_reasons)))
            else:
                out_samples.append(self._locate_one(s, merged[s.id], masks.get(s.id)))
        return out_samples

    def _kept(self, merged: list[MergedBox]) -> list[MergedBox]:
        n = max(1, len(self.labelers.detectors))
        return [m for m in merged if len(m.found_by) * 2 > n]

    def _locate_one(
        self, s: Sample, merged: list[MergedBox], masks: list[np.ndarray] | None
    ) -> Sample:
        detectors = [d.name for d in self.labelers.detectors]
        if not detectors:
            return self._uncertain(s, ["no detector is configured: name one with --labeler"])
        box_labeler = "+".join(detectors)
        kept = self._kept(merged)
        reasons = [
            f"only {', '.join(detectors[k] for k in sorted(m.found_by))} found "
            f"{m.label} at {tuple(round(v) for v in m.box)}"
            for m in merged
            if m not in kept
        ]
        agreement = None
        if len(detectors) > 1 and merged:
            agreement = (sum(len(m.found_by) == len(detectors) for m in merged), len(merged))
        anns: list[Box | Mask] = []
        if masks is not None and self.labelers.segmenter is not None:
            from datasetagent.tools.masks import mask_to_rle  # pycocotools, loaded when used

            labeler = f"{box_labeler}+{self.labelers.segmenter.name}"
            for m, mask in zip(kept, masks, strict=True):
                if not mask.any():
                    reasons.append(f"empty mask for {m.label} at {tuple(round(v) for v in m.box)}")
                    continue
                anns.append(
                    Mask(
                        label=m.label,
                        confidence=min(1.0, max(0.0, m.score)),
                        labeler=labeler,
                        rle=mask_to_rle(mask),
                    )
                )
        else:
            for m in kept:
                box = _box_annotation(m, box_labeler, s.width, s.height)
                if box is not None:
                    anns.append(box)
        hint = s.provenance.source_label
        if hint is not None and not any(a.label == hint for a in anns):
            reasons.append(
                f"{hint_labeler(s.provenance.source_kind)[1]} says {hint}, no {hint} found"
            )
        if not anns and not reasons:
            return self._uncertain(s, [f"no_object: {box_labeler} found none of the classes"])
        if reasons:
            return self._uncertain(s, reasons, agreement, tuple(anns))
        return self._with(s, tuple(anns), [], agreement=agreement)

    # -- outcomes ------------------------------------------------------------------------------
    def _with(
        self,
        s: Sample,
        anns: tuple[Any, ...],
        reasons: list[str],
        *,
        agreement: tuple[int, int] | None = None,
        status: str | None = None,
    ) -> Sample:
        scores = dict(s.scores)
        if agreement is not None and agreement[1] > 0:
            scores["agreement"] = agreement[0] / agreement[1]
        return s.model_copy(
            update={
                "annotations": anns,
                "status": status or ("review" if reasons else "labelled"),
                "review_reasons": tuple(reasons),
                "scores": scores,
            }
        )

    def _uncertain(
        self,
        s: Sample,
        reasons: list[str],
        agreement: tuple[int, int] | None = None,
        anns: tuple[Any, ...] = (),
    ) -> Sample:
        status = self.spec.quality.uncertain_status
        return self._with(s, anns, reasons, agreement=agreement, status=status)

    def _reject(self, s: Sample, reason: str, agreement: tuple[int, int] | None) -> Sample:
        return self._with(s, (), [reason], agreement=agreement, status="rejected")
