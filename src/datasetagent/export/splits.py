"""Stratified, seeded train/val/test assignment."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from datasetagent.records import Sample
from datasetagent.spec import SPLIT_NAMES, SplitName, SplitSpec


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` that add up to ``total`` exactly."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_quotas(n: int, shares: Sequence[float]) -> list[int]:
    """Per-split counts for ``n`` items: proportional, and every split with a share gets at
    least one item when there are enough items to go round."""
    counts = largest_remainder(n, shares)
    wanted = [i for i, w in enumerate(shares) if w > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(samples: Sequence[Sample], splits: SplitSpec) -> list[Sample]:
    """Give every sample a split, class by class.

    Samples that already have one (from an existing dataset's split folders) keep it; the others
    fill each split towards its share of the class. The result depends only on the set of
    samples and ``splits.seed``, not on their order.
    """
    shares = [splits.shares()[s] for s in SPLIT_NAMES]
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label or "", []).append(s)
    out: list[Sample] = []
    for cls in sorted(by_class):
        items = sorted(by_class[cls], key=lambda s: s.id)
        fixed = [s for s in items if s.split is not None]
        free = [s for s in items if s.split is None]
        random.Random(f"{splits.seed}:{cls}").shuffle(free)
        desired = split_quotas(len(items), shares)
        have = [sum(1 for s in fixed if s.split == name) for name in SPLIT_NAMES]
        need = [max(0, d - h) for d, h in zip(desired, have, strict=True)]
        if sum(need) >= len(free):
            quotas = largest_remainder(len(free), need)
        else:  # every split reaches its share; the rest is spread by share
            extra = largest_remainder(len(free) - sum(need), shares)
            quotas = [n + e for n, e in zip(need, extra, strict=True)]
        out.extend(fixed)
        pos = 0
        for name, q in zip(SPLIT_NAMES, quotas, strict=True):
            split: SplitName = name
            out.extend(s.model_copy(update={"split": split}) for s in free[pos : pos + q])
            pos += q
    return out
