"""Exporters, looked up by format name in ``EXPORTERS``.

An exporter is a context manager: ``open()`` prepares the folder, ``write(sample, image)`` adds
one sample, ``close()`` finishes (manifest, data card). ``export_run`` drives one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from datasetagent.errors import ExportError
from datasetagent.records import QualityReport, Sample
from datasetagent.registry import Registry
from datasetagent.spec import DatasetSpec


class Exporter(Protocol):
    format: str

    def __enter__(self) -> Exporter: ...

    def __exit__(self, *exc: object) -> None: ...

    def write(self, sample: Sample, image: Path) -> str:
        """Add ``sample`` whose image file is ``image``; returns its path in the export."""
        ...


ExporterFactory = Callable[[Path, DatasetSpec], Exporter]

EXPORTERS: Registry[ExporterFactory] = Registry("export format", "datasetagent.exporters")


def _load_builtins() -> None:
    from datasetagent.export import coco, imagefolder  # noqa: F401  (register themselves)


def exporter_for(fmt: str, out: Path, spec: DatasetSpec) -> Exporter:
    _load_builtins()
    return EXPORTERS.get(fmt)(out, spec)


def known_formats() -> list[str]:
    _load_builtins()
    return EXPORTERS.names()


def manifest_line(sample: Sample, file: str) -> str:
    return json.dumps(
        {
            "id": sample.id,
            "split": sample.split,
            "file": file,
            "width": sample.width,
            "height": sample.height,
            "labels": [a.model_dump(mode="json") for a in sample.annotations],
            "provenance": sample.provenance.model_dump(mode="json"),
        },
        ensure_ascii=False,
    )


def export_samples(
    fmt: str,
    out: Path,
    spec: DatasetSpec,
    samples: Sequence[Sample],
    image_path: Callable[[Sample], Path],
    report: QualityReport | None,
) -> Path:
    """Write ``samples`` (each with a split) as ``fmt`` into ``out``, replacing it atomically."""
    from datasetagent.export.datacard import render_datacard

    if any(s.split is None for s in samples):
        raise ExportError("every exported sample needs a split; run the split stage first")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        with (
            exporter_for(fmt, tmp, spec) as exporter,
            (tmp / "manifest.jsonl").open("w", encoding="utf-8") as manifest,
        ):
            for sample in samples:
                file = exporter.write(sample, image_path(sample))
                manifest.write(manifest_line(sample, file) + "\n")
        (tmp / "README.md").write_text(
            render_datacard(spec, samples, report, fmt), encoding="utf-8"
        )
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"cannot write {fmt} export to {out}: {exc}") from None
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
