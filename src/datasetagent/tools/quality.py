"""Image checks: scoring (image -> numbers) is separate from marking (numbers -> issues).

``analysis_gray`` makes the small grey copy every score is measured on, so that scores do not
depend on resolution; ``score`` measures it; ``mark`` turns sizes and scores into issue names
under a ``CheckThresholds``.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from PIL import Image

from datasetagent.spec import CheckThresholds
from datasetagent.tools.ssim import to_gray

#: Longer side of the copy scores are measured on.
ANALYSIS_SIDE = 160

# Immerkær's kernel [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] is the outer product of these taps.
_NOISE_TAPS = np.array([1, -2, 1], dtype=np.float32)


def analysis_image(img: Image.Image, side: int = ANALYSIS_SIDE) -> Image.Image:
    """``img`` reduced (area-averaged) so that its longer side is at most ``side``."""
    if max(img.size) <= side:
        return img
    return Image.fromarray(analysis_array(np.asarray(img), side), mode=img.mode)


def analysis_array(arr: np.ndarray, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """``analysis_image`` of an H×W or H×W×C array (returned as it is when small enough)."""
    height, width = arr.shape[:2]
    longer = max(height, width)
    if longer <= side:
        return arr
    factor = longer / side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_AREA))


def gray_of(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.uint8)


def score(img: Image.Image) -> dict[str, float]:
    """Scores of one image (reduce it with ``analysis_image`` first for the checks)."""
    return score_array(np.asarray(img))


def score_array(img: np.ndarray, gray: np.ndarray | None = None) -> dict[str, float]:
    """Scores of a uint8 grey (H×W) or RGB (H×W×3) array, at the resolution given.

    * ``brightness``: mean grey / 255; ``shadows`` / ``highlights``: its 1st / 99th percentile.
    * ``contrast``: standard deviation of grey, in grey levels (0 to about 128).
    * ``entropy``: Shannon entropy of the 256-bin grey histogram, in bits.
    * ``sharpness``: variance of the 3×3 Laplacian of grey.
    * ``noise``: Immerkær's (1996) fast σ estimate in grey levels; fine texture counts too, and
      downscaling lowers it.
    * ``color_cast``: max over channels of |channel mean − mean of the means| / 255 (0 if grey).

    ``gray``, when given, is ``img``'s grey copy (saves converting twice). Both filters run on
    16-bit integers, exact for 8-bit input and faster than float.
    """
    gray = np.ascontiguousarray(to_gray(img) if gray is None else gray)
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    total = float(gray.size)
    cdf = np.cumsum(hist)
    shadows, highlights = np.searchsorted(cdf, (0.01 * total, 0.99 * total)).tolist()
    counts = hist[hist > 0]
    entropy = float(np.log2(total) - (counts * np.log2(counts)).sum() / total)
    mean, std = cv2.meanStdDev(gray)
    scores = {
        "brightness": float(mean[0, 0] / 255.0),
        "shadows": shadows / 255.0,
        "highlights": highlights / 255.0,
        "contrast": float(std[0, 0]),
        "entropy": max(entropy, 0.0),
        "sharpness": 0.0,
        "noise": 0.0,
        "color_cast": 0.0,
    }
    if min(gray.shape) >= 3:
        _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
        scores["sharpness"] = float(lap_std[0, 0] ** 2)
        conv = cv2.sepFilter2D(gray, cv2.CV_16S, _NOISE_TAPS, _NOISE_TAPS)[1:-1, 1:-1]
        h, w = conv.shape
        scores["noise"] = float(cv2.norm(conv, cv2.NORM_L1) * np.sqrt(np.pi / 2) / (6 * h * w))
    if img.ndim == 3:
        means = np.array(cv2.mean(img)[: img.shape[2]][:3])
        scores["color_cast"] = float(np.abs(means - means.mean()).max() / 255.0)
    return scores


def relative_sharpness(scores: Mapping[str, float]) -> float:
    """Variance of the Laplacian over the variance of grey levels: the number
    ``CheckThresholds.min_sharpness`` is compared to (it does not change with exposure)."""
    return scores["sharpness"] / max(scores["contrast"] ** 2, 1.0)


def mark(
    width: int, height: int, scores: dict[str, float], t: CheckThresholds, *, min_side: int
) -> list[str]:
    """Issue names for one image's full size and scores, in ISSUE_NAMES order."""
    issues: list[str] = []
    if min(width, height) < min_side:
        issues.append("tiny")
    if scores["highlights"] < t.dark_highlights:
        issues.append("dark")
    if scores["shadows"] > t.bright_shadows:
        issues.append("bright")
    near_constant = scores["contrast"] < t.min_contrast or scores["entropy"] < t.min_entropy
    if relative_sharpness(scores) < t.min_sharpness and not near_constant:
        issues.append("blurry")
    if near_constant:
        issues.append("low_information")
    if max(width, height) / max(1, min(width, height)) > t.max_aspect:
        issues.append("odd_aspect")
    return issues
