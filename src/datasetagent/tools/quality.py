"""Image checks: scoring (image -> numbers) is separate from marking (numbers -> issues)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Thresholds:
    """Where a score becomes an issue. Defaults are documented in the README."""

    min_side: int = 32
    #: Standard deviation of grey levels (0-255) under which an image counts as blank.
    min_std: float = 2.0
    #: Shannon entropy of the grey-level histogram (bits) under which an image is blank.
    min_entropy: float = 0.05


def gray_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)


def score(img: Image.Image) -> dict[str, float]:
    """Scores of one decoded image."""
    gray = gray_array(img)
    hist = np.bincount(gray.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return {
        "brightness": float(gray.mean() / 255.0),
        "contrast": float(gray.std()),
        "entropy": float(-(p * np.log2(p)).sum()),
    }


def mark(width: int, height: int, scores: dict[str, float], t: Thresholds) -> list[str]:
    """Issue names for one image's size and scores under thresholds ``t``."""
    issues: list[str] = []
    if min(width, height) < t.min_side:
        issues.append("tiny")
    if scores["contrast"] < t.min_std or scores["entropy"] < t.min_entropy:
        issues.append("low_information")
    return issues
