"""Content hashes for exact-duplicate detection and content-addressed storage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

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


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment of a JPEG up to its first scan; the
    scan's segment ends where its entropy-coded data starts. Stops at EOI; raises ValueError
    where the marker structure is broken."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG: no start-of-image marker")
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            raise ValueError(f"segment at byte {pos} runs past the end")
        yield marker, pos, end
        if marker == 0xDA:  # start of scan
            return
        pos = end


def jpeg_content_hash(data: bytes, orientation: int = 1) -> str | None:
    """sha256 of a JPEG's pixel-defining segments (tables, frame, scans), skipping metadata.

    Two JPEGs with equal hashes decode to the same pixels, whatever EXIF, XMP, ICC-less
    comments or thumbnails they carry; ``orientation`` (from EXIF) is folded in because it
    changes the upright image. Returns None when the marker structure cannot be walked.
    """
    h = hashlib.sha256(f"jpeg:{orientation}:".encode())
    try:
        for marker, start, end in jpeg_segments(data):
            if marker == 0xDA:  # the entropy-coded data runs to the end
                h.update(memoryview(data)[start:])
            elif marker not in _JPEG_METADATA:
                h.update(memoryview(data)[start:end])
    except ValueError:
        return None
    return h.hexdigest()
