"""Content hashes for exact-duplicate detection and content-addressed storage."""

from __future__ import annotations

import hashlib

from PIL import Image


def pixel_hash(img: Image.Image) -> str:
    """sha256 of mode, size and pixels: equal for the same picture saved twice or re-encoded
    losslessly with other metadata."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
