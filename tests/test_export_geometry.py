"""Property tests of the coordinate conversions the formats use (xyxy, xywh, normalised cxcywh,
VOC, polygons ↔ RLE), the export box check (edges, clipping, degenerate boxes) and the map of
imported annotations onto fitted images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from datasetagent.agents.processing import fit_to
from datasetagent.records import Box, Mask, ProcessingStep, Provenance, Sample
from datasetagent.sources.formats.align import align
from datasetagent.tools.boxes import (
    MIN_SIDE,
    check_box,
    cxcywh_to_xywh,
    format_norm,
    format_px,
    snap,
    voc_to_xywh,
    xywh_to_cxcywh,
    xywh_to_voc,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from datasetagent.tools.masks import (
    join_polygons,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_rle,
    rle_bbox,
    rle_to_mask,
)

sizes = st.integers(min_value=1, max_value=20_000)
grid = st.integers(min_value=0, max_value=20_000_000).map(lambda v: v / 1000)  # snapped values


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[int, int, tuple[float, float, float, float]]:
    """An image size and a snapped box inside it, often touching its edges."""
    width, height = draw(sizes), draw(sizes)
    assume(width >= MIN_SIDE and height >= MIN_SIDE)
    x = draw(st.one_of(st.just(0.0), grid.filter(lambda v: v <= width - 1)))
    y = draw(st.one_of(st.just(0.0), grid.filter(lambda v: v <= height - 1)))
    w = draw(st.one_of(st.just(snap(width - x)), grid.filter(lambda v: 1 <= v <= width - x)))
    h = draw(st.one_of(st.just(snap(height - y)), grid.filter(lambda v: 1 <= v <= height - y)))
    assume(w >= 1 and h >= 1)
    return width, height, (x, y, w, h)


@given(image_and_box())
def test_xyxy_and_xywh_round_trip(case: tuple[int, int, tuple[float, ...]]) -> None:
    _, _, box = case
    back = xyxy_to_xywh(xywh_to_xyxy(box))  # type: ignore[arg-type]
    assert tuple(snap(v) for v in back) == box


@given(image_and_box())
def test_normalised_text_reads_back_to_the_same_snapped_box(
    case: tuple[int, int, tuple[float, float, float, float]],
) -> None:
    width, height, box = case
    norm = xywh_to_cxcywh(box, width, height)
    assert all(-1e-12 <= v <= 1 + 1e-12 for v in norm)
    text = [float(format_norm(v)) for v in norm]
    back = cxcywh_to_xywh((text[0], text[1], text[2], text[3]), width, height)
    assert tuple(snap(v) for v in back) == box


@given(image_and_box())
def test_voc_text_reads_back_to_the_same_box(
    case: tuple[int, int, tuple[float, float, float, float]],
) -> None:
    _, _, box = case
    voc = xywh_to_voc(box)
    assert min(voc[0], voc[1]) >= 1  # 1-based
    text = [float(format_px(v)) for v in voc]
    back = voc_to_xywh((text[0], text[1], text[2], text[3]))
    assert tuple(snap(v) for v in back) == box


@given(image_and_box())
def test_boxes_inside_the_image_pass_unchanged_and_the_check_is_idempotent(
    case: tuple[int, int, tuple[float, float, float, float]],
) -> None:
    width, height, box = case
    check = check_box(box, width, height)
    assert check.box == box
    assert not check.clipped
    assert check_box(check.box, width, height).box == box


@given(
    sizes,
    sizes,
    st.tuples(*(st.floats(-5e4, 5e4, allow_nan=False) for _ in range(2))),
    st.tuples(*(st.floats(1e-6, 5e4, allow_nan=False) for _ in range(2))),
)
@settings(max_examples=300)
def test_any_box_is_clipped_into_the_image_or_dropped_with_a_reason(
    width: int, height: int, corner: tuple[float, float], size: tuple[float, float]
) -> None:
    box = (*corner, *size)
    check = check_box(box, width, height)  # type: ignore[arg-type]
    if check.box is None:
        assert check.reason in ("outside_image", "degenerate")
        x0, y0, x1, y1 = xywh_to_xyxy(box)  # type: ignore[arg-type]
        inside_w = min(x1, width) - max(x0, 0)
        inside_h = min(y1, height) - max(y0, 0)
        assert min(inside_w, inside_h) < MIN_SIDE + 1e-3
        return
    x, y, w, h = check.box
    assert min(x, y) >= 0
    assert x + w <= width + 1e-9
    assert y + h <= height + 1e-9
    assert min(w, h) >= MIN_SIDE
    assert check_box(check.box, width, height).box == check.box


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((10.0, 10.0, 0.4, 12.0), "degenerate"),
        ((63.5, 0.0, 5.0, 5.0), "degenerate"),  # half a pixel inside the right edge
        ((64.0, 0.0, 5.0, 5.0), "outside_image"),
        ((-9.0, -9.0, 9.0, 9.0), "outside_image"),
        ((math.nan, 0.0, 1.0, 1.0), "not_finite"),
        ((0.0, 0.0, math.inf, 1.0), "not_finite"),
    ],
)
def test_degenerate_boxes_are_dropped_with_their_reason(
    box: tuple[float, float, float, float], reason: str
) -> None:
    check = check_box(box, 64, 48)
    assert (check.box, check.reason) == (None, reason)


def test_boxes_past_the_edges_are_clipped() -> None:
    check = check_box((50.5, -2.0, 20.0, 8.25), 64, 48)
    assert check.box == (50.5, 0.0, 13.5, 6.25)
    assert check.clipped


masks = arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@given(masks)
@settings(max_examples=200, deadline=None)
def test_joined_polygon_rasterises_like_its_parts(mask: np.ndarray) -> None:
    """YOLO's single polygon per object: the union of the parts (holes filled), exactly."""
    h, w = mask.shape
    parts = mask_to_polygons(mask)
    joined = join_polygons(parts)
    if not parts:
        assert joined == []
        return
    assert polygons_to_rle([joined], h, w) == polygons_to_rle(parts, h, w)
    filled = rle_to_mask(polygons_to_rle(parts, h, w))
    assert (filled >= mask).all()  # only holes are added


@given(masks, st.integers(1, 8))
@settings(max_examples=100, deadline=None)
def test_normalised_polygon_text_rasterises_to_the_same_pixels(
    mask: np.ndarray, scale: int
) -> None:
    big = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
    h, w = big.shape
    joined = join_polygons(mask_to_polygons(big))
    assume(joined)
    text = [float(format_norm(v / (w if i % 2 == 0 else h))) for i, v in enumerate(joined)]
    back = [v * (w if i % 2 == 0 else h) for i, v in enumerate(text)]
    assert polygons_to_rle([back], h, w) == polygons_to_rle([joined], h, w)


def _sample(width: int, height: int, steps: tuple[ProcessingStep, ...] = ()) -> Sample:
    return Sample(
        id="0" * 64,
        blob="x.png",
        width=width,
        height=height,
        mode="L",
        origin="existing",
        provenance=Provenance(source_kind="existing", location="x", licence="x", steps=steps),
    )


@pytest.mark.parametrize("how", ["crop", "letterbox", "stretch"])
@pytest.mark.parametrize(("src", "dst"), [((120, 80), (64, 64)), ((50, 90), (100, 60))])
def test_imported_boxes_and_masks_follow_the_image_when_it_is_fitted(
    how: str, src: tuple[int, int], dst: tuple[int, int]
) -> None:
    arr = np.zeros((src[1], src[0]), np.uint8)
    box = Box(label="a", labeler="existing", x=20, y=12, w=22, h=30)
    arr[12:42, 20:42] = 255
    mask = Mask(label="a", labeler="existing", rle=mask_to_rle(arr > 0))
    fitted, step = fit_to(Image.fromarray(arr), dst, how)
    sample = _sample(*dst, steps=(step,))
    (got_box, got_mask), reasons = align([box, mask], src, sample)
    assert reasons == []
    _assert_on_the_bright_pixels(fitted, got_box, got_mask)


def _assert_on_the_bright_pixels(image: Image.Image, box: object, mask: object) -> None:
    """``box`` and ``mask`` lie on the bright object of the stored ``image``."""
    bright = np.asarray(image) > 127
    ys, xs = np.nonzero(bright)
    seen = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert isinstance(box, Box)
    assert isinstance(mask, Mask)
    np.testing.assert_allclose((box.x, box.y, box.x + box.w, box.y + box.h), seen, atol=1.0)
    x, y, w, h = rle_bbox(mask.rle)
    np.testing.assert_allclose((x, y, x + w, y + h), seen, atol=1.0)
    warped = rle_to_mask(mask.rle)
    assert (warped & bright).sum() / (warped | bright).sum() > 0.85


def test_annotations_of_another_frame_send_the_sample_to_review() -> None:
    box = Box(label="a", labeler="existing", x=1, y=1, w=5, h=5)
    anns, reasons = align([box], (48, 64), _sample(64, 48))
    assert anns == ()
    assert "annotations are for a 48x64 image, the image is 64x48" in reasons[0]
    assert align([box], (64, 48), _sample(64, 48)) == ((box,), [])


def _exif_photo(
    orientation: int,
) -> tuple[Box, Mask, Image.Image, tuple[ProcessingStep, ...], ProcessingStep]:
    """A 100x60 photo stored with EXIF ``orientation`` and a box and mask annotated on its
    stored pixels; the upright image fitted to 64x64, the decode's steps and the fit's."""
    import io

    from datasetagent.tools.decode import decode_strict

    raw = np.zeros((60, 100), np.uint8)  # stored 100 wide, 60 high
    raw[8:20, 10:40] = 255
    box = Box(label="a", labeler="existing", x=10, y=8, w=30, h=12)
    mask = Mask(label="a", labeler="existing", rle=mask_to_rle(raw > 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, "PNG", exif=exif.tobytes())
    decoded = decode_strict(buf.getvalue(), max_pixels=10**6, color_mode="L")
    fitted, fit = fit_to(decoded.image, (64, 64), "letterbox")
    return box, mask, fitted, tuple(decoded.steps), fit


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_annotations_of_the_stored_frame_turn_with_a_sideways_photo(orientation: int) -> None:
    """A phone photo stored sideways with an EXIF orientation, annotated on the stored pixels
    (as a COCO file written from the file's own size is): decoding turns it upright and the
    annotations turn with it, then follow the fit to the spec's size."""
    box, mask, fitted, steps, fit = _exif_photo(orientation)
    (got_box, got_mask), reasons = align([box, mask], (100, 60), _sample(64, 64, (*steps, fit)))
    assert reasons == []
    _assert_on_the_bright_pixels(fitted, got_box, got_mask)


@pytest.mark.parametrize("orientation", [2, 3, 4])
def test_annotations_of_a_mirrored_or_upside_down_photo_are_taken_as_upright(
    orientation: int,
) -> None:
    """Orientations 2-4 keep the size, so the stored and the upright frame cannot be told
    apart: annotations are taken as drawn on the upright image (what annotation tools show),
    only fitted, and not turned."""
    box, mask, _, steps, fit = _exif_photo(orientation)
    got, reasons = align([box, mask], (100, 60), _sample(64, 64, (*steps, fit)))
    assert reasons == []
    assert steps[0].name == "exif_orientation"  # the photo itself was turned
    assert got == align([box, mask], (100, 60), _sample(64, 64, (fit,)))[0]
