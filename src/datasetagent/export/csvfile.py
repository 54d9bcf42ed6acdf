"""CSV manifest (classification): ``images/SPLIT/IMAGE`` and one ``labels.csv``.

``labels.csv`` has a header and one row per image: ``file`` (relative to the export folder),
``label``, ``split``, ``width``, ``height``, then the image's ``source`` (the file, or the URL
fetched), ``creator``, ``licence``, ``licence_url``, ``page`` (the page it is shown on) and
``title``, empty where unknown. pandas, Keras' ``flow_from_dataframe`` and spreadsheets read
it as it is.

A text cell that starts like a spreadsheet formula (``= + - @``, tab or carriage return: a
creator named ``=HYPERLINK(...)`` from a photo site) is written with a leading ``'``, which
spreadsheets show as text (OWASP's advice against CSV injection); our CSV importer takes it off
again (``unescape_cell``), so a class named ``-1`` comes back as ``-1``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from datasetagent.errors import ExportError
from datasetagent.export import copy_image
from datasetagent.records import Sample
from datasetagent.spec import DatasetSpec

#: The columns of ``labels.csv``, in order.
COLUMNS = (
    "file", "label", "split", "width", "height",
    "source", "creator", "licence", "licence_url", "page", "title",
)  # fmt: skip
LABELS_FILE = "labels.csv"
#: What a cell that a spreadsheet would read as a formula starts with.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: object) -> object:
    """``value`` as a CSV cell a spreadsheet shows as text, not evaluates."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The text ``escape_cell`` wrote as ``text``."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


class CsvExporter:
    format = "csv"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        self.out = out
        self._file: IO[str] | None = None
        self._rows: Any = None

    def __enter__(self) -> CsvExporter:
        self._file = (self.out / LABELS_FILE).open("w", encoding="utf-8", newline="")
        self._rows = csv.writer(self._file)
        self._rows.writerow(COLUMNS)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, sample: Sample, image: Path) -> str:
        if sample.label is None or sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no label or split")
        rel = copy_image(self.out, Path("images") / sample.split, sample, image).as_posix()
        prov = sample.provenance
        self._rows.writerow(
            escape_cell(cell)
            for cell in (
                rel,
                sample.label,
                sample.split,
                sample.width,
                sample.height,
                prov.location,
                prov.creator or "",
                prov.licence,
                prov.licence_url or "",
                prov.page or "",
                prov.title or "",
            )
        )
        return rel
