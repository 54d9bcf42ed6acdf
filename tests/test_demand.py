"""Demand Analysis, rule path: request text -> DatasetSpec."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datasetagent.agents.demand import DemandAnalyst, parse_request
from datasetagent.errors import ConfigError, SpecError
from datasetagent.spec import (
    DEFAULT_MIN_SIDE,
    DEFAULT_TARGET_PER_CLASS,
    DatasetProfile,
    DatasetSpec,
    SourceSpec,
)

DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}


def fields(spec: DatasetSpec) -> dict[str, Any]:
    """The fields the tables below check, in comparable form."""
    return {
        "classes": list(spec.class_names),
        "targets": list(spec.targets().values()),
        "task": spec.task,
        "formats": list(spec.formats),
        "licence": spec.licences.mode,
        "split": spec.splits.shares(),
        "min_side": spec.image.min_side,
        "size": spec.image.size,
        "mode": spec.image.color_mode,
    }


# request -> the fields that differ from a plain classification spec of 100 per class
GOOD: list[tuple[str, dict[str, Any]]] = [
    ("cats, dogs and horses, 200 images per class",
     {"classes": ["cats", "dogs", "horses"], "targets": [200, 200, 200]}),
    ("a dataset of bicycles and scooters", {"classes": ["bicycles", "scooters"]}),
    ("classes: cat, dog, horse", {"classes": ["cat", "dog", "horse"]}),
    ("between apples and oranges", {"classes": ["apples", "oranges"]}),
    ("with classes cat/dog", {"classes": ["cat", "dog"]}),
    ('"red fox", "arctic fox"', {"classes": ["red fox", "arctic fox"]}),
    ("Images of Traffic Lights and stop signs, 50 each",
     {"classes": ["traffic lights", "stop signs"], "targets": [50, 50]}),
    ("cats, dogs and horses, 1k in total",
     {"classes": ["cats", "dogs", "horses"], "targets": [334, 333, 333]}),
    ("1,000 images of cats and dogs", {"classes": ["cats", "dogs"], "targets": [500, 500]}),
    ("photos of apples, pears and plums, 2.5k total",
     {"classes": ["apples", "pears", "plums"], "targets": [834, 833, 833]}),
    ("total of 300: cats, dogs", {"classes": ["cats", "dogs"], "targets": [150, 150]}),
    ("cats and dogs, 200 of each", {"classes": ["cats", "dogs"], "targets": [200, 200]}),
    ("500 images each of cats and dogs", {"classes": ["cats", "dogs"], "targets": [500, 500]}),
    ("100 cats and 50 dogs", {"classes": ["cats", "dogs"], "targets": [100, 50]}),
    ("cats, dogs and horses, 200 per class, 600 in total",
     {"classes": ["cats", "dogs", "horses"], "targets": [200, 200, 200]}),
    ("3 classes: cat, dog, horse", {"classes": ["cat", "dog", "horse"]}),
    ("detect cars and pedestrians in street scenes",
     {"classes": ["cars", "pedestrians"], "task": "detection", "formats": ["coco"]}),
    ("bounding boxes around cats and dogs, YOLO format",
     {"classes": ["cats", "dogs"], "task": "detection", "formats": ["yolo"]}),
    ("cardboard boxes and bags", {"classes": ["cardboard boxes", "bags"]}),
    ("instance segmentation of cats and dogs with masks",
     {"classes": ["cats", "dogs"], "task": "segmentation", "formats": ["coco"]}),
    ("detect and segment cats and dogs",
     {"classes": ["cats", "dogs"], "task": "segmentation", "formats": ["coco"]}),
    ("detect cats and dogs in COCO format", {"classes": ["cats", "dogs"], "task": "detection",
                                             "formats": ["coco"]}),
    ("object detection of cats and dogs, pascal voc and coco",
     {"classes": ["cats", "dogs"], "task": "detection", "formats": ["voc", "coco"]}),
    ("image classification of cats and dogs as imagefolder and hugging face parquet",
     {"classes": ["cats", "dogs"], "formats": ["imagefolder", "hf"]}),
    ("openly licensed photos of cats and dogs", {"classes": ["cats", "dogs"], "licence": "open"}),
    ("creative commons pictures of owls and larks",
     {"classes": ["owls", "larks"], "licence": "open"}),
    ("cats and dogs for commercial use", {"classes": ["cats", "dogs"], "licence": "permissive"}),
    ("CC0/public domain only: cats, dogs", {"classes": ["cats", "dogs"], "licence": "permissive"}),
    ("cats and dogs, 70/20/10 split",
     {"classes": ["cats", "dogs"], "split": {"train": 0.7, "val": 0.2, "test": 0.1}}),
    ("cats and dogs, train/val/test 0.7/0.15/0.15",
     {"classes": ["cats", "dogs"], "split": {"train": 0.7, "val": 0.15, "test": 0.15}}),
    ("cats vs dogs, 80/20", {"classes": ["cats", "dogs"],
                             "split": {"train": 0.8, "val": 0.2, "test": 0.0}}),
    ("cats and dogs, train/test 90/10",
     {"classes": ["cats", "dogs"], "split": {"train": 0.9, "val": 0.0, "test": 0.1}}),
    ("cats and dogs, 60% train, 40% test",
     {"classes": ["cats", "dogs"], "split": {"train": 0.6, "val": 0.0, "test": 0.4}}),
    ("cats and dogs, at least 224 px", {"classes": ["cats", "dogs"], "min_side": 224}),
    ("greyscale cats and dogs, min 64x48", {"classes": ["cats", "dogs"], "min_side": 48,
                                            "mode": "L"}),
    ("cats and dogs resized to 224x224", {"classes": ["cats", "dogs"], "size": (224, 224)}),
    ("classify dog breeds: golden retriever, beagle, poodle. 30 of each",
     {"classes": ["golden retriever", "beagle", "poodle"], "targets": [30, 30, 30]}),
    ("detect hard hats and safety vests on construction sites",
     {"classes": ["hard hats", "safety vests"], "task": "detection"}),
    ("I'd like a dataset of cats and dogs, please.", {"classes": ["cats", "dogs"]}),
]  # fmt: skip


@pytest.mark.parametrize(("request_text", "expected"), GOOD, ids=[r for r, _ in GOOD])
def test_request_table(request_text: str, expected: dict[str, Any]) -> None:
    want: dict[str, Any] = {
        "targets": [DEFAULT_TARGET_PER_CLASS] * len(expected["classes"]), "task": "classification",
        "formats": ["imagefolder"], "licence": "open", "split": DEFAULT_SPLIT,
        "min_side": DEFAULT_MIN_SIDE, "size": None, "mode": "RGB",
    }  # fmt: skip
    if expected.get("task", "classification") != "classification":
        want["formats"] = ["coco"]
    want.update(expected)
    spec = parse_request(request_text)
    assert fields(spec) == want
    assert spec.request == request_text


BAD: list[tuple[str, str]] = [
    # a format never changes the task the request asks for (here: none, so classification)
    ("cats and dogs in COCO format", "the coco format holds boxes or masks, but the request"),
    ("cats and dogs, YOLO", "the yolo format holds boxes or masks"),
    ("", "could not find any classes"),
    ("top 5 dog breeds", "needs at least two classes"),
    ("bicycles", 'ask for detection ("detect bicycles")'),
    ("please make me a dataset", "could not find any classes"),
    ("a classification and segmentation dataset of cats", "both classification and segmentation"),
    ("classify and detect cats and dogs", "both classification and detection"),
    ("cats and cats", 'class "cats" is listed twice'),
    ("cats, dogs and cat", '"cats" and "cat" name the same class'),
    ("cats, dogs and horses, 200 per class, 1k in total", "does not add up"),
    ("cats and dogs, 0 images per class", "not a usable count"),
    ("cats and dogs, -5 images per class", "not a usable count"),
    ("cats and dogs, 2.5 images per class", "not a usable count"),
    ("cats and dogs, 200 per class, 300 per class", "two different counts per class"),
    ("cats and dogs, 1 image in total", "cannot cover"),
    ("detect cats and dogs, imagefolder", "imagefolder format cannot hold detection"),
    ("classify cats and dogs in YOLO format", "yolo format cannot hold classification"),
    ("cats and dogs, 80/10/5", "adds up to 95, not 100"),
    ("cats and dogs, 0.5/0.2", "not 100"),
    ("cats and dogs, 80/10/10 split, 70/20/10", "two splits"),
    ("cats and dogs, greyscale, in colour", "both colour and greyscale"),
    ("cats and dogs, 3 classes", "says 3 classes but names 2"),
    ("cats and dogs, 200", "could not tell what 200 counts"),
    ('cats, "a/b"', "cannot be used as a folder name"),
    ("cats and dogs, at least 0 px", "minimum image size"),
    ('cats, ".."', "cannot be used as a folder name"),
]


@pytest.mark.parametrize(("request_text", "message"), BAD, ids=[r for r, _ in BAD])
def test_bad_requests_say_what_and_show_an_example(request_text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_request(request_text)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert 'e.g. datasetagent plan "' in text


def test_example_in_error_messages_works() -> None:
    with pytest.raises(SpecError) as info:
        parse_request("please make me a dataset")
    example = str(info.value).split('datasetagent plan "')[1].rstrip('"')
    assert parse_request(example).targets() == {"cats": 200, "dogs": 200, "horses": 200}


def test_class_names_synonyms_prompts_and_name() -> None:
    spec = parse_request('cats, "Red Fox", people and buses, 2 each')
    got = [(c.name, c.synonyms, c.prompt) for c in spec.classes]
    assert got == [
        ("cats", ("cat",), "a photo of a cat"),
        ("Red Fox", ("Red Foxes",), "a photo of a Red Fox"),
        ("people", ("person",), "a photo of a person"),
        ("buses", ("bus",), "a photo of a bus"),
    ]
    assert spec.name == "cat-red-fox-person-bus"
    assert parse_request("ants, bees, cats, dogs and eels").name == "ant-bee-cat-and-2-more"
    assert parse_request("cats, dogs and horses").name == "cat-dog-horse"
    assert parse_request("sheep and owls").classes[0].synonyms == ()
    assert parse_request("an owl and a lark").classes[0].prompt == "a photo of an owl"


def test_sources_are_kept() -> None:
    sources = [SourceSpec(kind="local", location="/data/pool"), SourceSpec.parse("openverse:cat")]
    spec = parse_request("cats and dogs", sources=sources)
    assert spec.sources == tuple(sources)


# -- expanding an existing dataset -------------------------------------------------------------
@pytest.fixture
def digits() -> DatasetProfile:
    """28×28 greyscale digits with train/test folders."""
    return DatasetProfile(
        path="/data/digits",
        class_counts={str(d): 50 + d for d in range(10)},
        split_counts={"train": 600, "test": 100},
        common_size=(28, 28),
        min_side=28,
        color_mode="L",
    )


def test_expansion_inherits_what_the_request_leaves_out(digits: DatasetProfile) -> None:
    spec = parse_request("", existing=digits)
    assert spec.class_names == tuple(str(d) for d in range(10))
    assert spec.existing == "/data/digits"
    assert spec.task == "classification"
    assert (spec.image.min_side, spec.image.size, spec.image.color_mode) == (28, (28, 28), "L")
    assert spec.splits.shares() == {"train": 0.86, "val": 0.0, "test": 0.14}
    assert set(spec.targets().values()) == {59}  # balanced up to the largest class


def test_expansion_split_shares_add_up_to_one_exactly() -> None:
    prof = DatasetProfile(
        path="d",
        class_counts={"a": 3, "b": 3},
        split_counts={"train": 2, "val": 2, "test": 2},
        min_side=64,
        color_mode="RGB",
    )
    shares = parse_request("", existing=prof).splits.shares()
    assert shares == {"train": 0.34, "val": 0.33, "test": 0.33}
    assert parse_request("", existing=prof).image.min_side == DEFAULT_MIN_SIDE


@pytest.mark.parametrize(
    ("request_text", "targets"),
    [
        ("expand to 300 per class", {str(d): 300 for d in range(10)}),
        ("300 images per class", {str(d): 300 for d in range(10)}),
        ("add 50 images per class", {str(d): 100 + d for d in range(10)}),
        ("50 more per class", {str(d): 100 + d for d in range(10)}),
        ("add 100 images", {str(d): 60 + d for d in range(10)}),
        ("1000 images in total", {str(d): 100 for d in range(10)}),
        ("add 200 images of zebras", {**{str(d): 59 for d in range(10)}, "zebras": 200}),
        (
            "add 300 images of zebras and okapis",
            {**{str(d): 59 for d in range(10)}, "zebras": 150, "okapis": 150},
        ),
        ('more "3" and "7", 80 per class', {str(d): 80 for d in range(10)}),
    ],
)
def test_expansion_counts(
    digits: DatasetProfile, request_text: str, targets: dict[str, int]
) -> None:
    assert parse_request(request_text, existing=digits).targets() == targets


def test_expansion_adds_new_classes_and_keeps_old_ones() -> None:
    prof = DatasetProfile(
        path="pets", class_counts={"cat": 10, "dog": 12}, min_side=100, color_mode="RGB"
    )
    spec = parse_request("add cats, rabbits and hamsters, 20 per class", existing=prof)
    assert spec.class_names == ("cat", "dog", "rabbits", "hamsters")
    assert set(spec.targets().values()) == {20}
    assert spec.image.min_side == DEFAULT_MIN_SIDE
    assert spec.image.size is None


def test_expansion_explicit_request_wins(digits: DatasetProfile) -> None:
    spec = parse_request("in colour, at least 64 px, 70/15/15", existing=digits)
    assert (spec.image.color_mode, spec.image.min_side) == ("RGB", 64)
    assert spec.splits.shares() == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_expansion_with_another_task_is_an_error(digits: DatasetProfile) -> None:
    with pytest.raises(SpecError, match="existing dataset is for classification"):
        parse_request("detect the digits", existing=digits)
    boxes = digits.model_copy(update={"task": "detection"})
    with pytest.raises(SpecError, match="existing dataset is for detection"):
        parse_request("segment the digits", existing=boxes)


def test_a_segmentation_dataset_serves_a_detection_request(digits: DatasetProfile) -> None:
    """A COCO instances file has masks and boxes; asked for detection, its masks give boxes."""
    masks = digits.model_copy(update={"task": "segmentation"})
    assert parse_request("detect the digits", existing=masks).task == "detection"
    assert parse_request("add 10 per class", existing=masks).task == "segmentation"


def test_existing_folders_that_name_one_class_are_an_error() -> None:
    prof = DatasetProfile(path="p", class_counts={"cat": 1, "cats": 1}, min_side=9, color_mode="L")
    with pytest.raises(SpecError, match="name the same class"):
        parse_request("", existing=prof)


# -- the agent ---------------------------------------------------------------------------------
def test_analyst_plans_by_rule(digits: DatasetProfile) -> None:
    spec = DemandAnalyst().plan("add 10 images per class", existing=digits)
    assert spec == parse_request("add 10 images per class", existing=digits)


def test_analyst_checks_its_llm_model_string_before_any_request() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ollama'"):
        DemandAnalyst(llm="olama:qwen2.5:7b")
    assert DemandAnalyst().usage.calls == 0


# -- properties --------------------------------------------------------------------------------
WORDS = st.sampled_from([
    "cats", "dogs", "and", "or", ",", "200", "1k", "images", "per", "class", "each", "total", "of",
    "in", "coco", "yolo", "voc", "detect", "segment", "classify", "/", "80/10/10", "70/30", "px",
    "64x64", "greyscale", "open", "commercial", '"', ":", ".", "add", "more", "0", "-3", "2.5",
    "classes:", "between", "with", "red", "fox", "traffic", "light",
])  # fmt: skip
TEXT = st.one_of(st.text(max_size=80), st.lists(WORDS, max_size=14).map(" ".join))


def check_plan(text: str, existing: DatasetProfile | None) -> None:
    try:
        spec = parse_request(text, existing=existing)
    except SpecError as exc:
        message = str(exc)
    else:
        assert DatasetSpec.from_yaml(spec.to_yaml()) == spec
        assert all(t >= 1 for t in spec.targets().values())
        return
    assert "\n" not in message
    assert "e.g." in message or "existing dataset" in message


@given(TEXT)
@example('"a"\n"b", 3 classes')
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_gives_a_spec_that_round_trips_or_a_spec_error(text: str) -> None:
    check_plan(text, None)


@given(TEXT)
@settings(max_examples=200)
def test_any_text_expanding_a_dataset_round_trips_or_is_a_spec_error(text: str) -> None:
    prof = DatasetProfile(
        path="/d",
        class_counts={"cat": 5, "dog": 7},
        split_counts={"train": 9, "val": 1},
        common_size=(28, 28),
        min_side=28,
        color_mode="L",
    )
    check_plan(text, prof)


def test_a_request_with_a_next_line_character_round_trips() -> None:
    spec = parse_request("cats and dogs\x85")  # PyYAML writes U+0085 raw unless told not to
    assert spec.class_names == ("cats", "dogs")
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("a\x00b", "holds the control character"), ("é" * 150, "300 bytes long in UTF-8")],
)
def test_existing_class_names_are_checked_and_the_dataset_named(name: str, fragment: str) -> None:
    prof = DatasetProfile(
        path="/data/coco", class_counts={"dog": 3, name: 2}, min_side=9, color_mode="RGB"
    )
    with pytest.raises(SpecError) as info:
        parse_request("add 10 per class", existing=prof)
    message = str(info.value)
    assert message.startswith("existing dataset /data/coco: class name ")
    assert fragment in message
    assert "rename the class there" in message


def test_request_class_names_are_checked_where_the_spec_is_made() -> None:
    with pytest.raises(SpecError, match=r"^request: class name .* bytes long in UTF-8"):
        parse_request(f'cats and "{"ü" * 120}"')
