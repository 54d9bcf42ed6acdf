"""Classification layouts: ImageFolder (``CLASS/IMAGE`` or ``SPLIT/CLASS/IMAGE``) and the CSV
manifest (``labels.csv`` with ``file`` and ``label`` columns; ``split``, ``source``, ``creator``
and ``licence`` where present)."""

from __future__ import annotations

import csv
from pathlib import Path

from datasetagent.errors import UsageError
from datasetagent.export.csvfile import unescape_cell
from datasetagent.records import EXISTING_LABELER, ClassLabel
from datasetagent.sources.files import image_files
from datasetagent.sources.formats import (
    DatasetFormatError,
    Imported,
    ImportedImage,
    class_name,
    inside,
    log_skip,
    with_manifest,
)
from datasetagent.spec import SPLIT_ALIASES, SplitName


def _label(name: str) -> tuple[ClassLabel]:
    return (ClassLabel(label=name, labeler=EXISTING_LABELER),)


def is_imagefolder(root: Path) -> bool:
    """Every folder may be an ImageFolder dataset: the layout other formats fall back to."""
    return root.is_dir()


def is_csv(root: Path) -> bool:
    return (root / "labels.csv").is_file()


def read_imagefolder(root: Path, *, outside_root: bool = False) -> Imported:
    """``ROOT/CLASS/*`` or ``ROOT/SPLIT/CLASS/*`` (SPLIT among train, val, valid, validation,
    dev, test): every image file below a class folder. A class or split folder that links out
    of ``root`` stops the import; links out of a class folder and files that are not regular
    files are skipped (and logged)."""
    subdirs = _folders(root, root)
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_ALIASES]
    class_dirs: list[tuple[Path, str, SplitName | None]] = []
    if split_dirs and len(split_dirs) == len(subdirs):
        for split_dir in split_dirs:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            class_dirs += [(d, d.name, split) for d in _folders(root, split_dir)]
    else:
        class_dirs = [(p, p.name, None) for p in subdirs]
    if not class_dirs:
        raise UsageError(
            f"existing dataset {root} has no class folders; expected CLASS/image or "
            "SPLIT/CLASS/image, or a COCO, YOLO, VOC, Hugging Face Parquet or labels.csv dataset"
        )
    for folder, name, _ in class_dirs:
        class_name(name, folder, "")
    images = [
        ImportedImage(
            location=str(inside(root, path, folder, path.name)),
            split=split,
            annotations=_label(name),
        )
        for folder, name, split in class_dirs
        for path in image_files(folder, on_skip=log_skip)
    ]
    classes = tuple(dict.fromkeys(name for _, name, _ in class_dirs))
    images = with_manifest(images, root)
    return Imported("imagefolder", "classification", classes, images)


def _folders(root: Path, parent: Path) -> list[Path]:
    """The non-hidden folders in ``parent``, each checked to lie inside ``root``."""
    found = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in found:
        inside(root, folder, root, folder.relative_to(root).as_posix(), kind="folder")
    return found


def read_csv(root: Path, *, outside_root: bool = False) -> Imported:
    """``labels.csv``: one row per image, ``file`` relative to the folder."""
    path = inside(root, root / "labels.csv", root / "labels.csv", "")
    try:
        images = _csv_rows(root, path)
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, f"byte {exc.start}", "not UTF-8 text") from exc
    except csv.Error as exc:
        raise DatasetFormatError(path, "", f"not valid CSV ({exc})") from exc
    classes = tuple(sorted({img.label for img in images if img.label is not None}))
    images = with_manifest(images, root)
    return Imported("csv", "classification", classes, images)


def _csv_rows(root: Path, path: Path) -> list[ImportedImage]:
    images: list[ImportedImage] = []
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        columns = rows.fieldnames or []
        missing = [c for c in ("file", "label") if c not in columns]
        if missing:
            raise DatasetFormatError(
                path,
                "line 1",
                f"no {' or '.join(missing)} column (the header has: "
                f"{', '.join(columns) or 'nothing'})",
                "the header needs file,label[,split]",
            )
        for row in rows:
            where = f"line {rows.line_num}"
            row = {k: unescape_cell(v) for k, v in row.items() if isinstance(v, str)}
            file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not file or not label:
                raise DatasetFormatError(path, where, "a row needs a file and a label")
            image = inside(root, root / file, path, f"{where} file")
            split_text = (row.get("split") or "").strip().lower()
            split = SPLIT_ALIASES.get(split_text)
            if split_text and split is None:
                raise DatasetFormatError(
                    path, where, f"unknown split {split_text!r}", "use train, val or test"
                )
            images.append(
                ImportedImage(
                    location=str(image),
                    split=split,
                    annotations=_label(class_name(label, path, f"{where} label")),
                    licence=(row.get("licence") or "").strip() or None,
                    creator=(row.get("creator") or "").strip() or None,
                    source=(row.get("source") or "").strip() or None,
                )
            )
    return images
