"""Issue 10: realistic requests and the spec each must give, with and without ``--existing``.

Every phrase that is a setting (count, size, colour, enhancement, format, licence, task) must
become that setting; classes come from what is left, and when expanding a dataset only from
names the request introduces as classes. What is neither is reported as unused.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from datasetagent.agents.demand import Planned, read_and_plan
from datasetagent.errors import SpecError
from datasetagent.sources.existing import open_existing
from datasetagent.spec import DatasetProfile

#: The tiny ImageFolder the expansion rows expand: images per class, all 64x48 RGB.
CLOTHES = {"shirt": 2, "shoe": 3, "trousers": 4}


@pytest.fixture(scope="module")
def clothes(tmp_path_factory: pytest.TempPathFactory) -> DatasetProfile:
    root = tmp_path_factory.mktemp("clothes")
    for name, n in CLOTHES.items():
        (root / name).mkdir()
        for i in range(n):
            Image.new("RGB", (64, 48), (40 * i, 90, 160)).save(root / name / f"{i}.png")
    return open_existing(root).profile()


def fields(planned: Planned) -> dict[str, Any]:
    spec = planned.spec
    return {
        "classes": list(spec.class_names),
        "targets": spec.targets(),
        "task": spec.task,
        "size": spec.image.size,
        "colour": spec.image.color_mode,
        "enhance": spec.image.enhance,
        "formats": list(spec.formats),
        "licence": spec.licences.mode,
        "min_side": spec.image.min_side,
        "unused": list(planned.unused),
    }


def each(names: str, n: int) -> dict[str, int]:
    return dict.fromkeys(names.split(), n)


CD = "cats dogs"
# request -> expected fields that differ from a plain classification request of "cats and dogs"
# (100 each, RGB, sizes as they come, enhancement auto, imagefolder, open licences, nothing unused)
NEW: list[tuple[str, dict[str, Any]]] = [
    # counts
    ("cats and dogs, 300 each", {"targets": each(CD, 300)}),
    ("cats and dogs, 300 images per class", {"targets": each(CD, 300)}),
    ("cats and dogs, 300 per class", {"targets": each(CD, 300)}),
    ("300 photos of each: cats, dogs", {"targets": each(CD, 300)}),
    ("1000 images of cats and dogs", {"targets": each(CD, 500)}),
    ("cats, dogs and horses, 900 in total",
     {"classes": ["cats", "dogs", "horses"], "targets": each("cats dogs horses", 300)}),
    ("a dataset of 3 classes: cat, dog, bird, 50 images each",
     {"classes": ["cat", "dog", "bird"], "targets": each("cat dog bird", 50)}),
    ("I need 200 pictures each of apples, bananas and cherries for a classifier",
     {"classes": ["apples", "bananas", "cherries"],
      "targets": each("apples bananas cherries", 200)}),
    # sizes
    ("cats and dogs, resize to 128", {"size": (128, 128)}),
    ("cats and dogs resized to 256 px", {"size": (256, 256)}),
    ("cats and dogs at 224x224", {"size": (224, 224)}),
    ("cats and dogs, 64x48 pixels", {"size": (64, 48)}),
    ("cats and dogs scaled down to 96 pixels", {"size": (96, 96)}),
    ("cats and dogs, cropped to 200 by 100", {"size": (200, 100)}),
    ("resize the images to 512px: cats, dogs", {"size": (512, 512)}),
    ("cats and dogs, images should be 256x256", {"size": (256, 256)}),
    ("cats and dogs, 256 x 256 px, export to hugging face",
     {"size": (256, 256), "formats": ["hf"]}),
    ("cats and dogs, resize all images to 300x200 and save as parquet",
     {"size": (300, 200), "formats": ["hf"]}),
    ("cats and dogs, at least 224 px", {"min_side": 224}),
    ("cats and dogs no smaller than 300x200", {"min_side": 200}),
    # colour
    ("greyscale cats and dogs", {"colour": "L"}),
    ("cats and dogs in grayscale", {"colour": "L"}),
    ("black and white photos of cats and dogs", {"colour": "L"}),
    ("cats and dogs, b&w", {"colour": "L"}),
    ("cats and dogs in full colour", {}),
    ("500 greyscale images of cats and dogs", {"colour": "L", "targets": each(CD, 250)}),
    # enhancement
    ("cats and dogs, no enhancement", {"enhance": "off"}),
    ("cats and dogs, don't enhance", {"enhance": "off"}),
    ("cats and dogs without enhancement", {"enhance": "off"}),
    ("cats and dogs, do not enhance the images", {"enhance": "off"}),
    ("unenhanced cats and dogs", {"enhance": "off"}),
    ("cats and dogs, skip enhancement", {"enhance": "off"}),
    ("cats and dogs with enhancement", {}),
    ("cats and dogs, keep the original pixels", {"enhance": "off"}),
    # formats (and the task they need, said in words)
    ("detect cats and dogs in COCO format", {"task": "detection", "formats": ["coco"]}),
    ("bounding boxes around cats and dogs, as YOLO", {"task": "detection", "formats": ["yolo"]}),
    ("detect cats and dogs, export to VOC", {"task": "detection", "formats": ["voc"]}),
    ("cats and dogs, export as imagefolder and parquet", {"formats": ["imagefolder", "hf"]}),
    ("cats and dogs as CSV", {"formats": ["csv"]}),
    ("segment cats and dogs, coco format", {"task": "segmentation", "formats": ["coco"]}),
    ("cats and dogs in the hugging face format", {"formats": ["hf"]}),
    # tasks
    ("object detection of cats and dogs", {"task": "detection", "formats": ["coco"]}),
    ("cats and dogs with bounding boxes", {"task": "detection", "formats": ["coco"]}),
    ("segmentation masks of cats and dogs", {"task": "segmentation", "formats": ["coco"]}),
    ("cats and dogs with masks", {"task": "segmentation", "formats": ["coco"]}),
    ("classify cats and dogs", {}),
    ("locate cats and dogs in photos", {"task": "detection", "formats": ["coco"]}),
    # licences
    ("cats and dogs for commercial use", {"licence": "permissive"}),
    ("openly licensed cats and dogs", {"licence": "open"}),
    ("creative commons photos of cats and dogs", {"licence": "open"}),
    ("public domain images of cats and dogs", {"licence": "permissive"}),
    # words that are neither settings nor classes are reported
    ("cats and dogs in the wild", {"unused": ["in the wild"]}),
    ("cats and dogs for my thesis", {"unused": ["for my thesis"]}),
    ("classify dog breeds: beagle, poodle, pug",
     {"classes": ["beagle", "poodle", "pug"], "targets": each("beagle poodle pug", 100),
      "unused": ["dog breeds"]}),
    # everything at once
    ("cats and dogs, 250 each, 128x128, greyscale, no enhancement, as parquet, public domain",
     {"targets": each(CD, 250), "size": (128, 128), "colour": "L", "enhance": "off",
      "formats": ["hf"], "licence": "permissive"}),
    ("photos of red foxes and arctic foxes, 250 each, openly licensed, exported as COCO with "
     "bounding boxes",
     {"classes": ["red foxes", "arctic foxes"], "targets": {"red foxes": 250, "arctic foxes": 250},
      "task": "detection", "formats": ["coco"],
      "licence": "open"}),
]  # fmt: skip

OLD = {"classes": list(CLOTHES), "targets": each("shirt shoe trousers", 4)}
# expanding the clothes dataset: expected fields that differ from what it inherits (its
# classes balanced up to the largest, 64x48, RGB, no enhancement, imagefolder)
EXPAND: list[tuple[str, dict[str, Any]]] = [
    ("expand this clothing classification dataset to 300 images per class",
     {"targets": each("shirt shoe trousers", 300), "unused": ["clothing"]}),
    ("expand to 300 per class", {"targets": each("shirt shoe trousers", 300)}),
    ("300 each", {"targets": each("shirt shoe trousers", 300)}),
    ("add 50 images per class", {"targets": {"shirt": 52, "shoe": 53, "trousers": 54}}),
    ("50 more per class", {"targets": {"shirt": 52, "shoe": 53, "trousers": 54}}),
    ("add 100 images", {"targets": {"shirt": 36, "shoe": 36, "trousers": 37}}),
    ("600 images in total", {"targets": each("shirt shoe trousers", 200)}),
    ("top up every class to 100", {"targets": each("shirt shoe trousers", 100)}),
    ("each class up to 50 images", {"targets": each("shirt shoe trousers", 50)}),
    ("add 20 images of hats",
     {"classes": [*CLOTHES, "hats"], "targets": {**OLD["targets"], "hats": 20}}),
    ("add 60 images of hats and caps",
     {"classes": [*CLOTHES, "hats", "caps"],
      "targets": {**OLD["targets"], "hats": 30, "caps": 30}}),
    ("add hats and scarves",
     {"classes": [*CLOTHES, "hats", "scarves"],
      "targets": each("shirt shoe trousers hats scarves", 4)}),
    ("add a new class: hats",
     {"classes": [*CLOTHES, "hats"], "targets": each("shirt shoe trousers hats", 4)}),
    ("add a hat class, 20 per class",
     {"classes": [*CLOTHES, "hat"], "targets": each("shirt shoe trousers hat", 20)}),
    ("more shirts and a new class called hats",
     {"classes": [*CLOTHES, "hats"], "targets": each("shirt shoe trousers hats", 4)}),
    ("add hats, scarves and gloves, 20 per class",
     {"classes": [*CLOTHES, "hats", "scarves", "gloves"],
      "targets": each("shirt shoe trousers hats scarves gloves", 20)}),
    ("add 50 images per class, and hats",
     {"classes": [*CLOTHES, "hats"], "targets": {"shirt": 52, "shoe": 53, "trousers": 54,
                                                 "hats": 50}}),
    ('add "Hats & Caps"',
     {"classes": [*CLOTHES, "Hats & Caps"], "targets": {**OLD["targets"], "Hats & Caps": 4}}),
    ("10 more shirts and 5 more shoes", {"targets": {"shirt": 12, "shoe": 8, "trousers": 4}}),
    ("expand it with zebras",
     {"classes": [*CLOTHES, "zebras"], "targets": each("shirt shoe trousers zebras", 4)}),
    ("extend the dataset with hats and caps, 10 each",
     {"classes": [*CLOTHES, "hats", "caps"], "targets": each("shirt shoe trousers hats caps", 10)}),
    ("expand with 100 more shirts", {"targets": {"shirt": 102, "shoe": 4, "trousers": 4}}),
    # settings, which are never classes
    ("no enhancement, resize to 128", {"size": (128, 128)}),
    ("resized to 256 px, in greyscale", {"size": (256, 256), "colour": "L"}),
    ("expand to 10 per class at 32x32", {"targets": each("shirt shoe trousers", 10),
                                          "size": (32, 32)}),
    ("expand to 10 per class with enhancement",
     {"targets": each("shirt shoe trousers", 10), "enhance": "auto"}),
    ("expand to 10 per class as parquet",
     {"targets": each("shirt shoe trousers", 10), "formats": ["hf"]}),
    ("expand to 10 per class, export to CSV and imagefolder",
     {"targets": each("shirt shoe trousers", 10), "formats": ["csv", "imagefolder"]}),
    ("expand to 10 per class for commercial use",
     {"targets": each("shirt shoe trousers", 10), "licence": "permissive"}),
    ("add 30 images of hats, greyscale",
     {"classes": [*CLOTHES, "hats"], "targets": {**OLD["targets"], "hats": 30}, "colour": "L"}),
    # words the parser did not use, reported and never made into classes
    ("expand my dataset for my thesis, 10 per class",
     {"targets": each("shirt shoe trousers", 10), "unused": ["thesis"]}),
    ("make it bigger and balance the classes", {"unused": ["bigger"]}),
    ("double the shirts", {"unused": ["double the shirts"]}),
    ("grow my fashion dataset", {"unused": ["fashion"]}),
]  # fmt: skip


def _want(expected: dict[str, Any], existing: bool) -> dict[str, Any]:
    task = expected.get("task", "classification")
    want: dict[str, Any] = {
        "classes": ["cats", "dogs"], "targets": each(CD, 100), "task": "classification",
        "size": None, "colour": "RGB", "enhance": "auto",
        "formats": ["imagefolder" if task == "classification" else "coco"], "licence": "open",
        "min_side": 32, "unused": [],
    }  # fmt: skip
    if existing:
        want.update({**OLD, "size": (64, 48), "enhance": "off"})
    want.update(expected)
    return want


@pytest.mark.parametrize(("request_text", "expected"), NEW, ids=[r for r, _ in NEW])
def test_new_dataset_requests(request_text: str, expected: dict[str, Any]) -> None:
    assert fields(read_and_plan(request_text)) == _want(expected, existing=False)


@pytest.mark.parametrize(("request_text", "expected"), EXPAND, ids=[r for r, _ in EXPAND])
def test_expansion_requests(
    clothes: DatasetProfile, request_text: str, expected: dict[str, Any]
) -> None:
    planned = read_and_plan(request_text, existing=clothes)
    assert fields(planned) == _want(expected, existing=True)
    assert planned.spec.existing == clothes.path


def test_the_table_is_large_enough() -> None:
    assert len(NEW) + len(EXPAND) >= 60


BAD: list[tuple[str, bool, str]] = [
    # a format never changes the task: COCO/YOLO/VOC hold boxes or masks
    ("cats and dogs in COCO format", False, "the coco format holds boxes or masks, but the"),
    ("cats and dogs, as YOLO", False, "the yolo format holds boxes or masks"),
    ("classify cats and dogs, export to VOC", False, "the voc format cannot hold classification"),
    ("expand to 300 per class in COCO format", True, "coco format cannot hold classification"),
    ("detect the clothes", True, "the existing dataset is for classification"),
    # sizes are bounded up front
    ("cats and dogs at 100000x100000", False, "more than max_pixels"),
    ("cats and dogs, resize to 4", False, "image size 4x4 is too small"),
    ("resize to 0", True, "cannot use \"resize to 0\" as the one image size"),
    # contradictions
    ("cats and dogs, no enhancement, with enhancement", False, "both to enhance images and not"),
    ("cats and dogs, greyscale, in colour", False, "both colour and greyscale"),
    # nothing left to be a class
    ("expand this clothing dataset", False, 'the request names only "clothing"'),
    ("no enhancement, as parquet, 128x128, please", False, "could not find any classes"),
]  # fmt: skip


@pytest.mark.parametrize(("request_text", "existing", "fragment"), BAD, ids=[r for r, *_ in BAD])
def test_bad_requests(
    clothes: DatasetProfile, request_text: str, existing: bool, fragment: str
) -> None:
    with pytest.raises(SpecError) as info:
        read_and_plan(request_text, existing=clothes if existing else None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_each_phrase_is_shown_with_the_setting_it_gave() -> None:
    planned = read_and_plan(
        "cats and dogs in the wild, 300 each, resized to 128 px, greyscale, no enhancement, "
        "as YOLO, bounding boxes, openly licensed"
    )
    assert [(r.phrase, r.setting) for r in planned.readings] == [
        ("resized to 128 px", "image.size: 128x128"),
        ("greyscale", "image.color_mode: L"),
        ("no enhancement", "image.enhance: off"),
        ("300 each", "per class: 300"),
        ("as yolo", "formats: yolo"),
        ("openly licensed", "licences.mode: open"),
        ("bounding boxes", "task: detection"),
        ("cats", "class: cats"),
        ("dogs", "class: dogs"),
    ]
    assert planned.unused == ("in the wild",)


def test_expansion_shows_existing_and_new_classes(clothes: DatasetProfile) -> None:
    planned = read_and_plan("this clothing dataset, 10 more shirts, and add hats", existing=clothes)
    assert [(r.phrase, r.setting) for r in planned.readings] == [
        ("shirts", "existing class: shirt"),
        ("hats", "class: hats"),
    ]
    assert planned.unused == ("clothing",)


NAMES = ["cats", "dogs", "red foxes", "tulips", "fire trucks", "owls", "bicycles", "cups"]
#: setting phrases, each with a field it must set, in any order among class names
SETTINGS: list[tuple[str, str, Any]] = [
    ("300 each", "targets", 300), ("300 images per class", "targets", 300),
    ("resize to 128", "size", (128, 128)), ("resized to 256 px", "size", (256, 256)),
    ("at 224x224", "size", (224, 224)), ("greyscale", "colour", "L"),
    ("in grayscale", "colour", "L"), ("black and white", "colour", "L"),
    ("no enhancement", "enhance", "off"), ("don't enhance", "enhance", "off"),
    ("without enhancement", "enhance", "off"), ("as parquet", "formats", ["hf"]),
    ("export to CSV", "formats", ["csv"]), ("for commercial use", "licence", "permissive"),
    ("openly licensed", "licence", "open"),
]  # fmt: skip


@given(
    names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True),
    settings=st.lists(st.sampled_from(SETTINGS), max_size=4, unique_by=lambda s: s[1]),
    order=st.randoms(use_true_random=False),
)
def test_setting_phrases_anywhere_never_become_classes(
    names: list[str], settings: list[tuple[str, str, Any]], order: Any
) -> None:
    parts = [*names[:-1], f"and {names[-1]}", *(phrase for phrase, _, _ in settings)]
    order.shuffle(parts)
    text = ", ".join(parts)
    got = fields(read_and_plan(text))
    assert sorted(got["classes"]) == sorted(names), text
    assert got["unused"] == [], text
    for _, field, value in settings:
        assert (set(got[field].values()) if field == "targets" else got[field]) == (
            {value} if field == "targets" else value
        ), text
