"""Dataset formats: one :class:`FormatDescriptor` per format, in one registry (``FORMATS``).

A descriptor is everything the tool knows about a format: its name, the words a request may
use for it, the tasks it can hold and those it is the default for, its writer (an exporter
factory), its reader of an existing dataset and the layout test that tells a folder is in it.
The spec check, Demand Analysis, the exporters and the existing-dataset importer all ask the
descriptors, so a format is added in one place. Third-party formats register a descriptor
through the ``datasetagent.formats`` entry-point group.

Importing this module is cheap: built-in writers and readers are named by ``module:attribute``
(:class:`Lazy`) and imported only when called, so the spec check never loads an exporter,
pyarrow or OpenCV.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from datasetagent.registry import Registry

if TYPE_CHECKING:
    from datasetagent.export import Exporter
    from datasetagent.sources.formats import Imported
    from datasetagent.spec import DatasetSpec, TaskKind

__all__ = [
    "FORMATS", "FormatDescriptor", "Lazy", "Reader", "builtin_registry", "default_formats",
    "descriptor", "descriptors", "find", "formats_for", "install_hint", "known_formats",
]  # fmt: skip


class Reader(Protocol):
    def __call__(self, root: Path, *, outside_root: bool = False) -> Imported:
        """Parse the whole dataset in folder ``root``; ``outside_root`` lets it name files
        outside ``root`` where its format has a way to (YOLO's ``path:``)."""
        ...


ExporterFactory = Callable[[Path, "DatasetSpec"], "Exporter"]


@dataclass(frozen=True, slots=True)
class Lazy:
    """The function or class ``module:attribute``, imported when first called."""

    ref: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.ref.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class FormatDescriptor:
    """What the tool knows about one dataset format."""

    name: str
    #: The tasks whose labels the format can hold.
    tasks: frozenset[TaskKind]
    #: Makes the exporter that writes the format into a folder (``export.Exporter``).
    writer: ExporterFactory
    #: Reads an existing dataset in the format; None where another format's reader reads it.
    reader: Reader | None = None
    #: Whether a folder is laid out in the format (the folder's files, not their contents).
    detect: Callable[[Path], bool] | None = None
    #: Which layout wins where several match a folder: the highest (a ``data.yaml`` beats an
    #: ``annotations/`` folder beats a bare folder of class folders).
    precedence: int = 0
    #: The format an export in this one reads back as (``coco-polygons`` is read as ``coco``).
    read_as: str | None = None
    #: The tasks a request that names no format is exported as this one for.
    default_for: frozenset[TaskKind] = frozenset()
    #: Regular expressions (lower case, no groups) of the words a request may call it by.
    words: tuple[str, ...] = ()
    #: Said when a request asks the format for a task it cannot hold.
    hint: str = ""
    #: The package extra the format needs (``pip install 'datasetagent[EXTRA]'``), if any.
    extra: str | None = None


def builtin_registry() -> Registry[FormatDescriptor]:
    """A registry holding the built-in formats (plugins load on the first lookup)."""
    boxes: frozenset[TaskKind] = frozenset({"detection", "segmentation"})
    classification: frozenset[TaskKind] = frozenset({"classification"})
    tables = "datasetagent.sources.formats.tables"
    registry: Registry[FormatDescriptor] = Registry("export format", "datasetagent.formats")
    for d in (
        FormatDescriptor(
            name="imagefolder",
            tasks=classification,
            writer=Lazy("datasetagent.export.imagefolder:ImageFolderExporter"),
            reader=Lazy(f"{tables}:read_imagefolder"),
            detect=Lazy(f"{tables}:is_imagefolder"),
            precedence=0,
            default_for=classification,
            words=(r"image[\s-]*folders?",),
        ),
        FormatDescriptor(
            name="csv",
            tasks=classification,
            writer=Lazy("datasetagent.export.csvfile:CsvExporter"),
            reader=Lazy(f"{tables}:read_csv"),
            detect=Lazy(f"{tables}:is_csv"),
            precedence=10,
            words=("csv",),
        ),
        FormatDescriptor(
            name="coco",
            tasks=boxes,
            writer=Lazy("datasetagent.export.coco:CocoExporter"),
            reader=Lazy("datasetagent.sources.formats.coco:read_coco"),
            detect=Lazy("datasetagent.sources.formats.coco:is_coco"),
            precedence=40,
            default_for=boxes,
            words=("coco",),
        ),
        FormatDescriptor(
            name="coco-polygons",
            tasks=frozenset({"segmentation"}),
            writer=Lazy("datasetagent.export.coco:CocoPolygonExporter"),
            read_as="coco",
        ),
        FormatDescriptor(
            name="yolo",
            tasks=boxes,
            writer=Lazy("datasetagent.export.yolo:YoloExporter"),
            reader=Lazy("datasetagent.sources.formats.yolo:read_yolo"),
            detect=Lazy("datasetagent.sources.formats.yolo:is_yolo"),
            precedence=50,
            words=(r"yolo(?:v?[0-9]+)?",),
            hint="YOLO classification reads the imagefolder layout",
        ),
        FormatDescriptor(
            name="voc",
            tasks=boxes,
            writer=Lazy("datasetagent.export.voc:VocExporter"),
            reader=Lazy("datasetagent.sources.formats.voc:read_voc"),
            detect=Lazy("datasetagent.sources.formats.voc:is_voc"),
            precedence=30,
            words=(r"pascal[\s-]*voc", "voc"),
        ),
        FormatDescriptor(
            name="hf",
            tasks=boxes | classification,
            writer=Lazy("datasetagent.export.hf:HfExporter"),
            reader=Lazy("datasetagent.sources.formats.hf:read_hf"),
            detect=Lazy("datasetagent.sources.formats.hf:is_hf"),
            precedence=20,
            words=(r"hugging[\s-]*face", "hf", "parquet"),
            extra="hf",
        ),
    ):
        registry.add(d.name, d)
    return registry


FORMATS = builtin_registry()


def descriptor(name: str) -> FormatDescriptor:
    """The format ``name``; an unknown name is a one-line error listing the known ones, with
    the closest as "did you mean"."""
    return FORMATS.get(name)


def find(name: str) -> FormatDescriptor | None:
    """The format ``name``, or None (plugins are looked at only for a name no built-in has)."""
    return FORMATS.find(name)


def descriptors() -> list[FormatDescriptor]:
    """Every format, built-ins first, in the order they were registered."""
    return FORMATS.values()


def known_formats() -> list[str]:
    """The names of every format, sorted."""
    return FORMATS.names()


def formats_for(task: TaskKind) -> list[str]:
    """The formats that can hold ``task`` labels, in registration order."""
    return [d.name for d in descriptors() if task in d.tasks]


def default_formats(task: TaskKind) -> tuple[str, ...]:
    """The formats a ``task`` dataset is exported as when nothing names one."""
    return tuple(d.name for d in descriptors() if task in d.default_for)


def install_hint(name: str) -> str:
    """How to install what the format ``name`` needs (empty where it needs nothing)."""
    extra = descriptor(name).extra
    return f"pip install 'datasetagent[{extra}]'" if extra else ""
