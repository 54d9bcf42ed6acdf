"""Exporters, looked up by format name in ``EXPORTERS``.

An exporter is a context manager: entering prepares the folder, ``write(sample, image)`` adds
one sample, exiting finishes (joins part files, writes indexes). ``export_samples`` drives one
inside a temporary folder that is renamed into place at the end, so a failed export leaves
nothing half-written; it also writes what every format gets: ``manifest.jsonl``, the data card
(``README.md``), ``ATTRIBUTION.md`` and ``LICENSES.md``.

Before an exporter sees a sample, its boxes are clipped to the image and the annotations no
format can hold (degenerate boxes, empty masks, masks of another size) are dropped with their
reason (``export.prepare``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from datasetagent.errors import ExportError
from datasetagent.export.prepare import Dropped, ExportStats, prepare
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
    from datasetagent.export import (  # noqa: F401  (register themselves)
        coco,
        csvfile,
        hf,
        imagefolder,
        voc,
        yolo,
    )


def exporter_for(fmt: str, out: Path, spec: DatasetSpec) -> Exporter:
    _load_builtins()
    return EXPORTERS.get(fmt)(out, spec)


def known_formats() -> list[str]:
    _load_builtins()
    return EXPORTERS.names()


#: JPEG quality of an image an export must convert to JPEG (VOC's ``JPEGImages``).
JPEG_QUALITY = 95


def copy_image(out: Path, folder: Path, sample: Sample, image: Path, *, jpeg: bool = False) -> Path:
    """Copy ``image`` to ``out/folder/<id>.<ext>``; returns the path relative to ``out``.

    With ``jpeg``, an image that is not a JPEG (:func:`is_jpeg`) is written as one, at quality
    ``JPEG_QUALITY`` with the extension ``.jpg``; a JPEG, and every image without ``jpeg``, is
    copied byte for byte."""
    convert = jpeg and not is_jpeg(image)
    rel = folder / f"{sample.id[:16]}{'.jpg' if convert else image.suffix}"
    dest = out / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not convert:
        shutil.copyfile(image, dest)
        return rel
    from PIL import Image

    from datasetagent.tools.decode import to_mode

    with Image.open(image) as img:
        img.load()
        pixels = img if img.mode in ("RGB", "L") else to_mode(img, "RGB")
        pixels.save(dest, format="JPEG", quality=JPEG_QUALITY)
    return rel


def is_jpeg(image: Path) -> bool:
    """Whether the file at ``image`` is a JPEG (by its first bytes, not its name)."""
    with image.open("rb") as fh:
        return fh.read(3) == b"\xff\xd8\xff"


def manifest_line(sample: Sample, file: str, dropped: Sequence[Dropped] = ()) -> str:
    record = {
        "id": sample.id,
        "split": sample.split,
        "file": file,
        "width": sample.width,
        "height": sample.height,
        "labels": [a.model_dump(mode="json") for a in sample.annotations],
        "provenance": sample.provenance.model_dump(mode="json"),
    }
    if dropped:
        record["dropped"] = [d.as_json() for d in dropped]
    return json.dumps(record, ensure_ascii=False)


def export_samples(
    fmt: str,
    out: Path,
    spec: DatasetSpec,
    samples: Sequence[Sample],
    image_path: Callable[[Sample], Path],
    report: QualityReport | None,
) -> Path:
    """Write ``samples`` (each with a split) as ``fmt`` into ``out``, replacing it atomically."""
    from datasetagent.export.attribution import AttributionWriter
    from datasetagent.export.datacard import render_datacard

    if any(s.split is None for s in samples):
        raise ExportError("every exported sample needs a split; run the split stage first")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    stats = ExportStats()
    classes = frozenset(spec.class_names)
    try:
        tmp.mkdir(parents=True)
        exporter = exporter_for(fmt, tmp, spec)
        with (
            exporter,
            (tmp / "manifest.jsonl").open("w", encoding="utf-8") as manifest,
            AttributionWriter(tmp) as attribution,
        ):
            for original in samples:
                sample, dropped = prepare(original, stats, classes)
                file = exporter.write(sample, image_path(original))
                manifest.write(manifest_line(sample, file, dropped) + "\n")
                attribution.add(sample, file)
        stats.notes.update(getattr(exporter, "notes", {}))
        header: Callable[[], str] | None = getattr(exporter, "card_header", None)
        card = render_datacard(spec, samples, report, fmt, stats)
        (tmp / "README.md").write_text((header() if header else "") + card, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"cannot write {fmt} export to {out}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
