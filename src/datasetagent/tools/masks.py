"""Instance masks: boolean arrays, COCO RLE and COCO polygons.

RLE is the exact form (``records.RLE``; pycocotools does the encoding). Polygons are what many
tools and COCO ``segmentation`` fields expect, and they follow COCO's convention: real-valued
coordinates where pixel (x, y) is the unit square [x, x+1) × [y, y+1), rasterised by
pycocotools, which keeps the pixels whose centres fall inside.

``mask_to_polygons`` traces outlines with OpenCV on the mask enlarged twice, so each outline runs
a quarter pixel outside the centres of the mask's boundary pixels (OpenCV's contours run through
those centres, which COCO's rasteriser would then cut in half). Polygons rasterise back to the
same pixels, except that polygons cannot describe holes: a hole is filled. Keep the RLE where
holes matter.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from datasetagent.records import RLE

Polygon = list[float]


def _check(mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"a mask is a (height, width) array, got shape {mask.shape}")
    return np.asfortranarray(mask.astype(np.uint8, copy=False) != 0, dtype=np.uint8)


def mask_to_rle(mask: np.ndarray) -> RLE:
    """A boolean (height, width) mask as COCO compressed RLE."""
    encoded = coco_mask.encode(_check(mask))
    counts = encoded["counts"]
    text = counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
    height, width = (int(v) for v in encoded["size"])
    return RLE(size=(height, width), counts=text)


def _coco(rle: RLE) -> dict[str, object]:
    return {"size": [int(rle.size[0]), int(rle.size[1])], "counts": rle.counts.encode("ascii")}


def rle_to_mask(rle: RLE) -> np.ndarray:
    """The boolean (height, width) mask an RLE describes."""
    decoded: np.ndarray = coco_mask.decode(_coco(rle)).astype(bool)
    return decoded


def rle_area(rle: RLE) -> int:
    """Pixels in the mask."""
    return int(coco_mask.area(_coco(rle)))


def rle_bbox(rle: RLE) -> tuple[float, float, float, float]:
    """The mask's bounding box as COCO (x, y, width, height) in pixels; all zeros when empty."""
    x, y, w, h = (float(v) for v in coco_mask.toBbox(_coco(rle)))
    return x, y, w, h


def mask_to_polygons(mask: np.ndarray, *, tolerance: float = 0.0) -> list[Polygon]:
    """Outer outlines of the mask's 8-connected parts as COCO polygons ``[x0, y0, x1, y1, ...]``.

    ``tolerance`` > 0 simplifies outlines (Douglas-Peucker, in pixels), trading exactness for
    fewer points. An empty mask gives no polygons.
    """
    m = _check(mask)
    if not m.any():
        return []
    big = np.ascontiguousarray(np.repeat(np.repeat(m, 2, axis=0), 2, axis=1))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[Polygon] = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, 2 * tolerance, True)
        points = contour.reshape(-1, 2).astype(np.float64) / 2 + 0.25
        if len(points) < 3:  # a straight run: only happens after simplification
            continue
        polygons.append([round(float(v), 4) for v in points.ravel()])
    return polygons


def polygons_to_rle(polygons: list[Polygon], height: int, width: int) -> RLE:
    """COCO polygons (the union of them) rasterised as pycocotools does, as RLE."""
    usable = [p for p in polygons if len(p) >= 6]
    if not usable:
        return mask_to_rle(np.zeros((height, width), bool))
    merged = coco_mask.merge(coco_mask.frPyObjects(usable, height, width))
    counts = merged["counts"]
    text = counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
    return RLE(size=(height, width), counts=text)


def join_polygons(polygons: list[Polygon]) -> Polygon:
    """One polygon for the union of ``polygons`` (outlines of separate parts), for formats that
    give an object a single polygon (YOLO segmentation).

    Every other part hangs off the first part's first vertex by a bridge walked there and back,
    which encloses nothing: pycocotools rasterises the joined polygon to the same pixels as the
    parts (Ultralytics joins parts the same way).
    """
    usable = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
    if not usable:
        return []
    anchor = usable[0][:1]
    pieces = [usable[0]]
    for part in usable[1:]:
        nearest = int(((part - anchor) ** 2).sum(axis=1).argmin())
        loop = np.roll(part, -nearest, axis=0)
        pieces += [anchor, loop, loop[:1]]
    if len(usable) > 1:
        pieces.append(anchor)
    return [float(v) for v in np.concatenate(pieces).ravel()]
