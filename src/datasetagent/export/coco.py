"""COCO: ``images/SPLIT/IMAGE`` and ``annotations/instances_SPLIT.json``, for detection and
segmentation (boxes, and masks as RLE), read by pycocotools, Detectron2, MMDetection and
``supervision``.

Entries are streamed to part files while samples are written and joined into each split's JSON
at the end, so memory does not grow with the number of annotations. Each image names its real
licence (one ``licenses`` entry per distinct licence) and its source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import IO, Any

from datasetagent.errors import ExportError
from datasetagent.export import EXPORTERS
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import DatasetSpec

#: Where each licence's text lives, for the ``licenses`` entries.
LICENCE_URLS = {
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "CC-BY-SA-2.0": "https://creativecommons.org/licenses/by-sa/2.0/",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "PDM-1.0": "https://creativecommons.org/publicdomain/mark/1.0/",
}


def coco_annotation(ann: Box | Mask) -> dict[str, Any]:
    """The COCO fields of one box or mask (without ids)."""
    if isinstance(ann, Box):
        return {
            "bbox": [ann.x, ann.y, ann.w, ann.h],
            "area": ann.w * ann.h,
            "segmentation": [],
            "iscrowd": 0,
        }
    from datasetagent.tools.masks import rle_area, rle_bbox  # pycocotools, loaded when used

    return {
        "bbox": list(rle_bbox(ann.rle)),
        "area": float(rle_area(ann.rle)),
        "segmentation": {"size": list(ann.rle.size), "counts": ann.rle.counts},
        "iscrowd": 0,
    }


@EXPORTERS.register("coco")
class CocoExporter:
    format = "coco"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        if spec.task == "classification":
            raise ExportError(
                "coco holds boxes and masks, not classification labels; use --format imagefolder"
            )
        self.out = out
        self.spec = spec
        self.category = {name: i + 1 for i, name in enumerate(spec.class_names)}
        self.licences: dict[str, int] = {}
        self.parts = out / ".coco-parts"
        self._files: dict[tuple[str, str], IO[str]] = {}
        self._image_id = 0
        self._ann_id = 0

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
        rel = Path("images") / sample.split / f"{sample.id[:16]}{image.suffix}"
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, dest)
        self._image_id += 1
        prov = sample.provenance
        licence = self.licences.setdefault(prov.licence, len(self.licences) + 1)
        entry = {
            "id": self._image_id,
            "file_name": rel.name,
            "width": sample.width,
            "height": sample.height,
            "license": licence,
            "source": prov.location,
            "creator": prov.creator,
            "sample_id": sample.id,
        }
        self._part(sample.split, "images").write(json.dumps(entry) + "\n")
        anns = self._part(sample.split, "annotations")
        for ann in sample.annotations:
            if not isinstance(ann, Box | Mask) or ann.label not in self.category:
                continue
            self._ann_id += 1
            record = {
                "id": self._ann_id,
                "image_id": self._image_id,
                "category_id": self.category[ann.label],
                **coco_annotation(ann),
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
                {"id": i, "name": name, "url": LICENCE_URLS.get(name, "")}
                for name, i in self.licences.items()
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
