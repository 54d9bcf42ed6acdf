from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datasetagent.agents.processing import ProcessParams, process_bytes
from datasetagent.spec import CheckThresholds, ImageConstraints
from datasetagent.tools import quality
from datasetagent.tools.decode import ImageIssue, decode_strict
from datasetagent.tools.hashing import pixel_hash
from helpers import encode

MAX = 10_000_000


def test_decodes_real_photo(photo_images: list[Image.Image]) -> None:
    data = encode(photo_images[0], "JPEG", quality=90)
    decoded = decode_strict(data, max_pixels=MAX)
    assert decoded.image.size == (640, 427)
    assert decoded.image.mode == "RGB"
    assert decoded.source_format == "JPEG"
    assert decoded.steps == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_corrupt_not_grey(photo_images: list[Image.Image], fmt: str) -> None:
    data = encode(photo_images[1], fmt)
    with pytest.raises(ImageIssue) as exc:
        decode_strict(data[: len(data) // 2], max_pixels=MAX)
    assert exc.value.issue == "corrupt"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "text (HTML"),
        (b"just some notes\n", "plain text"),
        (bytes(range(256)) * 4, "unknown binary"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "header"),
    ],
)
def test_non_images_are_corrupt_with_a_reason(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageIssue) as exc:
        decode_strict(data, max_pixels=MAX)
    assert exc.value.issue == "corrupt"
    assert fragment in exc.value.detail


def test_too_large_is_refused_from_the_header() -> None:
    data = encode(Image.new("L", (400, 300)))
    with pytest.raises(ImageIssue) as exc:
        decode_strict(data, max_pixels=100_000)
    assert exc.value.issue == "too_large"
    assert "400x300" in exc.value.detail


def test_exif_orientation_is_applied(photo_images: list[Image.Image]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(photo_images[0], "JPEG", exif=exif.tobytes())
    decoded = decode_strict(data, max_pixels=MAX)
    assert decoded.image.size == (427, 640)
    assert [s.name for s in decoded.steps] == ["exif_orientation"]


def test_transparency_is_composited_on_white_and_mode_normalised() -> None:
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    decoded = decode_strict(encode(rgba), max_pixels=MAX)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)
    grey = decode_strict(encode(rgba), max_pixels=MAX, color_mode="L")
    assert grey.image.mode == "L"
    assert grey.steps[-1].params == {"from": "RGBA", "to": "L"}


def test_quality_marks_tiny_and_blank(photo_images: list[Image.Image]) -> None:
    t = CheckThresholds()
    photo = photo_images[0]

    def issues(img: Image.Image) -> list[str]:
        return quality.mark(*img.size, quality.score(quality.analysis_image(img)), t, min_side=32)

    assert issues(photo) == []
    assert issues(Image.new("RGB", (64, 64), (30, 30, 30))) == ["dark", "low_information"]
    assert issues(Image.new("L", (64, 64), 140)) == ["low_information"]
    assert issues(photo.resize((20, 14))) == ["tiny"]


def test_scores_do_not_depend_on_resolution(photo_images: list[Image.Image]) -> None:
    big = photo_images[1]
    a = quality.score(quality.analysis_image(big))
    b = quality.score(quality.analysis_image(big.resize((1280, 854))))
    for name in ("brightness", "highlights", "contrast", "entropy", "color_cast"):
        assert a[name] == pytest.approx(b[name], rel=0.05, abs=0.01)


def test_pixel_hash_ignores_metadata_but_not_pixels(photo_images: list[Image.Image]) -> None:
    img = photo_images[0]
    a = decode_strict(encode(img), max_pixels=MAX).image
    b = decode_strict(encode(img, optimize=True), max_pixels=MAX).image
    assert pixel_hash(a) == pixel_hash(b)
    arr = np.asarray(img).copy()
    arr[0, 0, 0] ^= 1
    assert pixel_hash(Image.fromarray(arr)) != pixel_hash(a)


def test_process_keeps_original_bytes_when_nothing_changes(photo_images: list[Image.Image]) -> None:
    params = ProcessParams(ImageConstraints())
    data = encode(photo_images[0], "JPEG", quality=85)
    out = process_bytes(data, params)
    assert out.issues == []
    assert out.data == data
    assert out.ext == "jpg"


def test_process_fits_to_inherited_size_and_mode(photo_images: list[Image.Image]) -> None:
    params = ProcessParams(ImageConstraints(min_side=28, color_mode="L", size=(28, 28)))
    out = process_bytes(encode(photo_images[1], "JPEG"), params)
    assert (out.width, out.height, out.mode, out.ext) == (28, 28, "L", "png")
    assert [s.name for s in out.steps] == ["color_mode", "fit_crop"]
    tiny = process_bytes(encode(photo_images[1].resize((20, 20))), params)
    assert tiny.issues == ["tiny"]


def test_process_enhances_a_dark_photo_under_the_ssim_guard(
    photo_images: list[Image.Image],
) -> None:
    dim = Image.eval(photo_images[1], lambda v: int(v * 0.45))
    auto = process_bytes(encode(dim), ProcessParams(ImageConstraints()))
    names = [s.name for s in auto.steps]
    assert "gamma" in names
    assert names[-1] == "ssim_guard"
    assert auto.ssim is not None
    assert auto.ssim >= 0.80
    stored = Image.open(io.BytesIO(auto.data))
    assert np.asarray(stored).mean() > np.asarray(dim).mean() * 1.15
    off = process_bytes(encode(dim), ProcessParams(ImageConstraints(enhance="off")))
    assert off.steps == []
    assert off.ssim is None
    assert off.data == encode(dim)
