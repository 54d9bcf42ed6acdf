"""Finding image files on disk, and reading them.

Only regular files are listed or read: a FIFO, device or socket named like an image would block
(or never end) the first ``open`` of it, so it is skipped unopened and reported.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from datasetagent.tools.decode import sniff

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

#: Why ``walk_files`` skips a file (the ``on_skip`` reasons).
LINK_OUT = "symbolic link pointing out of the folder"
NOT_REGULAR = "not a regular file (a FIFO, device or socket)"
BROKEN_LINK = "broken symbolic link (or a loop of links)"


def open_regular(path: str | Path, *, follow_links: bool = True) -> BinaryIO:
    """``path`` opened for reading where it is a regular file; OSError for anything else
    (a symbolic link too, with ``follow_links=False``).

    The file is opened without blocking and checked before it is read, so a FIFO or device in
    a file's place is refused instead of hanging the reader.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fh = os.fdopen(os.open(path, flags), "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(f"{path} is {NOT_REGULAR}")
    return fh


def read_regular(path: str | Path, limit: int = -1, *, follow_links: bool = True) -> bytes:
    """The bytes (the first ``limit`` where given) of the regular file ``path``."""
    with open_regular(path, follow_links=follow_links) as fh:
        return fh.read(limit)


def looks_like_image(path: Path) -> bool:
    try:
        head = read_regular(path, 12)
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
    """Non-hidden regular files under ``root`` in a stable (sorted) order.

    Symbolic links are followed only where they stay inside ``root``: a linked folder is not
    entered (its files are reached by their real path if they lie inside), and a linked file
    that points outside ``root`` is skipped and reported to ``on_skip``, as is anything that
    is not a regular file (FIFOs, devices, sockets), without being opened.
    """
    top = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            why = _skip_reason(path, top)
            if why is not None:
                if on_skip is not None:
                    on_skip(path, why)
                continue
            yield path


def _skip_reason(path: Path, top: Path) -> str | None:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return None  # gone since it was listed: reading it reports that
    if stat.S_ISLNK(mode):
        try:
            target = path.resolve()
        except (RuntimeError, OSError):  # a loop of links (RuntimeError before Python 3.13)
            return BROKEN_LINK
        if not target.is_relative_to(top):
            return LINK_OUT
        try:
            mode = target.stat().st_mode
        except OSError:
            return BROKEN_LINK
    return None if stat.S_ISREG(mode) else NOT_REGULAR


def image_files(root: Path, on_skip: SkipHandler | None = None) -> Iterator[Path]:
    for path in walk_files(root, on_skip):
        if is_candidate_file(path):
            yield path


def skip_messages(root: Path, skipped: Counter[str]) -> list[str]:
    """One line per reason ``walk_files`` skipped files under ``root`` for, with the count."""
    return [f"skipped {n} file(s) in {root}: {why}" for why, n in sorted(skipped.items())]
