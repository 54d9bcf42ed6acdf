"""COCO: ``images/SPLIT/IMAGE`` and ``annotations/instances_SPLIT.json``, for detection and
segmentation (boxes, and masks as RLE), read by pycocotools, Detectron2, MMDetection and
``supervision``. ``coco-polygons`` writes each mask as polygons where they rasterise back to
exactly its pixels, and as RLE where they cannot (holes).

Entries are streamed to part files while samples are written and joined into each split's JSON
at the end, so memory does not grow with the number of annotations. Each image names its real
licence (one ``licenses`` entry, ``{id, name, url}``, per distinct licence and URL of its text:
the one the image's source gave, else the licence's canonical deed) and, as keys COCO readers
ignore, where it came from: ``source`` (the file, or the URL fetched), ``page`` (the page it is
shown on), ``title`` and ``creator`` (null where unknown).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import IO, Any

from datasetagent import licences
from datasetagent.errors import ExportError
from datasetagent.export import copy_image
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import DatasetSpec


def coco_annotation(ann: Box | Mask, *, polygons: bool = False) -> dict[str, Any]:
    """The COCO fields of one box or mask (without ids); with ``polygons``, a mask whose
    polygons rasterise back to it exactly is given as polygons."""
    if isinstance(ann, Box):
        return {
            "bbox": [ann.x, ann.y, ann.w, ann.h],
            "area": ann.w * ann.h,
            "segmentation": [],
            "iscrowd": 0,
        }
    from datasetagent.tools.masks import rle_area, rle_bbox  # pycocotools, loaded when used

    segmentation: Any = {"size": list(ann.rle.size), "counts": ann.rle.counts}
    if polygons:
        segmentation = exact_polygons(ann) or segmentation
    return {
        "bbox": list(rle_bbox(ann.rle)),
        "area": float(rle_area(ann.rle)),
        "segmentation": segmentation,
        "iscrowd": 0,
    }


def exact_polygons(ann: Mask) -> list[list[float]] | None:
    """The mask's outlines as COCO polygons when they rasterise back to exactly its pixels."""
    from datasetagent.tools.masks import mask_to_polygons, polygons_to_rle, rle_to_mask

    mask = rle_to_mask(ann.rle)
    polys = mask_to_polygons(mask)
    height, width = ann.rle.size
    if not polys or polygons_to_rle(polys, height, width) != ann.rle:
        return None
    return polys


class CocoExporter:
    format = "coco"

    polygons = False

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        self.out = out
        self.spec = spec
        self.category = {name: i + 1 for i, name in enumerate(spec.class_names)}
        #: The id of each (licence, URL of its text) in the ``licenses`` list.
        self.licences: dict[tuple[str, str], int] = {}
        self.parts = out / ".coco-parts"
        self._files: dict[tuple[str, str], IO[str]] = {}
        self._image_id = 0
        self._ann_id = 0
        self.notes: Counter[str] = Counter()

    def __enter__(self) -> CocoExporter:
        self.parts.mkdir(parents=True, exist_ok=True)
        return self

    def _part(self, split: str, kind: str) -> IO[str]:
        key = (split, kind)
        if key not in self._files:
            self._files[key] = (self.parts / f"{split}.{kind}").open("w", encoding="utf-8")
        return self._files[key]

    def write(self, sample: Sample, image: Path) -> str:
        if sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no split")
        rel = copy_image(self.out, Path("images") / sample.split, sample, image)
        self._image_id += 1
        prov = sample.provenance
        url = prov.licence_url or licences.licence_url(prov.licence) or ""
        licence = self.licences.setdefault((prov.licence, url), len(self.licences) + 1)
        entry = {
            "id": self._image_id,
            "file_name": rel.name,
            "width": sample.width,
            "height": sample.height,
            "license": licence,
            "source": prov.location,
            "page": prov.page,
            "title": prov.title,
            "creator": prov.creator,
            "sample_id": sample.id,
        }
        self._part(sample.split, "images").write(json.dumps(entry) + "\n")
        anns = self._part(sample.split, "annotations")
        for ann in sample.annotations:
            if not isinstance(ann, Box | Mask) or ann.label not in self.category:
                continue
            self._ann_id += 1
            fields = coco_annotation(ann, polygons=self.polygons)
            if self.polygons and isinstance(ann, Mask) and isinstance(fields["segmentation"], dict):
                self.notes["masks kept as RLE: polygons cannot hold their holes"] += 1
            if isinstance(ann, Box) and self.spec.task == "segmentation":
                # every COCO reader of a segmentation set decodes every object's segmentation
                x0, y0, x1, y1 = ann.x, ann.y, ann.x + ann.w, ann.y + ann.h
                fields["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                self.notes["objects with a box and no mask (box rectangles as polygons)"] += 1
            record = {
                "id": self._ann_id,
                "image_id": self._image_id,
                "category_id": self.category[ann.label],
                **fields,
                "confidence": ann.confidence,
                "labeler": ann.labeler,
            }
            anns.write(json.dumps(record) + "\n")
        return rel.as_posix()

    def __exit__(self, *exc: object) -> None:
        for f in self._files.values():
            f.close()
        if not exc or exc[0] is None:
            splits = sorted({split for split, _ in self._files})
            (self.out / "annotations").mkdir(exist_ok=True)
            for split in splits:
                self._join(split)
        shutil.rmtree(self.parts, ignore_errors=True)

    def _join(self, split: str) -> None:
        head = {
            "info": {
                "description": self.spec.request or f"{self.spec.task} dataset",
                "version": "1.0",
                "contributor": "datasetagent",
            },
            "licenses": [
                {"id": i, "name": name, "url": url} for (name, url), i in self.licences.items()
            ],
            "categories": [
                {"id": i, "name": name, "supercategory": "object"}
                for name, i in self.category.items()
            ],
        }
        path = self.out / "annotations" / f"instances_{split}.json"
        with path.open("w", encoding="utf-8") as out:
            out.write(json.dumps(head)[:-1])
            for kind in ("images", "annotations"):
                out.write(f', "{kind}": [')
                part = self.parts / f"{split}.{kind}"
                if part.exists():
                    with part.open(encoding="utf-8") as lines:
                        for n, line in enumerate(lines):
                            out.write(("," if n else "") + line.rstrip("\n"))
                out.write("]")
            out.write("}")


class CocoPolygonExporter(CocoExporter):
    """COCO with masks as polygons (RLE where a mask has holes)."""

    format = "coco-polygons"
    polygons = True
