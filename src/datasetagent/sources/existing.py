"""An existing labelled dataset to expand, in any format we export (``open_existing``).

The format is told from the folder's layout (``sources.formats.detect_format``): YOLO
(``data.yaml``), COCO (``annotations/*.json``), Pascal VOC (``Annotations/``), Hugging Face
Parquet (``data/*.parquet``), CSV (``labels.csv``), else ImageFolder (``CLASS/*`` or
``SPLIT/CLASS/*`` with SPLIT among train, val (also ``valid``, ``validation``) and test).

The whole dataset is parsed when it is opened, so a malformed file stops the build before any
of it is imported. Its images become candidates of origin ``existing`` that keep their split;
``apply`` gives a processed sample the labels the dataset has for it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from datasetagent.errors import UsageError
from datasetagent.records import Box, Mask, ProcessingStep, Sample
from datasetagent.sources.files import open_regular
from datasetagent.sources.formats import (
    Imported,
    ImportedImage,
    read_dataset,
)
from datasetagent.sources.local import read_file
from datasetagent.spec import USER_SUPPLIED, ColorMode, DatasetProfile, TaskKind
from datasetagent.store import Candidate

__all__ = ["ExistingDataset", "open_existing"]

log = logging.getLogger(__name__)


class ExistingDataset:
    """A parsed existing dataset: candidates, bytes by location, profile and labels.

    Pickles small (worker processes only read bytes): the parsed labels stay in the process
    that opened it.
    """

    kind = "existing"

    def __init__(self, root: Path, imported: Imported) -> None:
        self.root = root
        self.format = imported.format
        self.task: TaskKind = imported.task
        self.classes = imported.classes
        self._images: dict[str, ImportedImage] = {}
        for img in imported.images:
            self._images.setdefault(img.location, img)  # a file listed twice: first wins
        self._rows: Any = None

    def __getstate__(self) -> dict[str, object]:
        return {"root": self.root, "format": self.format, "task": self.task, "classes": ()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._images = {}
        self._rows = None

    def __len__(self) -> int:
        return len(self._images)

    def images(self) -> Iterator[ImportedImage]:
        return iter(self._images.values())

    def candidates(self) -> Iterator[Candidate]:
        for img in self._images.values():
            yield Candidate(
                source_kind=self.kind,
                location=img.location,
                class_hint=img.label,
                licence=img.licence or USER_SUPPLIED,
                creator=img.creator,
                origin="existing",
                split_hint=img.split,
            )

    def read(self, location: str) -> bytes:
        from datasetagent.sources.formats.hf import RowReader, is_row

        if self.format != "hf" or not is_row(location):
            return read_file(location)
        if self._rows is None:
            self._rows = RowReader()
        data: bytes = self._rows.read(location)
        return data

    def apply(self, sample: Sample, task: TaskKind) -> Sample:
        """``sample`` (processed from one of this dataset's images) with the dataset's labels
        and provenance: boxes and masks mapped onto the stored image, masks made boxes for a
        detection spec; a sample whose labels cannot be placed gets review reasons."""
        from datasetagent.sources.formats.align import align

        img = self._images.get(sample.provenance.location)
        if img is None:
            return sample
        frame = (img.width, img.height) if img.width and img.height else None
        anns, reasons = align(img.annotations, frame, sample)
        if task == "detection":
            anns = tuple(_as_box(a) if isinstance(a, Mask) else a for a in anns)
        prov = sample.provenance
        if img.source is not None:  # the dataset names the image's original source
            # ... which is only its word: the step records the file the pixels were read from
            read = ProcessingStep(name="imported", params={"from": prov.location})
            origin: dict[str, object] = {
                "location": img.source,
                "steps": (*img.steps, read, *prov.steps),
                "page": img.page,
                "licence_url": img.licence_url,
                "title": img.title,
            }
            if img.source_kind is not None:
                origin["source_kind"] = img.source_kind
            prov = prov.model_copy(update=origin)
        update: dict[str, object] = {"provenance": prov, "review_reasons": tuple(reasons)}
        if task != "classification":  # classification labels come from the class hint
            update["annotations"] = tuple(a for a in anns if isinstance(a, Box | Mask))
        return sample.model_copy(update=update)

    def profile(self) -> DatasetProfile:
        """Class counts (images per class; for objects, per most frequent class, every class
        listed), splits, sizes and colour mode, read from file headers only."""
        classes: Counter[str] = Counter()
        splits: Counter[str] = Counter()
        sizes: Counter[tuple[int, int]] = Counter()
        modes: Counter[str] = Counter()
        for img in self._images.values():
            try:
                size, mode = self._header(img.location)
            except (OSError, ValueError, SyntaxError):
                continue  # a broken file is reported when the run processes it
            sizes[size] += 1
            modes[mode] += 1
            classes[img.label or ""] += 1
            if img.split:
                splits[img.split] += 1
        if not sizes:
            raise UsageError(f"existing dataset {self.root} holds no readable images")
        color: ColorMode = "L" if all(m in ("L", "1", "I;16", "I") for m in modes) else "RGB"
        return DatasetProfile(
            path=str(self.root),
            task=self.task,
            class_counts={name: classes.get(name, 0) for name in self.classes},
            split_counts=dict(splits),
            common_size=next(iter(sizes)) if len(sizes) == 1 else None,
            min_side=min(min(s) for s in sizes),
            color_mode=color,
        )

    def _header(self, location: str) -> tuple[tuple[int, int], str]:
        from datasetagent.sources.formats.hf import is_row

        if self.format == "hf" and is_row(location):
            import io

            with Image.open(io.BytesIO(self.read(location))) as img:
                return img.size, img.mode
        with open_regular(location) as fh, Image.open(fh) as img:
            return img.size, img.mode


def _as_box(mask: Mask) -> Box | Mask:
    from datasetagent.tools.masks import rle_bbox

    x, y, w, h = rle_bbox(mask.rle)
    return Box(
        label=mask.label, confidence=mask.confidence, labeler=mask.labeler, x=x, y=y, w=w, h=h
    )


def open_existing(
    path: str | Path, fmt: str | None = None, *, outside_root: bool = False
) -> ExistingDataset:
    """Open (and completely parse) the dataset in folder ``path``; ``fmt`` names its format
    where detection from the layout should be skipped.

    Only files inside ``path`` are read: a file the dataset names by ``../``, an absolute path
    or a symbolic link out of the folder stops the import with an error naming the dataset
    file, the entry and the path. ``outside_root`` lets a YOLO ``data.yaml`` give a ``path:``
    outside the folder (its images are then read there, and only there)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(
            f"existing dataset {root} is not a folder; pass a folder laid out as CLASS/image, "
            "SPLIT/CLASS/image, or a COCO, YOLO, VOC, Hugging Face Parquet or labels.csv dataset"
        )
    dataset = ExistingDataset(root, read_dataset(root, fmt, outside_root=outside_root))
    log.info("existing dataset %s: %s, %d images", root, dataset.format, len(dataset))
    return dataset
