"""Box coordinates: conversions between the forms export formats use, and the export checks.

Our form (``records.Box``) is COCO's: ``(x, y, w, h)`` in pixels, top-left corner, where pixel
``(i, j)`` covers ``[i, i+1) × [j, j+1)``. The others:

* ``xyxy``: corners ``(x0, y0, x1, y1)`` in the same pixel space;
* ``cxcywh`` normalised (YOLO): centre and size divided by the image's width and height;
* VOC: 1-based inclusive pixel indices, ``xmin = x + 1``, ``ymin = y + 1``, ``xmax = x + w``,
  ``ymax = y + h`` (what the VOC devkit and ``supervision`` read).

Exported coordinates are snapped to :data:`DECIMALS` decimals of a pixel, so that every format
(normalised ones included, written with enough digits) reads back to the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

XYWH = tuple[float, float, float, float]

#: Decimals of a pixel kept in exported coordinates.
DECIMALS = 3
#: Digits after the point of normalised coordinates: exact to well under 10**-DECIMALS px for
#: images up to 10**6 px on a side.
NORM_DECIMALS = 10
#: A box narrower or lower than this (pixels, after clipping to the image) is degenerate.
MIN_SIDE = 1.0


def snap(v: float) -> float:
    """``v`` rounded to :data:`DECIMALS` decimals (``-0.0`` made ``0.0``)."""
    return round(v, DECIMALS) + 0.0


def xywh_to_xyxy(box: XYWH) -> XYWH:
    x, y, w, h = box
    return x, y, x + w, y + h


def xyxy_to_xywh(box: XYWH) -> XYWH:
    x0, y0, x1, y1 = box
    return x0, y0, x1 - x0, y1 - y0


def xywh_to_cxcywh(box: XYWH, width: int, height: int) -> XYWH:
    """Normalised centre and size (YOLO) of a pixel box in a ``width`` × ``height`` image."""
    x, y, w, h = box
    return (x + w / 2) / width, (y + h / 2) / height, w / width, h / height


def cxcywh_to_xywh(box: XYWH, width: int, height: int) -> XYWH:
    """The pixel box of normalised centre and size (YOLO) ``box``."""
    cx, cy, w, h = box
    pw, ph = w * width, h * height
    return cx * width - pw / 2, cy * height - ph / 2, pw, ph


def xywh_to_voc(box: XYWH) -> XYWH:
    """VOC ``(xmin, ymin, xmax, ymax)``: 1-based, inclusive pixel indices."""
    x, y, w, h = box
    return x + 1, y + 1, x + w, y + h


def voc_to_xywh(box: XYWH) -> XYWH:
    xmin, ymin, xmax, ymax = box
    return xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1


def format_norm(v: float) -> str:
    """A normalised coordinate as text: :data:`NORM_DECIMALS` decimals, trailing zeros cut."""
    text = f"{v:.{NORM_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_px(v: float) -> str:
    """A pixel coordinate as text, without a trailing ``.0`` for whole numbers."""
    v = snap(v)
    return str(int(v)) if v.is_integer() else repr(v)


@dataclass(frozen=True)
class BoxCheck:
    """The box to export (clipped to the image, snapped), or None and why it is dropped."""

    box: XYWH | None
    reason: str | None = None
    clipped: bool = False


def check_box(box: XYWH, width: int, height: int) -> BoxCheck:
    """Clip ``box`` to the ``width`` × ``height`` image and snap it; drop it as

    * ``not_finite``: a coordinate is NaN or infinite;
    * ``outside_image``: no part of it lies in the image;
    * ``degenerate``: what lies in the image is under :data:`MIN_SIDE` pixels wide or high.
    """
    if not all(math.isfinite(v) for v in box):
        return BoxCheck(None, "not_finite")
    x0, y0, x1, y1 = xywh_to_xyxy(box)
    cx0, cy0 = snap(min(max(x0, 0.0), width)), snap(min(max(y0, 0.0), height))
    cx1, cy1 = snap(min(max(x1, 0.0), width)), snap(min(max(y1, 0.0), height))
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return BoxCheck(None, "outside_image")
    if cx1 - cx0 < MIN_SIDE or cy1 - cy0 < MIN_SIDE:
        return BoxCheck(None, "degenerate")
    clipped = (cx0, cy0, cx1, cy1) != (snap(x0), snap(y0), snap(x1), snap(y1))
    return BoxCheck((cx0, cy0, snap(cx1 - cx0), snap(cy1 - cy0)), clipped=clipped)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (4,) xyxy box with each of (n, 4) boxes."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    out: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out
