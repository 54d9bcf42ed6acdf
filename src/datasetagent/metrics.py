"""Quality metrics as pure functions (definitions in DESIGN.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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


def compared(value: float, threshold: float, digits: int = 2) -> tuple[str, str]:
    """``value`` and ``threshold`` as text with at least ``digits`` decimals and as many more
    as it takes for the two to read as different when they are (0.8994 against 0.9 gives
    "0.899" and "0.900", never "0.90 < 0.90")."""
    for d in range(digits, 17):
        a, b = f"{value:.{d}f}", f"{threshold:.{d}f}"
        if a != b or value == threshold:
            return a, b
    return repr(value), repr(threshold)


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class CheckerRates:
    """How a checker answers, measured on labels whose truth is known: the share of right
    labels it confirms (sensitivity) and of wrong labels it confirms (false agreement), each
    with its 95% Wilson interval."""

    sensitivity: float
    sensitivity_interval: tuple[float, float]
    false_agreement: float
    false_agreement_interval: tuple[float, float]
    n_right: int
    n_wrong: int

    @classmethod
    def measure(cls, right: Sequence[bool], wrong: Sequence[bool]) -> CheckerRates:
        """``right``: the checker's answers (agree?) to true labels; ``wrong``: to wrong ones.
        Point estimates add half a count each way (Jeffreys), so that confirming none of 40
        wrong labels does not claim a checker that never errs."""
        s, f = int(sum(right)), int(sum(wrong))
        return cls(
            sensitivity=(s + 0.5) / (len(right) + 1),
            sensitivity_interval=wilson_interval(s, len(right)),
            false_agreement=(f + 0.5) / (len(wrong) + 1),
            false_agreement_interval=wilson_interval(f, len(wrong)),
            n_right=len(right),
            n_wrong=len(wrong),
        )

    @property
    def informative(self) -> bool:
        """A checker whose answers barely depend on the truth cannot measure anything."""
        return self.sensitivity_interval[0] - self.false_agreement_interval[1] > 0.2


def _kept_accuracy(
    agree_rate: float,
    sens: float,
    false_agree: float,
    others: Sequence[tuple[float, float]] = (),
) -> float:
    """Accuracy of the labels a checker confirmed, given its confirmation rate over all labels
    (Rogan–Gladen: the labels' accuracy before the check is (a − f) / (s − f)), and confirmed
    too by each of ``others`` ((sensitivity, false agreement) of checkers whose errors are
    independent of it given the truth)."""
    if sens <= false_agree:
        return 0.0
    before = min(1.0, max(0.0, (agree_rate - false_agree) / (sens - false_agree)))
    right, wrong = before * sens, (1.0 - before) * false_agree
    for other_sens, other_false in others:
        right, wrong = right * other_sens, wrong * other_false
    return right / (right + wrong) if right + wrong > 0 else 0.0


def alr_after_check(
    agree: int, n: int, rates: CheckerRates, others: Sequence[CheckerRates] = ()
) -> tuple[float, float, float]:
    """ALR of the labels a calibrated checker confirmed, when it checked ``n`` labels and
    confirmed ``agree`` (the others were withheld), and that ``others`` (more calibrated
    checkers) confirmed too: estimate and a conservative 95% interval, the extremes over the
    intervals of the confirmation rate and of every checker's two rates."""
    a = agree / n if n else 0.0
    est = _kept_accuracy(
        a,
        rates.sensitivity,
        rates.false_agreement,
        [(o.sensitivity, o.false_agreement) for o in others],
    )
    # more checkers: the least accurate with each at its worst, the most at its best
    worst = [(o.sensitivity_interval[0], o.false_agreement_interval[1]) for o in others]
    best = [(o.sensitivity_interval[1], o.false_agreement_interval[0]) for o in others]
    a_lo, a_hi = wilson_interval(agree, n)
    s_lo, s_hi = rates.sensitivity_interval
    f_lo, f_hi = rates.false_agreement_interval
    grid = [
        (ai, si, fi)
        for ai in (a_lo, a, a_hi)
        for si in (s_lo, rates.sensitivity, s_hi)
        for fi in (f_lo, rates.false_agreement, f_hi)
    ]
    lo = min(_kept_accuracy(*g, worst) for g in grid)
    hi = max(_kept_accuracy(*g, best) for g in grid)
    return est, lo, hi
