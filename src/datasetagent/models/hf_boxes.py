"""Box post-processing shared by the detectors, in numpy: best class per box, threshold,
class-wise non-maximum suppression, per-class cap, mapping to ``Detection``.

Kept apart from the models so it can be tested with tables of made-up scores and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datasetagent.models import Detection
from datasetagent.tools.boxes import iou


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) centre/size boxes → corner boxes, same units."""
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Indices kept by greedy NMS, best first, at most ``limit``."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order and len(keep) < limit:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        rest = np.asarray(order)
        overlaps = iou(boxes[best], boxes[rest])
        order = [int(i) for i, o in zip(rest, overlaps, strict=True) if o <= iou_threshold]
    return keep


def detections(
    class_scores: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[str],
    size: tuple[int, int],
    *,
    threshold: float,
    nms_iou: float,
    max_per_class: int,
) -> list[Detection]:
    """One image's detections from per-box class scores.

    ``class_scores`` (boxes, classes) in [0, 1]; ``boxes`` (boxes, 4) xyxy in pixels of the
    image of ``size`` (width, height). Each box keeps its best class; boxes at or under
    ``threshold``, centred outside the image (on OWLv2's padding, say) or with no area left once
    clipped to it are dropped; then NMS runs per class and each class keeps its
    ``max_per_class`` best. Sorted by score, best first.
    """
    if class_scores.size == 0:
        return []
    width, height = size
    best = class_scores.argmax(axis=1)
    score = class_scores[np.arange(len(best)), best]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx >= 0) & (cx <= width) & (cy >= 0) & (cy <= height)
    clipped = boxes.astype(np.float64).copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    area_ok = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    alive = (score > threshold) & area_ok & inside
    out: list[Detection] = []
    for c in np.unique(best[alive]):
        idx = np.flatnonzero(alive & (best == c))
        for k in nms(clipped[idx], score[idx], nms_iou, max_per_class):
            i = idx[k]
            x0, y0, x1, y1 = (float(v) for v in clipped[i])
            out.append(
                Detection(label=classes[int(c)], score=float(score[i]), box=(x0, y0, x1, y1))
            )
    out.sort(key=lambda d: -d.score)
    return out


def phrase_to_class(scores: np.ndarray, owners: Sequence[int], n_classes: int) -> np.ndarray:
    """(..., phrases) scores → (..., classes): a class scores its best phrase."""
    out = np.zeros((*scores.shape[:-1], n_classes), dtype=scores.dtype)
    owner = np.asarray(owners)
    for c in range(n_classes):
        cols = np.flatnonzero(owner == c)
        if cols.size:
            out[..., c] = scores[..., cols].max(axis=-1)
    return out
