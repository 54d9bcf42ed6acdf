"""Hand-made image features for the seed-set learned labeler (no downloaded weights).

A feature vector joins four views of an image, each a block of columns (``view_slices``):

* ``hog32`` and ``hog24``: histograms of oriented gradients with 4-pixel cells on the grey
  image resized to 32×32 and to 24×24 (shape at two scales; fine cells keep the details that
  tell a shirt from a pullover or a 3 from an 8),
* ``thumb``: a 12×12 grey thumbnail normalised to zero mean and unit variance (layout),
* ``colour``: a hue/saturation/value histogram (zeros for grey images).

Views differ in width by an order of magnitude; a learner should weigh them as views, not as
columns (``SeedClassifier`` scales each block to the same total variance). Measured on
Fashion-MNIST with 20 labelled images per class (logistic regression): 8-pixel cells 0.75,
4-pixel cells at 32×32 0.79, both scales 0.80; finer cells, signed or more orientation bins,
shifted copies of the seeds and a wavelet scattering transform did not do better.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: (side, cell) of each gradient view: the grey image is resized to side×side.
HOG_GRIDS = ((32, 4), (24, 4))
BINS = 9  # unsigned orientation bins
CLIP = 0.2  # block normalisation clips each value at this share (Dalal and Triggs' L2-Hys)
THUMB = 12  # side of the grey thumbnail view
HSV_BINS = (8, 3, 3)
COLOUR_SIDE = 32
#: Images are first reduced to about this side (twice the largest view, 32 px).
WORK_SIDE = 64
#: Images are converted and resized in chunks of this many (bounded memory for big batches).
CHUNK = 256


def _hog_width(side: int, cell: int) -> int:
    n = side // cell
    return (n - 1) ** 2 * 4 * BINS


#: Names and widths of the views, in column order.
VIEWS: tuple[tuple[str, int], ...] = (
    *((f"hog{side}", _hog_width(side, cell)) for side, cell in HOG_GRIDS),
    ("thumb", THUMB * THUMB),
    ("colour", int(np.prod(HSV_BINS))),
)
DIM = sum(w for _, w in VIEWS)


def view_slices() -> list[slice]:
    """The columns of each view in a row of ``feature_matrix``, in ``VIEWS`` order."""
    out, start = [], 0
    for _, width in VIEWS:
        out.append(slice(start, start + width))
        start += width
    return out


def hog_batch(gray: np.ndarray, cell: int) -> np.ndarray:
    """Histograms of oriented gradients of a stack of grey images, shape (n, side, side),
    values in [0, 1]: gradients by central differences, each pixel's magnitude split between
    its two nearest of ``BINS`` unsigned orientations, summed per ``cell``×``cell`` cell, and
    every 2×2 block of cells L2-Hys normalised. Returns (n, blocks × 4 × BINS) float32."""
    n, h, w = gray.shape
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    mag = np.hypot(gx, gy)
    pos = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * BINS - 0.5
    low = np.floor(pos)
    upper = pos - low  # share of the magnitude for the upper bin
    b0 = low.astype(np.int64) % BINS
    b1 = (b0 + 1) % BINS
    rows, cols = h // cell, w // cell
    cells = np.zeros((n, rows, cols, BINS), dtype=np.float32)
    for k in range(BINS):
        vote = mag * ((b0 == k) * (1.0 - upper) + (b1 == k) * upper)
        cropped = vote[:, : rows * cell, : cols * cell]
        cells[..., k] = cropped.reshape(n, rows, cell, cols, cell).sum(axis=(2, 4))
    blocks = np.concatenate(
        [
            cells[:, :-1, :-1],
            cells[:, :-1, 1:],
            cells[:, 1:, :-1],
            cells[:, 1:, 1:],
        ],
        axis=-1,
    ).reshape(n, (rows - 1) * (cols - 1), 4 * BINS)
    blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
    blocks = np.minimum(blocks, CLIP)
    blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
    out: np.ndarray = blocks.reshape(n, -1).astype(np.float32)
    return out


def _grey(img: Image.Image, side: int) -> np.ndarray:
    return np.asarray(img.resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0


def _thumb(gray: Image.Image) -> np.ndarray:
    t = _grey(gray, THUMB).astype(np.float64).ravel()
    out: np.ndarray = (t - t.mean()) / (t.std() + 1e-6)
    return out


def _reduced(img: Image.Image) -> Image.Image:
    """``img`` box-averaged by a whole factor to at least ``WORK_SIDE`` on its shorter side:
    every view is resized from this one small copy, not from the full picture."""
    factor = min(img.size) // WORK_SIDE
    if factor < 2:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce (1, P, I;16): resized from the full image
        return img


def _colour(img: Image.Image) -> np.ndarray:
    if img.mode in ("L", "LA", "1", "I", "I;16", "F"):
        return np.zeros(int(np.prod(HSV_BINS)))
    small = img.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), np.int64)
    idx = [hsv[..., i] * b // 256 for i, b in enumerate(HSV_BINS)]
    flat = (idx[0] * HSV_BINS[1] + idx[1]) * HSV_BINS[2] + idx[2]
    hist = np.bincount(flat.ravel(), minlength=int(np.prod(HSV_BINS))).astype(np.float64)
    out: np.ndarray = np.sqrt(hist / hist.sum())
    return out


def _chunk_features(images: list[Image.Image]) -> np.ndarray:
    images = [_reduced(im) for im in images]
    greys = [im.convert("L") for im in images]
    parts = [hog_batch(np.stack([_grey(g, side) for g in greys]), cell) for side, cell in HOG_GRIDS]
    parts.append(np.stack([_thumb(g) for g in greys]).astype(np.float32))
    parts.append(np.stack([_colour(im) for im in images]).astype(np.float32))
    return np.concatenate(parts, axis=1)


def feature_matrix(images: list[Image.Image]) -> np.ndarray:
    """Features of ``images`` (any size; mode L, RGB or anything Pillow converts), one row
    each: shape (n, ``DIM``), float32; (0, 0) for no images."""
    if not images:
        return np.zeros((0, 0))
    return np.concatenate(
        [_chunk_features(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    )
