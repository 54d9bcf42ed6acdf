"""Pascal VOC reader: ``Annotations/STEM.xml`` with images in ``JPEGImages/``, splits from
``ImageSets/Main/SPLIT.txt`` (or ``ImageSets/Segmentation``), and instance masks from
``SegmentationObject/STEM.png`` where it exists: object ``k`` of the XML is the pixels of value
``k`` (255 is VOC's void border). An object with no pixels there stays a box.

Boxes are VOC's 1-based inclusive pixel indices (``tools.boxes.voc_to_xywh``). Errors name the
file and the XML element (``object[2]/bndbox/xmax``) or the line and column of a parse error.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from datasetagent.records import EXISTING_LABELER, Annotation, Mask
from datasetagent.sources.files import IMAGE_EXTENSIONS
from datasetagent.sources.formats import (
    DatasetFormatError,
    Imported,
    ImportedImage,
    box,
    class_name,
    image_size,
    inside,
    optional_file,
    task_of,
    text_lines,
    with_manifest,
)
from datasetagent.spec import SPLIT_ALIASES, SplitName
from datasetagent.tools.boxes import voc_to_xywh


def _splits(root: Path) -> dict[str, SplitName]:
    """Image stem → split from the ImageSets lists (``trainval`` lists are not a split)."""
    out: dict[str, SplitName] = {}
    for kind in ("Main", "Segmentation"):
        folder = root / "ImageSets" / kind
        for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            split = SPLIT_ALIASES.get(path.stem.lower())
            if split is None:
                continue
            for line in text_lines(inside(root, path, path, "")):
                if line.split():
                    out.setdefault(line.split()[0], split)
    return out


def _text(path: Path, parent: ET.Element, tag: str, where: str) -> str:
    el = parent.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise DatasetFormatError(path, f"{where}/{tag}" if where else tag, "missing")
    return el.text.strip()


def _number(path: Path, parent: ET.Element, tag: str, where: str) -> float:
    text = _text(path, parent, tag, where)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetFormatError(path, f"{where}/{tag}", f"expected a number, got {text!r}")
    return value


def _image(root: Path, path: Path, xml: ET.Element) -> Path:
    folder = root / "JPEGImages"
    name = (xml.findtext("filename") or "").strip()
    named = folder / name
    if name and (named.exists() or named.is_symlink()):
        return inside(root, named, path, "filename")
    for ext in sorted(IMAGE_EXTENSIONS):
        for candidate in (folder / f"{path.stem}{ext}", folder / f"{path.stem}{ext.upper()}"):
            if candidate.exists() or candidate.is_symlink():
                return inside(root, candidate, path, "filename")
    raise DatasetFormatError(path, "filename", f"image {name or path.stem} not in {folder}")


def _object_masks(root: Path, path: Path, png: Path, size: tuple[int, int]) -> np.ndarray | None:
    if optional_file(root, png) is None:
        return None
    try:
        with Image.open(png) as img:
            if img.mode not in ("P", "L"):
                raise DatasetFormatError(png, "", f"a {img.mode} image; expected palette indices")
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetFormatError(png, "", f"not a readable PNG ({exc})") from exc
    if (arr.shape[1], arr.shape[0]) != size:
        raise DatasetFormatError(
            png,
            "",
            f"{arr.shape[1]}x{arr.shape[0]} is not the size {size[0]}x{size[1]} of {path.name}",
        )
    return arr


def read_xml(root: Path, path: Path, split: SplitName | None) -> ImportedImage:
    from datasetagent.tools.masks import mask_to_rle  # pycocotools, loaded when used

    try:
        xml = ET.parse(inside(root, path, path, "")).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise DatasetFormatError(
            path, f"line {line} column {col + 1}", "not well-formed XML"
        ) from exc
    if xml.tag != "annotation":
        raise DatasetFormatError(path, xml.tag, "the root element of VOC XML is <annotation>")
    image = _image(root, path, xml)
    size = xml.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        width = int(_number(path, size, "width", "size"))
        height = int(_number(path, size, "height", "size"))
    else:
        width, height = image_size(image)
    masks = _object_masks(
        root, path, root / "SegmentationObject" / f"{path.stem}.png", (width, height)
    )
    anns: list[Annotation] = []
    for k, obj in enumerate(xml.findall("object"), start=1):
        where = f"object[{k}]"
        label = class_name(_text(path, obj, "name", where), path, f"{where}/name")
        pixels = masks == k if masks is not None else None
        if pixels is not None and pixels.any():
            anns.append(Mask(label=label, labeler=EXISTING_LABELER, rle=mask_to_rle(pixels)))
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(path, f"{where}/bndbox", "missing")
        corners = [
            _number(path, bndbox, t, f"{where}/bndbox") for t in ("xmin", "ymin", "xmax", "ymax")
        ]
        x0, x1 = sorted(corners[0::2])
        y0, y1 = sorted(corners[1::2])
        found = box(label, *voc_to_xywh((x0, y0, x1, y1)))
        if found is not None:
            anns.append(found)
    return ImportedImage(
        location=str(image.resolve()),
        split=split,
        annotations=tuple(anns),
        width=width,
        height=height,
        creator=xml.findtext("owner/name") or None,
        source=xml.findtext("source/image") or None,
    )


def _labelmap_name(line: str) -> str | None:
    """The class of a ``labelmap.txt`` line ``label:R,G,B:parts:actions`` (or of a bare name);
    None for the header comment or a blank line. The label is what precedes the last three
    fields, so a class named "a: b" or "#1" reads back whole."""
    if ":" not in line:  # a plain list of names
        return None if not line.strip() or line.startswith("#") else line.strip()
    fields = line.rsplit(":", 3)
    if len(fields) != 4 or not re.fullmatch(r"\s*\d+\s*,\s*\d+\s*,\s*\d+\s*", fields[1]):
        return None
    return fields[0]


def is_voc(root: Path) -> bool:
    return (root / "Annotations").is_dir()


def read_voc(root: Path, *, outside_root: bool = False) -> Imported:
    splits = _splits(root)
    images = [
        read_xml(root, path, splits.get(path.stem))
        for path in sorted((root / "Annotations").glob("*.xml"))
    ]
    classes = dict.fromkeys(a.label for img in images for a in img.annotations)
    labelmap = optional_file(root, root / "labelmap.txt")
    if labelmap is not None:  # our labelmap (and CVAT's) gives the class order, unused ones too
        names = [
            class_name(name, labelmap, f"line {n}")
            for n, line in enumerate(text_lines(labelmap), start=1)
            if (name := _labelmap_name(line)) is not None
        ]
        classes = dict.fromkeys([n for n in names if n != "background"]) | classes
    images = with_manifest(images, root)
    return Imported("voc", task_of(images), tuple(classes), images)
