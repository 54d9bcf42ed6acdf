"""Supervision agent: measures each round against the spec's targets and decides what next.

Each round's report holds the metrics of DESIGN.md over the samples that would be exported now:
per-class fill, CBI, SSIM mean and 5th percentile, ALR with its interval and how it was
measured (see ``agents/verification.py``), rejections by reason (processing and labelling),
disputed labels, the confidence distribution, and for boxes and masks the objects per class,
per image and by size.

The rule policy: stop when every class has reached its target, when no remaining candidate
could help a class that is short, or when the budget is spent; otherwise collect another round
for the classes that are short, sized from the yield seen so far. Labels a checker disputes are
held back before they count (the verification stage), so a round never fills a class with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from datasetagent.agents.verification import DISPUTED, RELABELLED, Verification
from datasetagent.metrics import cbi, compared
from datasetagent.records import Box, ClassFill, Mask, QualityReport, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import RunStore

MIN_BATCH = 32
MAX_BATCH = 4096
#: Extra share of candidates taken per round over the estimate, for rejects and variance.
SAFETY = 1.25


def select_for_export(samples: Sequence[Sample], targets: dict[str, int]) -> list[Sample]:
    """The samples that make the dataset: per class every existing sample, then collected
    labelled ones by descending confidence (ties by id) up to the class's target."""
    chosen: list[Sample] = []
    by_class: dict[str, list[Sample]] = {c: [] for c in targets}
    for s in samples:
        if s.status == "labelled" and s.label in by_class:
            by_class[s.label].append(s)
    for cls, items in by_class.items():
        existing = [s for s in items if s.origin == "existing"]
        collected = sorted(
            (s for s in items if s.origin != "existing"),
            key=lambda s: (-(s.confidence or 0.0), s.id),
        )
        room = max(0, targets[cls] - len(existing))
        chosen.extend(existing + collected[:room])
    return chosen


def class_counts(samples: Sequence[Sample], classes: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for s in samples:
        if s.label in counts:
            counts[s.label] += 1
    return counts


CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def confidence_histogram(samples: Sequence[Sample]) -> dict[str, int]:
    """Counts of new samples' label confidence per bin, e.g. ``"0.95-0.99": 120``."""
    out: dict[str, int] = {}
    edges = CONFIDENCE_BINS
    for s in samples:
        c = s.confidence
        if s.origin == "existing" or c is None:
            continue
        i = max(0, min(len(edges) - 2, int(np.searchsorted(edges, c, side="right")) - 1))
        key = f"{edges[i]:.2f}-{edges[i + 1]:.2f}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def object_area(obj: Box | Mask) -> float:
    """An object's area in pixels: a box's width times height, a mask's pixel count."""
    from datasetagent.tools.masks import rle_area

    return obj.w * obj.h if isinstance(obj, Box) else float(rle_area(obj.rle))


def object_stats(
    samples: Sequence[Sample], classes: Sequence[str]
) -> tuple[dict[str, int], float | None, dict[str, int]]:
    """Objects per class, mean objects per image and COCO size bins, over boxes and masks."""
    instances = dict.fromkeys(classes, 0)
    sizes = {"small": 0, "medium": 0, "large": 0}
    n_objects = 0
    for s in samples:
        for a in s.annotations:
            if not isinstance(a, Box | Mask):
                continue
            n_objects += 1
            instances[a.label] = instances.get(a.label, 0) + 1
            area = object_area(a)
            sizes["small" if area < 32**2 else "medium" if area < 96**2 else "large"] += 1
    return instances, (n_objects / len(samples) if samples else None), sizes


def rejected_reason(sample: Sample) -> str:
    """The reason a rejected sample (one labelling or a person rejected) is counted under in
    ``rejected_by_reason``: the kind of its first review reason, ``uncertain`` by default."""
    key = (sample.review_reasons[0].split(":")[0] if sample.review_reasons else "") or "uncertain"
    return key if key.replace("_", "").isalpha() else "uncertain"


def _said(sample: Sample, prefix: str) -> bool:
    """Whether one of the sample's review reasons is of kind ``prefix`` (``prefix: ...``)."""
    return any(r.startswith(f"{prefix}:") for r in sample.review_reasons)


class SupervisionAgent:
    def __init__(
        self, store: RunStore, spec: DatasetSpec, verification: Verification | None = None
    ) -> None:
        self.store = store
        self.spec = spec
        self.verification = verification
        #: Whether web searches can still find candidates for these classes (none: no searches).
        self.can_search: Callable[[Sequence[str]], bool] = lambda _: False

    def assess(self, round_: int) -> QualityReport:
        spec = self.spec
        targets = spec.targets()
        labelled = self.store.label_counts(["labelled"])
        review = self.store.label_counts(["review"])
        by_status: dict[str, list[Sample]] = {}
        for s in self.store.samples():  # read once, split by status
            by_status.setdefault(s.status, []).append(s)
        chosen = select_for_export(by_status.get("labelled", []), targets)
        fills = tuple(
            ClassFill(name=c, target=t, accepted=labelled.get(c, 0), review=review.get(c, 0))
            for c, t in targets.items()
        )
        short = [f for f in fills if f.accepted < f.target]
        pending = self.store.pending_hints("collected")
        usable = pending.get(None, 0) + sum(pending.get(f.name, 0) for f in short)
        seen = self.store.count_candidates(origin="collected") - sum(pending.values())
        budget = spec.budget
        if not short:
            verdict, reason = "done", "targets met for every class"
        elif usable == 0 and not self.can_search([f.name for f in short]):
            missing = ", ".join(f"{f.name} short by {f.target - f.accepted}" for f in short)
            verdict, reason = "done", f"pool exhausted: {missing}"
        elif round_ >= budget.max_rounds:
            verdict, reason = "done", f"round budget spent ({budget.max_rounds} rounds)"
        elif budget.max_candidates is not None and seen >= budget.max_candidates:
            verdict, reason = "done", f"candidate budget spent ({budget.max_candidates})"
        else:
            names = ", ".join(f.name for f in short[:5]) + (" …" if len(short) > 5 else "")
            verdict, reason = "continue", f"collect more for {names}"
        balance = cbi(class_counts(chosen, list(targets)))
        ssims = np.array([1.0 if s.ssim is None else s.ssim for s in chosen])
        enhanced = sum(1 for s in chosen if s.ssim is not None)
        if verdict == "done" and balance > spec.quality.cbi_max:
            shown, target = compared(balance, spec.quality.cbi_max, 4)
            reason += f"; CBI {shown} is over the target {target}"
        alr = self.verification.alr(chosen) if self.verification is not None else None
        if verdict == "done" and alr is not None and alr.interval[1] < spec.quality.alr_min:
            shown, target = compared(alr.value, spec.quality.alr_min, 3)
            reason += f"; ALR {shown} is under the target {target}"
        rejected = dict(self.store.rejection_counts())
        for s in by_status.get("rejected", []):
            key = rejected_reason(s)
            rejected[key] = rejected.get(key, 0) + 1
        held = [*by_status.get("review", []), *by_status.get("rejected", [])]
        disputed = sum(_said(s, DISPUTED) for s in held)
        relabelled = sum(
            _said(s, RELABELLED) for s in by_status.get("labelled", []) if s.origin == "collected"
        )
        boxes: tuple[dict[str, int], float | None, dict[str, int]] = ({}, None, {})
        if spec.task != "classification":
            boxes = object_stats(chosen, list(targets))
        return QualityReport(
            round=round_,
            classes=fills,
            cbi=balance,
            ssim_mean=float(ssims.mean()) if len(ssims) else None,
            ssim_p5=float(np.percentile(ssims, 5)) if len(ssims) else None,
            enhanced=enhanced,
            rejected_by_reason=dict(sorted(rejected.items())),
            alr=alr.value if alr else None,
            alr_interval=alr.interval if alr else None,
            alr_audited=alr.audited if alr else 0,
            alr_method=alr.method if alr else "",
            disputed=disputed,
            relabelled=relabelled,
            confidence=confidence_histogram(chosen),
            instances=boxes[0],
            boxes_per_image=boxes[1],
            box_sizes=boxes[2],
            candidates_seen=seen,
            candidates_left=usable,
            review=len(by_status.get("review", [])),
            verdict=verdict,
            reason=reason,
        )

    def next_batch(self, report: QualityReport) -> int:
        """How many candidates the next round takes: enough, at the yield seen so far, to fill
        the class furthest from its target, with a safety margin."""
        collected = self.store.samples(status=["labelled"], origin="collected")
        seen = max(report.candidates_seen, 1)
        yield_rate = max(len(collected) / seen, 0.05) if report.candidates_seen else 0.5
        k = len(report.classes)
        per_class = class_counts(collected, [f.name for f in report.classes])
        total = sum(per_class.values())
        need = 0.0
        for f in report.classes:
            deficit = f.target - f.accepted
            if deficit <= 0:
                continue
            share = (per_class[f.name] + 1) / (total + k)  # Laplace-smoothed class prior
            need = max(need, deficit / (yield_rate * share))
        size = math.ceil(need * SAFETY)
        if self.spec.budget.max_candidates is not None:
            size = min(size, max(1, self.spec.budget.max_candidates - report.candidates_seen))
        return max(MIN_BATCH, min(MAX_BATCH, size))

    def first_batch(self) -> int:
        """Before any yield is known: the total deficit with the safety margin."""
        labelled = self.store.label_counts(["labelled"])
        deficit = sum(max(0, t - labelled.get(c, 0)) for c, t in self.spec.targets().items())
        size = math.ceil(deficit * SAFETY)
        if self.spec.budget.max_candidates is not None:
            size = min(size, self.spec.budget.max_candidates)
        return max(MIN_BATCH, min(MAX_BATCH, size))
