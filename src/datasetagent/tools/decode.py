"""Strict decoding: bytes in, a normalised image or a reason out — never a crash."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datasetagent.records import ProcessingStep
from datasetagent.tools.hashing import jpeg_segments

#: Formats a decoded image may have; anything else is reported as ``corrupt``.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO", "PPM"})
#: File extensions each format is expected under (for the wrong-extension note).
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "MPO": {".jpg", ".jpeg", ".mpo"},
    "PNG": {".png"}, "BMP": {".bmp"}, "GIF": {".gif"}, "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"}, "PPM": {".ppm", ".pgm", ".pbm", ".pnm"},
}  # fmt: skip
#: Pixel modes decoded images may come in; others are reported as ``corrupt``.
SUPPORTED_MODES = frozenset(
    {
        "1",
        "L",
        "LA",
        "P",
        "PA",
        "RGB",
        "RGBA",
        "RGBX",
        "CMYK",
        "YCbCr",
        "I",
        "I;16",
        "I;16B",
        "I;16L",
        "F",
    }
)

_TEXT_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"{", b"[", b"<svg")
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WEBP",
    b"P5": "PPM",
    b"P6": "PPM",
}


class ImageIssue(Exception):
    """A candidate that cannot become a sample; ``issue`` is a scan issue name."""

    def __init__(self, issue: str, detail: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(f"{issue}: {detail}")
        self.issue = issue
        self.detail = detail
        self.size = size


@dataclass
class Decoded:
    """A decoded image, oriented upright and in the requested colour mode.

    ``image`` may be smaller than the file's ``size`` when a reduced decode was asked for.
    """

    image: Image.Image
    source_format: str
    #: (width, height) of the full image, upright.
    size: tuple[int, int]
    steps: list[ProcessingStep] = field(default_factory=list)
    frames: int = 1
    #: ``image``'s pixels as an array where the decoder made one (saves copying them out).
    pixels: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]


def sniff(data: bytes) -> str | None:
    """The image format the leading bytes announce, if any."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return None if fmt == "WEBP" and data[8:12] != b"WEBP" else fmt
    return None


def _describe_non_image(data: bytes) -> str:
    fmt = sniff(data)
    if fmt is not None:
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
    """Open ``data`` and check its header only; raises ImageIssue for unusable files.

    Dimensions are checked against ``max_pixels`` here, before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        raise ImageIssue("corrupt", "empty file (0 bytes)")
    # Pillow's own bomb check would refuse without telling the size; ours below replaces it,
    # so it is lifted for the header read only.
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageIssue("corrupt", _describe_non_image(data)) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageIssue("corrupt", f"unreadable header: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    fmt = img.format or "unknown"
    width, height = img.size
    if fmt not in SUPPORTED_FORMATS:
        raise ImageIssue("corrupt", f"unsupported image format {fmt}", img.size)
    if img.mode not in SUPPORTED_MODES:
        raise ImageIssue("corrupt", f"unsupported pixel mode {img.mode}", img.size)
    if width < 1 or height < 1:
        raise ImageIssue("corrupt", f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageIssue(
            "too_large", f"{width}x{height} is over the limit of {max_pixels} pixels", img.size
        )
    return img, fmt


GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

#: Transposes that turn an image with an EXIF orientation upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class JpegHeader:
    """What the segments of a plain JPEG before its first scan say."""

    width: int
    height: int
    orientation: int
    #: 1 (grey) or 3 (colour)
    components: int = 3


_SOF_HUFFMAN = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size and EXIF orientation of a plain 8-bit JPEG with one or three components,
    read from its segments (a few µs, against ~30 for Pillow's parser). None for anything
    else or anything odd (MPO, CMYK, 12-bit, lossless or arithmetic coding, a second frame
    header, unreadable EXIF, a damaged segment): Pillow reads those."""
    frame: tuple[int, int, int] | None = None
    orientation: int | None = 1
    seen_exif = False
    try:
        for marker, pos, end in jpeg_segments(data):
            if marker == 0xDA:  # start of scan
                if frame is None or orientation is None:
                    return None
                width, height, components = frame
                return JpegHeader(width, height, orientation, components)
            if marker in _SOF_HUFFMAN:
                if frame is not None or end - pos < 10 or data[pos + 4] != 8:
                    return None
                height = int.from_bytes(data[pos + 5 : pos + 7], "big")
                width = int.from_bytes(data[pos + 7 : pos + 9], "big")
                components = data[pos + 9]
                if not width or not height or components not in (1, 3):
                    return None
                frame = (width, height, components)
            elif marker in _SOF_OTHER:
                return None
            elif marker == 0xE1 and not seen_exif and data[pos + 4 : pos + 10] == b"Exif\0\0":
                seen_exif = True  # Pillow reads the first Exif segment only
                orientation = _exif_orientation(data[pos + 10 : end])
            elif marker == 0xE2 and data[pos + 4 : pos + 8] == b"MPF\0":
                return None  # MPO: several pictures
            elif _pillow_refuses_segment(data, marker, pos, end):
                return None  # the probe refuses it, as every decode of the pipeline does
    except ValueError:
        return None
    return None


def _pillow_refuses_segment(data: bytes, marker: int, pos: int, end: int) -> bool:
    """Whether Pillow's header parser fails on this segment: a JFIF APP0 or Adobe APP14 too
    short for the version it reads. libjpeg passes over them, but the pipeline's decode is
    Pillow's, and the scan must not call ok what a build then rejects."""
    payload = end - pos - 4
    tag = data[pos + 4 : pos + 9]
    return payload < 7 and (
        (marker == 0xE0 and tag[:4] == b"JFIF") or (marker == 0xEE and tag == b"Adobe")
    )


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag (0x0112) of IFD0 of an EXIF block; 1 when absent, None when the
    block cannot be read."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    endian: Literal["little", "big"] = "little" if order == "little" else "big"
    ifd = int.from_bytes(tiff[4:8], endian)
    if ifd + 2 > len(tiff):
        return None
    for i in range(int.from_bytes(tiff[ifd : ifd + 2], endian)):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[0:2], endian) == 0x0112:
            kind = int.from_bytes(entry[2:4], endian)
            if kind == 3:  # SHORT
                return int.from_bytes(entry[8:10], endian)
            return int.from_bytes(entry[8:12], endian) if kind == 4 else None  # LONG
    return 1


def _request(size: tuple[int, int], reduce_to: int) -> tuple[int, int]:
    """The draft size that keeps the longer side at least ``reduce_to`` (draft keeps both
    sides >= the request)."""
    scale = reduce_to / max(size)
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def _jpeg_scale(size: tuple[int, int], reduce_to: int | None) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) Pillow's ``draft`` picks for ``reduce_to``."""
    if reduce_to is None:
        return 1
    request = _request(size, reduce_to)
    factor = min(size[0] // request[0], size[1] // request[1])
    return next((s for s in (8, 4, 2) if factor >= s), 1)


def _decode_jpeg(data: bytes, size: tuple[int, int], scale: int, colorspace: str) -> np.ndarray:
    """Pixels of a plain JPEG at 1/``scale`` by libjpeg-turbo in strict mode: every warning
    (corrupt entropy-coded data, a premature end, extraneous bytes) raises ImageIssue, where
    Pillow and OpenCV pass most of them over and return damaged pixels."""
    import simplejpeg  # only here: importing the decoder for ``sniff`` stays light

    width, height = -(-size[0] // scale), -(-size[1] // scale)
    try:
        pixels: np.ndarray = simplejpeg.decode_jpeg(
            _without_header_warnings(data),
            colorspace=colorspace,
            strict=True,
            min_width=width,
            min_height=height,
        )
    except ValueError as exc:
        raise ImageIssue("corrupt", f"damaged image data: {exc}", size) from exc
    if pixels.shape[:2] != (height, width):
        raise ImageIssue("corrupt", f"damaged image data: decoded {pixels.shape[:2]}", size)
    return pixels


def _without_header_warnings(data: bytes) -> bytes:
    """``data`` with the header fields libjpeg warns about but decodes the same either way
    set to the value it then assumes: a JFIF major version other than 1 (2.01 files exist;
    the format did not change) and an Adobe colour transform code other than 0 or 1 (read as
    YCbCr). Strict mode stops on any warning, and these say nothing about the pixels, so a
    valid photo would be reported corrupt (and the rest of its data never checked)."""
    patches: list[tuple[int, int]] = []
    try:
        for marker, pos, end in jpeg_segments(data):
            tag = data[pos + 4 : pos + 9]
            if marker == 0xE0 and end - pos > 9 and tag == b"JFIF\0" and data[pos + 9] != 1:
                patches.append((pos + 9, 1))
            elif marker == 0xEE and end - pos >= 16 and tag == b"Adobe" and data[pos + 15] > 1:
                patches.append((pos + 15, 1))
    except ValueError:
        return data  # the strict decoder reports the broken structure itself
    if not patches:
        return data
    copy = bytearray(data)
    for at, value in patches:
        copy[at] = value
    return bytes(copy)


def _plain_jpeg(
    data: bytes, header: JpegHeader, *, color_mode: str | None, reduce_to: int | None
) -> Decoded:
    """``decode_strict`` of a plain JPEG in one strict libjpeg-turbo decode, with the pixels,
    size, steps and modes of Pillow's decode (both are libjpeg-turbo: the same IDCT and
    upsampling). Reduced grey (the scan) is the luma plane at the DCT scale of Pillow's
    ``draft("L")``; every other request decodes the file's own colour space and converts as
    the Pillow path does."""
    size = (header.width, header.height)
    grey = header.components == 1 or (color_mode == "L" and reduce_to is not None)
    pixels = _decode_jpeg(data, size, _jpeg_scale(size, reduce_to), "GRAY" if grey else "RGB")
    if grey:
        pixels = pixels.reshape(pixels.shape[:2])
    pixels.flags.writeable = False  # ``image`` may share them (grey): a change copies first
    img = Image.fromarray(pixels)
    if color_mode is None:
        color_mode = img.mode
    steps: list[ProcessingStep] = []
    if header.orientation in UPRIGHT:
        img = img.transpose(UPRIGHT[header.orientation])
        size = upright_size(size, header.orientation)
        steps.append(
            ProcessingStep(name="exif_orientation", params={"orientation": header.orientation})
        )
    if img.mode != color_mode:
        before = img.mode
        img = to_mode(img, color_mode)
        steps.append(ProcessingStep(name="color_mode", params={"from": before, "to": color_mode}))
    kept = None if steps else pixels
    return Decoded(image=img, source_format="JPEG", size=size, steps=steps, pixels=kept)


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) once an image of EXIF ``orientation`` is turned upright."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def orientation_of(steps: Iterable[ProcessingStep]) -> int:
    """The EXIF orientation a decode turned the image upright from (1: none), read back from
    its recorded steps."""
    for step in steps:
        if step.name == "exif_orientation":
            value = step.params.get("orientation")
            return value if isinstance(value, int) else 1
    return 1


def decode_strict(
    data: bytes, *, max_pixels: int, color_mode: str | None = "RGB", reduce_to: int | None = None
) -> Decoded:
    """Decode every pixel of ``data``; a truncated or damaged file raises ImageIssue.

    Pillow's tolerant mode (``LOAD_TRUNCATED_IMAGES``) fills missing data with grey; it is never
    used here. Plain JPEGs (8-bit, grey or YCbCr, one frame) are read once, by libjpeg-turbo in
    strict mode, which refuses the corrupt entropy-coded data Pillow passes over; the rest by
    Pillow. ``color_mode`` None keeps grey images
    grey and makes the rest RGB. With ``reduce_to``, JPEGs are decoded at the smallest DCT
    scale whose sides are still at least that long (the whole stream is still read, so
    truncation is still caught). The image is
    rotated upright from its EXIF orientation and converted to the colour mode; both are
    recorded as processing steps when they change anything. Animated images give their first
    frame.
    """
    header = jpeg_header(data) if data.startswith(b"\xff\xd8") else None
    if header is not None and header.width * header.height > max_pixels:
        header = None  # the probe refuses it with the usual message
    if header is not None:
        return _plain_jpeg(data, header, color_mode=color_mode, reduce_to=reduce_to)
    img, fmt = probe(data, max_pixels=max_pixels)
    if color_mode is None:
        color_mode = "L" if img.mode in GREY_MODES else "RGB"
    size = img.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency notes and the like
            frames = int(getattr(img, "n_frames", 1) or 1)  # reads every frame's header
            if reduce_to is not None and fmt in ("JPEG", "MPO"):
                img.draft("L" if color_mode == "L" else "RGB", _request(size, reduce_to))
            img.load()
    except Image.DecompressionBombError as exc:
        raise ImageIssue("too_large", str(exc), size) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageIssue("corrupt", f"damaged image data: {exc}", size) from exc
    steps: list[ProcessingStep] = []
    orientation = img.getexif().get(0x0112, 1)
    if orientation in UPRIGHT:
        img = ImageOps.exif_transpose(img)  # also drops the tag from the image's EXIF
        size = upright_size(size, orientation)
        steps.append(ProcessingStep(name="exif_orientation", params={"orientation": orientation}))
    if img.mode != color_mode:
        before = img.mode
        img = to_mode(img, color_mode)
        steps.append(ProcessingStep(name="color_mode", params={"from": before, "to": color_mode}))
    return Decoded(image=img, source_format=fmt, size=size, steps=steps, frames=frames)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode`` (L or RGB): transparency onto a background (``background``), high
    bit depths scaled down (not clipped), CMYK and YCbCr through Pillow's converters."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = Image.fromarray(scale_to_8bit(np.asarray(img)), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        level = background(np.asarray(rgba))
        if level is not None:
            plate = Image.new("RGBA", rgba.size, (level, level, level, 255))
            img = Image.alpha_composite(plate, rgba)
    return img.convert(mode)


def background(rgba: np.ndarray) -> int | None:
    """The grey level (255 or 0) an H×W×4 image with transparency is shown on, None when it
    is opaque: white, unless what shows through the alpha is mostly light (white ink on a
    transparent sheet), then black. What a viewer shows is what is checked and hashed, and a
    picture drawn in the alpha channel alone must not vanish into its background."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return None
    step = max(1, int(np.sqrt(alpha.size / 65536)))  # ~64k pixels decide
    sample = rgba[::step, ::step].astype(np.float32)
    weight = sample[..., 3]
    luma = sample[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    total = float(weight.sum())
    light = total > 0 and float((luma * weight).sum()) / total > 127.5
    return 0 if light else 255


def scale_to_8bit(arr: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to 0-255.

    Integers are scaled by their bit depth, guessed from the largest value (8, 10, 12 or 16
    bits, as scanners and medical images store them); floats by their own range.
    """
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        a = (np.nan_to_num(a, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        top = float(a.max()) if a.size else 0.0
        bits = next((b for b in (8, 10, 12, 16) if top < 2**b), 32)
        a = np.clip(a, 0, None) * (255.0 / (2**bits - 1))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def wrong_extension(fmt: str, suffix: str) -> bool:
    """True when a file of format ``fmt`` carries an extension of another format."""
    expected = FORMAT_EXTENSIONS.get(fmt)
    return bool(suffix) and expected is not None and suffix.lower() not in expected
