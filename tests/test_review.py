"""The human review queue's order (agents/review.py); the round trip through the command line
is in test_supervision_loop.py."""

from __future__ import annotations

from datasetagent.agents.review import review_order
from datasetagent.records import ClassLabel, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec


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
    order = review_order(queue, spec, {"shirt": 3, "coat": 7, "bag": 10})
    assert [s.id for s in order] == ["c", "d", "b", "a", "e"]
    # once every class is full, the most confident proposals lead
    order = review_order(queue, spec, dict.fromkeys(("shirt", "coat", "bag"), 10))
    assert [s.id for s in order] == ["a", "c", "d", "b", "e"]
