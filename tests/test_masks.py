"""Masks ↔ COCO RLE ↔ polygons: exact round trips, edges, empties, single pixels, holes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask
from scipy.ndimage import binary_fill_holes

from datasetagent.records import RLE
from datasetagent.tools.masks import (
    mask_to_polygons,
    mask_to_rle,
    polygons_to_rle,
    rle_area,
    rle_bbox,
    rle_to_mask,
)


def _mask(h: int, w: int, *pixels: tuple[slice, slice]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for ys, xs in pixels:
        m[ys, xs] = True
    return m


CASES = {
    "empty": _mask(7, 9),
    "one pixel": _mask(7, 9, (slice(3, 4), slice(5, 6))),
    "one pixel in a corner": _mask(7, 9, (slice(6, 7), slice(8, 9))),
    "full": np.ones((5, 6), bool),
    "touching every edge": _mask(8, 8, (slice(0, 8), slice(0, 1)), (slice(0, 1), slice(0, 8))),
    "diagonal pixels": _mask(5, 5, (slice(1, 2), slice(1, 2)), (slice(2, 3), slice(2, 3))),
    "two parts": _mask(10, 12, (slice(0, 3), slice(0, 4)), (slice(6, 10), slice(7, 12))),
    "one-pixel line": _mask(6, 20, (slice(2, 3), slice(1, 19))),
    "disc": np.hypot(*np.mgrid[-15:16, -20:21]) < 11,
}


@pytest.mark.parametrize("name", list(CASES))
def test_rle_round_trip_is_exact(name: str) -> None:
    mask = CASES[name]
    rle = mask_to_rle(mask)
    assert isinstance(rle, RLE)
    assert rle.size == mask.shape
    assert RLE.model_validate_json(rle.model_dump_json()) == rle  # counts survive as text
    back = rle_to_mask(rle)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)
    assert rle_area(rle) == int(mask.sum())


@pytest.mark.parametrize("name", list(CASES))
def test_polygons_rasterise_back_to_the_mask(name: str) -> None:
    mask = CASES[name]
    polygons = mask_to_polygons(mask)
    assert (polygons == []) == (not mask.any())
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    # COCO convention: every coordinate within [0, width] × [0, height]
    xs = [x for p in polygons for x in p[0::2]]
    ys = [y for p in polygons for y in p[1::2]]
    assert all(0 <= x <= mask.shape[1] for x in xs)
    assert all(0 <= y <= mask.shape[0] for y in ys)
    rle = polygons_to_rle(polygons, *mask.shape)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)


def test_parts_give_one_polygon_each() -> None:
    assert len(mask_to_polygons(CASES["two parts"])) == 2
    assert len(mask_to_polygons(CASES["diagonal pixels"])) == 1  # 8-connected: one part


def test_bbox_is_coco_xywh() -> None:
    assert rle_bbox(mask_to_rle(CASES["one pixel"])) == (5.0, 3.0, 1.0, 1.0)
    assert rle_bbox(mask_to_rle(CASES["two parts"])) == (0.0, 0.0, 12.0, 10.0)
    assert rle_bbox(mask_to_rle(CASES["empty"])) == (0.0, 0.0, 0.0, 0.0)


def test_holes_are_filled_by_polygons_but_kept_by_rle() -> None:
    ring = _mask(9, 9, (slice(1, 8), slice(1, 8)))
    ring[3:6, 3:6] = False
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(ring)), ring)
    filled = rle_to_mask(polygons_to_rle(mask_to_polygons(ring), 9, 9))
    np.testing.assert_array_equal(filled, binary_fill_holes(ring))


def test_polygons_from_coco_files_rasterise_like_pycocotools() -> None:
    square = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    rle = polygons_to_rle(square, 6, 8)
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(square, 6, 8)))
    np.testing.assert_array_equal(rle_to_mask(rle), expected.astype(bool))
    assert rle_area(rle) == 12
    assert rle_to_mask(polygons_to_rle([], 3, 4)).sum() == 0
    assert rle_to_mask(polygons_to_rle([[1.0, 1.0, 2.0, 2.0]], 3, 4)).sum() == 0  # no area


def test_simplification_trades_points_for_exactness() -> None:
    disc = CASES["disc"]
    exact = mask_to_polygons(disc)
    simple = mask_to_polygons(disc, tolerance=1.0)
    assert len(simple[0]) < len(exact[0])
    back = rle_to_mask(polygons_to_rle(simple, *disc.shape))
    assert (back & disc).sum() / (back | disc).sum() > 0.9


def test_rejects_non_2d_masks() -> None:
    with pytest.raises(ValueError, match="height, width"):
        mask_to_rle(np.zeros((2, 3, 3), bool))


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 14), st.integers(1, 14))))
def test_any_mask_round_trips(mask: np.ndarray) -> None:
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    rle = polygons_to_rle(mask_to_polygons(mask), *mask.shape)
    np.testing.assert_array_equal(rle_to_mask(rle), binary_fill_holes(mask))
