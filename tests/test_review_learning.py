"""Review decisions teach the seed labeler (agents/review_learning.py): refit on them, promote
the held samples it is now confident about (still audited), and re-order the queue."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from datasetagent.agents.review import HUMAN, apply_decisions, write_queue
from datasetagent.agents.review_learning import (
    REVIEW_SUFFIX,
    learn_from_decisions,
    review_priority,
)
from datasetagent.agents.verification import Verification
from datasetagent.models import NONE_LABEL
from datasetagent.models.seed import SeedClassifier
from datasetagent.pipeline import build, final_samples
from datasetagent.records import ClassLabel, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec
from datasetagent.store import BlobStore, RunStore
from test_pipeline import make_pool, spec_for


@dataclass
class Run:
    store: RunStore
    blobs: BlobStore
    spec: DatasetSpec
    truth: dict[str, str | None]
    dir: Path

    def true(self, s: Sample) -> str | None:
        return self.truth.get(s.provenance.location)

    def held(self) -> list[Sample]:
        return sorted(self.store.samples(status=["review"]), key=lambda s: s.id)

    def decide(self, samples: list[Sample]) -> None:
        """A person answers from the truth, through a queue file as ``review --apply``."""
        lines = []
        for s in samples:
            right = self.true(s)
            line = {"id": s.id, "kind": "review", "label": right, "decision": "relabel"}
            if right is None:
                line["decision"] = "reject"
            lines.append(json.dumps(line) + "\n")
        queue = self.dir.parent / f"decisions-{len(list(self.dir.parent.glob('*.jsonl')))}.jsonl"
        queue.write_text("".join(lines))
        apply_decisions(self.store, self.spec, queue)

    def snapshot(self) -> list[str]:
        return sorted(s.model_dump_json() for s in self.store.samples())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    """A digits run (4 classes, 10 seeds each, a pool of 40 each) with ~20 samples held."""
    root = tmp_path_factory.mktemp("learn")
    truth = make_pool(root / "data")
    build(spec_for(root / "data", target=50), root / "run", workers=1)
    return root / "run", truth


@pytest.fixture
def run(built: tuple[Path, dict[str, str | None]], tmp_path: Path) -> Iterator[Run]:
    """A fresh copy of the built run for each test."""
    folder = tmp_path / "run"
    shutil.copytree(built[0], folder)
    with RunStore(folder / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        yield Run(store, BlobStore(folder), spec, built[1], folder)


def test_no_decisions_change_nothing(run: Run) -> None:
    before = run.snapshot()
    assert len(run.held()) >= 10  # the fixture holds enough to learn from
    learned = learn_from_decisions(run.store, run.blobs, run.spec)
    assert learned.skipped == "no decision made yet"
    assert learned.promoted == ()
    assert learned.fit is None
    assert {s.id for s in learned.order} == {s.id for s in run.held()}
    assert run.snapshot() == before


def test_refit_learns_from_decisions_and_corrects_held_samples(run: Run) -> None:
    held = run.held()
    decided, rest = held[::2], [s for s in held[1::2] if run.true(s) is not None]
    # what the seed labeler says of the rest without the decisions (same seeds, same pool)
    existing = sorted(run.store.samples(origin="existing", status=["labelled"]), key=lambda s: s.id)
    alone = SeedClassifier()
    alone.fit([run.blobs.open_image(s.blob) for s in existing], [str(s.label) for s in existing])
    alone.adapt([[run.blobs.open_image(s.blob) for s in held]])
    probs = alone.probabilities([run.blobs.open_image(s.blob) for s in rest])
    before = {
        s.id: float(row[alone.classes.index(str(run.true(s)))])
        for s, row in zip(rest, probs, strict=True)
    }

    run.decide(decided)
    learned = learn_from_decisions(run.store, run.blobs, run.spec)
    people = [s for s in decided if run.true(s) is not None]
    assert learned.decisions == len(people)
    assert learned.fit is not None
    assert learned.seeds == len(existing) + len(people)
    wrong = [s for s in rest if s.label != run.true(s)]
    assert wrong  # the build got some of the rest wrong
    for s in wrong:  # each one the build got wrong: the truth is now far likelier
        after = learned.scores[s.id][str(run.true(s))]
        assert after > before[s.id] + 0.3, (s.id, before[s.id], after)
    now_right = [s for s in wrong if _top(learned.scores[s.id]) == run.true(s)]
    assert len(now_right) >= len(wrong) // 2


def _top(probs: dict[str, float] | object) -> str:
    assert isinstance(probs, dict)
    return str(min(probs.items(), key=lambda kv: (-kv[1], kv[0]))[0])


def test_promotes_only_the_confident_and_names_the_labeler(run: Run) -> None:
    held = run.held()
    run.decide(held[::2])
    learned = learn_from_decisions(run.store, run.blobs, run.spec)
    assert learned.promoted
    floor = run.spec.quality.min_confidence
    for sid in learned.promoted:
        s = run.store.find_sample(sid)
        assert s is not None
        assert s.status == "labelled"
        assert s.review_reasons == ()
        (ann,) = s.annotations
        assert isinstance(ann, ClassLabel)
        assert ann.labeler == f"seed{REVIEW_SUFFIX}"
        assert ann.confidence >= floor
        assert ann.label == _top(learned.scores[sid])
    for s in learned.order:  # what stays held: not confident, or "none of the classes"
        scores = learned.scores[s.id]
        assert max(scores.values()) < floor or _top(scores) == NONE_LABEL
        assert run.store.find_sample(s.id).status == "review"  # type: ignore[union-attr]


def test_a_higher_threshold_promotes_nothing_it_does_not_reach(run: Run) -> None:
    run.decide(run.held()[::2])
    quality = run.spec.quality.model_copy(update={"min_confidence": 0.999})
    strict = run.spec.model_copy(update={"quality": quality})
    learned = learn_from_decisions(run.store, run.blobs, strict)
    assert learned.promoted == ()
    assert all(max(p.values()) < 0.999 for p in learned.scores.values())


def test_a_source_class_or_a_check_keeps_a_sample_held(
    built: tuple[Path, dict[str, str | None]], tmp_path: Path, run: Run
) -> None:
    run.decide(run.held()[::2])
    promoted = learn_from_decisions(run.store, run.blobs, run.spec).promoted
    assert len(promoted) >= 2
    # a twin of the run with the same decisions, where the source named another class for
    # one of the samples promoted above, and a verifier disputed another
    shutil.copytree(built[0], tmp_path / "twin")
    with RunStore(tmp_path / "twin" / "run.db") as store:
        twin = Run(store, BlobStore(tmp_path / "twin"), run.spec, run.truth, tmp_path / "twin")
        twin.decide(twin.held()[::2])
        first, second = (store.find_sample(i) for i in promoted[:2])
        assert first is not None
        assert second is not None
        promoted_first = run.store.find_sample(first.id)
        assert promoted_first is not None
        other = next(c for c in run.spec.class_names if c != promoted_first.label)
        hinted = first.provenance.model_copy(update={"source_label": other})
        store.update_samples(
            [
                first.model_copy(update={"provenance": hinted}),
                second.model_copy(update={"review_reasons": ("disputed by clip: 2",)}),
            ]
        )
        again = learn_from_decisions(store, twin.blobs, run.spec)
        assert set(again.promoted) == set(promoted) - {first.id, second.id}
        assert {first.id, second.id} <= {s.id for s in again.order}
        # the class the source gave, when the labeler agrees, is no obstacle
        agree = first.provenance.model_copy(update={"source_label": promoted_first.label})
        store.update_samples([first.model_copy(update={"provenance": agree})])
        assert learn_from_decisions(store, twin.blobs, run.spec).promoted == (first.id,)


def test_promoted_samples_are_audited_and_counted_in_alr(tmp_path: Path, run: Run) -> None:
    run.decide(run.held()[::2])
    promoted = set(learn_from_decisions(run.store, run.blobs, run.spec).promoted)
    assert promoted
    queue = tmp_path / "queue.jsonl"
    write_queue(run.store, run.spec, run.blobs, queue, audit_size=10_000)
    lines = [json.loads(x) for x in queue.read_text().splitlines()]
    audit = {x["id"]: x for x in lines if x["kind"] == "audit"}
    assert promoted <= audit.keys()  # the audit sample may draw every one of them
    for sid in promoted:
        line = audit[sid]
        right = run.truth[run.store.find_sample(sid).provenance.location]  # type: ignore[union-attr]
        line["decision"] = "accept" if right == line["label"] else "relabel"
        line["label"] = right
    queue.write_text("".join(json.dumps(x) + "\n" for x in lines))
    apply_decisions(run.store, run.spec, queue)
    audits = {a.sample_id for a in run.store.audits("audit") if a.checker == HUMAN}
    assert promoted <= audits
    exported = final_samples(run.store, run.spec)
    alr = Verification(run.store, run.spec, lambda s: run.blobs.open_image(s.blob)).alr(exported)
    assert alr is not None
    exported_promoted = promoted & {s.id for s in exported}
    assert exported_promoted
    assert alr.audited == len(audits & {s.id for s in exported})


def test_called_again_without_new_decisions_changes_nothing(run: Run) -> None:
    run.decide(run.held()[::2])
    first = learn_from_decisions(run.store, run.blobs, run.spec)
    assert first.promoted
    snapshot = run.snapshot()
    again = learn_from_decisions(run.store, run.blobs, run.spec)
    assert again.promoted == ()
    assert again.scores == first.scores
    assert [s.id for s in again.order] == [s.id for s in first.order]
    assert run.snapshot() == snapshot


def held(name: str, label: str | None, confidence: float) -> Sample:
    anns = (
        () if label is None else (ClassLabel(label=label, confidence=confidence, labeler="seed"),)
    )
    return Sample(
        id=name,
        blob=f"images/{name}.png",
        width=8,
        height=8,
        mode="L",
        origin="collected",
        status="review",
        provenance=Provenance(source_kind="local", location=f"/pool/{name}.png", licence="x"),
        annotations=anns,
    )


def test_priority_puts_short_classes_and_uncertain_samples_first() -> None:
    spec = DatasetSpec(
        classes=(ClassSpec(name="shirt"), ClassSpec(name="coat"), ClassSpec(name="bag")),
        target_per_class=10,
    )
    queue = [
        held("a", "bag", 0.6),
        held("b", "shirt", 0.8),
        held("c", "shirt", 0.8),
        held("d", "coat", 0.7),
        held("e", "bag", 0.8),
        held("f", None, 0.0),
    ]
    scores = {
        "a": {"shirt": 0.44, "bag": 0.40, "coat": 0.1, NONE_LABEL: 0.06},  # now a shirt?
        "b": {"shirt": 0.85, "coat": 0.1, "bag": 0.05, NONE_LABEL: 0.0},  # sure: asked last
        "c": {"shirt": 0.49, "coat": 0.47, "bag": 0.04, NONE_LABEL: 0.0},  # torn: asked first
        "d": {"coat": 0.7, "shirt": 0.2, "bag": 0.1, NONE_LABEL: 0.0},
        "e": {"bag": 0.6, "coat": 0.35, "shirt": 0.0, NONE_LABEL: 0.05},
    }
    have = {"shirt": 3, "coat": 10, "bag": 10}  # shirt is short
    order = review_priority(queue, spec, have, scores)
    assert [s.id for s in order] == ["c", "a", "b", "f", "e", "d"]
    # without scores (no decision yet): the stored confidence stands for the margin
    assert [s.id for s in review_priority(queue, spec, have)] == ["b", "c", "f", "a", "d", "e"]


def test_the_review_app_learns_every_k_decisions_and_orders_by_what_it_learned(
    run: Run,
) -> None:
    from datasetagent.agents.review import review_priority
    from datasetagent.review_app.session import ReviewSession

    session = ReviewSession(run.dir, audit_size=0, refit_every=4)
    session.on_decisions = session.learn  # as `review --serve` wires it
    held = run.held()
    for s in held[:4]:
        right = run.true(s)
        if right is None:
            session.decide(s.id, "reject")
        else:
            session.decide(s.id, "relabel", right)
    assert session.scores  # the fourth decision taught the labeler and re-scored the rest
    left = run.store.samples(status=["review"])
    want = review_priority(left, run.spec, run.store.label_counts(["labelled"]), session.scores)
    assert [i["id"] for i in session.queue()] == [s.id for s in want]


def test_review_apply_teaches_the_labeler(run: Run) -> None:
    import subprocess
    import sys

    held = run.held()[:6]
    lines = [
        json.dumps({"id": s.id, "kind": "review", "decision": "relabel", "label": run.true(s)})
        for s in held
        if run.true(s) is not None
    ]
    queue = run.dir.parent / "apply.jsonl"
    queue.write_text("\n".join(lines) + "\n")
    before = run.store.reports()[-1]
    assert f"Held back for review: {before.review};" in (run.dir / "report.html").read_text()
    run.store.close()
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "review", str(run.dir), "--apply", str(queue)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"the labeler learned from {len(lines)} decision(s): " in out.stderr
    # the finished run's report is written again with the decisions
    page = (run.dir / "report.html").read_text()
    with RunStore(run.dir / "run.db") as store:
        last = store.reports()[-1]
    assert last.review != before.review
    assert f"Held back for review: {last.review};" in page
    assert "report written again" in out.stderr
