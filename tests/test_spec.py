from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from datasetagent.errors import SpecError
from datasetagent.records import RLE, Box, ClassLabel, Mask, Provenance, Sample
from datasetagent.spec import (
    ClassSpec,
    DatasetSpec,
    LicencePolicy,
    SourceSpec,
    SplitSpec,
    normalise_name,
    same_name,
)


def make(**kw: object) -> DatasetSpec:
    base: dict[str, object] = {"classes": [{"name": "cat"}, {"name": "dog", "target": 7}]}
    base.update(kw)
    return DatasetSpec.model_validate(base)


def test_round_trip_yaml_and_json() -> None:
    spec = make(
        task="detection",
        formats=["coco", "yolo"],
        sources=[{"kind": "local", "location": "/data/pool"}],
        splits={"train": 0.7, "val": 0.2, "test": 0.1, "seed": 3},
        image={"min_side": 28, "color_mode": "L", "size": [28, 28]},
        licences={"mode": "open"},
    )
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec
    assert DatasetSpec.from_json(spec.model_dump_json()) == spec
    assert spec.image.size == (28, 28)


def test_targets_fall_back_to_default() -> None:
    spec = make(target_per_class=40)
    assert spec.targets() == {"cat": 40, "dog": 7}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"classes": []}, "at least one class"),
        ({"classes": [{"name": "cat"}, {"name": "Cats"}]}, "listed twice"),
        ({"classes": [{"name": "cat", "synonyms": ["puss"]}, {"name": "puss"}]}, "names both"),
        ({"classes": [{"name": "a/b"}]}, "folder name"),
        (
            {"classes": [{"name": "cat"}], "splits": {"train": 0.5, "val": 0.1, "test": 0.1}},
            "add up to",
        ),
        ({"classes": [{"name": "cat"}], "task": "captioning"}, "task"),
        ({"classes": [{"name": "cat"}], "colour": "x"}, "colour"),
    ],
)
def test_invalid_specs_name_the_field(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        DatasetSpec.validated(data, origin="spec.yaml")
    msg = str(exc.value)
    assert fragment in msg
    assert msg.startswith("spec.yaml: ")
    assert "\n" not in msg


def test_yaml_errors_name_the_line(tmp_path: object) -> None:
    with pytest.raises(SpecError, match=r"bad.yaml line 3: not valid YAML"):
        DatasetSpec.from_yaml("classes:\n  - name: cat\n  - name: dog: x\n", origin="bad.yaml")


def test_resolve_class_by_synonym_plural_and_case() -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="bus", synonyms=("coach",)), ClassSpec(name="fox")))
    assert spec.resolve_class("Buses") == "bus"
    assert spec.resolve_class("coaches") == "bus"
    assert spec.resolve_class("FOXES") == "fox"
    assert spec.resolve_class("cat") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Traffic_Light", "traffic lights"),
        ("puppies", "puppy"),
        ("glass", "glass"),
        ("boxes", "box"),
    ],
)
def test_same_name(a: str, b: str) -> None:
    assert same_name(a, b)
    assert same_name(b, a)


def test_different_names() -> None:
    assert not same_name("cat", "cart")
    assert normalise_name(" Traffic__light ") == "traffic light"


def test_source_parse() -> None:
    assert SourceSpec.parse("photos/") == SourceSpec(kind="local", location="photos/")
    assert SourceSpec.parse("urls:list.txt") == SourceSpec(kind="urls", location="list.txt")


def test_licence_policy() -> None:
    assert LicencePolicy(mode="open").allows("CC-BY-SA-4.0")
    assert not LicencePolicy(mode="permissive").allows("CC-BY-SA-4.0")
    assert not LicencePolicy(mode="open").allows("all-rights-reserved")
    assert LicencePolicy(mode="permissive").allows("user-supplied")


@given(
    st.floats(0, 1, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
)
def test_split_shares_must_sum_to_one(train: float, val: float) -> None:
    if train + val > 1 + 1e-5:
        with pytest.raises(ValueError, match="add up"):
            SplitSpec(train=train, val=val, test=0.0)
    else:
        assume(1.0 - train - val >= 0)
        s = SplitSpec(train=train, val=val, test=1.0 - train - val)
        assert abs(sum(s.shares().values()) - 1) < 1e-6


def test_sample_with_every_annotation_kind_round_trips() -> None:
    sample = Sample(
        id="ab" * 32,
        blob="images/ab/x.png",
        width=64,
        height=48,
        mode="RGB",
        origin="collected",
        provenance=Provenance(
            source_kind="local", location="/p/x.jpg", licence="CC-BY-4.0", creator="A. Person"
        ).with_step("exif_orientation", orientation=6),
        annotations=(
            ClassLabel(label="cat", confidence=0.93, labeler="seed"),
            Box(label="cat", x=1, y=2, w=30, h=20, confidence=0.8, labeler="owlv2"),
            Mask(label="cat", rle=RLE(size=(48, 64), counts="0Q1"), labeler="sam"),
        ),
        status="labelled",
        split="val",
    )
    assert Sample.model_validate_json(sample.model_dump_json()) == sample
    assert sample.label == "cat"
    assert sample.provenance.steps[0].params == {"orientation": 6}
    with pytest.raises(ValueError, match="confidence"):
        ClassLabel(label="cat", confidence=1.5, labeler="seed")
