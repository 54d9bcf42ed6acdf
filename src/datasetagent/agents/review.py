"""Human review: the queue of held-back samples plus an audit sample, out to a file and back.

``write_queue`` writes one JSON line per item: samples held for review (low confidence,
labelers disagreeing, a verifier's dispute) and a random sample of accepted labels to audit.
A person sets each line's ``decision``: ``accept`` (the label shown is right), ``relabel`` (with
``label`` set to the right class), or ``reject`` (unusable, or none of the classes).
``apply_decisions`` reads the file back. Decided samples take the person's label (labeler
``human``) or leave the dataset; decisions on audit items are also stored as audits, from which
ALR is measured directly (``agents/verification.py``). Lines left undecided change nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasetagent.errors import UsageError
from datasetagent.records import Audit, ClassLabel, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore

HUMAN = "human"
DECISIONS = ("accept", "relabel", "reject")


def write_queue(
    store: RunStore,
    spec: DatasetSpec,
    blobs: BlobStore,
    out: Path,
    audit_size: int = 100,
    exported: Sequence[Sample] | None = None,
    review_size: int | None = None,
) -> dict[str, int]:
    """Write the review queue and an audit sample to ``out``; returns counts by kind.

    Held-back samples come most useful first (``review_order``), the first ``review_size`` of
    them (all by default). The audit is drawn from the new samples of ``exported`` where the
    run has finished (the dataset whose reliability the audit measures), else from every
    accepted new sample.
    """
    held = store.samples(status=["review"])
    review = review_order(held, spec, store.label_counts(["labelled"]))[:review_size]
    audited = {a.sample_id for a in store.audits("audit") if a.checker == HUMAN}
    population = (
        store.samples(status=["labelled"], origin="collected") if exported is None else exported
    )
    accepted = [
        s
        for s in population
        if s.status == "labelled" and s.origin == "collected" and s.id not in audited
    ]
    rng = random.Random(f"{spec.splits.seed}:review:{len(audited)}")
    audit = rng.sample(accepted, min(audit_size, len(accepted)))
    with out.open("w", encoding="utf-8") as f:
        for kind, items in (("review", review), ("audit", audit)):
            for s in items:
                line = {
                    "id": s.id,
                    "kind": kind,
                    "image": str(blobs.path(s.blob)),
                    "source": s.provenance.location,
                    "label": s.label,
                    "confidence": s.confidence,
                    "reasons": list(s.review_reasons),
                    "classes": list(spec.class_names),
                    "decision": None,
                }
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {"review": len(review), "audit": len(audit)}


def review_order(
    held: Sequence[Sample], spec: DatasetSpec, have: Mapping[str, int]
) -> list[Sample]:
    """Held-back samples in the order a person's time fills the dataset fastest: those
    proposed for a class still short of its target (``have``: accepted samples per class)
    first, then the rest; within each, the most confident proposal first (the likeliest to be
    accepted with one click)."""
    short = set(spec.short_classes(have))
    return sorted(held, key=lambda s: (s.label not in short, -(s.confidence or 0.0)))


def _read(path: Path, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Every decided line, checked whole before anything is applied."""
    out = []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: not JSON ({exc.msg})") from None
            except RecursionError:
                raise UsageError(f"{where}: nested too deeply to be a review line") from None
            if not isinstance(line, dict) or not isinstance(line.get("id"), str):
                raise UsageError(f"{where}: each line needs an object with the sample's id")
            decision = line.get("decision")
            if decision is None:
                continue
            if decision not in DECISIONS:
                raise UsageError(f"{where}: decision {decision!r} is not one of {DECISIONS}")
            if (
                decision in ("accept", "relabel")
                and spec.resolve_class(line.get("label") or "") is None
            ):
                raise UsageError(
                    f"{where}: label {line.get('label')!r} is not a class of the spec "
                    f"({', '.join(spec.class_names)})"
                )
            out.append(line)
    return out


def apply_decisions(store: RunStore, spec: DatasetSpec, path: Path) -> dict[str, int]:
    """Apply a filled-in queue file; returns counts by decision. A malformed file changes
    nothing and names the line."""
    decided = _read(path, spec)
    counts = dict.fromkeys(DECISIONS, 0)
    changed: list[Sample] = []
    audits: list[Audit] = []
    for line in decided:
        sample = store.find_sample(line["id"])
        if sample is None:
            raise UsageError(f"{path}: sample {line['id'][:12]} is not in this run")
        decision = line["decision"]
        counts[decision] += 1
        shown = sample.label
        if line.get("kind") == "audit" and shown is not None:
            audits.append(
                Audit(
                    sample_id=sample.id,
                    checker=HUMAN,
                    kind="audit",
                    label=shown,
                    agree=decision == "accept" and spec.resolve_class(line["label"]) == shown,
                    suggested=line.get("label") if decision == "relabel" else None,
                    confidence=1.0,
                    round=sample.round,
                )
            )
        if decision == "reject":
            update: dict[str, Any] = {
                "status": "rejected",
                "review_reasons": ("rejected by a person",),
            }
        else:
            label = spec.resolve_class(line["label"])
            update = {
                "status": "labelled",
                "annotations": (ClassLabel(label=label or "", confidence=1.0, labeler=HUMAN),),
                "review_reasons": (),
            }
        changed.append(sample.model_copy(update=update))
    store.add_audits(audits)
    store.update_samples(changed)
    return counts
