"""YOLO (Ultralytics layout): ``images/SPLIT/IMAGE``, ``labels/SPLIT/IMAGE-STEM.txt`` and
``data.yaml``, for detection and segmentation.

A label file has one line per object: ``CLASS cx cy w h`` (a box: centre and size normalised
by the image's width and height) or ``CLASS x1 y1 x2 y2 ...`` (a segmentation polygon of
normalised vertices). An image without objects has an empty label file (a background image).
``data.yaml`` names the split folders and the classes by index, without a ``path`` key, so
Ultralytics resolves the folders next to the YAML file.

A mask becomes one polygon: its parts joined by bridges that enclose nothing
(``tools.masks.join_polygons``). Polygons cannot hold holes: a mask with holes is written with
them filled, and the data card counts such masks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from datasetagent.errors import ExportError
from datasetagent.export import copy_image
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import SPLIT_NAMES, DatasetSpec
from datasetagent.tools.boxes import format_norm, xywh_to_cxcywh

DATA_YAML = "data.yaml"
HOLES_NOTE = "masks whose holes YOLO polygons fill"


def box_line(cls: int, ann: Box, width: int, height: int) -> str:
    values = xywh_to_cxcywh((ann.x, ann.y, ann.w, ann.h), width, height)
    return " ".join([str(cls), *(format_norm(v) for v in values)])


def polygon_line(cls: int, ann: Mask) -> tuple[str, bool]:
    """The line of a mask, and whether its polygon rasterises back to exactly its pixels."""
    from datasetagent.tools.masks import (  # pycocotools, loaded when used
        join_polygons,
        mask_to_polygons,
        polygons_to_rle,
        rle_to_mask,
    )

    height, width = ann.rle.size
    polygon = join_polygons(mask_to_polygons(rle_to_mask(ann.rle)))
    exact = polygons_to_rle([polygon], height, width) == ann.rle
    coords = [v / (width if i % 2 == 0 else height) for i, v in enumerate(polygon)]
    return " ".join([str(cls), *(format_norm(v) for v in coords)]), exact


class YoloExporter:
    format = "yolo"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        self.out = out
        self.spec = spec
        self.index = {name: i for i, name in enumerate(spec.class_names)}
        self.splits: set[str] = set()
        self.notes: Counter[str] = Counter()

    def __enter__(self) -> YoloExporter:
        return self

    def write(self, sample: Sample, image: Path) -> str:
        if sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no split")
        self.splits.add(sample.split)
        rel = copy_image(self.out, Path("images") / sample.split, sample, image)
        lines = []
        for ann in sample.annotations:
            if isinstance(ann, Mask):
                line, exact = polygon_line(self.index[ann.label], ann)
                if not exact:
                    self.notes[HOLES_NOTE] += 1
                lines.append(line)
            elif isinstance(ann, Box):
                if self.spec.task == "segmentation":
                    self.notes["objects with a box and no mask (box lines)"] += 1
                lines.append(box_line(self.index[ann.label], ann, sample.width, sample.height))
        label = self.out / "labels" / sample.split / f"{rel.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return rel.as_posix()

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None:
            return
        data: dict[str, object] = {
            name: f"images/{name}" for name in SPLIT_NAMES if name in self.splits
        }
        data["nc"] = len(self.index)
        data["names"] = {i: name for name, i in self.index.items()}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        header = f"# {self.spec.name}: {self.spec.task} dataset written by datasetagent\n"
        (self.out / DATA_YAML).write_text(header + text, encoding="utf-8")
