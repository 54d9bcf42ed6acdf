"""Exporters, made by the writer of each format's descriptor (``datasetagent.formats``).

An exporter is a context manager: entering prepares the folder, ``write(sample, image)`` adds
one sample, exiting finishes (joins part files, writes indexes). ``export_samples`` drives one
inside a temporary folder that is swapped into place at the end, so a failed or killed export
leaves the previous one whole; it also writes what every format gets: ``manifest.jsonl``, the
data card (``README.md``), ``ATTRIBUTION.md``, ``LICENSES.md`` and the marker file
``.datasetagent-export`` by which a later export knows the folder is its own to replace
(``check_export_folder``).

Before an exporter sees a sample, its boxes are clipped to the image and the annotations no
format can hold (degenerate boxes, empty masks, masks of another size) are dropped with their
reason (``export.prepare``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from datasetagent import __version__
from datasetagent.errors import ExportError, UsageError
from datasetagent.export.prepare import Dropped, ExportStats, prepare
from datasetagent.formats import descriptor, formats_for, known_formats
from datasetagent.records import QualityReport, Sample
from datasetagent.spec import DatasetSpec

__all__ = [
    "JPEG_QUALITY", "MARKER", "Exporter", "check_export_folder", "copy_image", "export_samples",
    "exporter_for", "is_export", "is_jpeg", "known_formats", "manifest_line", "source_folders",
]  # fmt: skip

log = logging.getLogger(__name__)


class Exporter(Protocol):
    format: str

    def __enter__(self) -> Exporter: ...

    def __exit__(self, *exc: object) -> None: ...

    def write(self, sample: Sample, image: Path) -> str:
        """Add ``sample`` whose image file is ``image``; returns its path in the export."""
        ...


def exporter_for(fmt: str, out: Path, spec: DatasetSpec) -> Exporter:
    """The exporter of format ``fmt`` writing into ``out`` (an unknown name is a one-line
    error naming the known ones; a format that cannot hold the spec's task, one naming those
    that can)."""
    found = descriptor(fmt)
    if spec.task not in found.tasks:
        hint = f" ({found.hint})" if found.hint else ""
        fits = ", ".join(formats_for(spec.task))
        raise ExportError(
            f"the {fmt} format cannot hold {spec.task} labels; use --format {fits}{hint}"
        )
    return found.writer(out, spec)


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
    *,
    run_dir: Path | None = None,
    force: bool = False,
) -> Path:
    """Write ``samples`` (each with a split) as ``fmt`` into ``out``, replacing a previous
    export there atomically. ``out`` must be a folder this tool may replace
    (``check_export_folder``, with ``run_dir`` the run the samples come from)."""
    from datasetagent.export.attribution import AttributionWriter
    from datasetagent.export.datacard import render_datacard

    if any(s.split is None for s in samples):
        raise ExportError("every exported sample needs a split; run the split stage first")
    sources = source_folders(spec)
    check_export_folder(out, run_dir=run_dir, force=force, sources=sources)
    out = out.resolve()  # not a link (checked): the same folder, named without "." or ".."
    with _folder_lock(out.parent):  # another export to the same folder waits its turn
        if out.exists():  # and the folder may have changed while this one waited
            check_export_folder(out, run_dir=run_dir, force=force, sources=sources)
        _recover(out)
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
            marker = {
                "tool": "datasetagent",
                "version": __version__,
                "format": fmt,
                "files": _files_under(tmp),  # what a later export may replace without --force
            }
            (tmp / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(f"cannot write {fmt} export to {out}: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            _swap_in(tmp, out)
        except OSError as exc:
            raise ExportError(f"cannot put the {fmt} export in place at {out}: {exc}") from exc
        return out


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (the parent of an export) while inside,
    waiting for another holder: two exports to one folder share its temporary and old copy
    names, so run at the same time they would delete each other's files. The folder is made
    if missing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise ExportError(f"cannot make or open the folder {folder} for the export: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            log.warning("cannot lock %s; another export into it at once would clash", folder)
        yield
    finally:
        os.close(fd)  # drops the lock


#: The file every export holds, naming the tool and version that wrote it.
MARKER = ".datasetagent-export"


def _aside(out: Path) -> Path:
    """Where the previous export waits while the new one is renamed into place."""
    return out.with_name(f".{out.name}.datasetagent-old")


def _swap_in(new: Path, out: Path) -> None:
    """Replace ``out`` by ``new`` so that at every instant one of them is whole at ``out`` or
    aside: the old export is renamed aside, the new one renamed in, then the old deleted. A
    swap killed midway is finished or undone by the next export (``_recover``)."""
    aside = _aside(out)
    if out.exists():
        out.rename(aside)
    new.rename(out)
    shutil.rmtree(aside, ignore_errors=True)


def _recover(out: Path) -> None:
    """Finish a swap that was killed: the old export set aside comes back when nothing took
    its place, and is deleted when the new one is in."""
    aside = _aside(out)
    if not aside.is_dir() or aside.is_symlink():
        return
    if out.exists() or out.is_symlink():
        shutil.rmtree(aside)
    else:
        aside.rename(out)


def _files_under(folder: Path) -> list[str]:
    """Every file (and link) under ``folder``, as sorted POSIX paths relative to it."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        found.extend((rel / name).as_posix() for name in (*files, *links))
    return sorted(found)


def foreign_files(folder: Path) -> list[str]:
    """Files in the export ``folder`` that the export did not write (its marker lists what
    it wrote); none known for an export whose marker has no list (older versions)."""
    try:
        listed = json.loads((folder / MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return []
    if not isinstance(listed, list):
        return []
    written = {*listed, MARKER}
    return [name for name in _files_under(folder) if name not in written]


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export of this tool: its marker file, or (exports written
    before the marker existed) a ``manifest.jsonl`` whose first line is this tool's record
    next to the data card ``README.md``."""
    if (folder / MARKER).is_file():
        return True
    manifest, card = folder / "manifest.jsonl", folder / "README.md"
    if not (manifest.is_file() and card.is_file()):
        return False
    try:
        with manifest.open(encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(first, dict) and {"id", "split", "file", "provenance"} <= first.keys()


def source_folders(spec: DatasetSpec) -> list[Path]:
    """The folders (and URL list files) on this disk a run reads from: its local sources,
    its URL lists and the dataset it expands."""
    found = [Path(src.location) for src in spec.sources if src.kind in ("local", "urls")]
    if spec.existing:
        found.append(Path(spec.existing))
    return [p.expanduser() for p in found]


def check_export_folder(
    out: Path,
    *,
    run_dir: Path | None = None,
    force: bool = False,
    sources: Sequence[Path] = (),
) -> None:
    """Refuse, with a one-line error, a folder the tool may not write an export into or
    replace: a symbolic link or a file; the current folder, the home folder or one containing
    either; the run folder, one containing it or one inside it other than ``RUN/export/...``
    (these even with ``force``); a folder the run reads images from (``sources``: its
    ``--source`` folders and ``--existing`` dataset) or one containing it, and, with ``force``,
    a folder inside one that is not an export; and, unless ``force``, a non-empty folder that
    is not a previous export, or a previous export holding files it did not write. It changes
    nothing, so it can be asked before any work."""
    if out.is_symlink():
        raise UsageError(
            f"export folder {out} is a symbolic link; give the folder it points to, or a new one"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"export folder {out} is a file; give a folder (new, empty or an export)")
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise UsageError(
            f"export folder {out} is the current folder or contains it; give a new folder, "
            "e.g. -o export/"
        )
    if run_dir is not None:
        run = run_dir.resolve()
        if where == run or where in run.parents:
            raise UsageError(f"export folder {out} contains the run folder {run_dir}; give another")
        if run in where.parents and (run / "export") not in where.parents:
            raise UsageError(
                f"export folder {out} is inside the run folder {run_dir}, where only "
                f"{run_dir / 'export'}/NAME may hold exports; give one of those or a folder "
                "outside the run"
            )
    for source in sources:
        src = source.resolve()
        if where == src or where in src.parents:
            raise UsageError(
                f"export folder {out} is, or contains, {source}, where the run reads its images "
                "from; give another folder"
            )
        if force and src in where.parents and out.exists() and not is_export(out):
            raise UsageError(
                f"export folder {out} lies inside {source}, where the run reads its images "
                "from, and is not an export; --force never replaces it: give another folder"
            )
    home = _home()
    if home is not None and (where == home or where in home.parents):
        raise UsageError(
            f"export folder {out} is your home folder or contains it; give a new folder"
        )
    if not out.exists() or force:
        return
    if is_export(out):
        foreign = foreign_files(out)
        if foreign:
            raise UsageError(
                f"export folder {out} is a previous export but holds files it did not write "
                f"(found {len(foreign)}: {', '.join(foreign[:3])}); move them out, or pass "
                "--force to replace them too"
            )
        return
    try:
        found = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot read export folder {out}: {exc.strerror}") from exc
    if found:
        raise UsageError(
            f"export folder {out} holds files that no export of datasetagent wrote (found "
            f"{len(found)}: {', '.join(found[:3])}); give a new or empty folder, or pass "
            "--force to replace it"
        )


def _home() -> Path | None:
    """The user's home folder, resolved; None where there is none."""
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        return None
