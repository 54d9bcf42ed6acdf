"""Content hashes for exact-duplicate detection and content-addressed storage."""

from __future__ import annotations

import hashlib

from PIL import Image

# JPEG markers whose segments do not change decoded pixels: APP0-APP13, APP15 and COM.
# APP14 (Adobe) selects the colour transform, so it is kept; EXIF orientation is added apart.
_JPEG_METADATA = {*range(0xE0, 0xEE), 0xEF, 0xFE}


def pixel_hash(img: Image.Image) -> str:
    """sha256 of mode, size and pixels: equal for the same picture saved twice or re-encoded
    losslessly with other metadata."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def jpeg_content_hash(data: bytes, orientation: int = 1) -> str | None:
    """sha256 of a JPEG's pixel-defining segments (tables, frame, scans), skipping metadata.

    Two JPEGs with equal hashes decode to the same pixels, whatever EXIF, XMP, ICC-less
    comments or thumbnails they carry; ``orientation`` (from EXIF) is folded in because it
    changes the upright image. Returns None when the marker structure cannot be walked.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    h = hashlib.sha256(f"jpeg:{orientation}:".encode())
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to the end
            h.update(data[pos:])
            return h.hexdigest()
        if marker not in _JPEG_METADATA:
            h.update(data[pos:end])
        pos = end
    return h.hexdigest()
