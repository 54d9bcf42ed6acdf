"""Finding image files on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# Leading bytes of the formats the decoder supports; used to find images with odd extensions.
_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG",
    b"BM",
    b"GIF8",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF",
    b"P5",
    b"P6",
)


def looks_like_image(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    if head.startswith(b"RIFF"):
        return head[8:12] == b"WEBP"
    return head.startswith(_MAGIC)


def is_candidate_file(path: Path) -> bool:
    """An image by extension (a broken one is still a candidate, to be reported), or any other
    file whose bytes start like an image."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return looks_like_image(path)


def walk_files(root: Path) -> Iterator[Path]:
    """Regular, non-hidden files under ``root`` in a stable (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def image_files(root: Path) -> Iterator[Path]:
    for path in walk_files(root):
        if is_candidate_file(path):
            yield path
