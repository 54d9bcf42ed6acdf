"""Finding image files on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from datasetagent.tools.decode import sniff

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def looks_like_image(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return sniff(head) is not None


def is_candidate_file(path: Path) -> bool:
    """An image by extension (a broken one is still a candidate, to be reported), or any other
    file whose bytes start like an image."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return looks_like_image(path)


SkipHandler = Callable[[Path, str], None]


def walk_files(root: Path, on_skip: SkipHandler | None = None) -> Iterator[Path]:
    """Non-hidden files under ``root`` in a stable (sorted) order.

    Symbolic links are followed only where they stay inside ``root``: a linked folder is not
    entered (its files are reached by their real path if they lie inside), and a linked file
    that points outside ``root`` is skipped and reported to ``on_skip``.
    """
    top = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(top) or not target.is_file():
                    if on_skip is not None:
                        on_skip(path, "symbolic link out of the scanned folder")
                    continue
            yield path


def image_files(root: Path, on_skip: SkipHandler | None = None) -> Iterator[Path]:
    for path in walk_files(root, on_skip):
        if is_candidate_file(path):
            yield path
