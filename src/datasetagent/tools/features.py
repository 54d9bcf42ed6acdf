"""Hand-made image features for the seed-set learned labeler (no downloaded weights).

A feature vector joins three views of an image: a normalised grey thumbnail (layout), a
histogram of oriented gradients (shape), and a hue/saturation/value histogram (colour).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GRID = 32  # side the image is resized to for the gradient view
CELL = 8  # pixels per gradient cell
BINS = 9  # unsigned orientation bins
THUMB = 12  # side of the grey thumbnail view
HSV_BINS = (8, 3, 3)


def _hog(gray: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(gray)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((ang / np.pi * BINS).astype(np.int64), BINS - 1)
    n = GRID // CELL
    cells = np.zeros((n, n, BINS), dtype=np.float64)
    cell_idx = np.arange(GRID) // CELL
    rows = np.repeat(cell_idx, GRID)
    cols = np.tile(cell_idx, GRID)
    np.add.at(cells, (rows, cols, bins.ravel()), mag.ravel())
    blocks = []
    for r in range(n - 1):
        for c in range(n - 1):
            block = cells[r : r + 2, c : c + 2].ravel()
            block = block / np.sqrt((block**2).sum() + 1e-6)
            block = np.minimum(block, 0.2)
            blocks.append(block / np.sqrt((block**2).sum() + 1e-6))
    out: np.ndarray = np.concatenate(blocks)
    return out


def _thumb(img: Image.Image) -> np.ndarray:
    t = np.asarray(img.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), np.float64)
    t = t.ravel()
    out: np.ndarray = (t - t.mean()) / (t.std() + 1e-6)
    return out


def _colour(img: Image.Image) -> np.ndarray:
    if img.mode == "L":
        return np.zeros(int(np.prod(HSV_BINS)))
    hsv = np.asarray(img.convert("RGB").resize((GRID, GRID)).convert("HSV"), np.int64)
    idx = [hsv[..., i] * b // 256 for i, b in enumerate(HSV_BINS)]
    flat = (idx[0] * HSV_BINS[1] + idx[1]) * HSV_BINS[2] + idx[2]
    hist = np.bincount(flat.ravel(), minlength=int(np.prod(HSV_BINS))).astype(np.float64)
    out: np.ndarray = np.sqrt(hist / hist.sum())
    return out


def image_features(img: Image.Image) -> np.ndarray:
    """A fixed-length float vector describing ``img`` (any size, mode L or RGB)."""
    gray = np.asarray(img.convert("L").resize((GRID, GRID), Image.Resampling.BILINEAR), np.float64)
    return np.concatenate([_thumb(img), _hog(gray / 255.0), _colour(img)]).astype(np.float32)


def feature_matrix(images: list[Image.Image]) -> np.ndarray:
    return np.stack([image_features(im) for im in images]) if images else np.zeros((0, 0))
