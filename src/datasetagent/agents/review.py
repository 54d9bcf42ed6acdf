"""Human review: the queue of held-back samples plus an audit sample, out to a file and back.

``write_queue`` writes one JSON line per item: samples held for review (low confidence,
labelers disagreeing, a verifier's dispute) and a random sample of accepted labels to audit.
A person sets each line's ``decision``: ``accept`` (the label shown is right), ``relabel`` (with
``label`` set to the right class), or ``reject`` (unusable, or none of the classes).
``apply_decisions`` reads the file back. Decided samples take the person's label (labeler
``human``) or leave the dataset; decisions on audit items are also stored as audits, from which
ALR is measured directly (``agents/verification.py``). Lines left undecided change nothing.

In a detection or segmentation run each line also lists the sample's ``objects`` (class and
box). A decision keeps them: ``accept`` confirms them as they are (``label`` may be left
empty; another class than the one shown relabels them), ``relabel`` gives every
object the line's class (refused for objects of several classes, which one class cannot
name), and a sample without objects cannot be accepted into a class at all; such decisions
are counted as not applied, with the reason, and change nothing.

The queue file never replaces a file of the run, a file that is not a queue, or a queue in
which a person has set decisions (``check_queue_file``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasetagent.errors import UsageError
from datasetagent.models import NONE_LABEL
from datasetagent.records import Audit, Box, ClassLabel, Mask, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import LOCK_NAME, BlobStore, RunStore

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

    Held-back samples come most useful first (``review_priority``), the first ``review_size`` of
    them (all by default). The audit is drawn from the new samples of ``exported`` where the
    run has finished (the dataset whose reliability the audit measures), else from every
    accepted new sample.
    """
    held = store.samples(status=["review"])
    review = review_priority(held, spec, store.label_counts(["labelled"]))[:review_size]
    audit = audit_sample(store, spec, audit_size, exported)
    target = check_queue_file(out, store.path.parent)
    tmp = target.with_name(f".{target.name}.partial")
    with tmp.open("w", encoding="utf-8") as f:
        for kind, items in (("review", review), ("audit", audit)):
            for s in items:
                line: dict[str, Any] = {
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
                if spec.task != "classification":
                    line["objects"] = [_object(a) for a in _objects(s)]
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return {"review": len(review), "audit": len(audit)}


#: The files a run folder holds at its top level (its folders are all the run's).
RUN_FILES = frozenset(
    {
        "run.db",
        "run.db-wal",
        "run.db-shm",
        "run.db-journal",
        LOCK_NAME,
        "spec.yaml",
        "summary.json",
    }
)


def check_queue_file(out: Path, run_dir: Path) -> Path:
    """The file a queue may be written to (``out``, its link followed), or a one-line error:
    a file of the run (its database, lock, spec or summary, anything in its folders), an
    existing file that is not a review queue, or a queue where a person has set decisions."""
    target = out.resolve()
    run = run_dir.resolve()
    if run in target.parents and (target.parent != run or target.name in RUN_FILES):
        raise UsageError(
            f"{out} is a file of the run in {run_dir}; write the queue elsewhere, "
            "e.g. --write queue.jsonl"
        )
    if target.is_dir():
        raise UsageError(f"{out} is a folder; give a file name for --write, e.g. queue.jsonl")
    if not target.exists():
        return target
    if not target.is_file():  # a device, FIFO or socket: reading it would hang, replacing it
        raise UsageError(  # would put a plain file where /dev/null was
            f"{out} is not a regular file (a device, FIFO or socket); give a file name for "
            "--write, e.g. queue.jsonl"
        )
    decided = _decisions_in(target)
    if decided is None:
        raise UsageError(
            f"{out} exists and is not a review queue; give a new file name for --write"
        )
    if decided:
        raise UsageError(
            f"{out} holds {decided} decision(s) a person made; apply them with --apply "
            f"{out}, then move or delete the file before writing a new queue there"
        )
    return target


def _decisions_in(path: Path) -> int | None:
    """How many lines of the queue at ``path`` hold a decision; None when it is not a queue."""
    decided = 0
    try:
        with path.open(encoding="utf-8") as f:
            for raw in f:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if not isinstance(line, dict) or not {"id", "kind", "decision"} <= line.keys():
                    return None
                decided += line["decision"] is not None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return decided


def _objects(sample: Sample) -> list[Box | Mask]:
    return [a for a in sample.annotations if not isinstance(a, ClassLabel)]


def _object(ann: Box | Mask) -> dict[str, Any]:
    """One object as a queue line shows it: its class and box (x, y, width, height; a mask's
    bounding box)."""
    if isinstance(ann, Box):
        return {"label": ann.label, "box": [ann.x, ann.y, ann.w, ann.h]}
    from datasetagent.tools.masks import rle_bbox

    return {"label": ann.label, "box": list(rle_bbox(ann.rle))}


def human_audited(store: RunStore) -> set[str]:
    """The samples whose label a person has audited (each is audited once)."""
    return {a.sample_id for a in store.audits("audit") if a.checker == HUMAN}


def audit_sample(
    store: RunStore, spec: DatasetSpec, size: int, exported: Sequence[Sample] | None = None
) -> list[Sample]:
    """A random sample of ``size`` accepted new labels a person has not audited yet: drawn from
    the new samples of ``exported`` where the run has finished (the dataset whose reliability
    the audit measures), else from every accepted new sample."""
    audited = human_audited(store)
    population = (
        store.samples(status=["labelled"], origin="collected") if exported is None else exported
    )
    accepted = [
        s
        for s in population
        if s.status == "labelled" and s.origin == "collected" and s.id not in audited
    ]
    rng = random.Random(f"{spec.splits.seed}:review:{len(audited)}")
    return rng.sample(accepted, min(size, len(accepted)))


#: Class probabilities per sample id: each class the labeler knows, and ``NONE_LABEL``.
Scores = Mapping[str, Mapping[str, float]]


def review_priority(
    held: Sequence[Sample],
    spec: DatasetSpec,
    have: Mapping[str, int],
    scores: Scores | None = None,
) -> list[Sample]:
    """Held-back samples, the most useful question first: those proposed for a class still
    short of its target (``have``: labelled samples per class) first; within each group the
    least certain first (smallest margin between the two likeliest classes in ``scores``; a
    sample without scores takes its stored confidence ``c`` as the margin ``2c - 1``, what it
    is when the rest goes to one other class); ties by id."""
    short = set(spec.short_classes(have))
    scores = scores or {}

    def key(s: Sample) -> tuple[bool, float, str]:
        probs = scores.get(s.id)
        if probs:
            ranked = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))
            top = ranked[0][0]
            margin = ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0.0)
        else:
            top = s.label or NONE_LABEL
            margin = 2.0 * (s.confidence or 0.0) - 1.0
        return (not ({top, s.label} & short), margin, s.id)

    return sorted(held, key=key)


def _read(path: Path, spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """Every decided line with where it is (``FILE:LINE``), checked whole before anything is
    applied."""
    try:
        return _read_lines(path, spec)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: not UTF-8 text (byte {exc.start} of a line); save the queue as UTF-8"
        ) from exc


def _read_lines(path: Path, spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    out = []
    seen: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: not JSON ({exc.msg})") from exc
            except RecursionError as exc:
                raise UsageError(f"{where}: nested too deeply to be a review line") from exc
            if not isinstance(line, dict) or not isinstance(line.get("id"), str):
                raise UsageError(f"{where}: each line needs an object with the sample's id")
            decision = line.get("decision")
            if decision is None:
                continue
            if decision not in DECISIONS:
                raise UsageError(f"{where}: decision {decision!r} is not one of {DECISIONS}")
            if line["id"] in seen:  # two decisions on one sample: which did the person mean?
                raise UsageError(
                    f"{where}: sample {line['id'][:12]} is decided again (first at "
                    f"{seen[line['id']]}); keep one decision per sample"
                )
            seen[line["id"]] = where
            if not isinstance(line.get("label") or "", str):
                raise UsageError(f"{where}: label {line['label']!r} is not a class name (text)")
            # accepting objects (detection, segmentation) confirms them as shown: no label needed
            needs_label = decision == "relabel" or (
                decision == "accept" and (spec.task == "classification" or line.get("label"))
            )
            if needs_label and spec.resolve_class(line.get("label") or "") is None:
                raise UsageError(
                    f"{where}: label {line.get('label')!r} is not a class of the spec "
                    f"({', '.join(spec.class_names)})"
                )
            out.append((where, line))
    return out


@dataclass
class Applied:
    """What ``apply_decisions`` did: decisions applied, by kind, and decisions not applied,
    by reason."""

    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DECISIONS, 0))
    not_applied: dict[str, int] = field(default_factory=dict)


#: Why a decision on a detection or segmentation sample could not be applied.
NO_OBJECTS = "no objects to accept or relabel (a detection class needs boxes)"
MIXED_OBJECTS = "objects of several classes (one label cannot relabel them all)"
#: Why accepting a classification sample without naming a class could not be applied.
NO_CLASS = "no class to accept (relabel it to one of the spec's classes)"


def _decided_objects(sample: Sample, decision: str, label: str) -> tuple[Box | Mask, ...] | str:
    """The objects of a detection or segmentation sample after ``decision`` with ``label``, or
    the reason the decision cannot be applied. Accepting the class shown (or no class) keeps
    them as they are; relabelling (or accepting another class) gives every object that class."""
    objects = _objects(sample)
    if not objects:
        return NO_OBJECTS
    confirmed = decision == "accept" and label in ("", sample.label)
    if not confirmed and len({a.label for a in objects}) > 1:
        return MIXED_OBJECTS
    return tuple(
        a.model_copy(
            update={
                "label": a.label if confirmed else label,
                "labeler": a.labeler if a.labeler.endswith(f"+{HUMAN}") else f"{a.labeler}+{HUMAN}",
                "confidence": 1.0,
            }
        )
        for a in objects
    )


@dataclass(frozen=True)
class Decided:
    """One decision made on one sample: the sample as it is now, and the audit it adds (a
    decision on an audit item, the first on that sample)."""

    sample: Sample
    audit: Audit | None


def decide(
    sample: Sample,
    spec: DatasetSpec,
    decision: str,
    label: str | None,
    *,
    audit_item: bool,
    audited: bool,
) -> Decided | str:
    """What ``decision`` (accept, relabel, reject) with ``label`` (a class name of the spec or
    None: accept the class shown) makes of ``sample``, or why it cannot be applied (a sample
    with no class to accept, a detection sample without objects, or objects of several classes
    to relabel). ``audit_item``: the sample was shown to audit its
    label; ``audited``: a person has audited it already (it is audited once: a queue applied
    again, its relabels already made, must not audit the corrected label against itself).
    Both ``review --apply`` and the review app decide through this one function."""
    given = spec.resolve_class(label or "")  # None: no label given
    update: dict[str, Any]
    if decision == "reject":
        update = {"status": "rejected", "review_reasons": ("rejected by a person",)}
    else:
        if spec.task == "classification":
            name = given or (sample.label if decision == "accept" else None)
            if not name:
                return NO_CLASS
            annotations: tuple[ClassLabel | Box | Mask, ...] = (
                ClassLabel(label=name, confidence=1.0, labeler=HUMAN),
            )
        else:
            objects = _decided_objects(sample, decision, given or "")
            if isinstance(objects, str):
                return objects
            annotations = objects
        update = {"status": "labelled", "annotations": annotations, "review_reasons": ()}
    shown = sample.label
    audit = None
    if audit_item and shown is not None and not audited:
        audit = Audit(
            sample_id=sample.id,
            checker=HUMAN,
            kind="audit",
            label=shown,
            agree=decision == "accept" and given in (None, shown),
            suggested=label if decision == "relabel" else None,
            confidence=1.0,
            round=sample.round,
        )
    return Decided(sample.model_copy(update=update), audit)


def apply_decisions(store: RunStore, spec: DatasetSpec, path: Path) -> Applied:
    """Apply a filled-in queue file; returns what was applied and what not, and why. A
    malformed file changes nothing and names the line."""
    decided = _read(path, spec)
    done = Applied()
    changed: list[Sample] = []
    audits: list[Audit] = []
    audited = human_audited(store)
    for where, line in decided:
        sample = store.find_sample(line["id"])
        if sample is None:
            raise UsageError(f"{where}: sample {line['id'][:12]!r} is not in this run")
        result = decide(
            sample,
            spec,
            line["decision"],
            line.get("label"),
            audit_item=line.get("kind") == "audit",
            audited=sample.id in audited,
        )
        if isinstance(result, str):
            done.not_applied[result] = done.not_applied.get(result, 0) + 1
            continue
        done.applied[line["decision"]] += 1
        if result.audit is not None:
            audits.append(result.audit)
        changed.append(result.sample)
    store.add_audits(audits)
    store.update_samples(changed)
    return done
