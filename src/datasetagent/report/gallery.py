"""Thumbnails for the report: small JPEG data URIs, drawn from a seeded sample.

A gallery shows at most a fixed number of images however large the run (``pick``), each a
JPEG of at most ``SIDE`` px (``THUMB_SIDE`` with boxes and masks drawn), so a 100k-image run's
report stays a few MB. Images come from the run's own blobs; the few that have no blob (a
rejected candidate, the input of an enhanced image) are read from the source file where it is a
local file still there, through the same strict decoder as the build, and otherwise are not
shown (the page says why).
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

from datasetagent.records import Box, Mask, Sample
from datasetagent.report.charts import PALETTE
from datasetagent.sources.files import read_regular
from datasetagent.store import BlobStore
from datasetagent.tools.decode import ImageIssue, decode_strict
from datasetagent.tools.masks import rle_bbox, rle_to_mask

#: Longer side of a thumbnail, and of one with boxes or masks drawn on it.
SIDE = 96
ANNOTATED_SIDE = 128
JPEG_QUALITY = 70
#: A source file larger than this is not read for a thumbnail.
MAX_SOURCE_BYTES = 64 << 20
#: The source kinds whose locations are files on this machine.
FILE_KINDS = frozenset({"local", "existing"})

T = TypeVar("T")


def pick(items: Sequence[T], k: int, seed: str, key: Callable[[T], str]) -> list[T]:
    """At most ``k`` of ``items``, the same ones for the same items and ``seed`` whatever their
    order (a seeded sample of them sorted by ``key``), in ``key`` order."""
    ordered = sorted(items, key=key)
    if len(ordered) <= k:
        return ordered
    chosen = random.Random(seed).sample(range(len(ordered)), k)
    return [ordered[i] for i in sorted(chosen)]


def data_uri(img: Image.Image, side: int = SIDE) -> str:
    """``img`` reduced to at most ``side`` px a side, as a JPEG data URI."""
    small = img if img.mode in ("L", "RGB") else img.convert("RGB")
    if max(small.size) > side:
        small = small.copy()
        small.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def draw_objects(
    img: Image.Image, sample: Sample, classes: Sequence[str], side: int
) -> Image.Image:
    """``img`` (a sample's stored image, at any reduction) at most ``side`` px a side, with
    its boxes outlined and its masks tinted, each in its class's colour."""
    scale = min(1.0, side / max(sample.width, sample.height))  # objects are in stored pixels
    size = (max(1, round(sample.width * scale)), max(1, round(sample.height * scale)))
    out = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    pixels = np.asarray(out).copy()
    for a in sample.annotations:
        if isinstance(a, Mask):
            mask = Image.fromarray(rle_to_mask(a.rle)).resize(size, Image.Resampling.NEAREST)
            hit = np.asarray(mask, dtype=bool)
            tint = np.array(Image.new("RGB", (1, 1), colour.get(a.label, "#fff")).getpixel((0, 0)))
            pixels[hit] = (0.55 * pixels[hit] + 0.45 * tint).astype(np.uint8)
    out = Image.fromarray(pixels)
    draw = ImageDraw.Draw(out)
    for a in sample.annotations:
        if isinstance(a, Box | Mask):  # a mask's outline: its bounding box
            x, y, w, h = (a.x, a.y, a.w, a.h) if isinstance(a, Box) else rle_bbox(a.rle)
            box = (x * scale, y * scale, (x + w) * scale, (y + h) * scale)
            draw.rectangle(box, outline=colour.get(a.label, "#fff"), width=1 + isinstance(a, Box))
    return out


class Thumbnails:
    """Makes the report's thumbnails from a run's blobs and source files; counts them."""

    def __init__(self, blobs: BlobStore, max_pixels: int, color_mode: str) -> None:
        self.blobs = blobs
        self.max_pixels = max_pixels
        self.color_mode = color_mode
        self.made = 0

    def _open(self, rel: str, side: int) -> Image.Image | None:
        try:
            with Image.open(self.blobs.path(rel)) as img:
                img.draft(img.mode if img.mode in ("L", "RGB") else None, (side, side))
                img.load()
                return img
        except (OSError, ValueError, Image.DecompressionBombError):
            return None

    def sample(self, sample: Sample, classes: Sequence[str] = (), draw: bool = False) -> str | None:
        """The sample's stored image (with its objects drawn); None when its blob is gone."""
        side = ANNOTATED_SIDE if draw else SIDE
        img = self._open(sample.blob, side)
        if img is None:
            return None
        if draw:
            img = draw_objects(img, sample, classes, side)
        self.made += 1
        return data_uri(img, side)

    @staticmethod
    def _source_file(source_kind: str, location: str, expect_bytes: int | None) -> Path | None:
        """The local file a candidate was read from, where it is still there, not too large to
        read, and (``expect_bytes`` given) of the size the run read."""
        if source_kind not in FILE_KINDS:
            return None
        path = Path(location)
        try:
            if not path.is_absolute() or not path.is_file():
                return None
            size = path.stat().st_size
        except (OSError, ValueError):  # a name the file system refuses (NUL, too long)
            return None
        if size > MAX_SOURCE_BYTES or (expect_bytes is not None and size != expect_bytes):
            return None
        return path

    def is_source(self, source_kind: str, location: str) -> bool:
        """Whether ``source`` may find the candidate's file (without reading it)."""
        return self._source_file(source_kind, location, None) is not None

    def source(
        self, source_kind: str, location: str, expect_bytes: int | None = None
    ) -> str | None:
        """The file a candidate was read from, where it is a local file still there (of
        ``expect_bytes`` bytes when given: the same file the run read) and decodes strictly;
        None otherwise."""
        path = self._source_file(source_kind, location, expect_bytes)
        if path is None:
            return None
        try:
            data = read_regular(path, MAX_SOURCE_BYTES + 1)  # a FIFO put there now: refused
            decoded = decode_strict(
                data, max_pixels=self.max_pixels, color_mode=self.color_mode, reduce_to=SIDE
            )
        except (OSError, ValueError, ImageIssue):
            return None
        self.made += 1
        return data_uri(decoded.image)
