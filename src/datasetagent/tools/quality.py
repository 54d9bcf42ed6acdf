"""Image checks: scoring (image -> numbers) is separate from marking (numbers -> issues).

``analysis_gray`` makes the small grey copy every score is measured on, so that scores do not
depend on resolution; ``score`` measures it; ``mark`` turns sizes and scores into issue names
under a ``CheckThresholds``.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from datasetagent.spec import CheckThresholds
from datasetagent.tools.ssim import to_gray

#: Longer side of the copy scores are measured on.
ANALYSIS_SIDE = 160

_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def analysis_image(img: Image.Image, side: int = ANALYSIS_SIDE) -> Image.Image:
    """``img`` reduced (area-averaged) so that its longer side is at most ``side``."""
    longer = max(img.size)
    if longer <= side:
        return img
    factor = longer / side
    size = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    small = cv2.resize(np.asarray(img), size, interpolation=cv2.INTER_AREA)
    return Image.fromarray(small, mode=img.mode)


def gray_of(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.uint8)


def score(img: Image.Image) -> dict[str, float]:
    """Scores of one image (reduce it with ``analysis_image`` first for the checks)."""
    return score_array(np.asarray(img))


def score_array(img: np.ndarray) -> dict[str, float]:
    """Scores of a uint8 grey (H×W) or RGB (H×W×3) array, at the resolution given.

    * ``brightness``: mean grey / 255; ``shadows`` / ``highlights``: its 1st / 99th percentile.
    * ``contrast``: standard deviation of grey, in grey levels (0 to about 128).
    * ``entropy``: Shannon entropy of the 256-bin grey histogram, in bits.
    * ``sharpness``: variance of the 3×3 Laplacian of grey.
    * ``noise``: Immerkær's (1996) fast σ estimate in grey levels; fine texture counts too, and
      downscaling lowers it.
    * ``color_cast``: max over channels of |channel mean − mean of the means| / 255 (0 if grey).
    """
    gray = np.ascontiguousarray(to_gray(img))
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    total = hist.sum()
    p = hist[hist > 0] / total
    cdf = np.cumsum(hist) / total
    mean, std = cv2.meanStdDev(gray)
    scores = {
        "brightness": float(mean[0, 0] / 255.0),
        "shadows": float(np.searchsorted(cdf, 0.01) / 255.0),
        "highlights": float(np.searchsorted(cdf, 0.99) / 255.0),
        "contrast": float(std[0, 0]),
        "entropy": float(-(p * np.log2(p)).sum()),
        "sharpness": 0.0,
        "noise": 0.0,
        "color_cast": 0.0,
    }
    if min(gray.shape) >= 3:
        _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
        scores["sharpness"] = float(lap_std[0, 0] ** 2)
        conv = cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL)[1:-1, 1:-1]
        h, w = conv.shape
        scores["noise"] = float(cv2.norm(conv, cv2.NORM_L1) * np.sqrt(np.pi / 2) / (6 * h * w))
    if img.ndim == 3:
        means = np.array(cv2.mean(img)[: img.shape[2]][:3])
        scores["color_cast"] = float(np.abs(means - means.mean()).max() / 255.0)
    return scores


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
    relative_sharpness = scores["sharpness"] / max(scores["contrast"] ** 2, 1.0)
    if relative_sharpness < t.min_sharpness and not near_constant:
        issues.append("blurry")
    if near_constant:
        issues.append("low_information")
    if max(width, height) / max(1, min(width, height)) > t.max_aspect:
        issues.append("odd_aspect")
    return issues
