"""The human review queue (agents/review.py): its order, and decisions on detection and
segmentation samples; the round trip through the command line is in test_supervision_loop.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datasetagent.agents.review import (
    MIXED_OBJECTS,
    NO_OBJECTS,
    apply_decisions,
    review_priority,
    write_queue,
)
from datasetagent.pipeline import build, final_samples
from datasetagent.records import ClassLabel, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec
from datasetagent.store import BlobStore, RunStore


def held(name: str, label: str, confidence: float) -> Sample:
    return Sample(
        id=name,
        blob=f"images/{name}.png",
        width=8,
        height=8,
        mode="L",
        origin="collected",
        status="review",
        provenance=Provenance(source_kind="local", location=f"/pool/{name}.png", licence="x"),
        annotations=(ClassLabel(label=label, confidence=confidence, labeler="seed"),),
    )


def test_held_back_samples_that_fill_short_classes_come_first() -> None:
    spec = DatasetSpec(
        classes=(ClassSpec(name="shirt"), ClassSpec(name="coat"), ClassSpec(name="bag")),
        target_per_class=10,
    )
    queue = [
        held("a", "bag", 0.89),
        held("b", "shirt", 0.60),
        held("c", "coat", 0.85),
        held("d", "shirt", 0.80),
        held("e", "bag", 0.50),
    ]
    order = review_priority(queue, spec, {"shirt": 3, "coat": 7, "bag": 10})
    assert [s.id for s in order] == ["b", "d", "c", "e", "a"]
    # once every class is full, the least certain proposals lead: an answer teaches most there
    order = review_priority(queue, spec, dict.fromkeys(("shirt", "coat", "bag"), 10))
    assert [s.id for s in order] == ["e", "b", "d", "c", "a"]


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_decisions_in_a_detection_run_keep_the_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    """accept keeps boxes and masks as they are, relabel gives every object the new class; a
    sample without objects, or whose objects are of several classes, is not turned into an
    image-level label: the decision is counted as not applied, with its reason."""
    from datasetagent.models import BACKENDS
    from test_backends_pipeline import ColourDetector, ColourSegmenter, _squares, _squares_spec

    _squares(tmp_path / "pool", 12)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    monkeypatch.setitem(BACKENDS._items, "colour-masks", ColourSegmenter)
    spec = _squares_spec(tmp_path / "pool", task)
    run = tmp_path / "run"
    labelers = ["colour-squares", "colour-masks"] if task == "segmentation" else ["colour-squares"]
    build(spec, run, labelers=labelers, workers=1)
    with RunStore(run / "run.db") as store:
        labelled = store.samples(status=["labelled"])
        one = [s for s in labelled if {a.label for a in s.annotations} == {"red"}]
        mixed = [s for s in labelled if {a.label for a in s.annotations} == {"red", "blue"}]
        single, both, other = one[0], mixed[0], mixed[1]
        empty = mixed[2].model_copy(update={"annotations": (), "status": "review"})
        empty2 = one[1].model_copy(update={"annotations": (), "status": "review"})
        store.update_samples([empty, empty2])
        queue = tmp_path / "queue.jsonl"
        write_queue(store, spec, BlobStore(run), queue, audit_size=len(labelled))
        lines = {x["id"]: x for x in map(json.loads, queue.read_text().splitlines())}
        assert lines[single.id]["objects"] == [
            {"label": "red", "box": list(_box(a))} for a in single.annotations
        ]
        assert lines[empty.id]["objects"] == []
        decided = [
            {**lines[single.id], "decision": "relabel", "label": "blue"},
            {**lines[both.id], "decision": "accept", "label": both.label},
            {**lines[other.id], "decision": "relabel", "label": "blue"},
            {**lines[empty.id], "decision": "accept", "label": "red"},
            {**lines[mixed[3].id], "decision": "accept", "label": None},  # objects as shown
            {**lines[empty2.id], "decision": "accept", "label": None},  # one decision a sample
        ]
        queue.write_text("".join(json.dumps(x) + "\n" for x in decided))
        done = apply_decisions(store, spec, queue)
        assert done.applied == {"accept": 2, "relabel": 1, "reject": 0}
        assert done.not_applied == {NO_OBJECTS: 2, MIXED_OBJECTS: 1}
        after = {s.id: s for s in store.samples()}
    relabelled = after[single.id]
    assert [a.label for a in relabelled.annotations] == ["blue"] * len(single.annotations)
    assert [_box(a) for a in relabelled.annotations] == [_box(a) for a in single.annotations]
    assert [type(a) for a in relabelled.annotations] == [type(a) for a in single.annotations]
    assert all(a.labeler.endswith("+human") for a in relabelled.annotations)
    accepted = after[both.id]
    assert [(a.label, _box(a)) for a in accepted.annotations] == [
        (a.label, _box(a)) for a in both.annotations
    ]
    assert accepted.status == "labelled"
    assert [(a.label, _box(a)) for a in after[mixed[3].id].annotations] == [
        (a.label, _box(a)) for a in mixed[3].annotations
    ]
    assert after[other.id] == other  # not applied: unchanged
    assert after[empty.id] == empty
    assert after[empty2.id] == empty2
    assert not any(isinstance(a, ClassLabel) for s in after.values() for a in s.annotations)
    # the exported dataset still has the objects of every decided sample
    with RunStore(run / "run.db") as store:
        exported = {s.id: s for s in final_samples(store, spec)}
    assert {single.id, both.id} <= exported.keys()
    for sid in (single.id, both.id):
        assert exported[sid].annotations == after[sid].annotations

    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "review", str(run), "--apply", str(queue)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"not applied: 2 decision(s): {NO_OBJECTS}" in out.stderr
    assert f"not applied: 1 decision(s): {MIXED_OBJECTS}" in out.stderr


def _box(ann: object) -> tuple[float, float, float, float]:
    from datasetagent.records import Box, Mask
    from datasetagent.tools.masks import rle_bbox

    if isinstance(ann, Box):
        return ann.x, ann.y, ann.w, ann.h
    assert isinstance(ann, Mask)
    return rle_bbox(ann.rle)
