"""COCO reader: ``annotations/instances_SPLIT.json`` with images in ``images/SPLIT/`` (ours),
``SPLIT/`` or ``SPLIT2017/`` (COCO's), or Roboflow's ``SPLIT/_annotations.coco.json`` beside
its images.

An annotation with a non-empty ``segmentation`` (polygons, compressed or uncompressed RLE)
becomes a mask, any other a box. Crowd regions (``iscrowd: 1``) mark many objects at once and
are not imported as objects (our exports never write them). Errors name the JSON path of the
bad value, e.g. ``$.annotations[12].bbox``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from datasetagent.records import EXISTING_LABELER, RLE, Annotation, Mask
from datasetagent.sources.formats import (
    DatasetFormatError,
    Imported,
    ImportedImage,
    box,
    class_name,
    inside,
    split_of,
    task_of,
    with_manifest,
)

log = logging.getLogger(__name__)


def annotation_files(root: Path) -> list[Path]:
    """The COCO annotation files of the dataset in ``root`` (instances only, where a folder
    also holds captions or keypoints)."""
    found = sorted(root.glob("annotations/*.json"))
    instances = [p for p in found if p.name.startswith("instances")]
    found = instances or found
    found += sorted(root.glob("_annotations.coco.json"))
    found += sorted(root.glob("*/_annotations.coco.json"))
    return found


def is_coco(root: Path) -> bool:
    return bool(annotation_files(root))


class _Doc:
    """One annotation file being checked; ``fail`` names the file and JSON path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str, fix: str = "") -> DatasetFormatError:
        return DatasetFormatError(self.path, where, problem, fix)

    def load(self) -> dict[str, Any]:
        try:
            with self.path.open(encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise self.fail(
                f"line {exc.lineno} column {exc.colno}", f"not valid JSON ({exc.msg})"
            ) from exc
        except UnicodeDecodeError as exc:
            raise self.fail(f"byte {exc.start}", "not UTF-8 text") from exc
        if not isinstance(data, dict):
            raise self.fail("$", "a COCO file is a JSON object with images and annotations")
        return data

    def items(self, data: dict[str, Any], key: str, required: bool = True) -> list[Any]:
        value = data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self.fail(f"$.{key}", f"expected a list of {key}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"$.{key}[{i}]", "expected an object")
        return value

    def number(self, value: Any, where: str, *, integer: bool = False) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or (integer and value != int(value)):
            kind = "a whole number" if integer else "a number"
            raise self.fail(where, f"expected {kind}, got {json.dumps(value)}")
        return float(value)

    def key(self, item: dict[str, Any], name: str, where: str) -> Any:
        if name not in item:
            raise self.fail(where, f"no {name!r}")
        value = item[name]
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise self.fail(f"{where}.{name}", f"expected an id, got {json.dumps(value)}")
        return value


def _image_dirs(root: Path, path: Path) -> list[Path]:
    tag = path.stem.removeprefix("instances_").removeprefix("instances")
    split = split_of(tag) or split_of(path.parent.name)
    dirs = [path.parent, root / "images" / tag, root / tag]
    if split is not None:
        dirs += [root / "images" / split, root / split]
    return [d for d in (*dirs, root / "images", root) if d.is_dir()]  # only those that exist


def _find_image(root: Path, dirs: list[Path], name: str, file: Path, where: str) -> Path:
    """The image ``file_name`` ``name`` names: the first of the image folders that holds it
    (inside ``root``: see ``inside``)."""
    top = root.resolve()
    outside: Path | None = None
    for d in dirs:
        candidate = d / name
        try:
            real = candidate.resolve()
        except (RuntimeError, OSError):  # a loop of links: ``inside`` names it
            inside(root, candidate, file, where)
            raise
        if not real.is_relative_to(top):
            outside = outside or candidate
        elif real.is_file():
            return real
    if outside is not None:
        inside(root, outside, file, where)  # raises: it lies outside
    raise DatasetFormatError(
        file, where, f"image {name} not found in " + ", ".join(str(d) for d in dirs)
    )


def _segmentation(doc: _Doc, seg: Any, where: str, height: int, width: int) -> RLE | None:
    """The mask of a ``segmentation`` value, or None when it holds none."""
    from datasetagent.tools.masks import polygons_to_rle  # pycocotools, loaded when used

    if seg is None or seg == []:
        return None
    if isinstance(seg, list):
        polygons = []
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise doc.fail(f"{where}[{k}]", "a polygon is a list of at least 3 x, y pairs")
            polygons.append([doc.number(v, f"{where}[{k}]") for v in poly])
        return polygons_to_rle(polygons, height, width)
    if isinstance(seg, dict):
        size = seg.get("size")
        if size != [height, width]:
            raise doc.fail(
                f"{where}.size",
                f"RLE size {size} is not the image's [height, width] [{height}, {width}]",
            )
        counts = seg.get("counts")
        if isinstance(counts, str):
            return RLE(size=(height, width), counts=counts)
        if isinstance(counts, list) and all(isinstance(c, int) for c in counts):
            from pycocotools import mask as coco_mask

            if sum(counts) != height * width:
                raise doc.fail(f"{where}.counts", "the run lengths do not add up to the image")
            compressed = coco_mask.frPyObjects(seg, height, width)
            return RLE(size=(height, width), counts=compressed["counts"].decode("ascii"))
        raise doc.fail(f"{where}.counts", "expected an RLE string or a list of run lengths")
    raise doc.fail(where, "expected polygons (a list) or an RLE (an object)")


def _read_file(root: Path, path: Path) -> tuple[list[str], list[ImportedImage]]:
    doc = _Doc(path)
    data = doc.load()
    categories: dict[Any, str] = {}
    for i, cat in enumerate(doc.items(data, "categories")):
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise doc.fail(f"$.categories[{i}].name", "a category needs a name")
        name = class_name(name, doc.path, f"$.categories[{i}].name").strip()
        categories[doc.key(cat, "id", f"$.categories[{i}]")] = name
    licences = {
        lic.get("id"): str(lic.get("name") or "")
        for lic in doc.items(data, "licenses", required=False)
    }
    images: dict[Any, dict[str, Any]] = {}
    dirs = _image_dirs(root, path)
    for i, img in enumerate(doc.items(data, "images")):
        where = f"$.images[{i}]"
        image_id = doc.key(img, "id", where)
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            raise doc.fail(f"{where}.file_name", "an image needs a file_name")
        width = int(doc.number(img.get("width"), f"{where}.width", integer=True))
        height = int(doc.number(img.get("height"), f"{where}.height", integer=True))
        if width < 1 or height < 1:
            raise doc.fail(where, f"image size {width}x{height} is empty")
        file = _find_image(root, dirs, name, path, f"{where}.file_name")
        images[image_id] = {
            "file": file,
            "width": width,
            "height": height,
            "licence": licences.get(img.get("license")) or None,
            "creator": img.get("creator") if isinstance(img.get("creator"), str) else None,
            "source": img.get("source") if isinstance(img.get("source"), str) else None,
            "anns": [],
        }
    crowd = 0
    for i, ann in enumerate(doc.items(data, "annotations", required=False)):
        where = f"$.annotations[{i}]"
        image = images.get(doc.key(ann, "image_id", where))
        if image is None:
            raise doc.fail(f"{where}.image_id", f"no image has id {ann['image_id']!r}")
        label = categories.get(doc.key(ann, "category_id", where))
        if label is None:
            raise doc.fail(f"{where}.category_id", f"no category has id {ann['category_id']!r}")
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        rle = _segmentation(
            doc, ann.get("segmentation"), f"{where}.segmentation", image["height"], image["width"]
        )
        record: Annotation | None
        if rle is not None:
            record = Mask(label=label, labeler=EXISTING_LABELER, rle=rle)
        else:
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise doc.fail(f"{where}.bbox", "expected [x, y, width, height]")
            x, y, w, h = (doc.number(v, f"{where}.bbox[{k}]") for k, v in enumerate(bbox))
            record = box(label, x, y, w, h)
        if record is not None:
            image["anns"].append(record)
    if crowd:
        log.info("%s: %d crowd regions (iscrowd=1) not imported as objects", path, crowd)
    split = split_of(path.stem.removeprefix("instances_")) or split_of(path.parent.name)
    out = [
        ImportedImage(
            location=str(img["file"]),
            split=split,
            annotations=tuple(img["anns"]),
            width=img["width"],
            height=img["height"],
            licence=img["licence"],
            creator=img["creator"],
            source=img["source"],
        )
        for img in images.values()
    ]
    return list(categories.values()), out


def read_coco(root: Path, *, outside_root: bool = False) -> Imported:
    classes: dict[str, None] = {}
    images: list[ImportedImage] = []
    for path in annotation_files(root):
        inside(root, path, path, "")  # a link out of the folder is refused
        names, found = _read_file(root, path)
        classes.update(dict.fromkeys(names))
        images += found
    images = with_manifest(images, root)
    return Imported("coco", task_of(images), tuple(classes), images)
