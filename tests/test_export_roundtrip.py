"""Export → import → export: every format reads back to the labels, boxes, masks, splits and
attribution it was given, and exporting what was imported writes the same files again."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasetagent.export import export_samples
from datasetagent.export.prepare import ExportStats, prepare
from datasetagent.formats import descriptor, descriptors
from datasetagent.records import Box, Mask, ProcessingStep, Provenance, Sample
from datasetagent.sources.existing import ExistingDataset, open_existing
from datasetagent.sources.formats import ImportedImage
from datasetagent.spec import ClassSpec, TaskKind
from datasetagent.tools.masks import (
    join_polygons,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_rle,
    rle_to_mask,
)
from export_data import CLASSES, blob_path, make_samples, spec_for

#: Every format with every task its descriptor says it holds.
CASES = [(d.name, t) for d in descriptors() for t in sorted(d.tasks)]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskKind, list[Sample]]:
    root = tmp_path_factory.mktemp("images")
    tasks: tuple[TaskKind, ...] = ("classification", "detection", "segmentation")
    return {task: make_samples(root / task, task, n=10) for task in tasks}


def held(fmt: str, sample: Sample) -> Sample:
    """What ``fmt`` can hold of an exported sample: YOLO polygons fill holes; in VOC's object
    PNG a later object covers an earlier one."""
    sample = prepare(sample, ExportStats(), CLASSES)[0]
    masks = [a for a in sample.annotations if isinstance(a, Mask)]
    if fmt not in ("yolo", "voc") or not masks:
        return sample
    out = []
    for k, ann in enumerate(masks):
        m = rle_to_mask(ann.rle)
        if fmt == "yolo":
            polygon = join_polygons(mask_to_polygons(m))
            rle = polygons_to_rle([polygon], sample.height, sample.width)
        else:
            for later in masks[k + 1 :]:
                m = m & ~rle_to_mask(later.rle)
            rle = mask_to_rle(m)
        out.append(ann.model_copy(update={"rle": rle}))
    return sample.model_copy(update={"annotations": tuple(out)})


def step(sample: Sample) -> ProcessingStep:
    return ProcessingStep(name="gamma", params={"gamma": 0.8, "of": sample.id[:8]})


def key(ann: Any) -> tuple[object, ...]:
    if isinstance(ann, Box):
        return ("box", ann.label, ann.x, ann.y, ann.w, ann.h)
    if isinstance(ann, Mask):
        return ("mask", ann.label, ann.rle.counts)
    return ("class", ann.label)


def as_sample(ds: ExistingDataset, img: ImportedImage, blobs: Path) -> Sample:
    """An imported image as the pipeline would make it a sample (no processing changes)."""
    data = ds.read(img.location)
    with Image.open(io.BytesIO(data)) as pic:
        size, suffix = pic.size, ".jpg" if pic.format == "JPEG" else ".png"
    blob = blobs / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return Sample(
        id=blob.stem,
        blob=str(blob),
        width=size[0],
        height=size[1],
        mode="RGB",
        origin="existing",
        provenance=Provenance(
            source_kind="existing",
            location=img.source or img.location,
            licence=img.licence or "user-supplied",
            creator=img.creator,
            steps=img.steps,
        ),
        annotations=img.annotations,
        status="labelled",
        split=img.split,
    )


def as_jpeg(sample: Sample, folder: Path) -> Sample:
    """``sample`` with its image saved as a JPEG (its id the hash of the file, as before)."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.open(sample.blob).save(buf, format="JPEG", quality=95)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    (folder / f"{digest}.jpg").write_bytes(buf.getvalue())
    return sample.model_copy(update={"id": digest, "blob": str(folder / f"{digest}.jpg")})


def files(out: Path, fmt: str) -> dict[str, object]:
    """What an export says, file by file, leaving out who labelled (imported labels are the
    existing dataset's) and the manifest and attribution (compared on their own)."""
    skip = {"manifest.jsonl", "ATTRIBUTION.md", "LICENSES.md", "README.md"}
    content: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in skip):
        rel = path.relative_to(out).as_posix()
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            for ann in data["annotations"]:
                del ann["confidence"], ann["labeler"]
            content[rel] = data
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            content[rel] = pq.read_table(path).to_pylist()
        elif rel.startswith("Segmentation"):
            content[rel] = np.asarray(Image.open(path)).tolist()
        else:
            content[rel] = path.read_bytes()
    return content


@pytest.mark.parametrize(("fmt", "task"), CASES)
def test_export_import_export_is_lossless(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, fmt: str, task: TaskKind
) -> None:
    items = [  # what was done to each image travels in the manifest and comes back
        s.model_copy(update={"provenance": s.provenance.model_copy(update={"steps": (step(s),)})})
        for s in sorted(samples[task], key=lambda s: s.id)  # files list samples in given order
    ]
    if fmt == "voc":  # JPEGImages holds JPEGs (a PNG is converted: test_enhance_policy.py)
        items = sorted((as_jpeg(s, tmp_path / "jpeg") for s in items), key=lambda s: s.id)
    spec = spec_for(task, fmt)
    first = export_samples(fmt, tmp_path / "a" / fmt, spec, items, blob_path, None)
    ds = open_existing(first)
    assert ds.format == (descriptor(fmt).read_as or fmt)
    assert ds.task == task
    assert list(ds.classes) == (list(CLASSES) if task != "classification" else sorted(CLASSES))
    again = [as_sample(ds, img, tmp_path / "blobs") for img in ds.images()]
    want = {s.id: held(fmt, s) for s in items}
    assert sorted(s.id for s in again) == sorted(want)
    for got in again:
        sample = want[got.id]
        assert got.split == sample.split
        assert [key(a) for a in got.annotations] == [key(a) for a in sample.annotations]
        prov = (got.provenance.location, got.provenance.licence, got.provenance.creator)
        assert prov == (
            sample.provenance.location,
            sample.provenance.licence,
            sample.provenance.creator,
        )
        assert got.provenance.steps == sample.provenance.steps
    again.sort(key=lambda s: s.id)
    second = export_samples(fmt, tmp_path / "b" / fmt, spec, again, blob_path, None)
    assert files(second, fmt) == files(first, fmt)
    assert (second / "LICENSES.md").read_text() == (first / "LICENSES.md").read_text()


def test_a_foreign_coco_dataset_with_polygons_crowds_and_uncompressed_rle(tmp_path: Path) -> None:
    """COCO as other tools write it: ``train2017/`` images, polygons, uncompressed RLE, crowd
    regions (not objects), a caption file beside the instances."""
    from pycocotools import mask as coco_mask

    (tmp_path / "train2017").mkdir()
    Image.new("RGB", (40, 30), "white").save(tmp_path / "train2017" / "000001.jpg")
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 10:30] = 1
    uncompressed = coco_mask.encode(np.asfortranarray(m))
    runs = [int(v) for v in _runs(m)]
    doc = {
        "images": [{"id": 7, "file_name": "000001.jpg", "width": 40, "height": 30, "license": 2}],
        "licenses": [{"id": 2, "name": "CC-BY-2.0", "url": ""}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10],
             "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [10, 5, 20, 10],
             "segmentation": {"size": [30, 40], "counts": runs}, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 9, "bbox": [0, 0, 5, 5],
             "segmentation": {"size": [30, 40], "counts": runs}, "iscrowd": 1},
        ],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    (tmp_path / "annotations" / "captions_train2017.json").write_text("{not json")
    ds = open_existing(tmp_path)
    assert (ds.format, ds.task, ds.classes) == ("coco", "segmentation", ("cat", "dog"))
    (img,) = ds.images()
    assert (img.split, img.licence) == ("train", "CC-BY-2.0")
    assert [a.label for a in img.annotations] == ["cat", "dog"]  # the crowd region is left out
    for ann in img.annotations:
        assert isinstance(ann, Mask)
        np.testing.assert_array_equal(rle_to_mask(ann.rle), m.astype(bool))
    assert img.annotations[1].rle.counts == uncompressed["counts"].decode()  # type: ignore[union-attr]


def _runs(m: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with zeros)."""
    flat = m.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] if flat[0] else []) + runs


def test_a_roboflow_yolo_dataset_with_names_as_a_list(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        Image.new("RGB", (100, 50)).save(tmp_path / split / "images" / "a.png")
        (tmp_path / split / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n")
    (tmp_path / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['cat', 'dog']\n"
    )
    ds = open_existing(tmp_path)
    assert (ds.format, ds.task, ds.classes) == ("yolo", "detection", ("cat", "dog"))
    by_split = {img.split: img for img in ds.images()}
    assert set(by_split) == {"train", "val"}
    (box,) = by_split["val"].annotations
    assert isinstance(box, Box)
    assert (box.label, box.x, box.y, box.w, box.h) == ("dog", 40.0, 15.0, 20.0, 20.0)


def test_a_hub_dataset_with_corner_boxes(tmp_path: Path) -> None:
    """Hub detection datasets store [x, y, w, h] or [x0, y0, x1, y1] and the schema does not
    say which: corners are recognised from boxes that only fit as corners."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "objects": datasets.Sequence(
                {
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=["cat", "dog"]),
                }
            ),
        }
    )
    boxes = {  # corners; the second image's box ends past 40 read as [x, y, w, h]
        "a": ([[2.0, 3.0, 12.0, 9.0]], [0]),
        "b": ([[20.0, 10.0, 38.0, 28.0], [1.0, 1.0, 5.0, 4.0]], [1, 0]),
    }
    rows = {
        "image": [Image.new("RGB", (40, 30), "white") for _ in boxes],
        "objects": [{"bbox": b, "category": c} for b, c in boxes.values()],
    }
    folder = tmp_path / "data"
    folder.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        str(folder / "train-00000-of-00001.parquet")
    )
    ds = open_existing(tmp_path)
    assert (ds.format, ds.task) == ("hf", "detection")
    got = [[(a.label, a.x, a.y, a.w, a.h) for a in img.annotations] for img in ds.images()]
    assert got == [
        [("cat", 2.0, 3.0, 10.0, 6.0)],
        [("dog", 20.0, 10.0, 18.0, 18.0), ("cat", 1.0, 1.0, 4.0, 3.0)],
    ]


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "hf"])
def test_class_names_with_format_punctuation_read_back_whole(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, fmt: str
) -> None:
    """Class names holding the separators and comment signs of the formats' text files (VOC's
    ``labelmap.txt`` is ``label:R,G,B:parts:actions`` with ``#`` comments; YOLO's YAML) come
    back as they were, in order, unused ones included (VOC read "a: b" as "a" and dropped
    "#1")."""
    names = ("a: b", "- yes", "null", "#1")  # "#1": a class no object has
    rename = dict(zip(CLASSES, names, strict=False))
    items = [
        s.model_copy(
            update={
                "annotations": tuple(
                    a.model_copy(update={"label": rename[a.label]}) for a in s.annotations
                )
            }
        )
        for s in samples["detection"]
    ]
    if fmt == "voc":
        items = [as_jpeg(s, tmp_path / "jpeg") for s in items]
    spec = spec_for("detection", fmt)
    spec = spec.model_copy(update={"classes": tuple(ClassSpec(name=n) for n in names)})
    out = export_samples(fmt, tmp_path / fmt, spec, items, blob_path, None)
    ds = open_existing(out)
    assert list(ds.classes) == list(names)
