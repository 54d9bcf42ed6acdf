"""Hugging Face Parquet reader: ``data/SPLIT-*.parquet`` (ours and the Hub's), ``SPLIT/*.parquet``
or ``*.parquet``; the split comes from the file or folder name (``validation`` is ``val``).

The features come from the Parquet schema's ``huggingface`` metadata: the ``Image`` column holds
the pictures; a top-level ``ClassLabel`` column (or a column of strings named ``label``) makes a
classification dataset; an ``objects`` column of dict-of-lists with ``bbox`` and ``category``
(``ClassLabel``), and ``rle`` for masks, makes a detection or segmentation dataset. Images stay
inside the Parquet file: their location is ``FILE.parquet#ROW``, read by :class:`RowReader`.
An image stored as a ``path`` without bytes is read from that file, which must lie inside the
dataset's folder (``formats.inside``): its location is the file itself.

Boxes are COCO ``[x, y, width, height]`` pixels (ours, and most datasets on the Hub), but some
datasets store corners ``[x0, y0, x1, y1]`` and the schema does not say which. The whole dataset
is read first and taken as corners when some box runs past its image read as a size but fits as
corners, and no box has a corner before its start (``_corners``); the choice is logged.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datasetagent.errors import SourceError
from datasetagent.formats import install_hint
from datasetagent.records import EXISTING_LABELER, RLE, Annotation, ClassLabel, Mask
from datasetagent.sources.formats import (
    DatasetFormatError,
    Imported,
    ImportedImage,
    box,
    class_name,
    image_size,
    inside,
    split_of,
    task_of,
    with_manifest,
)
from datasetagent.tools.boxes import xyxy_to_xywh

log = logging.getLogger(__name__)

BATCH_ROWS = 1024


def _pq() -> Any:
    """pyarrow.parquet (untyped), or an error that says how to install it."""
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise SourceError(
            f"reading a Hugging Face Parquet dataset needs pyarrow: {install_hint('hf')}"
        ) from exc
    return pq


def parquet_files(root: Path) -> list[Path]:
    found = [*root.glob("data/*.parquet"), *root.glob("*.parquet"), *root.glob("*/*/*.parquet")]
    if not found:
        found = list(root.glob("*/*.parquet"))
    return sorted(set(found))


def is_hf(root: Path) -> bool:
    return bool(parquet_files(root))


def features_of(path: Path, schema: Any) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return {}
    try:
        features = json.loads(raw)["info"]["features"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetFormatError(
            path, "schema metadata huggingface", "not datasets features"
        ) from exc
    if not isinstance(features, dict):
        raise DatasetFormatError(path, "schema metadata huggingface", "not datasets features")
    return features


def _type(feature: Any) -> str | None:
    return feature.get("_type") if isinstance(feature, dict) else None


def image_column(path: Path, schema: Any, features: dict[str, Any]) -> str:
    for name, feature in features.items():
        if _type(feature) == "Image":
            return str(name)
    if "image" in schema.names:
        return "image"
    raise DatasetFormatError(path, "schema", "no Image column", "a column of images is needed")


def _class_names(path: Path, column: str, names: Any) -> list[str]:
    """The names of a ``ClassLabel`` feature of column ``column``, each checked as a class name."""
    where = f"schema metadata huggingface: {column} names"
    return [class_name(str(n), path, f"{where}[{i}]") for i, n in enumerate(names)]


def _objects_spec(path: Path, features: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The objects column and its category names, when the dataset has one."""
    for name, feature in features.items():
        inner = feature.get("feature") if _type(feature) in ("Sequence", "List") else feature
        if isinstance(inner, dict) and "bbox" in inner and "category" in inner:
            category = inner["category"]
            if _type(category) in ("Sequence", "List"):
                category = category.get("feature")
            if _type(category) == "ClassLabel":
                return str(name), _class_names(path, f"{name}.category", category["names"])
    return None


class _File:
    """One Parquet file: its columns and how to read its rows."""

    def __init__(self, path: Path) -> None:
        pq = _pq()
        try:
            self.parquet = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises its own error types for broken files
            raise DatasetFormatError(path, "", f"not a readable Parquet file ({exc})") from exc
        self.path = path
        schema = self.parquet.schema_arrow
        self.features = features_of(path, schema)
        self.image = image_column(path, schema, self.features)
        self.objects = _objects_spec(path, self.features)
        self.label: tuple[str, list[str] | None] | None = None
        for name, feature in self.features.items():
            if _type(feature) == "ClassLabel":
                self.label = (str(name), _class_names(path, str(name), feature["names"]))
                break
        if self.label is None and self.objects is None and "label" in schema.names:
            self.label = ("label", None)  # plain strings
        if self.label is None and self.objects is None:
            raise DatasetFormatError(
                path, "schema", "neither a ClassLabel column nor objects with bbox and category"
            )
        self.columns = [c for c in schema.names if c != self.image]


def _number(path: Path, value: Any, where: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetFormatError(path, where, f"expected a number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class _RawBox:
    """A box's four numbers as stored, until the dataset's convention is known."""

    label: str
    values: tuple[float, float, float, float]


def _corners(objects: Iterable[tuple[_RawBox, tuple[int, int]]]) -> bool:
    """Whether the dataset's boxes are corners (see the module doc): (box, image size) pairs."""
    evidence = False
    for raw, (width, height) in objects:
        a, b, c, d = raw.values
        if c < a or d < b:
            return False  # a corner before its start: sizes
        if a + c > width + 1 or b + d > height + 1:
            if c > width + 1 or d > height + 1:
                return False  # past the image either way: no evidence of corners
            evidence = True
    return evidence


def _objects(
    f: _File,
    spec: tuple[str, list[str]],
    row: dict[str, Any],
    where: str,
    size: tuple[int, int] | None,
) -> tuple[list[Annotation | _RawBox], tuple[int, int]]:
    column, names = spec
    objects = row.get(column) or {}
    if size is None:
        width, height = row.get("width"), row.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
            raise DatasetFormatError(f.path, f"{where} width/height", "the image size is needed")
        size = (width, height)
    bboxes, categories = objects.get("bbox") or [], objects.get("category") or []
    rles = objects.get("rle") or [None] * len(bboxes)
    if not len(bboxes) == len(categories) == len(rles):
        raise DatasetFormatError(
            f.path, f"{where} {column}", "bbox, category and rle differ in length"
        )
    out: list[Annotation | _RawBox] = []
    for k, (bbox, cat, rle) in enumerate(zip(bboxes, categories, rles, strict=True)):
        at = f"{where} {column}[{k}]"
        if not isinstance(cat, int) or not 0 <= cat < len(names):
            raise DatasetFormatError(f.path, f"{at}.category", f"not a class index: {cat!r}")
        if rle is not None:
            out.append(
                Mask(
                    label=names[cat],
                    labeler=EXISTING_LABELER,
                    rle=RLE(size=(size[1], size[0]), counts=str(rle)),
                )
            )
            continue
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DatasetFormatError(f.path, f"{at}.bbox", "expected [x, y, width, height]")
        a, b, c, d = (_number(f.path, v, f"{at}.bbox[{i}]") for i, v in enumerate(bbox))
        out.append(_RawBox(names[cat], (a, b, c, d)))
    return out, size


def _placed(anns: Sequence[Annotation | _RawBox], corners: bool) -> tuple[Annotation, ...]:
    """Raw boxes made boxes (dropping those with no area), as sizes or as corners."""
    out: list[Annotation] = []
    for ann in anns:
        if not isinstance(ann, _RawBox):
            out.append(ann)
            continue
        x, y, c, d = ann.values
        found = box(ann.label, *(xyxy_to_xywh((x, y, c, d)) if corners else (x, y, c, d)))
        if found is not None:
            out.append(found)
    return tuple(out)


def _image_size(f: _File, value: Any, where: str) -> tuple[int, int]:
    import io

    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else None
    try:
        if data is None:
            raise OSError("no embedded bytes")
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetFormatError(
            f.path, f"{where} {f.image}", f"not a readable image ({exc})"
        ) from exc


_Pending = tuple[ImportedImage, list[Annotation | _RawBox]]


def external_images(root: Path, f: _File) -> dict[int, Path]:
    """Row → image file, for the rows whose image is a ``path`` rather than embedded bytes;
    each file checked to lie inside ``root``. Row groups whose statistics say every image is
    embedded are not read."""
    meta = f.parquet.metadata
    leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
    leaf = leaves.index(f"{f.image}.bytes") if f"{f.image}.bytes" in leaves else None
    out: dict[int, Path] = {}
    start = 0
    for group in range(f.parquet.num_row_groups):
        rows = meta.row_group(group).num_rows
        stats = meta.row_group(group).column(leaf).statistics if leaf is not None else None
        if stats is None or not stats.has_null_count or stats.null_count > 0:
            table = f.parquet.read_row_group(group, columns=[f.image])
            for i, value in enumerate(table.column(f.image).to_pylist()):
                if not isinstance(value, dict) or value.get("bytes") is not None:
                    continue
                where = f"row {start + i} {f.image}.path"
                name = value.get("path")
                if not isinstance(name, str) or not name:
                    raise DatasetFormatError(
                        f.path, where, "the image has neither bytes nor a path"
                    )
                out[start + i] = inside(root, f.path.parent / name, f.path, where)
        start += rows
    return out


def is_row(location: str) -> bool:
    """Whether ``location`` is a ``FILE.parquet#ROW`` (else it is an image file)."""
    file, sep, row = location.rpartition("#")
    return bool(sep) and file.endswith(".parquet") and row.isdigit()


def _read_file(root: Path, path: Path) -> tuple[list[str], list[_Pending], dict[str, str]]:
    """The classes and images of one Parquet file, and the ``FILE#ROW`` of each image whose
    location is a file of its own."""
    f = _File(path)
    external = external_images(root, f)
    rows_of: dict[str, str] = {}
    split = split_of(path.stem) or split_of(path.parent.name)
    need_size = f.objects is not None and not {"width", "height"} <= set(f.columns)
    columns = [*f.columns, f.image] if need_size else f.columns
    images: list[_Pending] = []
    classes: list[str] = []
    row_no = 0
    for batch in f.parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            where = f"row {row_no}"
            anns: list[Annotation | _RawBox] = []
            size: tuple[int, int] | None = None
            if f.objects is not None:
                known = None
                if need_size:
                    value = row.get(f.image)
                    ext = external.get(row_no)
                    known = image_size(ext) if ext else _image_size(f, value, where)
                anns, size = _objects(f, f.objects, row, where, known)
                classes = f.objects[1]
            elif f.label is not None:
                column, names = f.label
                value = row.get(column)
                if names is not None:
                    if not isinstance(value, int) or not 0 <= value < len(names):
                        raise DatasetFormatError(
                            path, f"{where} {column}", f"not a class index: {value!r}"
                        )
                    label = names[value]
                    classes = names
                elif isinstance(value, str) and value:
                    label = class_name(value, path, f"{where} {column}")
                else:
                    raise DatasetFormatError(path, f"{where} {column}", "expected a label")
                anns = [ClassLabel(label=label, labeler=EXISTING_LABELER)]
            location = f"{path.resolve()}#{row_no}"
            if row_no in external:
                rows_of[str(external[row_no])] = location
                location = str(external[row_no])
            image = ImportedImage(
                location=location,
                split=split,
                annotations=(),
                width=size[0] if size else None,
                height=size[1] if size else None,
                licence=row.get("licence") or None,
                creator=row.get("creator") or None,
                source=row.get("source") or None,
            )
            images.append((image, anns))
            row_no += 1
    if not classes:
        named = (a.label for _, anns in images for a in anns if isinstance(a, ClassLabel))
        classes = sorted(set(named))
    return classes, images, rows_of


def read_hf(root: Path, *, outside_root: bool = False) -> Imported:
    classes: dict[str, None] = {}
    pending: list[_Pending] = []
    files = parquet_files(root)
    if not files:
        raise DatasetFormatError(root, "", "no Parquet files")
    rows_of: dict[str, str] = {}
    for path in files:
        inside(root, path, path, "")  # a link out of the folder is refused
        names, found, rows = _read_file(root, path)
        classes.update(dict.fromkeys(names))
        pending += found
        rows_of.update(rows)
    corners = _corners(
        (a, (img.width or 0, img.height or 0))
        for img, anns in pending
        for a in anns
        if isinstance(a, _RawBox)
    )
    if corners:
        log.info(
            "%s: boxes read as corners [x0, y0, x1, y1] (some run past their image as sizes)", root
        )
    images = [dataclasses.replace(img, annotations=_placed(anns, corners)) for img, anns in pending]
    top = root.resolve()

    def file_of(img: ImportedImage) -> str:
        path, _, row = rows_of.get(img.location, img.location).rpartition("#")
        return f"{Path(path).relative_to(top).as_posix()}#{row}"

    images = with_manifest(images, root, file_of)
    return Imported("hf", task_of(images), tuple(classes), images)


class RowReader:
    """Reads the image bytes of ``FILE.parquet#ROW`` locations, keeping the last row group
    read (candidates come in file order, so most reads hit it). Not shared between processes:
    each worker makes its own."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Any, str, list[int]]] = {}
        self._group: tuple[str, int, list[Any]] | None = None

    def _open(self, file: str) -> tuple[Any, str, list[int]]:
        if file not in self._files:
            f = _File(Path(file))
            starts = [0]
            for i in range(f.parquet.num_row_groups):
                starts.append(starts[-1] + f.parquet.metadata.row_group(i).num_rows)
            self._files = {file: (f.parquet, f.image, starts)}  # one file open at a time
        return self._files[file]

    def read(self, location: str) -> bytes:
        import bisect

        file, _, row_text = location.rpartition("#")
        try:
            row = int(row_text)
        except ValueError as exc:
            raise OSError(f"not a Parquet row location: {location}") from exc
        parquet, column, starts = self._open(file)
        group = bisect.bisect_right(starts, row) - 1
        if not 0 <= group < len(starts) - 1:
            raise OSError(f"{file} has no row {row}")
        if self._group is None or self._group[:2] != (file, group):
            table = parquet.read_row_group(group, columns=[column])
            self._group = (file, group, table.column(column).to_pylist())
        value = self._group[2][row - starts[group]]
        data = value.get("bytes") if isinstance(value, dict) else None
        if data is None:  # an image by path has its file as location (``external_images``)
            raise OSError(f"{location}: the image is not embedded in the Parquet file")
        return bytes(data)
