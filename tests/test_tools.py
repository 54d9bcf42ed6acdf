from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageFile

from datasetagent.agents import processing
from datasetagent.agents.processing import ImageProcessingAgent, ProcessParams, process_bytes
from datasetagent.runtime.local import LocalExecutor
from datasetagent.spec import CheckThresholds, ClassSpec, DatasetSpec, ImageConstraints
from datasetagent.store import BlobStore, Candidate, RunStore
from datasetagent.tools import decode, quality
from datasetagent.tools.decode import ImageIssue, decode_strict
from datasetagent.tools.hashing import pixel_hash
from helpers import PathSource, encode

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


def test_reduced_grey_jpeg_is_pillows_draft_and_still_strict(
    photo_images: list[Image.Image],
) -> None:
    """The scan's reduced grey decode (strict libjpeg-turbo for plain JPEGs) gives the pixels
    of Pillow's draft decode, and a JPEG cut anywhere is still corrupt."""
    for photo in photo_images[:2]:
        for size in ((640, 427), (1300, 700), (300, 200)):
            data = encode(photo.resize(size), "JPEG")
            reference = Image.open(io.BytesIO(data))
            reference.draft("L", (160, 160 * size[1] // size[0]))
            decoded = decode_strict(data, max_pixels=MAX, color_mode="L", reduce_to=160)
            assert decoded.size == size
            assert np.array_equal(np.asarray(decoded.image), np.asarray(reference.convert("L")))
    data = encode(photo_images[1], "JPEG")
    for cut in [*range(16, len(data) - 16, len(data) // 40), len(data) - 16]:
        with pytest.raises(ImageIssue) as exc:
            decode_strict(data[:cut], max_pixels=MAX, color_mode="L", reduce_to=160)
        assert exc.value.issue == "corrupt", cut
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(photo_images[0], "JPEG", exif=exif.tobytes())
    decoded = decode_strict(rotated, max_pixels=MAX, color_mode="L", reduce_to=160)
    assert decoded.size == (427, 640)
    assert decoded.image.size == (107, 160)


def _mm_exif(orientation: int) -> bytes:
    """A big-endian (Motorola) EXIF block with one IFD0 entry: the orientation."""
    entry = (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
    entry += orientation.to_bytes(2, "big") + b"\0\0"
    return b"Exif\0\0MM\0*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + entry + b"\0" * 4


def test_plain_jpeg_is_decoded_once(photo_images: list[Image.Image]) -> None:
    """The pipeline's full colour decode of a plain JPEG is the strict decoder's alone: Pillow
    does not decode the entropy-coded data a second time."""
    data = encode(photo_images[0], "JPEG")
    refuse = mock.patch.object(ImageFile.ImageFile, "load", side_effect=AssertionError)
    with refuse, mock.patch.object(decode, "_decode_jpeg", wraps=decode._decode_jpeg) as strict:
        for color_mode in ("RGB", None, "L"):
            decoded = decode_strict(data, max_pixels=MAX, color_mode=color_mode)
            assert decoded.size == photo_images[0].size
    assert strict.call_count == 3


@pytest.mark.parametrize(
    ("color_mode", "reduce_to"), [("L", 80), ("RGB", None), (None, None), ("L", None), ("RGB", 80)]
)
def test_fast_jpeg_decode_equals_pillows(
    photo_images: list[Image.Image], color_mode: str | None, reduce_to: int | None
) -> None:
    """The header read by hand and the one strict libjpeg-turbo decode give what Pillow gives,
    for the scan's reduced grey and the pipeline's full colour alike: size, upright
    orientation (either EXIF byte order), steps, mode and pixels; CMYK and MPO go to Pillow."""
    photo = photo_images[0].resize((320, 213))
    cases: dict[str, bytes] = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases[f"II {orientation}"] = encode(photo, "JPEG", exif=exif.tobytes())
    cases["MM 6"] = encode(photo, "JPEG", exif=_mm_exif(6))
    cases["progressive"] = encode(photo, "JPEG", progressive=True)
    cases["grey"] = encode(photo.convert("L"), "JPEG")
    cases["cmyk"] = encode(photo.convert("CMYK"), "JPEG")
    cases["trailing bytes"] = encode(photo, "JPEG") + b"\0" * 10
    fast = {"cmyk": False}
    for name, data in cases.items():
        got = decode_strict(data, max_pixels=MAX, color_mode=color_mode, reduce_to=reduce_to)
        with mock.patch.object(decode, "jpeg_header", return_value=None):
            want = decode_strict(data, max_pixels=MAX, color_mode=color_mode, reduce_to=reduce_to)
        assert (got.size, got.steps, got.frames) == (want.size, want.steps, want.frames), name
        assert got.image.mode == want.image.mode, name
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image)), name
        if got.pixels is not None:
            assert np.array_equal(got.pixels, np.asarray(got.image)), name
        took_fast_path = decode.jpeg_header(data) is not None
        assert took_fast_path == fast.get(name, True), name
    mpo = io.BytesIO()
    photo.save(mpo, "MPO", save_all=True, append_images=[photo.rotate(90)])
    assert decode.jpeg_header(mpo.getvalue()) is None
    assert decode_strict(mpo.getvalue(), max_pixels=MAX, color_mode="L", reduce_to=80).frames == 2


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
    assert (out.width, out.height, out.mode, out.ext) == (28, 28, "L", "jpg")
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


def _round_outcomes(tmp: Path, paths: list[Path], batch: int) -> list[tuple[str, ...]]:
    spec = DatasetSpec(classes=(ClassSpec(name="a"), ClassSpec(name="b")))
    tmp.mkdir()
    with (
        mock.patch.object(processing, "DEDUP_BATCH", batch),
        RunStore(tmp / "run.db") as store,
        LocalExecutor(1) as executor,
    ):
        store.add_candidates(
            Candidate(source_kind="local", location=str(p), licence="CC0-1.0") for p in paths
        )
        store.take_candidates(1, len(paths), origin="collected", wanted=None)
        agent = ImageProcessingAgent(store, BlobStore(tmp), spec, executor, {"local": PathSource()})
        agent.run_round(1)
        kept = {s.provenance.location: ("kept",) for s in store.samples()}
        rejected = {
            r.location: (*r.reasons, Path(r.duplicate_of or "").name) for r in store.rejections()
        }
    return [kept.get(str(p)) or rejected[str(p)] for p in paths]


def test_build_deduplicates_a_batch_as_it_would_one_image_at_a_time(
    tmp_path: Path, photo_images: list[Image.Image]
) -> None:
    tiles = [
        p.crop((x, y, x + 160, y + 160)) for p in photo_images for x in (0, 200) for y in (0, 200)
    ]
    files: list[tuple[str, bytes]] = [(f"t{i}.png", encode(t)) for i, t in enumerate(tiles)]
    files += [
        ("t0-again.png", files[0][1]),  # the same pixels as a kept image
        ("t1-reencoded.jpg", encode(tiles[1], "JPEG", quality=60)),  # near duplicate
        ("t1-reencoded-again.jpg", encode(tiles[1], "JPEG", quality=60)),  # twin of a rejected
        ("t2-brighter.png", encode(tiles[2].point(lambda v: min(255, v + 12)))),
        ("broken.png", files[3][1][:100]),
    ]
    paths = []
    for name, data in files:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    batched = _round_outcomes(tmp_path / "batched", paths, processing.DEDUP_BATCH)
    one_at_a_time = _round_outcomes(tmp_path / "single", paths, 1)
    assert batched == one_at_a_time
    assert batched[len(tiles) :] == [
        ("exact_duplicate", "t0.png"),
        ("near_duplicate", "t1.png"),
        ("near_duplicate", "t1.png"),
        ("near_duplicate", "t2.png"),
        ("corrupt", ""),
    ]


def test_reading_an_existing_dataset_does_not_load_opencv() -> None:
    """The importers sniff files through ``tools.decode``; OpenCV (~70 ms to import) is
    loaded only where an image is decoded with it."""
    import subprocess
    import sys

    code = "import sys, datasetagent.sources.existing; assert 'cv2' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
