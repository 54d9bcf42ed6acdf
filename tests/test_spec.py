from __future__ import annotations

import json
from pathlib import Path

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
    class_name_problem,
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


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("caf\u00e9", "cafe\u0301"),  # composed and combining accent: one folder on macOS
        ("Stra\u00dfe", "STRASSE"),  # case folding, not only lower case
        ("\uff21pple", "apple"),  # full-width letters
        ("\ufb01sh", "fish"),  # a ligature
    ],
)
def test_names_a_reader_cannot_tell_apart_are_one_class(a: str, b: str) -> None:
    """Two classes whose names look the same would export to folders that look the same (or
    to one folder where the file system normalises names), mixing their images."""
    with pytest.raises(SpecError, match="listed twice"):
        DatasetSpec.validated({"classes": [{"name": a}, {"name": b}]})
    spec = DatasetSpec.validated({"classes": [{"name": a}, {"name": "dog"}]})
    assert spec.resolve_class(b) == a


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


# -- issue 10: YAML switches, size bounds, class names, --set -----------------------------------
@pytest.mark.parametrize(
    ("word", "mode"),
    [("off", "off"), ("no", "off"), ("false", "off"), ("on", "auto"), ("true", "auto"),
     ("auto", "auto")],
)  # fmt: skip
def test_enhance_switch_words_in_yaml(word: str, mode: str) -> None:
    text = f"classes: [{{name: cat}}, {{name: dog}}]\nimage:\n  enhance: {word}\n"
    spec = DatasetSpec.from_yaml(text, origin="spec.yaml")
    assert spec.image.enhance == mode
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec  # written back as the word


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ([0, 0], "image size 0x0 is too small"),
        ([224, 4], "image size 224x4 is too small"),
        ([100000, 100000], "more than max_pixels (100000000)"),
    ],
)
def test_image_size_is_bounded_up_front(size: list[int], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        DatasetSpec.validated(
            {"classes": [{"name": "cat"}, {"name": "dog"}], "image": {"size": size}},
            origin="spec.yaml",
        )
    message = str(info.value)
    assert message.startswith("spec.yaml: image: ")
    assert fragment in message
    assert "\n" not in message


def test_image_size_bound_follows_max_pixels() -> None:
    image = {"size": [4000, 3000], "max_pixels": 12_000_000}
    assert make(image=image).image.size == (4000, 3000)
    with pytest.raises(SpecError, match="more than max_pixels"):
        DatasetSpec.validated({"classes": [{"name": "a"}], "image": {**image, "max_pixels": 10}})


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ca\x00t", "control character '\\x00'"),
        ("a\tb", "control character '\\t'"),
        ("x" * 201, "201 bytes long in UTF-8; at most 200"),
        ("é" * 101, "202 bytes long in UTF-8"),  # 101 characters, but 202 bytes
        ("a/b", "cannot be used as a folder name"),
        ("..", "cannot be used as a folder name"),
        ("  ", "cannot be empty"),
    ],
)
def test_class_names_must_make_file_names(name: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"classes": [{"name": "dog"}, {"name": name}]}), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        DatasetSpec.load(path)
    assert str(info.value).startswith(f"{path}: classes.1.name: ")
    assert fragment in str(info.value)
    assert class_name_problem(name.strip()) is not None
    assert class_name_problem("é" * 100) is None  # 200 bytes: the longest allowed


def test_with_settings_sets_dotted_paths_and_checks_them() -> None:
    spec = make()
    out = spec.with_settings(
        ["quality.min_confidence=0.8", "image.size=128,128", "enhance=off", "formats=hf,csv",
         "flag_only=blurry,dark", "budget.max_seconds=60"]
    )  # fmt: skip
    assert out.quality.min_confidence == 0.8
    assert out.image.size == (128, 128)
    assert out.image.enhance == "off"
    assert out.formats == ("hf", "csv")
    assert out.image.checks.flag_only == ("blurry", "dark")
    assert out.budget.max_seconds == 60
    assert out.classes == spec.classes
    assert spec.with_settings(["image.size=64x48"]).image.size == (64, 48)
    assert spec.with_settings(["image.size=96"]).image.size == (96, 96)
    assert spec.with_settings(["image.size=null"]).image.size is None


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("quality.min_confidenc=0.8", "no such setting in the spec; did you mean quality.min_conf"),
        ("colour=L", "--set colour: no such setting"),
        ("classes=a,b", "--set classes: no such setting"),
        ("min_confidence", "--set takes KEY=VALUE"),
        ("image.size=0,0", "image size 0x0 is too small"),
        ("image.size=100000x100000", "more than max_pixels"),
        ("quality.min_confidence=2", "quality.min_confidence: Input should be less than"),
        ("formats=coco", "the coco format cannot hold classification labels"),
    ],
)
def test_with_settings_errors_are_one_line(setting: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        make().with_settings([setting])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
