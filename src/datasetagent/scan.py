"""The quality scan on its own (``datasetagent scan``): one result per image.

Per-image work (read, strict reduced decode, scores, perceptual hashes, thumbnail) runs in
worker processes, a chunk of files at a time and a step at a time over the chunk; what comes
back is small and flat (~1 KB an image). Deduplication runs in the parent in arrival order, a
batch at a time, while the workers go on. Of a duplicate group the best copy is kept (most
pixels, then lossless, then least compressed) and the others name it; as a better copy may come
last, the lines are spooled to a temporary file and written once every image is scanned.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict
from threadpoolctl import threadpool_limits

from datasetagent.runtime.local import LocalExecutor
from datasetagent.sources.files import NOT_REGULAR, image_files, read_regular
from datasetagent.spec import DEFAULT_MIN_SIDE, ISSUE_NAMES, CheckThresholds
from datasetagent.tools.dedupe import THUMB, BestCopies, Deduplicator, Duplicate, Quality, Thumb

if TYPE_CHECKING:
    from datasetagent.tools.decode import Decoded

log = logging.getLogger(__name__)

BATCH = 512


class ScanLine(BaseModel):
    """One line of ``scan --jsonl`` (schema in DESIGN.md; ``format``, ``frames`` and
    ``detail`` are additions)."""

    model_config = ConfigDict(frozen=True)

    path: str
    ok: bool
    issues: list[str]
    duplicate_of: str | None = None
    scores: dict[str, float] = {}
    width: int | None = None
    height: int | None = None
    format: str | None = None
    frames: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class ScanParams:
    checks: CheckThresholds = field(default_factory=CheckThresholds)
    min_side: int = DEFAULT_MIN_SIDE
    max_pixels: int = 100_000_000


@dataclass(slots=True)
class Scanned:
    """What a worker found out about one file. One crosses the process boundary per image, so
    it is flat: slots pickle as a tuple, hashes and thumbnail as raw bytes, scores rounded."""

    path: str
    issues: list[str] = field(default_factory=list)
    detail: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    frames: int | None = None
    exact_key: str | None = None
    #: the uint64 perceptual hashes (phash.image_hashes), native byte order; b"" for none
    hashes: bytes = b""
    #: the THUMB×THUMB uint8 thumbnail (dedupe.thumbnail); b"" for none
    thumb: bytes = b""
    #: the file's size in bytes
    nbytes: int = 0


def scan_files(paths: list[str], params: ScanParams) -> list[Scanned]:
    """Read, decode (reduced where the format allows), score and hash image files: one result
    per path, in order.

    Each step runs over every image before the next one starts. The scan is mostly many small
    numpy and OpenCV calls, which run faster with their code and tables still hot than
    interleaved with decoding: ~12% for chunks of 32 photos (measured).
    """
    # The per-image modules load here, in the workers (the fork server preloads them, see
    # _ScanChunk): the parent only deduplicates, and starts faster without OpenCV.
    from datasetagent.tools import quality
    from datasetagent.tools.decode import ImageIssue
    from datasetagent.tools.dedupe import thumbnail
    from datasetagent.tools.phash import image_hashes
    from datasetagent.tools.ssim import to_gray

    out: list[Scanned | None] = [None] * len(paths)
    files: dict[int, bytes] = {}
    for i, path in enumerate(paths):
        try:
            files[i] = read_regular(path)  # a FIFO put in a listed file's place is refused
        except OSError as exc:
            detail = f"cannot read: {exc.strerror or exc}"
            out[i] = Scanned(path=path, issues=["corrupt"], detail=detail)
    decoded: list[tuple[int, Decoded]] = []
    for i, data in files.items():
        try:
            decoded.append((i, _decode(data, params)))
        except ImageIssue as exc:
            w, h = exc.size if exc.size else (None, None)
            out[i] = Scanned(
                path=paths[i], issues=[exc.issue], detail=exc.detail, width=w, height=h
            )
    smalls = [
        quality.analysis_array(d.pixels if d.pixels is not None else np.asarray(d.image))
        for _, d in decoded
    ]
    grays = [to_gray(small) for small in smalls]
    scores = [quality.score_array(small, gray) for small, gray in zip(smalls, grays, strict=True)]
    exact = [_exact_key(files[i], d) for i, d in decoded]
    hashes = [image_hashes(gray).tobytes() for gray in grays]
    thumbs = [thumbnail(gray).tobytes() for gray in grays]
    for k, (i, d) in enumerate(decoded):
        out[i] = _scanned(paths[i], d, scores[k], exact[k], hashes[k], thumbs[k], params)
        out[i].nbytes = len(files[i])  # type: ignore[union-attr]
    return [s for s in out if s is not None]  # every slot is filled


def _decode(data: bytes, params: ScanParams) -> Decoded:
    from datasetagent.tools.decode import decode_strict, sniff
    from datasetagent.tools.quality import ANALYSIS_SIDE

    # Grey is all the checks need, and a reduced grey JPEG decode is the cheapest there is.
    # Other formats decode fully in their own mode, so their exact key sees every colour.
    return decode_strict(
        data,
        max_pixels=params.max_pixels,
        color_mode="L" if sniff(data) == "JPEG" else None,
        reduce_to=ANALYSIS_SIDE,
    )


def _exact_key(data: bytes, decoded: Decoded) -> str:
    """Equal for the same bytes, or the same JPEG data with other metadata, or (other formats
    and odd JPEGs) the same decoded pixels."""
    from datasetagent.tools.decode import orientation_of
    from datasetagent.tools.hashing import jpeg_content_hash, pixel_hash

    if decoded.source_format in ("JPEG", "MPO"):
        key = jpeg_content_hash(data, orientation_of(decoded.steps))
        if key is not None:
            return key
    return pixel_hash(decoded.image)


def _scanned(
    path: str,
    decoded: Decoded,
    scores: dict[str, float],
    exact: str,
    hashes: bytes,
    thumb: bytes,
    params: ScanParams,
) -> Scanned:
    from datasetagent.tools import quality
    from datasetagent.tools.decode import wrong_extension

    del scores["color_cast"]  # JPEGs are scanned in grey
    width, height = decoded.size
    issues = quality.mark(width, height, scores, params.checks, min_side=params.min_side)
    # the line's sharpness is the number min_sharpness is compared to; the raw one goes along
    scores["laplacian_variance"] = scores["sharpness"]
    scores["sharpness"] = quality.relative_sharpness(scores)
    notes = []
    suffix = os.path.splitext(path)[1]
    if wrong_extension(decoded.source_format, suffix):
        notes.append(f"{decoded.source_format} data under a {suffix} name")
    if decoded.frames > 1:
        notes.append(f"first of {decoded.frames} frames")
    return Scanned(
        path=path,
        issues=issues,
        detail="; ".join(notes),
        scores={k: float(f"{v:.5g}") for k, v in scores.items()},
        width=width,
        height=height,
        fmt=decoded.source_format,
        frames=decoded.frames,
        exact_key=exact,
        hashes=hashes,
        thumb=thumb,
    )


@dataclass(frozen=True)
class _ScanChunk:
    """A worker's job: read and scan a chunk of files, one result per file, in order."""

    params: ScanParams
    #: what the fork server imports for the workers (LocalExecutor)
    preload = (
        "simplejpeg",
        "datasetagent.tools.quality",
        "datasetagent.tools.phash",
        "datasetagent.tools.decode",
        "datasetagent.tools.dedupe",
        "datasetagent.tools.hashing",
    )

    def __call__(self, paths: list[str]) -> list[Scanned]:
        return scan_files(paths, self.params)


def _ordered(issues: list[str]) -> list[str]:
    return sorted(set(issues), key=ISSUE_NAMES.index)


def scan_folder(
    root: Path,
    params: ScanParams,
    *,
    workers: int | None = None,
    on_skip: Callable[[Path, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[ScanLine]:
    """Scan every image file under ``root`` (a folder or one file); the lines come, in the
    order the files were found, once all are scanned. ``on_progress`` hears of each batch
    scanned (its number of images)."""
    paths: Iterator[Path] = iter([root]) if root.is_file() else image_files(root, on_skip=on_skip)
    if not root.is_file() and not root.is_dir():  # a FIFO or device given itself: never opened
        paths = iter([])
        if on_skip is not None:
            on_skip(root, NOT_REGULAR)
    dedupe = Deduplicator(params.checks.near_duplicate_bits)
    best = BestCopies()
    batches = 0
    with tempfile.TemporaryFile() as spool:
        # The workers use the cores; the parent's BLAS threads would only spin against them.
        with threadpool_limits(1), LocalExecutor(workers, chunksize=32) as executor:
            # Twice a batch in flight: the workers go on while the parent deduplicates a batch.
            results = executor.imap_chunks(
                _ScanChunk(params), (str(p) for p in paths), in_flight=2 * BATCH
            )
            while batch := list(itertools.islice(results, BATCH)):
                dups = _first_seen(batch, dedupe, params.checks)
                for s, dup in zip(batch, dups, strict=True):
                    best.add(s.path, dup, _quality(s), s.exact_key)
                    s.hashes = s.thumb = b""  # done with; the spool keeps the rest
                pickle.dump((batch, dups), spool, protocol=pickle.HIGHEST_PROTOCOL)
                batches += 1
                if on_progress is not None:
                    on_progress(len(batch))
        changes = best.changes()
        spool.seek(0)
        for _ in range(batches):
            batch, dups = pickle.load(spool)  # our own spool
            for s, dup in zip(batch, dups, strict=True):
                yield _line(s, changes.get(s.path, dup), params.checks)


def _quality(s: Scanned) -> Quality:
    return Quality.of(s.width or 0, s.height or 0, s.fmt, s.nbytes)


def _first_seen(
    batch: list[Scanned], dedupe: Deduplicator, checks: CheckThresholds
) -> list[Duplicate | None]:
    """Each item's duplicate verdict in arrival order (the first seen of a group kept)."""
    usable = [
        None if not s.hashes or checks.rejects(s.issues) else np.frombuffer(s.hashes, np.uint64)
        for s in batch
    ]
    thumbs = [
        Thumb(np.frombuffer(s.thumb, np.uint8).reshape(THUMB, THUMB), min(s.width, s.height))
        if s.thumb and s.width and s.height
        else None
        for s in batch
    ]
    return dedupe.check([s.path for s in batch], [s.exact_key for s in batch], usable, thumbs)


def _line(s: Scanned, dup: Duplicate | None, checks: CheckThresholds) -> ScanLine:
    issues = list(s.issues)
    if dup is not None:
        issues.append(dup.issue)
    issues = _ordered(issues)
    return ScanLine(
        path=s.path,
        ok=not checks.rejects(issues),
        issues=issues,
        duplicate_of=dup.of if dup is not None else None,
        scores=s.scores,
        width=s.width,
        height=s.height,
        format=s.fmt,
        frames=s.frames,
        detail=s.detail,
    )
