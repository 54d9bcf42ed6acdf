"""Enhancement earns its cost: good photos pass through untouched (the very bytes, the same
format), a measured defect is corrected in the source's format, and VOC's ``JPEGImages`` holds
JPEGs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from datasetagent.agents.processing import ProcessParams, process_bytes
from datasetagent.agents.processing_llm import ToolDecision
from datasetagent.export import export_samples
from datasetagent.export.voc import CONVERTED_NOTE
from datasetagent.spec import ClassSpec, DatasetSpec, ImageConstraints
from datasetagent.tools.enhance import ToolCall, enhance
from datasetagent.tools.quality import score_array
from datasetagent.tools.ssim import ssim, to_gray
from export_data import blob_path, make_samples, spec_for
from helpers import encode, photos

#: Crops (x, y, width, height) of the two 640×427 photos: each a photo in its own right. Some
#: are ones the old rules changed: a frame filled by a purple flower (a grey-world "cast"), a
#: dim corner whose lights still reach white ("dark"), dense foliage ("noisy").
CROPS = [
    (0, 0, 640, 427),
    (0, 0, 320, 240),
    (320, 0, 320, 240),
    (0, 187, 320, 240),
    (320, 187, 320, 240),
    (200, 100, 240, 320),
]
AUTO = ProcessParams(ImageConstraints())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def good_photos() -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of real photos, as a camera or a web page would give them."""
    out = []
    for name, photo in zip(("china", "flower"), photos(), strict=True):
        rgb = photo.convert("RGB")
        for x, y, w, h in CROPS:
            out.append((name, encode(rgb.crop((x, y, x + w, y + h)), "JPEG", quality=90)))
    return out


def darkened(factor: float = 0.3) -> Image.Image:
    rgb = np.asarray(photos()[0].convert("RGB"), dtype=np.float64)
    return Image.fromarray((rgb * factor).astype(np.uint8))


def brightness(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as img:
        return score_array(np.asarray(img.convert("RGB")))["brightness"]


def test_good_photos_are_stored_as_the_very_bytes_they_came_in() -> None:
    for _, data in good_photos():
        result = process_bytes(data, AUTO)
        assert not result.issues
        assert (result.ext, result.steps, result.ssim) == ("jpg", [], None)
        assert result.data == data


def test_a_build_leaves_good_jpeg_photos_untouched(tmp_path: Path) -> None:
    """The whole command with the default ``enhance: auto``: every image is stored and
    exported as the JPEG it came as, byte for byte."""
    sources = {}
    for k, (name, data) in enumerate(good_photos()):
        path = tmp_path / "photos" / name / f"{k:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sources[sha(data)] = path
    spec = DatasetSpec(
        name="photos",
        task="classification",
        classes=(ClassSpec(name="china"), ClassSpec(name="flower")),
        target_per_class=len(CROPS),
    )
    assert spec.image.enhance == "auto"
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    run = tmp_path / "run"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "datasetagent", "build", str(tmp_path / "spec.yaml")),
            *("--source", str(tmp_path / "photos"), "-o", str(run), "--json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["exported"] == len(sources)
    stored = [p for p in (run / "images").rglob("*") if p.is_file()]
    exported = [p for p in (run / "export").rglob("*.*") if p.suffix in (".jpg", ".png")]
    for files in (stored, exported):
        assert len(files) == len(sources)
        assert {p.suffix for p in files} == {".jpg"}
        assert {sha(p.read_bytes()) for p in files} == set(sources)
    manifest = (run / "export" / "imagefolder" / "manifest.jsonl").read_text().splitlines()
    assert all(json.loads(line)["provenance"]["steps"] == [] for line in manifest)


@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0
def test_a_dark_jpeg_is_brightened_and_stays_a_jpeg(subsampling: int) -> None:
    data = encode(darkened(), "JPEG", quality=90, subsampling=subsampling)
    result = process_bytes(data, AUTO)
    assert [s.name for s in result.steps] == ["gamma", "ssim_guard"]
    assert result.steps[1].params["undone"] is False
    assert result.ssim is not None
    assert result.ssim >= AUTO.constraints.ssim_floor
    assert result.ext == "jpg"
    with Image.open(io.BytesIO(result.data)) as img:
        assert img.format == "JPEG"
        assert JpegImagePlugin.get_sampling(img) == subsampling
        assert (img.width, img.height, img.mode) == (result.width, result.height, result.mode)
        pixels = np.asarray(img)
    assert brightness(result.data) > brightness(data) * 1.2
    # high quality: the stored JPEG is within a hair of the pixels the tool produced
    with Image.open(io.BytesIO(data)) as source:
        gamma = ToolCall("gamma", {"gamma": result.steps[0].params["gamma"]})
        exact = enhance(np.asarray(source.convert("RGB")), [gamma]).image
    assert ssim(to_gray(exact), to_gray(pixels)) > 0.98
    assert np.abs(exact.astype(int) - pixels).mean() < 1.5
    # with enhancement off the same file is stored as it came
    off = process_bytes(data, ProcessParams(ImageConstraints(enhance="off")))
    assert (off.data, off.ext, off.steps) == (data, "jpg", [])


def test_a_flat_png_is_stretched_and_stays_a_png_and_other_formats_become_png() -> None:
    rgb = np.asarray(photos()[1].convert("RGB"), dtype=np.float64)
    flat = Image.fromarray((rgb * 0.4 + 90).astype(np.uint8))
    result = process_bytes(encode(flat, "PNG"), AUTO)
    assert [s.name for s in result.steps] == ["auto_contrast", "ssim_guard"]
    assert result.ext == "png"
    assert result.data.startswith(b"\x89PNG")
    assert score_array(np.asarray(Image.open(io.BytesIO(result.data))))["contrast"] > (
        score_array(np.asarray(flat))["contrast"] * 1.3
    )
    bmp = process_bytes(encode(darkened(), "BMP"), AUTO)
    assert [s.name for s in bmp.steps] == ["gamma", "ssim_guard"]
    assert bmp.ext == "png"
    assert bmp.data.startswith(b"\x89PNG")


class _Destructive:
    """A tool policy that asks for a change the SSIM guard refuses."""

    def decide(self, scores: dict[str, float], mode: str, image: Image.Image) -> ToolDecision:
        return ToolDecision(calls=(ToolCall("gamma", {"gamma": 8.0}),))


def test_a_change_the_guard_undoes_leaves_the_source_bytes() -> None:
    _, data = good_photos()[0]
    result = process_bytes(data, ProcessParams(ImageConstraints(), policy=_Destructive()))
    assert [s.name for s in result.steps] == ["tool_policy", "ssim_guard"]
    assert result.steps[1].params["undone"] is True
    assert (result.data, result.ext, result.ssim) == (data, "jpg", None)


def test_an_exif_rotated_jpeg_is_turned_upright_and_stays_a_jpeg() -> None:
    rgb = photos()[0].convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90° clockwise to view
    data = encode(rgb, "JPEG", quality=90, exif=exif)
    result = process_bytes(data, ProcessParams(ImageConstraints(enhance="off")))
    assert [s.name for s in result.steps] == ["exif_orientation"]
    assert (result.ext, result.width, result.height) == ("jpg", rgb.height, rgb.width)
    with Image.open(io.BytesIO(result.data)) as img:
        assert (img.format, img.size) == ("JPEG", (rgb.height, rgb.width))


def test_voc_images_are_jpegs_and_jpegs_are_copied_byte_for_byte(tmp_path: Path) -> None:
    samples = make_samples(tmp_path / "blobs", "detection", n=8)
    kinds = {Path(s.blob).suffix for s in samples}
    assert kinds == {".png", ".jpg"}
    out = export_samples("voc", tmp_path / "voc", spec_for("detection", "voc"), samples,
                         blob_path, None)  # fmt: skip
    images = sorted((out / "JPEGImages").iterdir())
    assert len(images) == len(samples)
    by_stem = {s.id[:16]: s for s in samples}
    for path in images:
        sample = by_stem[path.stem]
        assert path.suffix == ".jpg"
        with Image.open(path) as img:
            assert (img.format, img.size) == ("JPEG", (sample.width, sample.height))
        source = Path(sample.blob).read_bytes()
        if sample.blob.endswith(".jpg"):
            assert path.read_bytes() == source
        else:
            with Image.open(sample.blob) as original:
                before = to_gray(np.asarray(original.convert("RGB")))
            assert ssim(before, to_gray(np.asarray(Image.open(path).convert("RGB")))) > 0.9
        xml = (out / "Annotations" / f"{path.stem}.xml").read_text()
        assert f"<filename>{path.name}</filename>" in xml
    converted = sum(not s.blob.endswith(".jpg") for s in samples)
    assert f"{CONVERTED_NOTE}: {converted}" in (out / "README.md").read_text()


def test_an_animated_png_is_stored_as_its_first_frame_the_one_checked() -> None:
    """Only the first frame of an animated file is decoded, checked and labelled, so the
    sample holds that frame, not the source's other frames."""
    first, second = photos()[0].convert("RGB"), photos()[1].convert("RGB")
    buf = io.BytesIO()
    first.save(buf, "PNG", save_all=True, append_images=[second.resize(first.size)])
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as apng:
        assert apng.n_frames == 2
    result = process_bytes(data, ProcessParams(ImageConstraints(enhance="off")))
    assert not result.issues
    assert result.ext == "png"
    with Image.open(io.BytesIO(result.data)) as stored:
        assert getattr(stored, "n_frames", 1) == 1
        assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(first))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_changed_image_keeps_its_colour_profile(fmt: str) -> None:
    """A re-encoded image carries the source's ICC profile (a wide-gamut photo would show
    other colours without it), but not onto pixels of another colour space."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # turned upright: the pixels change, so the image is re-encoded
    data = encode(photos()[0].convert("RGB"), fmt, icc_profile=icc, exif=exif.tobytes())
    rgb = process_bytes(data, ProcessParams(ImageConstraints(enhance="off")))
    assert [s.name for s in rgb.steps] == ["exif_orientation"]
    with Image.open(io.BytesIO(rgb.data)) as stored:
        assert (stored.format, stored.info.get("icc_profile")) == (fmt, icc)
    grey = process_bytes(data, ProcessParams(ImageConstraints(enhance="off", color_mode="L")))
    assert [s.name for s in grey.steps] == ["exif_orientation", "color_mode"]
    with Image.open(io.BytesIO(grey.data)) as stored:
        assert stored.mode == "L"
        assert "icc_profile" not in stored.info
