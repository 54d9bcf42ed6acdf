"""Strict decoding: bytes in, a normalised image or a reason out — never a crash."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError

from datasetagent.records import ProcessingStep

#: Formats a decoded image may have; anything else is reported as ``corrupt``.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO", "PPM"})

_TEXT_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"{", b"[", b"<svg")
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WEBP",
}


class ImageIssue(Exception):
    """A candidate that cannot become a sample; ``issue`` is a scan issue name."""

    def __init__(self, issue: str, detail: str) -> None:
        super().__init__(f"{issue}: {detail}")
        self.issue = issue
        self.detail = detail


@dataclass
class Decoded:
    """A fully decoded image, oriented upright and in the requested colour mode."""

    image: Image.Image
    source_format: str
    steps: list[ProcessingStep] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def _describe_non_image(data: bytes) -> str:
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return f"damaged {fmt} header"
    head = data[:64].lstrip().lower()
    if head.startswith(_TEXT_PREFIXES):
        return "not an image: the file holds text (HTML, XML or JSON)"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "not an image: unknown binary format"
    return "not an image: the file holds plain text"


def probe(data: bytes, *, max_pixels: int) -> tuple[Image.Image, str]:
    """Open ``data`` and check its header only; raises ImageIssue for unusable files."""
    if not data:
        raise ImageIssue("corrupt", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageIssue("too_large", f"refused before decoding: {exc}") from None
    except UnidentifiedImageError:
        raise ImageIssue("corrupt", _describe_non_image(data)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageIssue("corrupt", f"unreadable header: {exc}") from None
    fmt = img.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageIssue("corrupt", f"unsupported image format {fmt}")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageIssue("corrupt", f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageIssue("too_large", f"{width}x{height} is over the limit of {max_pixels} pixels")
    return img, fmt


def decode_strict(data: bytes, *, max_pixels: int, color_mode: str = "RGB") -> Decoded:
    """Decode every pixel of ``data``; a truncated or damaged file raises ImageIssue.

    Pillow's tolerant mode (``LOAD_TRUNCATED_IMAGES``) fills missing data with grey; it is never
    used here. The image is rotated upright from its EXIF orientation and converted to
    ``color_mode``; both are recorded as processing steps when they change anything.
    """
    img, fmt = probe(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency notes and the like
            img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageIssue("corrupt", f"damaged image data: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageIssue("too_large", str(exc)) from None
    steps: list[ProcessingStep] = []
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        steps.append(ProcessingStep(name="exif_orientation", params={"orientation": orientation}))
    if img.mode != color_mode:
        before = img.mode
        img = _to_mode(img, color_mode)
        steps.append(ProcessingStep(name="color_mode", params={"from": before, "to": color_mode}))
    return Decoded(image=img, source_format=fmt, steps=steps)


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``, compositing any transparency onto white first."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "I;16" or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L") if mode == "L" else img
    return img.convert(mode)
