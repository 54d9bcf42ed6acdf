"""Every decode path is at least as strict as a plain, full Pillow decode: damaged files
(bytes overwritten, inserted or deleted at many places) that Pillow refuses are refused by the
scan's fast path and by the pipeline's decode alike."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from datasetagent.scan import ScanParams, scan_files
from datasetagent.tools.decode import ImageIssue, decode_strict
from helpers import encode, photos

MAX_PIXELS = 100_000_000


def pillow_refuses(data: bytes) -> bool:
    """A plain full decode: open, count the frames, load every pixel of the first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            getattr(img, "n_frames", 1)
            img.load()
    except Exception:
        return True
    return False


def refused(data: bytes, **kwargs: object) -> bool:
    """Whether ``decode_strict`` reports ``data`` as corrupt."""
    try:
        decode_strict(data, max_pixels=MAX_PIXELS, **kwargs)  # type: ignore[arg-type]
    except ImageIssue as issue:
        return issue.issue == "corrupt"
    return False


def damaged(data: bytes, seed: int) -> list[bytes]:
    """Copies of ``data`` with bytes overwritten, inserted or deleted at 24 places (from the
    first marker to the last byte) and 3 lengths each."""
    rng = np.random.default_rng(seed)
    out = []
    for pos in np.linspace(8, len(data) - 1, 24).astype(int):
        for length in (1, 9, 200):
            junk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            kind = rng.integers(3)
            if kind == 0:
                copy = data[:pos] + junk + data[pos + length :]
            elif kind == 1:
                copy = data[:pos] + junk + data[pos:]
            else:
                copy = data[:pos] + data[pos + length :]
            out.append(copy[: len(data) + length])
    out += [data[: len(data) * k // 10] for k in range(1, 10)]  # truncations
    out.append(data[:-2])  # all but the closing marker
    return out


def _photo() -> Image.Image:
    return photos()[0].resize((320, 214))


def _animated() -> bytes:
    frames = [_photo().convert("P"), _photo().rotate(90).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


FILES = {
    "jpeg": lambda: encode(_photo(), "JPEG", quality=85),
    "jpeg_grey": lambda: encode(_photo().convert("L"), "JPEG", quality=85),
    "jpeg_progressive": lambda: encode(_photo(), "JPEG", quality=85, progressive=True),
    "png": lambda: encode(_photo()),
    "gif": _animated,
    "webp": lambda: encode(_photo(), "WEBP", quality=80),
    "webp_lossless": lambda: encode(_photo(), "WEBP", lossless=True),
}


@pytest.mark.parametrize("name", list(FILES))
def test_damage_pillow_refuses_is_refused_by_every_path(name: str) -> None:
    data = FILES[name]()
    copies = damaged(data, seed=len(name))
    caught = 0
    scanned = scan_files_of(copies)
    for k, copy in enumerate(copies):
        if not pillow_refuses(copy):
            continue
        caught += 1
        where = f"copy {k} of {name}"
        assert refused(copy, color_mode="RGB"), f"pipeline decode took {where}"
        assert refused(copy, color_mode=None), where
        assert refused(copy, color_mode="L", reduce_to=160), f"scan decode took {where}"
        assert scanned[k].issues == ["corrupt"], f"scan took {where}"
    assert caught >= 10  # the damage really damages


def scan_files_of(copies: list[bytes]) -> list[object]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, copy in enumerate(copies):
            path = Path(tmp) / f"{k:03d}.img"
            path.write_bytes(copy)
            paths.append(str(path))
        return list(scan_files(paths, ScanParams()))


def test_jpeg_damage_in_the_middle_is_refused_on_every_path() -> None:
    """Overwritten entropy-coded data in a file that still ends with EOI: OpenCV decodes it
    (only warning) and so did the scan's fast path."""
    data = encode(_photo(), "JPEG", quality=85)
    copy = data[: len(data) // 2] + b"\x00" * 64 + data[len(data) // 2 + 64 :]
    assert copy.endswith(b"\xff\xd9")
    for kwargs in ({"color_mode": "L", "reduce_to": 160}, {"color_mode": "RGB"}, {}):
        with pytest.raises(ImageIssue, match="damaged image data"):
            decode_strict(copy, max_pixels=MAX_PIXELS, **kwargs)  # type: ignore[arg-type]


def test_clean_files_still_decode_on_every_path() -> None:
    for name, make in FILES.items():
        data = make()
        for kwargs in ({"color_mode": "L", "reduce_to": 160}, {"color_mode": "RGB"}, {}):
            decoded = decode_strict(data, max_pixels=MAX_PIXELS, **kwargs)  # type: ignore[arg-type]
            assert decoded.size == (320, 214), name


def test_fast_grey_jpeg_matches_pillow_draft() -> None:
    """The strict decoder's reduced grey pixels are Pillow's ``draft`` pixels."""
    data = encode(_photo(), "JPEG", quality=85)
    fast = decode_strict(data, max_pixels=MAX_PIXELS, color_mode="L", reduce_to=80)
    img = Image.open(io.BytesIO(data))
    img.draft("L", (80, 53))
    assert fast.image.size == img.size == (80, 54)  # 1/4 scale
    assert np.array_equal(np.asarray(fast.image), np.asarray(img.convert("L")))


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _without_app0(data: bytes) -> bytes:
    length = int.from_bytes(data[4:6], "big")
    assert data[2:4] == b"\xff\xe0"
    return data[:2] + data[4 + length :]


def _with_fill_bytes(data: bytes) -> bytes:
    """0xFF fill bytes (legal before any marker) before each header segment and EOI."""
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        out += b"\xff\xff\xff" + data[pos:end]
        pos = end
    return bytes(out + b"\xff\xff" + data[pos:-2] + b"\xff\xff\xff\xd9")


def _jfif_version(data: bytes, major: int) -> bytes:
    at = data.index(b"JFIF\0") + 5
    return data[:at] + bytes([major]) + data[at + 1 :]


def _adobe(data: bytes, transform: int) -> bytes:
    payload = b"Adobe" + (100).to_bytes(2, "big") + bytes(4) + bytes([transform])
    return data[:2] + _segment(0xEE, payload) + data[2:]


def _cv2_jpeg(**params: int) -> bytes:
    import cv2

    flags = [v for k, val in params.items() for v in (getattr(cv2, k), val)]
    ok, buf = cv2.imencode(".jpg", np.asarray(_photo())[..., ::-1], flags)
    assert ok
    return bytes(buf.tobytes())


def _valid_jpegs() -> dict[str, bytes]:
    from PIL import ImageCms

    base = encode(_photo(), "JPEG", quality=90)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {
        "restart markers": _cv2_jpeg(IMWRITE_JPEG_RST_INTERVAL=1),
        "progressive with restarts": _cv2_jpeg(
            IMWRITE_JPEG_PROGRESSIVE=1, IMWRITE_JPEG_RST_INTERVAL=2
        ),
        "4:4:4": encode(_photo(), "JPEG", quality=90, subsampling=0),
        "4:2:2": encode(_photo(), "JPEG", quality=90, subsampling=1),
        "optimised Huffman": encode(_photo(), "JPEG", quality=90, optimize=True),
        "ICC profile over several APP2": encode(
            _photo(), "JPEG", quality=90, icc_profile=icc + bytes(150_000)
        ),
        "large APP9 segments": base[:2] + _segment(0xE9, b"x" * 65533) * 3 + base[2:],
        "comment": base[:2] + _segment(0xFE, b"made by hand") + base[2:],
        "trailing data after EOI": base + b"appended by a phone app" * 50,
        "0xFF fill before markers": _with_fill_bytes(base),
        "no JFIF segment": _without_app0(base),
        "JFIF 2.01": _jfif_version(base, 2),
        "JFIF 0.01": _jfif_version(base, 0),
        "Adobe transform 2, no JFIF": _adobe(_without_app0(base), 2),
        "Adobe transform 5, grey": _adobe(
            _without_app0(encode(_photo().convert("L"), "JPEG", quality=90)), 5
        ),
        "CMYK": encode(_photo().convert("CMYK"), "JPEG", quality=90),
    }


@pytest.mark.parametrize("name", list(_valid_jpegs()))
def test_valid_jpeg_variants_are_never_corrupt(name: str) -> None:
    """What the JPEG standard allows and Pillow decodes is an image on every path: a valid
    photo reported corrupt is a photo lost from the dataset."""
    data = _valid_jpegs()[name]
    assert not pillow_refuses(data)
    for kwargs in ({"color_mode": "L", "reduce_to": 160}, {"color_mode": "RGB"}, {}):
        decoded = decode_strict(data, max_pixels=MAX_PIXELS, **kwargs)  # type: ignore[arg-type]
        assert decoded.size == (320, 214), (name, kwargs)
    assert scan_files_of([data])[0].issues == []  # type: ignore[attr-defined]


def test_damage_behind_a_benign_header_warning_is_still_refused() -> None:
    """The header fields set aside for the strict decoder do not let damaged data through."""
    data = _jfif_version(encode(_photo(), "JPEG", quality=85), 2)
    copy = data[: len(data) // 2] + b"\x00" * 64 + data[len(data) // 2 + 64 :]
    for kwargs in ({"color_mode": "L", "reduce_to": 160}, {"color_mode": "RGB"}):
        with pytest.raises(ImageIssue, match="damaged image data"):
            decode_strict(copy, max_pixels=MAX_PIXELS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", [b"JFIF\0", b"Adobe"])
def test_a_header_segment_pillow_cannot_parse_is_refused_by_the_scan_too(tag: bytes) -> None:
    """libjpeg decodes a JPEG whose JFIF or Adobe segment is too short to hold a version, but
    Pillow (the pipeline's decode) refuses it: the scan called it ok, the build corrupt."""
    base = encode(_photo(), "JPEG", quality=90)
    data = base[:2] + _segment(0xEE if tag == b"Adobe" else 0xE0, tag) + _without_app0(base)[2:]
    assert pillow_refuses(data)
    assert refused(data, color_mode="RGB")
    assert refused(data, color_mode="L", reduce_to=160)
    assert scan_files_of([data])[0].issues == ["corrupt"]  # type: ignore[attr-defined]
