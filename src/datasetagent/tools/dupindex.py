"""A sub-quadratic index of 64-bit perceptual hashes with first-seen-kept semantics.

Multi-index hashing (Norouzi et al., 2012) with the general pigeonhole rule: split the key bits
into ``m`` chunks with radii ``t_i``, ``sum(t_i + 1) = r + 1``; two hashes within ``r`` bits
agree within ``t_i`` bits on some chunk ``i``. Each chunk has a CSR bucket table: ``starts``
(an int32 per chunk value) and a copy of the hashes and owners sorted by chunk value. A query
probes every value within ``t_i`` bits of its chunk, reads the non-empty buckets contiguously
and verifies each candidate's full Hamming distance, a block of queries at a time in numpy (no
Python object per hash). Chunks cover bits 1–63: bit 0 of a pHash (DC) is always set.

The layout follows the table size by a measured cost model (:func:`_cheapest_layout`): a scan
below a few hundred entries, then narrow chunks, then three 21-bit chunks from ~200k entries.
Inserting into bucketed arrays rewrites them, so entries pass through a scanned tail and a
small delta table (:class:`_Level`) and reach the main table in bulk.

Measured with ``benchmarks/near_dup_eval.py`` (one core, 10 hashes an item, batches of 10k):
100k items in ~6 s, 1M in ~3 min, ~500 B an item; one item a call ~1 ms.

:data:`DEFAULT_THRESHOLD` = 8 bits, by the same benchmark (1,059 tiles of real photos, one
planted copy each: re-encoded, resized, cropped, brightness-shifted): precision/recall
0.983/0.964, against 0.955/0.966 at 10 bits and 0.994/0.928 at 6. Different photos matched at
~1.6e-5 a pair (3.1e-6 with the global hash alone): among ~50k images of such similar content
(small tiles of few scenes) a new item expects one false match, so verify matches downstream
where that matters.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from datasetagent.tools.phash import popcount as _popcount

#: Bits of 64-bit pHash within which two images are near duplicates (measured; see above).
DEFAULT_THRESHOLD = 8

_KEY_BITS = 63  # bits 1..63 are split into chunks; bit 0 (pHash DC) is left out
_MAX_CHUNK_BITS = 21  # a CSR table of 2**21 + 1 int32 is 8 MiB
_TAIL_MAX = 1 << 9  # entries scanned linearly before they go to the delta table
_DELTA_MAX = 1 << 16  # entries in the delta table before they go to the main one
_BLOCK = 1 << 16  # probes + candidates (or comparisons in a scan) handled at once
# Relative costs (measured: ~6.5 ns per probe, 10–45 ns per non-empty bucket, a random memory
# access growing with the table, ~3.3 ns per candidate read from a bucket, ~2.5 ns per entry
# scanned linearly).
_COST_PROBE, _COST_HIT, _COST_CANDIDATE, _COST_SCAN = 1.0, 4.5, 0.5, 0.4

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
Bools = npt.NDArray[np.bool_]


#: Chunks as (shift, width, radius); no chunks (``_SCAN``) means a linear scan.
_Layout = tuple[tuple[int, int, int], ...]
_SCAN: _Layout = ()


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _layout_for(threshold: int, m: int) -> _Layout:
    """``m`` chunks as even as can be over bits 1..63, with sum(radius + 1) = threshold + 1."""
    chunks, shift, total = [], 1, threshold + 1
    for i in range(m):
        width = _KEY_BITS // m + (i < _KEY_BITS % m)
        chunks.append((shift, width, total // m + (i < total % m) - 1))
        shift += width
    return tuple(chunks)


def _layout_cost(layout: _Layout, n: int) -> float:
    if not layout:
        return _COST_SCAN * n
    cost = 0.0
    for _, width, radius in layout:
        if radius >= 0:
            probes = _probes(width, radius)
            per_bucket = n / (1 << width)
            hit = -np.expm1(-per_bucket)  # share of probed buckets that are not empty
            cost += probes * (_COST_PROBE + _COST_HIT * hit + _COST_CANDIDATE * per_bucket)
    return cost


def _choose_layout(threshold: int, n: int) -> _Layout:
    """The cheapest layout for ``n`` entries rounded up to a power of two (so a growing table
    changes layout at most once per doubling)."""
    return _cheapest_layout(threshold, 1 << max(n - 1, 0).bit_length())


@functools.lru_cache(maxsize=256)
def _cheapest_layout(threshold: int, n: int) -> _Layout:
    """The cheapest layout for ``n`` entries (per query, by the cost model above)."""
    best = _SCAN
    m_min = -(-_KEY_BITS // _MAX_CHUNK_BITS)
    for m in range(m_min, min(threshold + 1, _KEY_BITS) + 1):
        layout = _layout_for(threshold, m)
        if _layout_cost(layout, n) < _layout_cost(best, n):
            best = layout
    return best


@functools.lru_cache(maxsize=64)
def _xor_masks(width: int, radius: int) -> I64:
    """Every ``width``-bit value with at most ``radius`` bits set."""
    values = np.arange(1 << width, dtype=np.int64)
    out: I64 = values[_popcount(values) <= radius]
    return out


def _chunk(hashes: U64, shift: int, width: int) -> I64:
    out: I64 = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    return out


def _expand(lo: I64, count: I64) -> I64:
    """Concatenated ranges ``lo[i] .. lo[i] + count[i] - 1`` (counts > 0), as one cumsum of
    steps: 2.5× faster than ``np.repeat(lo - ends + count, count) + np.arange(total)``."""
    ends = np.cumsum(count)
    steps = np.ones(int(ends[-1]), dtype=np.int64)
    steps[0] = lo[0]
    steps[ends[:-1]] = lo[1:] - lo[:-1] - count[:-1] + 1
    out: I64 = np.cumsum(steps, out=steps)
    return out


def _concat(found: list[tuple[I64, I64, I64]]) -> tuple[I64, I64, I64]:
    if not found:
        return (np.empty(0, dtype=np.int64),) * 3
    qi, owner, dist = (np.concatenate([f[k] for f in found]) for k in range(3))
    return qi, owner, dist


class _Table:
    """Hashes with an owner (item number) each, searchable within ``threshold`` bits: one
    bucket-ordered copy per chunk (no second random access per candidate), or one in arrival
    order to scan."""

    def __init__(self, threshold: int, expected: int, layout: _Layout | None = None) -> None:
        """``layout`` pins the layout (tests); otherwise it follows the table's size."""
        self.threshold = threshold
        self.layout = _choose_layout(threshold, expected) if layout is None else layout
        self._pinned = layout is not None
        self.n = 0
        self._hashes: list[U64] = []
        self._owners: list[I32] = []
        self._starts: list[I32] = []
        self._reset()

    def _reset(self) -> None:
        copies = max(1, len(self.layout))
        self._hashes = [np.empty(0, dtype=np.uint64) for _ in range(copies)]
        self._owners = [np.empty(0, dtype=np.int32) for _ in range(copies)]
        self._starts = [np.zeros((1 << width) + 1, dtype=np.int32) for _, width, _ in self.layout]

    def entries(self) -> tuple[U64, I32]:
        """All hashes and their owners (in some order)."""
        return self._hashes[0][: self.n], self._owners[0][: self.n]

    def nbytes(self) -> int:
        arrays: list[np.ndarray] = [*self._hashes, *self._owners, *self._starts]
        return sum(a.nbytes for a in arrays)

    def add(self, hashes: U64, owners: I32) -> None:
        """Add entries (O(n + 2**w): every chunk's arrays are rewritten), first rebuilding the
        table if another layout suits its new size (once per doubling at most)."""
        self.relayout(self.n + len(hashes))
        self._insert(hashes, owners)

    def _insert(self, hashes: U64, owners: I32) -> None:
        if not self.layout:  # small (a tail holds at most _TAIL_MAX): copying is cheap
            self._hashes[0] = np.concatenate([self._hashes[0], hashes])
            self._owners[0] = np.concatenate([self._owners[0], owners])
            self.n += len(hashes)
            return
        for c, (shift, width, _) in enumerate(self.layout):
            keys = _chunk(hashes, shift, width)
            by_key = np.argsort(keys, kind="stable")
            starts = self._starts[c]
            at = starts[keys[by_key] + 1]  # after the entries already in the same bucket
            self._hashes[c] = np.insert(self._hashes[c], at, hashes[by_key])
            self._owners[c] = np.insert(self._owners[c], at, owners[by_key])
            starts[1:] += np.cumsum(np.bincount(keys, minlength=1 << width), dtype=np.int32)
        self.n += len(hashes)

    def relayout(self, expected: int) -> None:
        """Rebuild the buckets if another layout suits ``expected`` entries better."""
        layout = _choose_layout(self.threshold, expected)
        if self._pinned or layout == self.layout:
            return
        hashes, owners = self.entries()  # _reset makes new arrays; these stay valid
        self.layout = layout
        self.n = 0
        self._reset()
        self._insert(hashes, owners)

    def query(self, queries: U64) -> tuple[I64, I64, I64]:
        """(query number, owner, distance) of every entry within the threshold of a query."""
        if not self.n or not len(queries):
            return _concat([])
        return _concat(self._probe(queries) if self.layout else self._scan(queries))

    def _scan(self, queries: U64) -> list[tuple[I64, I64, I64]]:
        out: list[tuple[I64, I64, I64]] = []
        hashes, owners = self.entries()
        step = max(1, _BLOCK // self.n)
        for s in range(0, len(queries), step):
            dist = _popcount(queries[s : s + step, None] ^ hashes[None, :])
            qi, ei = np.nonzero(dist <= self.threshold)
            d = dist[qi, ei].astype(np.int64)
            out.append((qi.astype(np.int64) + s, owners.take(ei).astype(np.int64), d))
        return out

    def _probe(self, queries: U64) -> list[tuple[I64, I64, I64]]:
        out: list[tuple[I64, I64, I64]] = []
        for c, (shift, width, radius) in enumerate(self.layout):
            if radius < 0:
                continue
            masks = _xor_masks(width, radius)
            starts, hashes, owners = self._starts[c], self._hashes[c], self._owners[c]
            ends = starts[1:]
            keys = _chunk(queries, shift, width)
            # Small blocks keep the temporaries in cache (and off fresh, page-faulting memory).
            per_query = len(masks) * (1.0 + self.n / (1 << width))
            step = max(1, int(_BLOCK / per_query))
            for s in range(0, len(keys), step):
                probes = (keys[s : s + step, None] ^ masks[None, :]).ravel()
                lo = starts.take(probes)
                count = ends.take(probes) - lo
                hit = np.flatnonzero(count)
                if not len(hit):
                    continue
                count = count.take(hit).astype(np.int64)
                at = _expand(lo.take(hit).astype(np.int64), count)
                qi = np.repeat(hit // len(masks) + s, count)
                dist = _popcount(queries.take(qi) ^ hashes.take(at))
                ok = np.flatnonzero(dist <= self.threshold)
                owner = owners.take(at.take(ok)).astype(np.int64)
                out.append((qi.take(ok), owner, dist.take(ok).astype(np.int64)))
        return out


class _Level:
    """Entries of one kind in three tables: a few thousand recent ones in a scanned *tail*
    (appending is O(1)), up to ``_DELTA_MAX`` in a *delta* table and the rest in the *main*
    one. Inserting into a bucketed table rewrites it (O(size)), so a table only takes entries
    in bulk: the tail is flushed into the delta when full, the delta into the main table."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.main = _Table(threshold, 0)
        self.delta = _Table(threshold, 0)
        self.tail = _Table(threshold, 0, layout=_SCAN)

    def __len__(self) -> int:
        return self.main.n + self.delta.n + self.tail.n

    def nbytes(self) -> int:
        return self.main.nbytes() + self.delta.nbytes() + self.tail.nbytes()

    def add(self, hashes: U64, owners: I32) -> None:
        if self.tail.n + len(hashes) <= _TAIL_MAX:
            self.tail.add(hashes, owners)
            return
        tail_hashes, tail_owners = self.tail.entries()
        self.delta.add(np.concatenate([tail_hashes, hashes]), np.concatenate([tail_owners, owners]))
        self.tail = _Table(self.threshold, 0, layout=_SCAN)
        if self.delta.n >= _DELTA_MAX:
            self.main.add(*self.delta.entries())
            self.delta = _Table(self.threshold, 0)

    def query(self, queries: U64) -> tuple[I64, I64, I64]:
        return _concat([t.query(queries) for t in (self.main, self.delta, self.tail) if t.n])


def _best_per_item(item: I64, owner: I64, dist: I64, n: int) -> tuple[I64, I64]:
    """Per item: the smallest distance and, among equals, the smallest owner (-1: none)."""
    best_d = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    best_o = np.full(n, -1, dtype=np.int64)
    if len(item):
        order = np.lexsort((owner, dist, item))
        firsts = order[np.unique(item[order], return_index=True)[1]]
        best_d[item[firsts]] = dist[firsts]
        best_o[item[firsts]] = owner[firsts]
    return best_d, best_o


def _within_batch(
    threshold: int, flat: U64, item: I64, fulls: U64, wins: U64, win_item: I64
) -> list[tuple[int, int, int]]:
    """(later item, earlier item, distance) for near pairs inside one batch, sorted by the
    later item, then distance, then the earlier item."""
    n = len(fulls)
    full_table = _Table(threshold, n)
    full_table.add(fulls, np.arange(n, dtype=np.int32))
    q1, j1, d1 = full_table.query(flat)
    i1 = item[q1]
    win_table = _Table(threshold, len(wins))
    if len(wins):
        win_table.add(wins, win_item.astype(np.int32))
    i2, j2, d2 = win_table.query(fulls)
    i, j, d = np.concatenate([i1, i2]), np.concatenate([j1, j2]), np.concatenate([d1, d2])
    earlier = j < i
    i, j, d = i[earlier], j[earlier], d[earlier]
    order = np.lexsort((j, d, i))
    return list(zip(i[order].tolist(), j[order].tolist(), d[order].tolist(), strict=True))


def _flatten(keys: Sequence[str], hashes: Sequence[npt.ArrayLike]) -> tuple[U64, I64, Bools]:
    """Every item's hashes in one array, the item each belongs to, and which are row 0."""
    rows = [_as_hashes(h, k) for k, h in zip(keys, hashes, strict=True)]
    count = np.array([len(r) for r in rows], dtype=np.int64)
    flat = np.concatenate(rows)
    item = np.repeat(np.arange(len(rows), dtype=np.int64), count)
    is_full = np.zeros(len(flat), dtype=bool)
    is_full[np.concatenate([[0], np.cumsum(count)[:-1]])] = True
    return flat, item, is_full


def _as_hashes(h: object, key: str) -> U64:
    arr = np.asarray(h)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"hashes of {key!r} must be a non-empty 1-D integer array (row 0 the whole-frame "
            f"hash), got shape {arr.shape} dtype {arr.dtype}; pass phash.image_hashes(gray)"
        )
    out: U64 = arr.astype(np.uint64)
    return out


class NearDuplicateIndex:
    """Which items are near duplicates of one kept earlier (first seen is kept).

    Each item has a few 64-bit hashes: row 0 of the whole frame, the others of crop windows
    (:func:`datasetagent.tools.phash.image_hashes`). Two items are near duplicates when some
    pair of their hashes, at least one of them a whole-frame hash, is within ``threshold``
    bits: full~full, full~window or window~full, never window~window.
    """

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        if not 0 <= threshold <= 64:
            raise ValueError(f"threshold must be 0..64 bits, got {threshold}")
        self.threshold = threshold
        self._keys: list[str] = []
        self._full = _Level(threshold)  # row 0 of every kept item
        self._windows = _Level(threshold)  # the other rows of every kept item
        #: Items removed (by their place in ``_keys``): their hashes stay, unmatched.
        self._removed = np.zeros(0, dtype=bool)
        self._n_removed = 0
        #: Each key's latest place in ``_keys``, made on the first removal.
        self._place: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._keys) - self._n_removed

    def memory_bytes(self) -> int:
        """Estimated footprint: the arrays, plus the key strings and the list holding them
        (and, once an item was removed, the map of keys to places)."""
        keys = sum(sys.getsizeof(k) for k in self._keys) + 8 * len(self._keys)
        places = 0 if self._place is None else sys.getsizeof(self._place) + 32 * len(self._place)
        return self._full.nbytes() + self._windows.nbytes() + keys + self._removed.nbytes + places

    def check_and_add(
        self,
        keys: Sequence[str],
        hashes: Sequence[npt.ArrayLike],
        accept: Callable[[int, str], bool] | None = None,
        *,
        add: bool = True,
    ) -> list[tuple[str, int] | None]:
        """For each item in order: ``(key of the kept item it duplicates, distance)``, or None
        when it is kept (and added). Items earlier in the batch count as kept before it; of
        several matches the closest wins, then the one kept first.

        ``accept(i, key)``, when given, verifies a hash match of batch item ``i`` with the kept
        item ``key`` (say, by comparing thumbnails); candidates it refuses are passed over.
        With ``add`` False the index is left as it was: the verdicts are what checking these
        items would give.
        """
        if len(keys) != len(hashes):
            raise ValueError(f"got {len(keys)} keys but {len(hashes)} hash arrays; pass one each")
        if not keys:
            return []
        flat, item, is_full = _flatten(keys, hashes)
        fulls, wins = flat[is_full], flat[~is_full]
        base = len(self._keys)
        # Against kept items: any hash vs their full hashes, full hash vs their windows.
        q1, o1, d1 = self._live(self._full.query(flat))
        q2, o2, d2 = self._live(self._windows.query(fulls))
        # Within the batch: the same pairs among its own items, earlier ones only.
        pairs = _within_batch(self.threshold, flat, item, fulls, wins, item[~is_full])
        if accept is None:
            best_d, best_o = _best_per_item(
                np.concatenate([item[q1], q2]),
                np.concatenate([o1, o2]),
                np.concatenate([d1, d2]),
                len(keys),
            )
            kept = best_o < 0
            for i, j, d in pairs:
                if kept[j] and (d < best_d[i] or (d == best_d[i] and base + j < best_o[i])):
                    best_d[i], best_o[i] = d, base + j
                kept[i] = best_o[i] < 0
        else:
            best_d, best_o, kept = self._verified(
                keys,
                base,
                np.concatenate([item[q1], q2]),
                np.concatenate([o1, o2]),
                np.concatenate([d1, d2]),
                pairs,
                accept,
            )
        out: list[tuple[str, int] | None] = [
            None if o < 0 else (self._keys[o] if o < base else keys[o - base], d)
            for o, d in zip(best_o.tolist(), best_d.tolist(), strict=True)
        ]
        if add:
            self._add(keys, kept, fulls, wins, item[~is_full])
        return out

    def add(self, keys: Sequence[str], hashes: Sequence[npt.ArrayLike]) -> None:
        """Add items as kept without checking them (say, an index rebuilt from kept items)."""
        if len(keys) != len(hashes):
            raise ValueError(f"got {len(keys)} keys but {len(hashes)} hash arrays; pass one each")
        if not keys:
            return
        flat, item, is_full = _flatten(keys, hashes)
        kept = np.ones(len(keys), dtype=bool)
        self._add(keys, kept, flat[is_full], flat[~is_full], item[~is_full])

    def remove(self, key: str) -> None:
        """Forget the kept item ``key`` (its latest addition): no later item matches it."""
        if self._place is None:
            self._place = {k: i for i, k in enumerate(self._keys)}
        place = self._place.pop(key, None)
        if place is None:
            raise KeyError(f"{key!r} is not in the near-duplicate index")
        if place >= len(self._removed):
            grown = np.zeros(max(len(self._keys), 2 * len(self._removed)), dtype=bool)
            grown[: len(self._removed)] = self._removed
            self._removed = grown
        self._removed[place] = True
        self._n_removed += 1

    def _live(self, found: tuple[I64, I64, I64]) -> tuple[I64, I64, I64]:
        """Query results (query, owner, distance) without those of removed items."""
        query, owner, dist = found
        if not len(self._removed) or not len(owner):
            return found
        dead = np.zeros(len(owner), dtype=bool)
        inside = owner < len(self._removed)
        dead[inside] = self._removed[owner[inside]]
        if not dead.any():
            return found
        return query[~dead], owner[~dead], dist[~dead]

    def _verified(
        self,
        keys: Sequence[str],
        base: int,
        item: I64,
        owner: I64,
        dist: I64,
        pairs: list[tuple[int, int, int]],
        accept: Callable[[int, str], bool],
    ) -> tuple[I64, I64, Bools]:
        """Per item, the closest candidate that ``accept`` confirms, in arrival order."""
        n = len(keys)
        cands: dict[int, list[tuple[int, int]]] = {}  # only items with a candidate
        for i, o, d in zip(item.tolist(), owner.tolist(), dist.tolist(), strict=True):
            cands.setdefault(i, []).append((d, o))
        for i, j, d in pairs:
            cands.setdefault(i, []).append((d, base + j))
        best_d = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        best_o = np.full(n, -1, dtype=np.int64)
        kept = np.ones(n, dtype=bool)
        for i in sorted(cands):  # arrival order; an item without candidates stays kept
            for d, o in sorted(set(cands[i])):
                if o >= base and not kept[o - base]:
                    continue  # an earlier item of this batch that was itself a duplicate
                if accept(i, self._keys[o] if o < base else keys[o - base]):
                    best_d[i], best_o[i], kept[i] = d, o, False
                    break
        return best_d, best_o, kept

    def _add(self, keys: Sequence[str], kept: Bools, fulls: U64, wins: U64, win: I64) -> None:
        idx = np.flatnonzero(kept)
        if not len(idx):
            return
        base = len(self._keys)
        new_id = np.full(len(kept), -1, dtype=np.int64)
        new_id[idx] = base + np.arange(len(idx))
        if base + len(idx) >= np.iinfo(np.int32).max:
            raise ValueError("NearDuplicateIndex holds at most 2**31 - 1 items")
        self._keys.extend(keys[i] for i in idx.tolist())
        if self._place is not None:
            self._place.update((keys[i], base + n) for n, i in enumerate(idx.tolist()))
        self._full.add(fulls[idx], new_id[idx].astype(np.int32))
        wkeep = kept[win]
        if wkeep.any():
            self._windows.add(wins[wkeep], new_id[win[wkeep]].astype(np.int32))
