"""Pascal VOC: ``JPEGImages/IMAGE``, ``Annotations/STEM.xml``, ``ImageSets/Main/SPLIT.txt``;
for segmentation also ``SegmentationClass/STEM.png``, ``SegmentationObject/STEM.png`` and
``ImageSets/Segmentation/SPLIT.txt``. ``labelmap.txt`` lists the classes with their colours.

Boxes follow the VOC devkit: 1-based inclusive pixel indices (``tools.boxes.xywh_to_voc``);
fractional coordinates are written as decimals, which the devkit's readers and ``supervision``
accept. The segmentation PNGs are palette images with the VOC colour map: in
``SegmentationClass`` a pixel holds its class index + 1 (0 is background), in
``SegmentationObject`` the 1-based index of its object in the XML. A pixel holds one object:
where masks overlap the later object keeps it, and the data card counts such masks; the XML
box of a segmented object is that of its visible pixels, as VOC's guidelines ask.
``JPEGImages`` holds JPEGs, as VOC readers expect: a JPEG is copied byte for byte, any other
image is converted to a JPEG at quality 95 (the data card counts them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from datasetagent.errors import ExportError
from datasetagent.export import copy_image, is_jpeg
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.tools.boxes import XYWH, format_px, xywh_to_voc

#: Palette indices 1..254 hold classes or objects; 255 is VOC's "void" border.
MAX_INDEX = 254
OVERLAP_NOTE = "masks partly covered by a later object in the VOC PNGs"
CONVERTED_NOTE = "images converted to JPEG (quality 95) for JPEGImages"


def voc_palette() -> list[int]:
    """The VOC colour map (256 RGB entries, flat), as the devkit's ``labelcolormap`` makes it."""
    palette: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _depth(mode: str) -> int:
    return {"1": 1, "L": 1, "I": 1, "I;16": 1, "LA": 2, "RGBA": 4}.get(mode, 3)


def annotation_xml(sample: Sample, file_name: str, objects: list[tuple[str, XYWH]]) -> bytes:
    """The VOC XML of one image with ``objects`` as (class, pixel box). Written as text (the
    layout is fixed, and ElementTree's serialiser was most of a VOC export's time)."""
    prov = sample.provenance
    lines = [
        "<annotation>",
        "  <folder>JPEGImages</folder>",
        f"  <filename>{escape(file_name)}</filename>",
        "  <source>",
        "    <database>datasetagent</database>",
        f"    <image>{escape(prov.location)}</image>",
        "  </source>",
    ]
    if prov.creator:
        lines += ["  <owner>", f"    <name>{escape(prov.creator)}</name>", "  </owner>"]
    segmented = int(any(isinstance(a, Mask) for a in sample.annotations))
    lines += [
        "  <size>",
        f"    <width>{sample.width}</width>",
        f"    <height>{sample.height}</height>",
        f"    <depth>{_depth(sample.mode)}</depth>",
        "  </size>",
        f"  <segmented>{segmented}</segmented>",
    ]
    for label, box in objects:
        xmin, ymin, xmax, ymax = (format_px(v) for v in xywh_to_voc(box))
        lines += [
            "  <object>",
            f"    <name>{escape(label)}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            "    <difficult>0</difficult>",
            "    <bndbox>",
            f"      <xmin>{xmin}</xmin>",
            f"      <ymin>{ymin}</ymin>",
            f"      <xmax>{xmax}</xmax>",
            f"      <ymax>{ymax}</ymax>",
            "    </bndbox>",
            "  </object>",
        ]
    lines.append("</annotation>\n")
    return "\n".join(lines).encode("utf-8")


class VocExporter:
    format = "voc"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        if spec.task == "segmentation" and len(spec.classes) > MAX_INDEX:
            raise ExportError(
                f"VOC segmentation PNGs hold at most {MAX_INDEX} classes, the spec has "
                f"{len(spec.classes)}; use --format coco"
            )
        self.out = out
        self.spec = spec
        self.index = {name: i + 1 for i, name in enumerate(spec.class_names)}
        self.palette = voc_palette()
        self.notes: Counter[str] = Counter()
        self._sets: dict[tuple[str, str], IO[str]] = {}

    def __enter__(self) -> VocExporter:
        folders = ["Annotations"]
        if self.spec.task == "segmentation":
            folders += ["SegmentationClass", "SegmentationObject"]
        for folder in folders:
            (self.out / folder).mkdir(parents=True, exist_ok=True)
        return self

    def _set(self, kind: str, split: str) -> IO[str]:
        key = (kind, split)
        if key not in self._sets:
            path = self.out / "ImageSets" / kind / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sets[key] = path.open("w", encoding="utf-8")
        return self._sets[key]

    def write(self, sample: Sample, image: Path) -> str:
        from datasetagent.tools.masks import rle_bbox  # pycocotools, loaded when used

        if sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no split")
        if not is_jpeg(image):
            self.notes[CONVERTED_NOTE] += 1
        rel = copy_image(self.out, Path("JPEGImages"), sample, image, jpeg=True)
        visible = self._write_pngs(sample, rel.stem) if self.spec.task == "segmentation" else {}
        objects: list[tuple[str, XYWH]] = []
        for k, ann in enumerate(a for a in sample.annotations if isinstance(a, Box | Mask)):
            if k in visible:
                objects.append((ann.label, visible[k]))
            elif isinstance(ann, Box):
                objects.append((ann.label, (ann.x, ann.y, ann.w, ann.h)))
            else:
                objects.append((ann.label, rle_bbox(ann.rle)))
        xml = annotation_xml(sample, rel.name, objects)
        (self.out / "Annotations" / f"{rel.stem}.xml").write_bytes(xml)
        self._set("Main", sample.split).write(f"{rel.stem}\n")
        if self.spec.task == "segmentation":
            self._set("Segmentation", sample.split).write(f"{rel.stem}\n")
        return rel.as_posix()

    def _write_pngs(self, sample: Sample, stem: str) -> dict[int, XYWH]:
        """Write the class and object PNGs; returns the box of each object's visible pixels
        (VOC boxes the visible part of an object), by its index among the objects."""
        from scipy import ndimage

        from datasetagent.tools.masks import rle_to_mask

        objects = [a for a in sample.annotations if isinstance(a, Box | Mask)]
        if len(objects) > MAX_INDEX:
            raise ExportError(
                f"image {sample.id[:12]} has {len(objects)} objects; VOC object PNGs hold at "
                f"most {MAX_INDEX}; use --format coco"
            )
        classes = np.zeros((sample.height, sample.width), dtype=np.uint8)
        instances = np.zeros_like(classes)
        for k, ann in enumerate(objects, start=1):
            if not isinstance(ann, Mask):
                continue  # a box without a mask: an object of the XML with no pixels
            mask = rle_to_mask(ann.rle)
            if instances[mask].any():
                self.notes[OVERLAP_NOTE] += len(np.unique(instances[mask & (instances > 0)]))
            classes[mask] = self.index[ann.label]
            instances[mask] = k
        for folder, arr in (("SegmentationClass", classes), ("SegmentationObject", instances)):
            img = Image.fromarray(arr)
            img.putpalette(self.palette)  # an L image with a palette becomes a P image
            img.save(self.out / folder / f"{stem}.png", optimize=False)
        boxes: dict[int, XYWH] = {}
        # every object's visible extent in one pass over the object PNG
        for k, found in enumerate(ndimage.find_objects(instances, max_label=len(objects))):
            if found is not None:
                ys, xs = found
                boxes[k] = (
                    float(xs.start),
                    float(ys.start),
                    float(xs.stop - xs.start),
                    float(ys.stop - ys.start),
                )
        return boxes

    def __exit__(self, *exc: object) -> None:
        for f in self._sets.values():
            f.close()
        if exc and exc[0] is not None:
            return
        colours = self.palette
        lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
        for name, i in self.index.items():
            lines.append(f"{name}:{colours[3 * i]},{colours[3 * i + 1]},{colours[3 * i + 2]}::")
        (self.out / "labelmap.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
