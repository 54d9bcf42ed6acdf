from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datasetagent.export.splits import assign_splits, largest_remainder, split_quotas
from datasetagent.metrics import cbi, wilson_interval
from datasetagent.records import ClassLabel, Provenance, Sample
from datasetagent.spec import SplitSpec


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"a": 50, "b": 50}, 0.0),
        ({"a": 10, "b": 10, "c": 10}, 0.0),
        ({"a": 10, "b": 0}, 1.0),
        ({"a": 7}, 0.0),
        ({"a": 0, "b": 0}, 1.0),
        # H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335; 1 - H/ln 2 = 0.188722
        ({"a": 75, "b": 25}, 0.188722),
    ],
)
def test_cbi(counts: dict[str, int], expected: float) -> None:
    assert cbi(counts) == pytest.approx(expected, abs=1e-6)


def test_cbi_target_is_a_tight_balance() -> None:
    assert cbi({"a": 100, "b": 100, "c": 100, "d": 100}) <= 0.021
    assert cbi({"a": 100, "b": 100, "c": 100, "d": 60}) > 0.007


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.8882, abs=1e-3)
    assert hi == pytest.approx(0.9785, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@given(st.integers(0, 500), st.lists(st.floats(0.01, 1), min_size=1, max_size=5))
def test_largest_remainder_sums_exactly(total: int, weights: list[float]) -> None:
    counts = largest_remainder(total, weights)
    assert sum(counts) == total
    for c, w in zip(counts, weights, strict=True):
        assert abs(c - total * w / sum(weights)) < 1 + 1e-9


def _sample(i: int, label: str, split: str | None = None) -> Sample:
    return Sample.model_validate(
        {
            "id": f"{i:064x}",
            "blob": "x.png",
            "width": 1,
            "height": 1,
            "mode": "L",
            "origin": "existing" if split else "collected",
            "provenance": Provenance(source_kind="local", location=f"/p/{i}", licence="x"),
            "annotations": [ClassLabel(label=label, labeler="t")],
            "status": "labelled",
            "split": split,
        }
    )


def test_splits_are_stratified_seeded_and_order_free() -> None:
    samples = [_sample(i, "ab"[i % 2]) for i in range(200)]
    spec = SplitSpec(train=0.7, val=0.2, test=0.1, seed=5)
    a = assign_splits(samples, spec)
    b = assign_splits(list(reversed(samples)), spec)
    assert {s.id: s.split for s in a} == {s.id: s.split for s in b}
    counts = Counter((s.label, s.split) for s in a)
    for label in "ab":
        assert (counts[(label, "train")], counts[(label, "val")], counts[(label, "test")]) == (
            70,
            20,
            10,
        )
    other = assign_splits(samples, SplitSpec(train=0.7, val=0.2, test=0.1, seed=6))
    assert {s.id: s.split for s in other} != {s.id: s.split for s in a}


def test_existing_splits_are_kept_and_new_samples_fill_the_gaps() -> None:
    fixed = [_sample(i, "a", "train") for i in range(8)]
    new = [_sample(100 + i, "a") for i in range(12)]
    out = assign_splits(fixed + new, SplitSpec(train=0.5, val=0.25, test=0.25))
    by_id = {s.id: s.split for s in out}
    assert all(by_id[s.id] == "train" for s in fixed)
    assert Counter(by_id.values()) == {"train": 10, "val": 5, "test": 5}


def test_small_classes_still_reach_every_split() -> None:
    assert split_quotas(3, [0.8, 0.1, 0.1]) == [1, 1, 1]
    assert split_quotas(2, [0.8, 0.1, 0.1]) == [2, 0, 0]
    assert sum(split_quotas(11, [0.8, 0.1, 0.1])) == 11
    assert math.isclose(sum(split_quotas(0, [0.8, 0.1, 0.1])), 0)
