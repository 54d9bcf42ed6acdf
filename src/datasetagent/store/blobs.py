"""Content-addressed image files: ``images/ab/abcdef….ext``, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, renamed over
    it, so a reader never sees half a file and a failed write leaves the old one. ``mode``:
    the file's permissions (a temporary file is private, 0600, otherwise)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def relpath(self, digest: str, ext: str) -> str:
        return f"images/{digest[:2]}/{digest}.{ext}"

    def put(self, digest: str, ext: str, data: bytes) -> str:
        """Store ``data`` under its digest; returns the path relative to the run folder.

        Writing the same digest twice is a no-op, so a resumed stage never duplicates files.
        """
        rel = self.relpath(digest, ext)
        path = self.root / rel
        if path.exists():
            return rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        return rel

    def path(self, rel: str) -> Path:
        return self.root / rel

    def open_image(self, rel: str) -> Image.Image:
        """The stored image at ``rel``, decoded (the file is closed again)."""
        with Image.open(self.path(rel)) as img:
            img.load()
            return img
