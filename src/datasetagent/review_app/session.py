"""The review app's state over the run store: the queue, decisions, undo, bulk accepts, box
edits and progress. No web framework here: ``app.py`` maps routes onto these methods.

Every decision is written to the store at once through ``agents.review.decide`` (the code
``review --apply`` runs), so a closed tab or a crash loses nothing and the next ``export``
reflects it. The queue is read from the store on every request, so a labeler refit
(``on_decisions``) that promotes or re-orders samples shows in the next queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasetagent.agents.review import (
    HUMAN,
    Decided,
    Scores,
    _object,
    audit_sample,
    decide,
    human_audited,
    review_priority,
)
from datasetagent.errors import UsageError
from datasetagent.records import Audit, Box, ClassLabel, Mask, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore

DECISIONS = ("accept", "reject", "relabel")
#: How many decisions between two calls of ``on_decisions`` by default.
REFIT_EVERY = 10


@dataclass(frozen=True)
class QueueFilter:
    """Which queue items to show: a class, a reason (words in it), a source kind, a
    confidence range."""

    label: str | None = None
    reason: str | None = None
    source: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None

    def keeps(self, item: dict[str, Any]) -> bool:
        conf = item["confidence"]
        return (
            (self.label is None or item["label"] == self.label)
            and (self.reason is None or self.reason.lower() in item["reason"].lower())
            and (self.source is None or item["source"] == self.source)
            and (self.min_confidence is None or (conf is not None and conf >= self.min_confidence))
            and (self.max_confidence is None or (conf is not None and conf <= self.max_confidence))
        )


@dataclass(frozen=True)
class _Step:
    """One undoable step: the samples as they were, and the audits it added."""

    before: tuple[Sample, ...]
    audits: tuple[Audit, ...]


class ReviewSession:
    """A person's review of the run in ``run_dir``.

    ``on_decisions`` (e.g. the labeler refit) is called after every ``refit_every`` decisions
    and after every bulk accept. The caller holds the run lock for the session's life.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        audit_size: int = 100,
        refit_every: int = REFIT_EVERY,
        on_decisions: Callable[[], object] | None = None,
    ) -> None:
        from datasetagent.pipeline import FINAL, final_samples

        self.run_dir = run_dir
        self.blobs = BlobStore(run_dir)
        self.refit_every = max(1, refit_every)
        self.on_decisions = on_decisions
        self._lock = threading.Lock()
        self._history: list[_Step] = []
        #: The labeler's class probabilities of the held samples, as of the last ``learn``.
        self.scores: Scores = {}
        self._since_refit = 0
        self.decisions = 0
        with self._store() as store:
            spec = store.load_spec()
            if spec is None:
                raise UsageError(f"the run in {run_dir} never started (no spec stored)")
            self.spec: DatasetSpec = spec
            exported = final_samples(store, spec) if store.stage_done(FINAL, "split") else None
            #: the labels drawn for a person to audit, in the order drawn
            self.audit_ids = [s.id for s in audit_sample(store, spec, audit_size, exported)]

    def _store(self) -> RunStore:
        return RunStore(self.run_dir / "run.db")

    # -- reading -------------------------------------------------------------------------------
    def queue(self, only: QueueFilter | None = None) -> list[dict[str, Any]]:
        """The items left to decide: held-back samples (short classes first, as ``review
        --write`` orders them; disputed labels among them), then the audit sample's labels not
        audited yet."""
        with self._store() as store:
            held = store.samples(status=["review"])
            have = store.label_counts(["labelled"])
            review = review_priority(held, self.spec, have, self.scores)
            audited = human_audited(store)
            audit = [
                s
                for s in (store.find_sample(i) for i in self.audit_ids if i not in audited)
                if s is not None and s.status == "labelled"
            ]
        items = [self._item(s, "review") for s in review] + [self._item(s, "audit") for s in audit]
        return [i for i in items if only is None or only.keeps(i)]

    def _item(self, s: Sample, kind: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": s.id,
            "kind": kind,
            "label": s.label,
            "confidence": s.confidence,
            "reason": "; ".join(s.review_reasons) if kind == "review" else "audit",
            "image": f"/image/{s.id}",
            "source": s.provenance.source_kind,
            "location": s.provenance.location,
            "width": s.width,
            "height": s.height,
            "hash": s.hashes[0] if s.hashes else None,
        }
        if self.spec.task != "classification":
            item["objects"] = [_object(a) for a in s.annotations if not isinstance(a, ClassLabel)]
        return item

    def progress(self) -> dict[str, Any]:
        """Accepted samples per class against its target, what is held back, and the session's
        decisions."""
        with self._store() as store:
            have = store.label_counts(["labelled"])
            held = store.label_counts(["review"])
        classes = [
            {
                "name": name,
                "target": target,
                "accepted": have.get(name, 0),
                "review": held.get(name, 0),
            }
            for name, target in self.spec.targets().items()
        ]
        return {"classes": classes, "decisions": self.decisions, "undo": len(self._history)}

    def image_path(self, sample_id: str) -> Path | None:
        """The stored image of the run's sample ``sample_id``; None for an id the run does not
        hold or a blob outside the run's image folder. Nothing of the request but the id (a
        database key) is used."""
        with self._store() as store:
            sample = store.find_sample(sample_id)
        if sample is None:
            return None
        path = self.blobs.path(sample.blob).resolve()
        images = (self.run_dir / "images").resolve()
        if images not in path.parents or not path.is_file():
            return None
        return path

    # -- writing -------------------------------------------------------------------------------
    def decide(self, sample_id: str, decision: str, label: str | None = None) -> dict[str, Any]:
        """Apply one decision now; raises UsageError for a bad request."""
        if decision not in DECISIONS:
            raise UsageError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        given = self._check_label(label, required=decision == "relabel")
        with self._lock, self._store() as store:
            sample = self._sample(store, sample_id)
            result = decide(
                sample,
                self.spec,
                decision,
                given,
                audit_item=sample_id in self.audit_ids and sample.status == "labelled",
                audited=sample_id in human_audited(store),
            )
            if isinstance(result, str):
                raise UsageError(f"sample {sample_id[:12]}: not applied: {result}")
            self._write(store, [sample], [result])
        self._count(1)
        return {"id": sample_id, "status": result.sample.status, "label": result.sample.label}

    def bulk_accept(self, min_confidence: float, only: QueueFilter | None = None) -> int:
        """Accept, as proposed, every held-back item of the (filtered) queue whose confidence
        is at least ``min_confidence``; returns how many. Audit items are never bulk-accepted:
        an audit is a person's look at one label."""
        chosen = [
            i["id"]
            for i in self.queue(only)
            if i["kind"] == "review"
            and i["confidence"] is not None
            and i["confidence"] >= min_confidence
            and i["label"] is not None
        ]
        with self._lock, self._store() as store:
            before, results = [], []
            for sid in chosen:
                sample = self._sample(store, sid)
                result = decide(sample, self.spec, "accept", None, audit_item=False, audited=True)
                if isinstance(result, Decided):
                    before.append(sample)
                    results.append(result)
            if results:
                self._write(store, before, results)
        self._count(len(results), force=True)
        return len(results)

    def edit_box(self, sample_id: str, index: int, label: str | None) -> dict[str, Any]:
        """Delete object ``index`` of a detection or segmentation sample (``label`` None) or
        give it class ``label``; the sample stays in the queue for a decision."""
        if self.spec.task == "classification":
            raise UsageError("this run labels whole images: it has no boxes to edit")
        given = None if label is None else self._check_label(label, required=True)
        with self._lock, self._store() as store:
            sample = self._sample(store, sample_id)
            objects = [a for a in sample.annotations if not isinstance(a, ClassLabel)]
            if not 0 <= index < len(objects):
                raise UsageError(
                    f"sample {sample_id[:12]} has {len(objects)} object(s); box {index} is not one"
                )
            edited: list[Box | Mask] = list(objects)
            if given is None:
                del edited[index]
            else:
                a = edited[index]
                labeler = a.labeler if a.labeler.endswith(f"+{HUMAN}") else f"{a.labeler}+{HUMAN}"
                edited[index] = a.model_copy(
                    update={"label": given, "labeler": labeler, "confidence": 1.0}
                )
            after = sample.model_copy(update={"annotations": tuple(edited)})
            self._write(store, [sample], [Decided(after, None)])
        return {"id": sample_id, "objects": [_object(a) for a in edited]}

    def undo(self) -> dict[str, Any]:
        """Take back the last step (a decision, a bulk accept or a box edit): its samples
        return to what they were and its audits are forgotten."""
        with self._lock:
            if not self._history:
                raise UsageError("nothing to undo: no decision made in this session")
            step = self._history.pop()
            with self._store() as store:
                store.remove_audits(step.audits)
                store.update_samples(step.before)
            self.decisions = max(0, self.decisions - len(step.before))
        return {"undone": [s.id for s in step.before]}

    def _write(self, store: RunStore, before: Sequence[Sample], results: Sequence[Decided]) -> None:
        audits = tuple(r.audit for r in results if r.audit is not None)
        store.add_audits(audits)
        store.update_samples(r.sample for r in results)
        self._history.append(_Step(tuple(before), audits))

    def _count(self, n: int, force: bool = False) -> None:
        """Count ``n`` decisions; call ``on_decisions`` every ``refit_every`` (or now)."""
        with self._lock:
            self.decisions += n
            self._since_refit += n
            due = self._since_refit >= self.refit_every or (force and n > 0)
            if due:
                self._since_refit = 0
        if due and self.on_decisions is not None:
            self.on_decisions()

    def learn(self) -> None:
        """Teach the labeler the decisions so far (``review_learning.learn_from_decisions``):
        it promotes the held samples it is now sure of and re-scores the rest, which orders
        the queue. Holds the session's lock, so no decision is written meanwhile (a promotion
        never overwrites a person's answer); one BLAS thread, as the server shares the cores."""
        from threadpoolctl import threadpool_limits

        from datasetagent.agents.review_learning import learn_from_decisions

        with self._lock, threadpool_limits(1), self._store() as store:
            learned = learn_from_decisions(store, self.blobs, self.spec)
        self.scores = learned.scores

    def _sample(self, store: RunStore, sample_id: str) -> Sample:
        sample = store.find_sample(sample_id)
        if sample is None:
            raise LookupError(sample_id)
        return sample

    def _check_label(self, label: str | None, *, required: bool) -> str | None:
        if not label:
            if required:
                raise UsageError("a relabel needs a label: one of the spec's classes")
            return None
        name = self.spec.resolve_class(label)
        if name is None:
            raise UsageError(
                f"label {label!r} is not a class of the spec ({', '.join(self.spec.class_names)})"
            )
        return name
