"""Readers of labelled datasets in the formats we export: ImageFolder, CSV, COCO, YOLO,
Pascal VOC and Hugging Face Parquet.

A reader parses a whole dataset before anything uses it (``read_dataset``): a malformed file
raises :class:`DatasetFormatError` naming the file and the position in it (line, JSON path,
XML element, row), so a dataset is imported whole or not at all. ``detect_format`` tells the
format from the folder's layout. Which reader and which layout test belong to a format is said
by its descriptor (``datasetagent.formats``).

A reader reads only regular files inside the dataset's folder: every path a dataset names (an
image, a label or list file) or holds (its annotation files, a folder of images) goes through
``inside``, so an entry that reaches out by ``../``, an absolute path or a symbolic link, or
names a FIFO or device, stops the import (the one exception: a YOLO ``path:`` outside, when
the caller allows it). Folder listings skip such files instead, as ``--source`` does.

Annotations come back in our records (``ClassLabel``, ``Box`` in pixels, ``Mask`` as COCO RLE)
with the labeler ``existing``, in the frame of the image as the dataset describes it
(``ImportedImage.width``/``height``). Where the folder holds our ``manifest.jsonl``, each
image's provenance (original source, creator, licence and its URL, page, title, processing
steps) comes from it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import ValidationError

from datasetagent.errors import UsageError
from datasetagent.records import (
    EXISTING_LABELER,
    Annotation,
    Box,
    Mask,
    ProcessingStep,
    Provenance,
    main_label,
)
from datasetagent.spec import SPLIT_ALIASES, SplitName, TaskKind, class_name_problem
from datasetagent.tools.boxes import snap
from datasetagent.tools.decode import upright_size

log = logging.getLogger(__name__)


class DatasetFormatError(UsageError):
    """An existing dataset's file is malformed; the message names the file and position."""

    def __init__(self, file: Path | str, where: str, problem: str, fix: str = "") -> None:
        self.file = str(file)
        self.where = where
        text = f"{file}{f': {where}' if where else ''}: {problem}"
        super().__init__(f"{text}; {fix}" if fix else text)


@dataclass(frozen=True, slots=True)
class ImportedImage:
    """One image of an existing dataset with its labels."""

    #: What ``ExistingDataset.read`` takes: a file path, or ``FILE.parquet#ROW``.
    location: str
    split: SplitName | None
    annotations: tuple[Annotation, ...]
    #: The image size the annotations refer to (None for classification).
    width: int | None = None
    height: int | None = None
    licence: str | None = None
    creator: str | None = None
    #: Where the image originally came from, when the dataset says so.
    source: str | None = None
    steps: tuple[ProcessingStep, ...] = ()
    source_kind: str | None = None
    #: The page the image is shown on, its licence's URL and its title, where our manifest
    #: gives them (images collected from the web).
    page: str | None = None
    licence_url: str | None = None
    title: str | None = None

    @property
    def label(self) -> str | None:
        """The class label; for objects the most frequent class (first seen on ties)."""
        return main_label(self.annotations)


@dataclass(frozen=True)
class Imported:
    """A whole dataset as a reader found it."""

    format: str
    task: TaskKind
    classes: tuple[str, ...]
    images: list[ImportedImage]


def split_of(name: str) -> SplitName | None:
    """The split a file or folder name names (``instances_val2017`` → ``val``), if any."""
    for token in re.split(r"[^a-z]+", re.sub(r"\d+", " ", name.lower())):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return None


#: How to fix a dataset that names a file outside its folder.
OUTSIDE_FIX = (
    "a dataset may only name files inside its own folder (no ../, absolute paths or "
    "symbolic links out of it): copy the files into the dataset"
)


def inside(
    root: Path,
    path: Path,
    file: Path | str,
    where: str,
    *,
    kind: Literal["file", "folder", "any"] = "file",
    fix: str = OUTSIDE_FIX,
) -> Path:
    """``path``, a file (or, with ``kind="folder"``, a folder; ``"any"``: either) that the
    dataset in ``root`` names or holds, resolved with symbolic links followed, where it lies
    inside ``root``.

    Every path an importer reads goes through here, so a ``../``, an absolute path or a link can
    never make an import read outside the folder the user pointed at, nor open a FIFO or a
    device: the error names the dataset ``file``, the entry in it (``where``) and the offending
    path, and the whole import stops.
    """
    try:
        real = path.resolve()
    except (RuntimeError, OSError) as exc:  # a loop of links (RuntimeError before Python 3.13)
        raise DatasetFormatError(file, where, f"{path} is a loop of symbolic links") from exc
    if not real.is_relative_to(root.resolve()):
        shown = f"links to {real}" if Path(file) == path else f"{path} lies"
        raise DatasetFormatError(file, where, f"{shown} outside the dataset folder {root}", fix)
    is_file, is_dir = real.is_file(), real.is_dir()
    if (is_file and kind != "folder") or (is_dir and kind != "file"):
        return real
    if not real.exists():
        raise DatasetFormatError(file, where, f"{path} not found")
    what = "a folder" if kind == "folder" else "a regular file"
    raise DatasetFormatError(file, where, f"{path} is not {what}")


#: How to fix a class name a dataset gives that cannot be one.
RENAME_FIX = "rename the class there (class names become folder and file names in exports)"


def class_name(name: str, file: Path | str, where: str) -> str:
    """``name``, a class name the dataset ``file`` gives at ``where``, where it can be one
    (``spec.class_name_problem``, on the name as a spec would strip it); else the error names
    the file and the position, so the user knows what to rename."""
    problem = class_name_problem(name.strip())
    if problem is not None:
        raise DatasetFormatError(file, where, problem, RENAME_FIX)
    return name


def log_skip(path: Path, why: str) -> None:
    """What a reader's folder listing leaves out (``files.walk_files``), logged."""
    log.warning("%s skipped: %s", path, why)


def optional_file(root: Path, path: Path) -> Path | None:
    """The dataset's own file ``path`` (``inside`` ``root``), or None where there is none."""
    if not path.exists() and not path.is_symlink():
        return None
    return inside(root, path, path, "")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as displayed (EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetFormatError(path, "", f"not a readable image ({exc})") from exc
    return upright_size((width, height), orientation)


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file of a dataset; other bytes are an error naming the byte."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, f"byte {exc.start}", "not UTF-8 text") from exc


def box(label: str, x: float, y: float, w: float, h: float) -> Box | None:
    """An imported box with what lies left of or above the image cut off, or None where it
    has no area left (no format exports such a box; the export would drop it anyway).
    Coordinates are snapped as exports snap them (``tools.boxes.snap``)."""
    x0, y0 = snap(max(x, 0.0)), snap(max(y, 0.0))
    w, h = snap(x + w - x0), snap(y + h - y0)
    if not (w > 0 and h > 0):
        return None
    return Box(label=label, labeler=EXISTING_LABELER, x=x0, y=y0, w=w, h=h)


def task_of(images: Iterable[ImportedImage]) -> TaskKind:
    kinds = {type(a) for img in images for a in img.annotations}
    if Mask in kinds:
        return "segmentation"
    if Box in kinds:
        return "detection"
    return "classification"


# -- our manifest ------------------------------------------------------------------------------
def read_manifest(root: Path) -> dict[str, tuple[Provenance, str | None]]:
    """``file`` → (provenance, split) from ``manifest.jsonl`` when the folder has one."""
    path = optional_file(root, root / "manifest.jsonl")
    if path is None:
        return {}
    out: dict[str, tuple[Provenance, str | None]] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prov = Provenance.model_validate(record["provenance"])
                out[str(record["file"])] = (prov, record.get("split"))
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(
                    path, f"line {n} column {exc.colno}", f"not valid JSON ({exc.msg})"
                ) from exc
            except (KeyError, TypeError, ValidationError) as exc:
                raise DatasetFormatError(
                    path, f"line {n}", f"not a manifest record ({_short(exc)})"
                ) from exc
    return out


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}"
    return str(exc)


def with_manifest(
    images: Sequence[ImportedImage],
    root: Path,
    file_of: Callable[[ImportedImage], str] | None = None,
) -> list[ImportedImage]:
    """``images`` with the provenance ``manifest.jsonl`` gives for their file (by default
    the location relative to ``root``), where it does."""
    manifest = read_manifest(root)
    if not manifest:
        return list(images)
    top = root.resolve()
    out = []
    for img in images:
        file = file_of(img) if file_of else relative(Path(img.location), top)
        found = manifest.get(file)
        if found is None:
            out.append(img)
            continue
        prov = found[0]
        out.append(
            replace(
                img,
                licence=prov.licence,
                creator=prov.creator,
                source=prov.location,
                steps=prov.steps,
                source_kind=prov.source_kind,
                page=prov.page,
                licence_url=prov.licence_url,
                title=prov.title,
            )
        )
    return out


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as the manifest writes it (absolute when outside)."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


# -- detection and dispatch --------------------------------------------------------------------
def detect_format(root: Path) -> str:
    """The format of the dataset in folder ``root``, from its layout: of the formats whose
    layout test matches, the one of highest precedence (``FormatDescriptor.precedence``)."""
    from datasetagent.formats import descriptors

    tests = sorted((d for d in descriptors() if d.detect), key=lambda d: -d.precedence)
    for d in tests:
        if d.detect is not None and d.detect(root):
            return d.name
    tried = ", ".join(d.name for d in tests)
    raise UsageError(
        f"{root} is not a dataset in any format this tool reads ({tried}); give the folder "
        "that holds the dataset"
    )


def read_dataset(root: Path, fmt: str | None = None, *, outside_root: bool = False) -> Imported:
    """Parse the dataset in ``root`` (format ``fmt``, or detected) completely. Only files inside
    ``root`` are read (``inside``); ``outside_root`` lets a YOLO ``data.yaml`` name a ``path:``
    outside it, whose files are then read (and only they)."""
    from datasetagent.formats import descriptor

    found = descriptor(fmt or detect_format(root))
    if found.reader is None and found.read_as is not None:
        found = descriptor(found.read_as)
    if found.reader is None:
        raise UsageError(f"the {found.name} format has no reader; it can only be exported")
    return found.reader(root, outside_root=outside_root)
