"""Content-addressed image files: ``images/ab/abcdef….ext``, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image


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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return rel

    def path(self, rel: str) -> Path:
        return self.root / rel

    def open_image(self, rel: str) -> Image.Image:
        """The stored image at ``rel``, decoded (the file is closed again)."""
        with Image.open(self.path(rel)) as img:
            img.load()
            return img
