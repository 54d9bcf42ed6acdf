"""Stratified, seeded, leakage-free train/val/test assignment.

* **Leakage-free**: samples whose perceptual hashes are within ``near_bits`` of each other
  (``tools.dupindex``, any of their hashes against a whole-frame one) and whose thumbnails
  confirm it form a group, closed transitively; a group goes to one split as a whole.
* **Kept**: a sample that already has a split (an existing dataset's) keeps it; the rest of its
  group joins it (the split most of the group's placed samples are in).
* **Stratified**: classification fills each split towards its share of every class, counted in
  images; detection and segmentation by object instances of every class (iterative
  stratification, Sechidis et al. 2011: the rarest class is placed first, each group into the
  split that most lacks that class), with images as the tie-break.
* **Seeded**: the result depends only on the set of samples (not their order) and the seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np

from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import SPLIT_NAMES, SplitName, SplitSpec
from datasetagent.tools.dedupe import decode_thumb, same_picture
from datasetagent.tools.dupindex import DEFAULT_THRESHOLD, NearDuplicateIndex


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


def near_duplicate_groups(samples: Sequence[Sample], near_bits: int) -> list[list[int]]:
    """Indices of ``samples`` grouped as near duplicates (connected components); a sample
    without hashes is a group of its own. Hash matches come from one sub-quadratic search and
    are confirmed by the samples' thumbnails where both have one, as the Image Processing agent
    confirms them (``tools.dedupe.same_picture``): similar small images often hash close."""
    parent = list(range(len(samples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashed = [i for i, s in enumerate(samples) if s.hashes]
    if len(hashed) > 1:
        pairs: list[tuple[int, int]] = []

        thumbs = {i: decode_thumb(samples[i].thumb) for i in hashed if samples[i].thumb}

        def note(i: int, key: str) -> bool:  # every match is noted; none is taken as a copy
            a, b = hashed[i], int(key)
            if a not in thumbs or b not in thumbs or same_picture(thumbs[a], thumbs[b]):
                pairs.append((a, b))
            return False

        index = NearDuplicateIndex(near_bits)
        arrays = [np.array(samples[i].hashes, dtype=np.uint64) for i in hashed]
        index.check_and_add([str(i) for i in hashed], arrays, note)
        for a, b in pairs:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(len(samples)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


class _Unit:
    """A near-duplicate group: placed together."""

    def __init__(self, members: list[Sample]) -> None:
        self.members = sorted(members, key=lambda s: s.id)
        self.key = self.members[0].id
        placed = Counter([sp for s in self.members if (sp := s.split) is not None])
        self.fixed: SplitName | None = None
        if placed:
            most: SplitName = max(SPLIT_NAMES, key=lambda n: (placed[n], -SPLIT_NAMES.index(n)))
            self.fixed = most
        self.objects: Counter[str] = Counter(
            a.label for s in self.members for a in s.annotations if isinstance(a, Box | Mask)
        )

    def __len__(self) -> int:
        return len(self.members)

    def placed(self, split: SplitName | None = None) -> list[Sample]:
        """The members, each in its own split if it has one, else in ``split`` (or the
        group's)."""
        to = split or self.fixed
        return [
            s if s.split is not None else s.model_copy(update={"split": to}) for s in self.members
        ]


def assign_splits(
    samples: Sequence[Sample], splits: SplitSpec, *, near_bits: int = DEFAULT_THRESHOLD
) -> list[Sample]:
    """Give every sample a split (see the module docstring); samples that have one keep it.

    The result depends only on the set of samples and ``splits.seed``, not on their order.
    """
    ordered = sorted(samples, key=lambda s: s.id)
    units = [_Unit([ordered[i] for i in g]) for g in near_duplicate_groups(ordered, near_bits)]
    units.sort(key=lambda u: u.key)
    shares = [splits.shares()[s] for s in SPLIT_NAMES]
    if any(u.objects for u in units):
        return _by_instances(units, shares, splits.seed)
    return _by_class(units, shares, splits.seed)


def _by_class(units: list[_Unit], shares: list[float], seed: int) -> list[Sample]:
    by_class: dict[str, list[_Unit]] = {}
    for u in units:
        by_class.setdefault(u.members[0].label or "", []).append(u)
    out: list[Sample] = []
    for cls in sorted(by_class):
        items = by_class[cls]
        fixed = [u for u in items if u.fixed is not None]
        free = [u for u in items if u.fixed is None]
        random.Random(f"{seed}:{cls}").shuffle(free)
        total = sum(len(u) for u in items)
        desired = split_quotas(total, shares)
        have = [sum(len(u) for u in fixed if u.fixed == name) for name in SPLIT_NAMES]
        need = [max(0, d - h) for d, h in zip(desired, have, strict=True)]
        n_free = sum(len(u) for u in free)
        if sum(need) >= n_free:
            quotas = largest_remainder(n_free, need)
        else:  # every split reaches its share; the rest is spread by share
            extra = largest_remainder(n_free - sum(need), shares)
            quotas = [n + e for n, e in zip(need, extra, strict=True)]
        for u in fixed:
            out.extend(u.placed())
        for u in free:  # in turn into the first split with room (a group may overshoot)
            k = next((k for k, q in enumerate(quotas) if q > 0), None)
            if k is None:
                k = max(range(len(shares)), key=lambda j: (shares[j], -j))
            quotas[k] -= len(u)
            out.extend(u.placed(SPLIT_NAMES[k]))
    return out


def _by_instances(units: list[_Unit], shares: list[float], seed: int) -> list[Sample]:
    labels = sorted({c for u in units for c in u.objects})
    total = Counter[str]()
    for u in units:
        total.update(u.objects)
    want = {c: split_quotas(total[c], shares) for c in labels}
    want_images = split_quotas(sum(len(u) for u in units), shares)
    out: list[Sample] = []

    def place(u: _Unit, k: int) -> None:
        for c, n in u.objects.items():
            want[c][k] -= n
        want_images[k] -= len(u)
        out.extend(u.placed(SPLIT_NAMES[k]))

    free: list[_Unit] = []
    for u in units:
        if u.fixed is None:
            free.append(u)
        else:
            place(u, SPLIT_NAMES.index(u.fixed))
    random.Random(f"{seed}:objects").shuffle(free)
    left = Counter[str]()
    with_class: dict[str, list[_Unit]] = {}
    for u in free:
        left.update(u.objects)
        for c in u.objects:
            with_class.setdefault(c, []).append(u)
    done: set[int] = set()
    while +left:  # the class with the fewest objects still to place goes first
        rarest = min(+left, key=lambda c: (left[c], c))
        for u in with_class[rarest]:
            if id(u) in done:
                continue
            k = max(
                range(len(shares)),
                key=lambda j: (want[rarest][j], want_images[j], shares[j], -j),
            )
            place(u, k)
            left.subtract(u.objects)
            done.add(id(u))
    for u in free:  # images without objects fill the splits short of images
        if id(u) not in done:
            place(u, max(range(len(shares)), key=lambda j: (want_images[j], shares[j], -j)))
    return out
