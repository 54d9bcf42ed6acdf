"""Every export format, read back by an independent reader: pycocotools (COCO, with COCOeval),
supervision (YOLO, VOC), Hugging Face ``datasets`` (Parquet, ImageFolder, CSV) and Pillow (VOC
segmentation PNGs). Also what every export holds: data card, attribution, dropped boxes."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasetagent.errors import ExportError
from datasetagent.export import export_samples
from datasetagent.export.prepare import ExportStats, prepare
from datasetagent.formats import descriptors, formats_for
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import TaskKind
from datasetagent.tools.masks import mask_to_rle, rle_bbox, rle_to_mask
from export_data import CLASSES, blob_path, make_samples, spec_for


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskKind, list[Sample]]:
    root = tmp_path_factory.mktemp("images")
    tasks: tuple[TaskKind, ...] = ("classification", "detection", "segmentation")
    return {task: make_samples(root / task, task) for task in tasks}


@pytest.fixture(scope="module")
def hf_datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``datasets``, offline (it reads these at import), with its caches in a temporary
    folder; the environment is restored after this module's tests."""
    home = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        datasets = pytest.importorskip("datasets")
        datasets.disable_progress_bars()
        yield datasets


def export(fmt: str, task: TaskKind, items: list[Sample], out: Path) -> Path:
    return export_samples(fmt, out / fmt, spec_for(task, fmt), items, blob_path, None)


def expected(items: list[Sample]) -> dict[str, Sample]:
    """Each sample as exported: boxes clipped and snapped, the degenerate one dropped."""
    return {s.id: prepare(s, ExportStats(), CLASSES)[0] for s in items}


def xywh(ann: Box | Mask) -> tuple[float, float, float, float]:
    return (ann.x, ann.y, ann.w, ann.h) if isinstance(ann, Box) else rle_bbox(ann.rle)


def xyxy(ann: Box | Mask) -> tuple[float, float, float, float]:
    x, y, w, h = xywh(ann)
    return x, y, x + w, y + h


def assert_same_boxes(
    got: list[tuple[str, tuple[float, ...]]], want: list[tuple[str, tuple[float, ...]]]
) -> None:
    """Box for box (float32 readers: within 1e-3 px)."""
    got, want = sorted(got), sorted(want)
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-3)


# -- COCO ----------------------------------------------------------------------------------------
def _coco_eval(coco: Any, iou_type: str) -> float:
    from pycocotools.cocoeval import COCOeval

    dets = []
    for a in coco.loadAnns(coco.getAnnIds()):
        det = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        if iou_type == "bbox":
            det["bbox"] = a["bbox"]
        else:
            det["segmentation"] = coco.annToRLE(a)
        dets.append(det)
    with contextlib.redirect_stdout(io.StringIO()):
        results = coco.loadRes(dets)
        ev = COCOeval(coco, results, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.parametrize(
    ("task", "fmt"),
    [("detection", "coco"), ("segmentation", "coco"), ("segmentation", "coco-polygons")],
)
def test_coco_is_read_by_pycocotools_with_ap_one_and_exact_masks(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, task: TaskKind, fmt: str
) -> None:
    from pycocotools.coco import COCO

    items = samples[task]
    out = export(fmt, task, items, tmp_path)
    want = expected(items)
    seen = 0
    polygons = 0
    for split in ("train", "val", "test"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        licences = {lic["id"]: lic["name"] for lic in coco.dataset["licenses"]}
        for img in coco.loadImgs(coco.getImgIds()):
            sample = want[img["sample_id"]]
            assert (out / "images" / split / img["file_name"]).is_file()
            assert licences[img["license"]] == sample.provenance.licence
            assert (img["width"], img["height"]) == (sample.width, sample.height)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == len(sample.annotations)
            for a, ours in zip(anns, sample.annotations, strict=True):
                assert coco.cats[a["category_id"]]["name"] == ours.label
                assert a["iscrowd"] == 0
                if isinstance(ours, Box):
                    assert a["bbox"] == [ours.x, ours.y, ours.w, ours.h]
                    assert a["area"] == pytest.approx(ours.w * ours.h)
                else:
                    assert isinstance(ours, Mask)
                    mask = rle_to_mask(ours.rle)
                    np.testing.assert_array_equal(coco.annToMask(a).astype(bool), mask)
                    assert a["area"] == mask.sum()
                    assert a["bbox"] == list(rle_bbox(ours.rle))
                    polygons += isinstance(a["segmentation"], list)
            seen += 1
        assert _coco_eval(coco, "bbox") == pytest.approx(1.0, abs=1e-9)
        if task == "segmentation":
            assert _coco_eval(coco, "segm") == pytest.approx(1.0, abs=1e-9)
    assert seen == len(items)
    if fmt == "coco-polygons":  # polygons where exact; the rings (holes) stay RLE
        assert polygons > 0
        assert "polygons cannot hold their holes" in (out / "README.md").read_text()


# -- YOLO and VOC through supervision ------------------------------------------------------------
def read_yolo(out: Path) -> Iterator[tuple[list[str], str, Any]]:
    """(class names, image stem, detections) of every image, split by split, by supervision."""
    import supervision as sv

    for split in ("train", "val", "test"):
        ds = sv.DetectionDataset.from_yolo(
            str(out / "images" / split), str(out / "labels" / split), str(out / "data.yaml")
        )
        for path, _, det in ds:
            yield ds.classes, Path(path).stem, det


def test_yolo_detection_is_read_by_supervision_box_for_box(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    items = samples["detection"]
    out = export("yolo", "detection", items, tmp_path)
    want = {s.id[:16]: s for s in expected(items).values()}
    seen = 0
    for classes, stem, det in read_yolo(out):
        assert classes == list(CLASSES)
        got = [(classes[c], tuple(b)) for c, b in zip(det.class_id, det.xyxy, strict=True)]
        assert_same_boxes(got, [(a.label, xyxy(a)) for a in want[stem].annotations])  # type: ignore[union-attr]
        seen += 1
    assert seen == len(items)


def test_yolo_segmentation_polygons_are_read_by_supervision(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    items = samples["segmentation"]
    out = export("yolo", "segmentation", items, tmp_path)
    want = {s.id[:16]: s for s in expected(items).values()}
    seen = 0
    for classes, stem, det in read_yolo(out):
        seen += 1
        masks = [a for a in want[stem].annotations if isinstance(a, Mask)]
        assert det.mask is not None
        assert len(det.mask) == len(masks)
        for cls, box, got, ours in zip(det.class_id, det.xyxy, det.mask, masks, strict=True):
            assert classes[cls] == ours.label
            # outlines run a quarter pixel inside the mask's pixel edges (tools.masks)
            x0, y0, x1, y1 = xyxy(ours)
            np.testing.assert_allclose(box, (x0 + 0.25, y0 + 0.25, x1 - 0.25, y1 - 0.25))
            mask = rle_to_mask(ours.rle)
            assert (got & mask).sum() / mask.sum() > 0.95  # its own rasteriser: near, not same
            assert (got | mask).sum() < mask.sum() * 1.6  # holes filled, outlines drawn
    assert seen == len(items)
    assert "masks whose holes YOLO polygons fill" in (out / "README.md").read_text()


def test_voc_detection_is_read_by_supervision_box_for_box(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    import supervision as sv

    items = samples["detection"]
    out = export("voc", "detection", items, tmp_path)
    want = {s.id[:16]: s for s in expected(items).values()}
    ds = sv.DetectionDataset.from_pascal_voc(str(out / "JPEGImages"), str(out / "Annotations"))
    assert len(ds) == len(items)
    for path, _, det in ds:
        sample = want[Path(path).stem]
        got = [(ds.classes[c], tuple(b)) for c, b in zip(det.class_id, det.xyxy, strict=True)]
        assert_same_boxes(got, [(a.label, xyxy(a)) for a in sample.annotations])  # type: ignore[union-attr]
    for split in ("train", "val", "test"):
        stems = (out / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert sorted(stems) == sorted(k for k, s in want.items() if s.split == split)


def test_voc_segmentation_pngs_hold_classes_and_objects(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    import supervision as sv

    items = samples["segmentation"]
    out = export("voc", "segmentation", items, tmp_path)
    ds = sv.DetectionDataset.from_pascal_voc(str(out / "JPEGImages"), str(out / "Annotations"))
    overlapped = 0
    for sample in expected(items).values():
        stem = sample.id[:16]
        with Image.open(out / "SegmentationClass" / f"{stem}.png") as cls_png:
            assert cls_png.mode == "P"
            classes = np.asarray(cls_png)
        with Image.open(out / "SegmentationObject" / f"{stem}.png") as obj_png:
            assert obj_png.mode == "P"
            objects = np.asarray(obj_png)
        masks = [rle_to_mask(a.rle) for a in sample.annotations if isinstance(a, Mask)]
        boxes = []
        for k, (mask, ann) in enumerate(zip(masks, sample.annotations, strict=True), start=1):
            later = np.zeros_like(mask)
            for m in masks[k:]:
                later |= m
            overlapped += bool((mask & later).any())
            np.testing.assert_array_equal(objects == k, mask & ~later)  # a later object wins
            assert (classes[mask & ~later] == CLASSES.index(ann.label) + 1).all()
            seen = ann.model_copy(update={"rle": mask_to_rle(mask & ~later)})
            boxes.append((ann.label, xyxy(seen)))
        assert not classes[objects == 0].any()
        det = next(d for p, _, d in ds if Path(p).stem == stem)  # boxes of the visible pixels
        got = [(ds.classes[c], tuple(b)) for c, b in zip(det.class_id, det.xyxy, strict=True)]
        assert_same_boxes(got, boxes)
    assert overlapped
    assert "masks partly covered by a later object" in (out / "README.md").read_text()


# -- Hugging Face datasets -----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_hf_parquet_is_read_by_datasets(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, hf_datasets: Any, task: TaskKind
) -> None:
    items = samples[task]
    out = export("hf", task, items, tmp_path)
    want = expected(items)
    by_folder = hf_datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(by_folder) == {"train", "validation", "test"}
    files = {"train": str(out / "data" / "train-*.parquet")}
    by_files = hf_datasets.load_dataset(
        "parquet", data_files=files, cache_dir=str(tmp_path / "cache2")
    )
    assert by_files["train"].num_rows == by_folder["train"].num_rows
    rows = 0
    for split, ds in by_folder.items():
        features = ds.features
        for row in ds:
            sample = want[row["id"]]
            assert {"validation": "val"}.get(split, split) == sample.split
            assert row["image"].size == (sample.width, sample.height)
            assert row["licence"] == sample.provenance.licence
            if task == "classification":
                assert features["label"].names == list(CLASSES)
                assert features["label"].int2str(row["label"]) == sample.label
            else:
                names = features["objects"]["category"].feature.names
                assert names == list(CLASSES)
                objects = row["objects"]
                got = [names[c] for c in objects["category"]]
                assert got == [a.label for a in sample.annotations]
                for bbox, ann in zip(objects["bbox"], sample.annotations, strict=True):
                    assert tuple(bbox) == xywh(ann)  # type: ignore[arg-type]
                if task == "segmentation":
                    assert objects["rle"] == [a.rle.counts for a in sample.annotations]  # type: ignore[union-attr]
            rows += 1
    assert rows == len(items)
    assert "configs:" in (out / "README.md").read_text().split("\n---\n")[0]


def test_imagefolder_and_csv_are_read_by_datasets(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, hf_datasets: Any
) -> None:
    items = samples["classification"]
    want = {s.id[:16]: s for s in items}
    out = export("imagefolder", "classification", items, tmp_path)
    ds = hf_datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    ds = ds.cast_column("image", hf_datasets.Image(decode=False))
    assert set(ds) == {"train", "validation", "test"}
    assert sum(len(ds[split]) for split in ds) == len(items)
    for split in ds:
        names = ds[split].features["label"].names
        assert set(names) <= set(CLASSES)
        for row in ds[split]:
            assert names[row["label"]] == want[Path(row["image"]["path"]).stem].label
    out = export("csv", "classification", items, tmp_path)
    table = hf_datasets.load_dataset(
        "csv", data_files=str(out / "labels.csv"), cache_dir=str(tmp_path / "c")
    )["train"]
    assert table.column_names[:3] == ["file", "label", "split"]
    assert table.num_rows == len(items)
    for row in table:
        sample = want[Path(row["file"]).stem]
        assert (row["label"], row["split"], row["licence"]) == (
            sample.label,
            sample.split,
            sample.provenance.licence,
        )
        assert (out / row["file"]).is_file()


# -- what every export holds ---------------------------------------------------------------------
def test_every_export_has_card_attribution_and_records_dropped_boxes(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    items = samples["detection"]
    for fmt in ("coco", "yolo", "voc", "hf"):
        out = export(fmt, "detection", items, tmp_path)
        card = (out / "README.md").read_text()
        assert "## Objects per split and class" in card
        assert "| degenerate | 1 |" in card
        assert "* Boxes clipped to their image: 1" in card
        assert "task: detection" in card  # the spec
        lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert len(lines) == len(items)
        dropped = [d for line in lines for d in line.get("dropped", [])]
        assert [(d["label"], d["reason"]) for d in dropped] == [("cat", "degenerate")]
        exported = [b for line in lines for b in line["labels"]]
        assert all(b["x"] + b["w"] <= 64 and b["w"] >= 1 for b in exported)
        attribution = (out / "ATTRIBUTION.md").read_text()
        for line in lines:
            location = line["provenance"]["location"]
            assert f"| {line['file']} | " in attribution
            assert f"| [{location}]({location}) |" in attribution
        assert "Photographer 1 \\| studio" in attribution
        licences = (out / "LICENSES.md").read_text()
        assert "| CC-BY-4.0 | 3 | https://creativecommons.org/licenses/by/4.0/ |" in licences
        assert "| CC0-1.0 | 3 |" in licences
        assert "| user-supplied | 3 |" in licences
        assert not list(tmp_path.glob(".*partial"))


def test_failed_export_leaves_the_previous_one_and_no_partial_folder(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path
) -> None:
    items = samples["detection"]
    out = export("yolo", "detection", items, tmp_path)

    def content() -> dict[Path, bytes]:
        return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    before = content()
    broken = [*items[:3], items[3].model_copy(update={"blob": str(tmp_path / "gone.png")})]
    with pytest.raises(ExportError, match="cannot write yolo export"):
        export("yolo", "detection", broken, tmp_path)
    assert content() == before  # not a byte of the previous export changed
    assert not list(tmp_path.glob(".*partial"))


#: Every format with every task its descriptor says it cannot hold.
REFUSED = [
    (d.name, task)
    for d in descriptors()
    for task in ("classification", "detection", "segmentation")
    if task not in d.tasks
]


@pytest.mark.parametrize(("fmt", "task"), REFUSED)
def test_formats_refuse_tasks_they_cannot_hold(
    samples: dict[TaskKind, list[Sample]], tmp_path: Path, fmt: str, task: TaskKind
) -> None:
    spec = spec_for("classification").model_copy(update={"task": task, "formats": ("hf",)})
    fits = ", ".join(formats_for(task))
    with pytest.raises(
        ExportError, match=f"the {fmt} format cannot hold {task} labels; use --format {fits}"
    ):
        export_samples(fmt, tmp_path / fmt, spec, samples[task][:1], blob_path, None)
    assert not (tmp_path / fmt).exists()
