"""Supervision agent: measures each round against the spec's targets and decides what next.

The rule policy: stop when every class has reached its target, when no remaining candidate
could help a class that is short, or when the budget is spent; otherwise collect another round,
sized from the yield seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from datasetagent.metrics import cbi
from datasetagent.records import ClassFill, QualityReport, Sample
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


class SupervisionAgent:
    def __init__(self, store: RunStore, spec: DatasetSpec) -> None:
        self.store = store
        self.spec = spec

    def assess(self, round_: int) -> QualityReport:
        spec = self.spec
        targets = spec.targets()
        labelled = self.store.label_counts(["labelled"])
        review = self.store.label_counts(["review"])
        chosen = select_for_export(self.store.samples(status=["labelled"]), targets)
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
        elif usable == 0:
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
            reason += f"; CBI {balance:.4f} is over the target {spec.quality.cbi_max}"
        return QualityReport(
            round=round_,
            classes=fills,
            cbi=balance,
            ssim_mean=float(ssims.mean()) if len(ssims) else None,
            ssim_p5=float(np.percentile(ssims, 5)) if len(ssims) else None,
            enhanced=enhanced,
            rejected_by_reason=self.store.rejection_counts(),
            candidates_seen=seen,
            candidates_left=usable,
            review=sum(review.values()),
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
