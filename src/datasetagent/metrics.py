"""Quality metrics as pure functions (definitions in DESIGN.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def cbi(counts: Mapping[str, int]) -> float:
    """Class Balance Index = 1 - H(p)/ln K over the classes in ``counts``; 0 is balanced.

    A class with no images counts (it is the worst imbalance); with fewer than two classes the
    index is 0 by definition, and with no images at all it is 1.
    """
    k = len(counts)
    total = sum(counts.values())
    if k < 2:
        return 0.0
    if total == 0:
        return 1.0
    h = -sum((n / total) * math.log(n / total) for n in counts.values() if n > 0)
    return max(0.0, 1.0 - h / math.log(k))


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
