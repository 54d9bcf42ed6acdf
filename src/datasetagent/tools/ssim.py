"""Structural similarity (SSIM) of two greyscale images, computed with OpenCV filters.

The definition is Wang, Bovik, Sheikh & Simoncelli (2004): an 11×11 Gaussian window with
σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255 (``data_range``), population (not sample) statistics,
and the result is the mean of the SSIM map over the *valid* region, the pixels whose window lies
wholly inside the image (a 5-pixel border is left out). This is what
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` returns, to within float32 rounding (~1e-5).

Speed: the image is processed in strips of about 64k pixels, and each strip's four planes
(x, y, x²+y², xy) are stacked into one buffer and blurred with a single ``cv2.GaussianBlur`` call.
Rows where the stacked planes meet are contaminated by the blur, but those are exactly the border
rows that the valid region leaves out, so the result is exact. Small strips stay in cache and
avoid the page faults that a dozen whole-image temporaries cost on every call.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Gaussian window side and σ of the standard definition.
WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03

_R = WINDOW // 2
#: Pixels per strip; 128 rows of a 512-wide image measured fastest here.
_STRIP_PIXELS = 65_536


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grey copy of an RGB (or RGBA) image by ITU-R 601 luma, as ``cv2.COLOR_RGB2GRAY``.

    A 2-D array is returned as it is; an H×W×1 array loses its last axis. The dtype is kept
    (uint8 in, uint8 out).
    """
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    if img.ndim == 3 and img.shape[2] == 4:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY))
    raise ValueError(
        f"cannot make a grey image of an array of shape {img.shape}: "
        "pass H×W grey or H×W×3 RGB (H×W×4 RGBA)"
    )


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """Mean structural similarity of two greyscale images of the same shape.

    ``a`` and ``b`` are 2-D arrays (uint8, or float on the 0..``data_range`` scale). 1.0 means
    identical. Images smaller than the 11-pixel window are padded by reflection and the whole
    map is averaged, since they have no valid region.
    """
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of the same shape, got {a.shape} and {b.shape}")
    if a.ndim != 2:
        raise ValueError(
            f"SSIM needs 2-D greyscale images, got shape {a.shape}; convert with to_gray()"
        )
    if a.size == 0:
        raise ValueError("SSIM of an empty image is undefined")
    height, width = int(a.shape[0]), int(a.shape[1])
    if min(height, width) < WINDOW:
        a, b = _pad_small(a), _pad_small(b)
        height, width = int(a.shape[0]), int(a.shape[1])
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2

    rows = min(max(1, _STRIP_PIXELS // width), height - 2 * _R)
    h = rows + 2 * _R  # strip height with its halo above and below
    planes = np.empty((4 * h, width), np.float32)
    blurred = np.empty_like(planes)
    t1 = np.empty((rows, width), np.float32)
    t2 = np.empty_like(t1)
    t3 = np.empty_like(t1)
    total = 0.0
    for r0 in range(_R, height - _R, rows):
        r1 = min(r0 + rows, height - _R)
        n = r1 - r0
        x = planes[0 : n + 2 * _R]
        y = planes[h : h + n + 2 * _R]
        sq = planes[2 * h : 2 * h + n + 2 * _R]
        xy = planes[3 * h : 3 * h + n + 2 * _R]
        np.copyto(x, a[r0 - _R : r1 + _R], casting="unsafe")
        np.copyto(y, b[r0 - _R : r1 + _R], casting="unsafe")
        np.multiply(x, x, out=sq)
        np.multiply(y, y, out=xy)
        sq += xy
        np.multiply(x, y, out=xy)
        cv2.GaussianBlur(planes, (WINDOW, WINDOW), SIGMA, dst=blurred)
        mu_x = blurred[_R : _R + n]
        mu_y = blurred[h + _R : h + _R + n]
        e_sq = blurred[2 * h + _R : 2 * h + _R + n]  # E[x² + y²]
        e_xy = blurred[3 * h + _R : 3 * h + _R + n]  # E[xy]
        s1, s2, s3 = t1[:n], t2[:n], t3[:n]
        np.multiply(mu_x, mu_y, out=s3)  # μxμy
        np.multiply(mu_x, mu_x, out=s1)
        np.multiply(mu_y, mu_y, out=s2)
        s1 += s2  # μx² + μy²
        np.multiply(s3, 2.0, out=s2)
        s2 += c1  # 2μxμy + C1
        np.subtract(e_xy, s3, out=s3)
        s3 *= 2.0
        s3 += c2  # 2σxy + C2
        s2 *= s3
        np.subtract(e_sq, s1, out=s3)
        s3 += c2  # σx² + σy² + C2
        s1 += c1
        s1 *= s3
        s2 /= s1
        total += float(cv2.sumElems(s2[:, _R : width - _R])[0])
    return total / ((height - 2 * _R) * (width - 2 * _R))


def _pad_small(img: np.ndarray) -> np.ndarray:
    """Reflect-pad an image smaller than the window so that its own pixels form the valid part."""
    src = np.ascontiguousarray(img, dtype=np.float32)
    return np.asarray(cv2.copyMakeBorder(src, _R, _R, _R, _R, cv2.BORDER_REFLECT))
