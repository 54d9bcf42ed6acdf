"""Imported annotations onto the stored image: the Image Processing agent may have fitted an
image to the spec's size (centre crop, letterbox or stretch, recorded as a ``fit_*`` step), so
the annotations an existing dataset gives for the original frame are mapped the same way.

Every fit is an axis-aligned scale and shift, ``x' = ax·x + bx``, ``y' = ay·y + by``. Boxes are
mapped and clipped (one with nothing left in the image is dropped); masks are warped with
nearest-neighbour sampling.

Decoding turns a photo upright by its EXIF orientation (a recorded ``exif_orientation`` step).
Annotations whose frame is the image as stored, sideways (the upright size with width and
height swapped: orientations 5-8), are turned the same way first. For orientations 2-4 the two
frames have one size and cannot be told apart: annotations are taken as made on the upright
image, as annotation tools show it. Any other frame cannot be placed: the sample goes to review
saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasetagent.records import Annotation, Box, Mask, Sample
from datasetagent.tools.boxes import check_box, snap
from datasetagent.tools.decode import UPRIGHT, orientation_of, upright_size
from datasetagent.tools.enhance import letterbox_geometry

Size = tuple[int, int]


@dataclass(frozen=True)
class Affine:
    ax: float
    bx: float
    ay: float
    by: float


def _size(text: object) -> Size | None:
    m = re.fullmatch(r"(\d+)x(\d+)", str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None


def fit_affine(how: str, src: Size, dst: Size) -> Affine:
    """The map of ``processing.fit_to(img, dst, how)`` on an image of size ``src``."""
    (sw, sh), (dw, dh) = src, dst
    if how == "crop":  # PIL's ImageOps.fit with centring 0.5 and no bleed
        ratio = dw / dh
        if sw / sh == ratio:
            cw, ch = float(sw), float(sh)
        elif sw / sh >= ratio:
            cw, ch = ratio * sh, float(sh)
        else:
            cw, ch = float(sw), sw / ratio
        left, top = (sw - cw) * 0.5, (sh - ch) * 0.5
        return Affine(dw / cw, -left * dw / cw, dh / ch, -top * dh / ch)
    if how == "letterbox":
        _, nw, nh, left, top = letterbox_geometry(src, dst)
        return Affine(nw / sw, float(left), nh / sh, float(top))
    return Affine(dw / sw, 0.0, dh / sh, 0.0)


def frame_and_fit(sample: Sample) -> tuple[Size, Affine | None]:
    """The image size before any fit step, and the fit's map (None when it was not fitted)."""
    for step in sample.provenance.steps:
        if step.name.startswith("fit_"):
            src = _size(step.params.get("from"))
            dst = _size(step.params.get("to"))
            if src is not None and dst is not None:
                return src, fit_affine(step.name.removeprefix("fit_"), src, dst)
    return (sample.width, sample.height), None


def _turn_point(x: float, y: float, orientation: int, size: Size) -> tuple[float, float]:
    """Where the point ``(x, y)`` of the stored image (``size``) lies once the image is turned
    upright by its EXIF ``orientation`` 5-8 (the transposes of ``tools.decode``)."""
    width, height = size
    if orientation == 5:  # transpose
        return y, x
    if orientation == 6:  # a quarter turn clockwise
        return height - y, x
    if orientation == 7:  # transverse
        return height - y, width - x
    return y, width - x  # 8: a quarter turn anticlockwise


def _turn(ann: Annotation, orientation: int, size: Size) -> Annotation:
    """``ann`` of the stored image (``size``) on the image turned upright (orientation 5-8)."""
    if isinstance(ann, Box):
        corners = [
            _turn_point(x, y, orientation, size)
            for x in (ann.x, ann.x + ann.w)
            for y in (ann.y, ann.y + ann.h)
        ]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return ann.model_copy(
            update={
                "x": snap(min(xs)),
                "y": snap(min(ys)),
                "w": snap(max(xs) - min(xs)),
                "h": snap(max(ys) - min(ys)),
            }
        )
    if isinstance(ann, Mask):
        import numpy as np
        from PIL import Image

        from datasetagent.tools.masks import mask_to_rle, rle_to_mask

        img = Image.fromarray(rle_to_mask(ann.rle).astype(np.uint8) * 255)
        turned = np.asarray(img.transpose(UPRIGHT[orientation])) > 0
        return ann.model_copy(update={"rle": mask_to_rle(turned)})
    return ann


def _map_box(ann: Box, f: Affine, width: int, height: int) -> Box | None:
    x0, y0 = f.ax * ann.x + f.bx, f.ay * ann.y + f.by
    x1, y1 = f.ax * (ann.x + ann.w) + f.bx, f.ay * (ann.y + ann.h) + f.by
    check = check_box((x0, y0, x1 - x0, y1 - y0), width, height)
    if check.box is None:
        return None
    x, y, w, h = check.box
    return ann.model_copy(update={"x": snap(x), "y": snap(y), "w": w, "h": h})


def _map_mask(ann: Mask, f: Affine, width: int, height: int) -> Mask | None:
    import cv2
    import numpy as np

    from datasetagent.tools.masks import mask_to_rle, rle_to_mask

    src = rle_to_mask(ann.rle).astype(np.uint8)
    # pixel centres map to pixel centres: x' + 0.5 = ax (x + 0.5) + bx
    matrix = np.array(
        [[f.ax, 0, f.bx + 0.5 * f.ax - 0.5], [0, f.ay, f.by + 0.5 * f.ay - 0.5]], np.float64
    )
    out = cv2.warpAffine(src, matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
    if not out.any():
        return None
    return ann.model_copy(update={"rle": mask_to_rle(out.astype(bool))})


def align(
    annotations: Sequence[Annotation], frame: Size | None, sample: Sample
) -> tuple[tuple[Annotation, ...], list[str]]:
    """``annotations`` given for an image of size ``frame``, placed on the stored ``sample``;
    also the reasons to review it (empty when all is well)."""
    objects = [a for a in annotations if isinstance(a, Box | Mask)]
    if not objects or frame is None:
        return tuple(annotations), []
    before, fit = frame_and_fit(sample)
    orientation = orientation_of(sample.provenance.steps)
    if upright_size(frame, orientation) == before != tuple(frame):
        annotations = [_turn(a, orientation, frame) for a in annotations]
        frame = before
    if tuple(frame) != before:
        return (), [
            f"the existing dataset's annotations are for a {frame[0]}x{frame[1]} image, the "
            f"image is {before[0]}x{before[1]}: check its orientation and annotations"
        ]
    if fit is None:
        return tuple(annotations), []
    out: list[Annotation] = []
    for ann in annotations:
        mapped: Annotation | None = ann
        if isinstance(ann, Box):
            mapped = _map_box(ann, fit, sample.width, sample.height)
        elif isinstance(ann, Mask):
            mapped = _map_mask(ann, fit, sample.width, sample.height)
        if mapped is not None:
            out.append(mapped)
    return tuple(out), []
