"""Every review decision teaches the labeler: refit, re-score, promote, re-order.

A person's decisions are the best labels a run ever gets. ``learn_from_decisions`` feeds them
back into the seed labeler (``models/seed.py``):

1. **Refit**: the seeds are the existing dataset's labelled samples plus every collected sample
   a person labelled (a ``human`` label, ``agents/review.py``); the seed labeler is fitted on
   them as ``Assembly.fit_learner`` fits it at build time.
2. **Re-score**: the samples still held for review (and those an earlier call promoted) are the
   pool the labeler adapts to; each gets its class probabilities.
3. **Promote**: a held sample the refitted labeler is now confident about (at least
   ``quality.min_confidence``, and the class its source gave, where it gave one) is labelled,
   with the labeler ``<seed labeler>+review`` (``seed+review``). It stays a new, collected
   label like any other: the audit sample of ``review --write`` and of the build draws from it
   and ALR counts it. Samples a verifier disputed, relabelled or left unverified are never
   promoted: the seed labeler's word alone does not overrule a check.
4. **Re-order**: ``review_priority`` puts the next most useful question first: samples proposed
   for a class still short of its target, and among them the least certain (the smallest
   margin between the two likeliest answers), where a person's answer changes the most.

It is deterministic (samples are taken in id order, the labeler's random state is fixed), and
idempotent: called again with no new decision, the seeds and the pool are the same, so the
scores are the same and nothing more is promoted. With no decision at all it changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from datasetagent.agents.review import HUMAN, Scores, review_priority
from datasetagent.agents.verification import DISPUTED, RELABELLED, UNVERIFIED
from datasetagent.errors import NoLabelerError
from datasetagent.models import NONE_LABEL
from datasetagent.models.seed import SeedClassifier, SeedFit
from datasetagent.records import ClassLabel, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore

log = logging.getLogger(__name__)

#: What the labeler name of a promoted sample ends with.
REVIEW_SUFFIX = "+review"
#: Review reasons written by verification: such a sample waits for a person, not a refit.
CHECKED_REASONS = (DISPUTED, RELABELLED, UNVERIFIED)
#: Images decoded and described at a time.
BATCH = 256


@dataclass(frozen=True)
class Learned:
    """What ``learn_from_decisions`` did."""

    #: Examples the labeler was refitted on (0: no refit).
    seeds: int = 0
    #: Of them, samples a person labelled.
    decisions: int = 0
    #: Samples re-scored (held for review, or promoted by an earlier call).
    rescored: int = 0
    #: Ids of the samples promoted from review to labelled by this call.
    promoted: tuple[str, ...] = ()
    #: The samples still held for review, most useful question first (``review_priority``).
    order: tuple[Sample, ...] = ()
    #: The refitted labeler's class probabilities for every re-scored sample.
    scores: Scores = field(default_factory=dict)
    #: How the labeler was refitted (None: it was not).
    fit: SeedFit | None = None
    #: Why nothing was learned, or None.
    skipped: str | None = None


def is_human(sample: Sample) -> bool:
    """Every label of ``sample`` is a person's (``human``, or a model's a person confirmed)."""
    return bool(sample.annotations) and all(
        a.labeler == HUMAN or a.labeler.endswith(f"+{HUMAN}") for a in sample.annotations
    )


def is_promoted(sample: Sample) -> bool:
    """``sample`` was labelled by a refit on review decisions (``learn_from_decisions``)."""
    return any(a.labeler.endswith(REVIEW_SUFFIX) for a in sample.annotations)


def _checked(sample: Sample) -> bool:
    return any(r.startswith(CHECKED_REASONS) for r in sample.review_reasons)


def _images(blobs: BlobStore, samples: Sequence[Sample]) -> list[Image.Image]:
    return [blobs.open_image(s.blob) for s in samples]


def learn_from_decisions(
    store: RunStore,
    blobs: BlobStore,
    spec: DatasetSpec,
    *,
    learner: SeedClassifier | None = None,
) -> Learned:
    """Refit the seed labeler on the existing dataset and the person's decisions, re-score
    the held-back samples, promote those now confident and return the new review order (see
    the module doc). ``learner``: an unfitted seed labeler configured as the run's (its
    embedder, say); by default the offline one on image features."""
    held = sorted(store.samples(status=["review"], origin="collected"), key=lambda s: s.id)
    have = store.label_counts(["labelled"])
    labelled = store.samples(status=["labelled"])
    people = sorted((s for s in labelled if s.origin != "existing" and is_human(s)), key=_id)

    def unchanged(why: str) -> Learned:
        order = tuple(review_priority(held, spec, have))
        return Learned(decisions=len(people), order=order, skipped=why)

    if spec.task != "classification":
        return unchanged("only a classification run's seed labeler learns from decisions")
    if not people:
        return unchanged("no decision made yet")
    seeds = (
        sorted((s for s in labelled if s.origin == "existing" and s.label is not None), key=_id)
        + people
    )
    seeds = [s for s in seeds if s.label is not None and spec.resolve_class(s.label) is not None]
    labels = [spec.resolve_class(s.label or "") or "" for s in seeds]
    model = learner or SeedClassifier()
    try:
        fit = model.fit(_images(blobs, seeds), labels)
    except NoLabelerError as exc:
        return unchanged(f"the seed labeler cannot refit: {exc}")
    promoted_before = sorted((s for s in labelled if is_promoted(s)), key=_id)
    pool = sorted([*held, *promoted_before], key=_id)
    model.adapt(_images(blobs, pool[i : i + BATCH]) for i in range(0, len(pool), BATCH))
    names = (*model.classes, NONE_LABEL)
    scores: dict[str, dict[str, float]] = {}
    for i in range(0, len(pool), BATCH):
        chunk = pool[i : i + BATCH]
        for s, row in zip(chunk, model.probabilities(_images(blobs, chunk)), strict=True):
            scores[s.id] = {n: float(p) for n, p in zip(names, row, strict=True)}
    labeler = f"{model.name}{REVIEW_SUFFIX}"
    promoted = [p for s in held if (p := _promote(s, scores[s.id], spec, labeler)) is not None]
    store.update_samples(promoted)
    done = {s.id for s in promoted}
    remaining = [s for s in held if s.id not in done]
    have = store.label_counts(["labelled"])
    log.info(
        "learned from %d decisions (%d seeds): %d of %d held samples promoted",
        len(people),
        len(seeds),
        len(promoted),
        len(held),
    )
    return Learned(
        seeds=fit.examples,
        decisions=len(people),
        rescored=len(pool),
        promoted=tuple(s.id for s in promoted),
        order=tuple(review_priority(remaining, spec, have, scores)),
        scores=scores,
        fit=fit,
    )


def _id(s: Sample) -> str:
    return s.id


def _promote(
    sample: Sample, probs: Mapping[str, float], spec: DatasetSpec, labeler: str
) -> Sample | None:
    """``sample`` labelled by the refitted labeler, or None where it stays held: not
    confident enough, "none of the classes", against its source's class, or held by a
    verifier's check."""
    if _checked(sample):
        return None
    top, p = min(probs.items(), key=lambda kv: (-kv[1], kv[0]))
    if top == NONE_LABEL or p < spec.quality.min_confidence:
        return None
    hint = sample.provenance.source_label
    if hint is not None and spec.resolve_class(hint) != top:
        return None
    return sample.model_copy(
        update={
            "status": "labelled",
            "annotations": (ClassLabel(label=top, confidence=p, labeler=labeler),),
            "review_reasons": (),
        }
    )
