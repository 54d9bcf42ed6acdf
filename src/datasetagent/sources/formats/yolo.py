"""YOLO reader (Ultralytics layout): ``data.yaml`` names the classes and each split's images (a
folder or a ``.txt`` list of images), and each image ``.../images/.../NAME.ext`` has its labels
in ``.../labels/.../NAME.txt``: ``CLASS cx cy w h`` (a box, normalised) or ``CLASS x1 y1 ...``
(a segmentation polygon, normalised). An image without a label file has no objects.

Normalised coordinates are taken against the image as displayed (EXIF orientation applied), as
Ultralytics does. Errors name the file and line.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import yaml

from datasetagent.records import EXISTING_LABELER, Annotation, Mask
from datasetagent.sources.files import image_files
from datasetagent.sources.formats import (
    DatasetFormatError,
    Imported,
    ImportedImage,
    box,
    class_name,
    image_size,
    inside,
    log_skip,
    task_of,
    text_lines,
    with_manifest,
)
from datasetagent.spec import SPLIT_NAMES, SplitName
from datasetagent.tools.boxes import cxcywh_to_xywh

log = logging.getLogger(__name__)

YAML_NAMES = ("data.yaml", "dataset.yaml")


def data_yaml(root: Path) -> Path | None:
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def is_yolo(root: Path) -> bool:
    return data_yaml(root) is not None


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise DatasetFormatError(path, where, f"not valid YAML ({problem})") from exc
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "", "expected a mapping with names and split folders")
    return data


def class_names(path: Path, data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    if isinstance(names, list) and all(isinstance(n, str | int) for n in names):
        return [class_name(str(n), path, f"names[{i}]") for i, n in enumerate(names)]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError) as exc:
            raise DatasetFormatError(path, "names", "class indices must be numbers") from exc
        if keys != list(range(len(keys))):
            raise DatasetFormatError(path, "names", "class indices must run 0, 1, 2, ...")
        by_index = {int(k): class_name(str(v), path, f"names: {k}") for k, v in names.items()}
        return [by_index[k] for k in keys]
    raise DatasetFormatError(
        path, "names", "expected the class names as a list or {index: name}", "add names: [...]"
    )


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


#: How to allow a ``path:`` outside the dataset folder.
OUTSIDE_PATH_FIX = (
    "pass --existing-outside-root to read the images there (open_existing(..., "
    "outside_root=True)), or move them into the dataset folder and drop path:"
)


def _base(root: Path, path: Path, data: dict[str, Any], outside_root: bool) -> Path:
    """The folder the splits are named relative to: ``path:`` where it is a folder, inside
    ``root`` unless ``outside_root``; else the folder of the YAML."""
    value = data.get("path")
    if not isinstance(value, str):
        return path.parent
    base = path.parent / value  # an absolute path stays itself
    if not base.is_dir():
        return path.parent  # a path written for another machine: folders next to the YAML
    if outside_root and not base.resolve().is_relative_to(root.resolve()):
        log.warning("%s: path: %s lies outside %s; reading the images there", path, value, root)
        return base.resolve()
    return inside(root, base, path, "path", kind="folder", fix=OUTSIDE_PATH_FIX)


def _split_images(
    top: Path, base: Path, path: Path, data: dict[str, Any], key: str
) -> list[tuple[Path, Path]]:
    """(image as named, real file inside ``top``) for every image of split ``key``."""
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    out: list[tuple[Path, Path]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise DatasetFormatError(path, key, "expected a folder or a .txt list of images")
        target = base / entry
        if entry.startswith("../") and not _inside_existing(top, target):
            target = base / entry[3:]  # Roboflow writes ../train/images beside the YAML
        real = inside(top, target, path, key, kind="any")
        if real.is_dir():
            out += [(p, inside(top, p, path, key)) for p in image_files(target, log_skip)]
        elif real.suffix == ".txt":
            for n, line in enumerate(text_lines(real), start=1):
                if line.strip():
                    image = target.parent / line.strip()
                    out.append((image, inside(top, image, target, f"line {n}")))
        else:
            raise DatasetFormatError(path, key, f"{entry} is neither a folder nor a .txt list")
    return out


def _inside_existing(top: Path, path: Path) -> bool:
    return path.exists() and path.resolve().is_relative_to(top)


def parse_labels(
    path: Path, names: list[str], width: int, height: int
) -> tuple[list[Annotation], int]:
    """The objects of one label file, and the number left out for having no area."""
    from datasetagent.tools.masks import polygons_to_rle, rle_area  # pycocotools, when used

    out: list[Annotation] = []
    empty = 0
    for n, line in enumerate(text_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"line {n}"
        try:
            values = [float(t) for t in tokens]
        except ValueError as exc:
            raise DatasetFormatError(path, where, f"not numbers: {line.strip()!r}") from exc
        if not all(math.isfinite(v) for v in values):
            raise DatasetFormatError(path, where, "a value is not finite")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < len(names):
            raise DatasetFormatError(
                path, where, f"class {tokens[0]} is not an index of the {len(names)} names"
            )
        label = names[int(cls)]
        coords = values[1:]
        if len(coords) == 4:
            cx, cy, w, h = coords
            found = box(label, *cxcywh_to_xywh((cx, cy, w, h), width, height))
            if found is None:
                empty += 1
            else:
                out.append(found)
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            pixels = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
            rle = polygons_to_rle([pixels], height, width)
            if rle_area(rle) == 0:
                empty += 1
            else:
                out.append(Mask(label=label, labeler=EXISTING_LABELER, rle=rle))
        else:
            raise DatasetFormatError(
                path,
                where,
                f"{len(tokens)} values: expected CLASS cx cy w h (5) or CLASS and a "
                "polygon of at least 3 x y pairs",
            )
    return out, empty


def read_yolo(root: Path, *, outside_root: bool = False) -> Imported:
    """The YOLO dataset in ``root``; ``outside_root`` lets ``data.yaml``'s ``path:`` name a
    folder outside ``root`` (then every file read lies inside that folder)."""
    path = data_yaml(root)
    if path is None:
        raise DatasetFormatError(root, "", "no data.yaml", "a YOLO dataset names its classes there")
    data = _load_yaml(inside(root, path, path, ""))
    names = class_names(path, data)
    base = _base(root, path, data, outside_root)
    top = root.resolve() if base.resolve().is_relative_to(root.resolve()) else base.resolve()
    aliases: dict[str, SplitName] = {"train": "train", "val": "val", "test": "test"}
    images: dict[Path, ImportedImage] = {}
    for key in SPLIT_NAMES:
        if not data.get(key):
            continue
        for image, real in _split_images(top, base, path, data, key):
            if real in images:
                continue  # one folder named for two splits: the first keeps it
            width, height = image_size(real)
            labels = label_path(image)
            anns: list[Annotation] = []
            if labels.exists() or labels.is_symlink():
                anns, _ = parse_labels(inside(top, labels, labels, ""), names, width, height)
            images[real] = ImportedImage(
                location=str(real),
                split=aliases[key],
                annotations=tuple(anns),
                width=width,
                height=height,
            )
    found = with_manifest(list(images.values()), root)
    return Imported("yolo", task_of(found), tuple(names), found)
