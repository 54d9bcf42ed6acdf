"""Perceptual hashes with crop windows, and the sub-quadratic near-duplicate index."""

from __future__ import annotations

import itertools
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasetagent.tools import dupindex
from datasetagent.tools.dupindex import DEFAULT_THRESHOLD, NearDuplicateIndex
from datasetagent.tools.phash import WINDOWS, hamming, image_hashes, phash

R = DEFAULT_THRESHOLD


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    """Non-overlapping 160×160 tiles of the two scikit-learn photos, resized to 200×240.

    Near-flat tiles (grey-level spread under 12, e.g. clear sky) are left out: their hash is
    mostly noise, and the quality scan rejects such images as ``low_information`` first.
    """
    from sklearn.datasets import load_sample_images

    out = []
    for rgb in load_sample_images().images:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        for y in range(0, 320, 160):
            for x in range(0, 640 - 159, 160):
                tile = gray[y : y + 160, x : x + 160]
                if tile.std() >= 12:
                    out.append(cv2.resize(tile, (240, 200), interpolation=cv2.INTER_AREA))
    assert len(out) >= 10
    return out


def _jpeg(gray: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    h, w = gray.shape
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(gray, (round(w * factor), round(h * factor)), interpolation=method)


def _crop(gray: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    h, w = gray.shape
    return gray[round(top * h) : h - round(bottom * h), round(left * w) : w - round(right * w)]


def _brightness(gray: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(gray.astype(np.float32) * factor, 0, 255).astype(np.uint8)


COPIES = {
    "jpeg q30": lambda g: _jpeg(g, 30),
    "jpeg q95": lambda g: _jpeg(g, 95),
    "resized 0.5x": lambda g: _resize(g, 0.5),
    "resized 2x": lambda g: _resize(g, 2.0),
    "crop left 10%": lambda g: _crop(g, 0.1, 0, 0, 0),
    "crop top 10%": lambda g: _crop(g, 0, 0.1, 0, 0),
    "crop right 10%": lambda g: _crop(g, 0, 0, 0.1, 0),
    "crop bottom 10%": lambda g: _crop(g, 0, 0, 0, 0.1),
    "crop top-left corner 8%": lambda g: _crop(g, 0.08, 0.08, 0, 0),
    "crop centre 5% each side": lambda g: _crop(g, 0.05, 0.05, 0.05, 0.05),
    "crop centre 5% then 0.6x": lambda g: _resize(_crop(g, 0.05, 0.05, 0.05, 0.05), 0.6),
    "brightness +15%": lambda g: _brightness(g, 1.15),
    "brightness -15%": lambda g: _brightness(g, 0.85),
    "brightness +38 levels": lambda g: np.clip(g.astype(np.int16) + 38, 0, 255).astype(np.uint8),
}


# -- hashing ------------------------------------------------------------------------------


def test_image_hashes_shape_and_whole_frame_row(tiles: list[np.ndarray]) -> None:
    h = image_hashes(tiles[0])
    assert h.dtype == np.uint64
    assert h.shape == (len(WINDOWS),)
    assert len(WINDOWS) <= 10
    assert int(h[0]) == phash(tiles[0])
    assert np.array_equal(h, image_hashes(tiles[0].copy()))
    # a balanced median split: 32 bits set (DC, bit 0, always among them)
    assert all(bin(int(x)).count("1") == 32 and int(x) & 1 for x in h)


def _reference_hash(gray: np.ndarray) -> int:
    """The textbook recipe: cv2 INTER_AREA to 32×32, cv2.dct, top-left 8×8 vs its median."""
    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low)
    return sum(1 << i for i in range(64) if bits[i])


def test_hashes_equal_the_cv2_recipe_for_every_window(tiles: list[np.ndarray]) -> None:
    # a side over phash._CACHED_SIDE takes the uncached operators, one under 32 px cv2
    big = cv2.resize(tiles[0], (600, 530), interpolation=cv2.INTER_LINEAR)
    for gray in [*tiles[:4], tiles[5][:57, :90], big]:
        h, w = gray.shape
        expected = []
        for x0, x1, y0, y1 in WINDOWS:
            window = gray[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
            expected.append(_reference_hash(window))
        assert [int(x) for x in image_hashes(gray)] == expected


def test_tiny_and_flat_images_hash_without_error() -> None:
    assert image_hashes(np.full((1, 1), 9, np.uint8)).shape == (len(WINDOWS),)
    flat = image_hashes(np.full((40, 30), 128, np.uint8))
    assert np.all(flat == flat[0])
    with pytest.raises(ValueError, match="2-D"):
        image_hashes(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        image_hashes(np.zeros((0, 5), np.uint8))


def test_hamming_counts_differing_bits() -> None:
    a = np.array([0, 0b1011, 2**64 - 1], dtype=np.uint64)
    assert hamming(a, np.uint64(0)).tolist() == [0, 3, 64]
    assert hamming(a[:, None], a[None, :]).shape == (3, 3)
    assert hamming(a, a).tolist() == [0, 0, 0]


# -- near duplicates of real photos --------------------------------------------------------


@pytest.mark.parametrize("kind", list(COPIES))
def test_copies_are_found_in_both_arrival_orders(tiles: list[np.ndarray], kind: str) -> None:
    for i, original in enumerate(tiles):
        orig_h = image_hashes(original)
        copy_h = image_hashes(np.ascontiguousarray(COPIES[kind](original)))
        first = NearDuplicateIndex(R).check_and_add(["orig", "copy"], [orig_h, copy_h])
        assert first[0] is None, (kind, i)
        assert first[1] is not None, (kind, i)
        assert first[1][0] == "orig", (kind, i)
        later = NearDuplicateIndex(R).check_and_add(["copy", "orig"], [copy_h, orig_h])
        assert later[1] is not None, (kind, i)
        assert later[1][0] == "copy", (kind, i)


def test_windows_are_what_finds_crops(tiles: list[np.ndarray]) -> None:
    """The global hash alone misses most of these crops; full~window comparisons find them."""
    missed = 0
    for original in tiles:
        full = image_hashes(original)[0]
        for kind in ("crop left 10%", "crop top 10%", "crop right 10%", "crop bottom 10%"):
            missed += int(hamming(image_hashes(COPIES[kind](original))[0], full)) > R
    assert missed >= len(tiles) * 2


def test_distinct_tiles_are_not_matched(tiles: list[np.ndarray]) -> None:
    index = NearDuplicateIndex(R)
    found = index.check_and_add(
        [f"t{i}" for i in range(len(tiles))], [image_hashes(t) for t in tiles]
    )
    assert found == [None] * len(tiles)
    assert len(index) == len(tiles)


# -- index semantics ------------------------------------------------------------------------


def _flip(h: int, bits: list[int]) -> int:
    for b in bits:
        h ^= 1 << b
    return h


A = 0x0123_4567_89AB_CDEF
FAR = 0xFEDC_BA98_7654_3210  # 64 bits from A's complement: far from A and its neighbours


def _item(*hashes: int) -> np.ndarray:
    return np.array(hashes, dtype=np.uint64)


def test_first_seen_is_kept_within_a_batch() -> None:
    index = NearDuplicateIndex(R)
    out = index.check_and_add(
        ["a", "b", "c", "d"],
        [_item(A), _item(_flip(A, [1, 2])), _item(_flip(A, [5, 6, 7, 8])), _item(FAR)],
    )
    assert out == [None, ("a", 2), ("a", 4), None]
    assert len(index) == 2


def test_first_seen_is_kept_across_batches() -> None:
    index = NearDuplicateIndex(R)
    assert index.check_and_add(["a"], [_item(A)]) == [None]
    assert index.check_and_add(["b", "c"], [_item(_flip(A, [3])), _item(FAR)]) == [("a", 1), None]
    assert index.check_and_add(["d"], [_item(_flip(FAR, [9, 10]))]) == [("c", 2)]
    assert len(index) == 2


def test_a_rejected_item_is_never_a_reference() -> None:
    """x ~ y and y ~ z but not x ~ z: y is dropped, so z is kept (in one batch or two)."""
    x = A
    y = _flip(A, list(range(1, 9)))  # 8 bits from x
    z = _flip(y, list(range(20, 28)))  # 8 from y, 16 from x
    items = [_item(x), _item(y), _item(z)]
    assert NearDuplicateIndex(R).check_and_add(["x", "y", "z"], items) == [None, ("x", 8), None]
    index = NearDuplicateIndex(R)
    assert index.check_and_add(["x", "y"], items[:2]) == [None, ("x", 8)]
    assert index.check_and_add(["z"], items[2:]) == [None]


def test_closest_kept_item_wins_then_the_earliest() -> None:
    index = NearDuplicateIndex(R)
    a2 = _flip(A, [40, 41, 42, 43, 44, 45])  # 6 from A
    index.check_and_add(["a", "a2"], [_item(A), _item(a2)])
    assert len(index) == 2 - 1  # a2 is A's duplicate
    index = NearDuplicateIndex(4)
    index.check_and_add(["a", "a2"], [_item(A), _item(a2)])
    probe = _flip(A, [40, 41, 42])  # 3 from both
    assert index.check_and_add(["p"], [_item(probe)]) == [("a", 3)]
    assert index.check_and_add(["q"], [_item(_flip(A, [42, 43, 44, 45]))]) == [("a2", 2)]


def test_checking_without_adding_leaves_the_index_as_it_was() -> None:
    index = NearDuplicateIndex(R)
    index.check_and_add(["a"], [_item(A)])
    items = [_item(_flip(A, [3])), _item(FAR), _item(_flip(FAR, [9]))]
    expected = [("a", 1), None, ("c", 1)]
    assert index.check_and_add(["b", "c", "d"], items, add=False) == expected
    assert len(index) == 1
    assert index.check_and_add(["d"], items[2:]) == [None]  # c was never added
    assert len(index) == 2


def test_a_removed_item_is_matched_no_more_and_an_added_one_is() -> None:
    """What ``Deduplicator.replace`` does: a better copy takes a kept item's place."""
    index = NearDuplicateIndex(R)
    b = _flip(A, list(range(1, 9)))  # 8 bits from A
    index.check_and_add(["a", "far"], [_item(A), _item(FAR)])
    index.remove("a")
    index.add(["b"], [_item(b)])
    assert len(index) == 2
    probe = _flip(A, [60])  # 1 bit from A, 9 from b
    assert index.check_and_add(["p"], [_item(probe)], add=False) == [None]
    assert index.check_and_add(["q"], [_item(_flip(b, [60]))]) == [("b", 1)]
    assert index.check_and_add(["r"], [_item(_flip(FAR, [5]))]) == [("far", 1)]
    index.remove("b")
    index.add(["a"], [_item(A)])  # a key may come back
    assert index.check_and_add(["p"], [_item(probe)]) == [("a", 1)]
    with pytest.raises(KeyError, match="not in the near-duplicate index"):
        index.remove("b")


def test_full_and_window_pairs_match_but_window_pairs_do_not() -> None:
    index = NearDuplicateIndex(R)
    w = _flip(A, list(range(10, 30)))  # a window hash of A's item, 20 bits from A
    index.check_and_add(["a"], [_item(A, w)])
    # a crop arriving later: its whole frame is near A's window
    assert index.check_and_add(["crop"], [_item(_flip(w, [50]), FAR)]) == [("a", 1)]
    # an item whose window is near A's whole frame
    assert index.check_and_add(["bigger"], [_item(FAR, _flip(A, [60, 61]))]) == [("a", 2)]
    # only a window equals a window: not a match
    other = _flip(FAR, list(range(0, 64, 3)))
    assert index.check_and_add(["w~w"], [_item(other, w)]) == [None]


def test_bad_input_is_refused_with_the_fix() -> None:
    index = NearDuplicateIndex(R)
    with pytest.raises(ValueError, match="one each"):
        index.check_and_add(["a", "b"], [_item(A)])
    with pytest.raises(ValueError, match="image_hashes"):
        index.check_and_add(["a"], [np.array([], dtype=np.uint64)])
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(65)
    assert index.check_and_add([], []) == []
    assert len(index) == 0


def test_memory_grows_with_items() -> None:
    index = NearDuplicateIndex(R)
    empty = index.memory_bytes()
    rng = np.random.default_rng(0)
    index.check_and_add([f"k{i}" for i in range(500)], rng.integers(0, 2**63, (500, 10)))
    assert index.memory_bytes() > empty + 500 * 10 * 8


# -- the index equals brute force ----------------------------------------------------------


def _brute_force(keys: list[str], hashes: list[np.ndarray], r: int) -> list[tuple[str, int] | None]:
    kept: list[tuple[str, np.ndarray]] = []
    out: list[tuple[str, int] | None] = []
    for key, h in zip(keys, hashes, strict=True):
        best: tuple[str, int] | None = None
        for kkey, kh in kept:
            d = int(min(hamming(h[0], kh).min(), hamming(h, kh[0]).min()))
            if d <= r and (best is None or d < best[1]):
                best = (kkey, d)
        out.append(best)
        if best is None:
            kept.append((key, h))
    return out


def _planted(rng: np.random.Generator, n: int, max_windows: int) -> list[np.ndarray]:
    """Random items; a third are copies of an earlier item: a row flipped by 0–14 bits and
    moved to row 0 or a window, so full~full, full~window, window~full and window~window
    pairs all occur near every threshold."""
    items: list[np.ndarray] = []
    for i in range(n):
        width = int(rng.integers(1, max_windows + 2))
        h = rng.integers(0, 2**64 - 1, size=width, dtype=np.uint64, endpoint=True)
        if i and rng.random() < 0.35:
            src = items[int(rng.integers(0, i))]
            row = src[int(rng.integers(0, len(src)))]
            noise = rng.choice(64, size=int(rng.integers(0, 15)), replace=False)
            h[int(rng.integers(0, width))] = row ^ np.uint64(sum(1 << int(b) for b in noise))
        items.append(h)
    return items


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    threshold=st.sampled_from([0, 3, 6, 8, 10, 12]),
    n=st.integers(1, 900),
    cuts=st.lists(st.integers(0, 900), max_size=4),
    small_tables=st.booleans(),
)
def test_index_matches_brute_force(
    seed: int, threshold: int, n: int, cuts: list[int], small_tables: bool
) -> None:
    """Same answers as a brute-force scan, whatever the batches; a small tail and delta table
    force flushes into the delta and main tables and changes of their chunk layouts."""
    rng = np.random.default_rng(seed)
    items = _planted(rng, n, max_windows=4)
    keys = [f"k{i}" for i in range(n)]
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    tail, delta = (16, 64) if small_tables else (dupindex._TAIL_MAX, dupindex._DELTA_MAX)
    with (
        mock.patch.object(dupindex, "_TAIL_MAX", tail),
        mock.patch.object(dupindex, "_DELTA_MAX", delta),
    ):
        index = NearDuplicateIndex(threshold)
        got: list[tuple[str, int] | None] = []
        for lo, hi in itertools.pairwise(bounds):
            got += index.check_and_add(keys[lo:hi], items[lo:hi])
    expected = _brute_force(keys, items, threshold)
    assert got == expected
    assert len(index) == sum(e is None for e in expected)


@pytest.mark.parametrize("threshold", [0, 4, 10, 13])
def test_every_chunk_layout_finds_exactly_the_pairs_within_threshold(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**64 - 1, size=200, dtype=np.uint64, endpoint=True)
    entries = base[rng.integers(0, 200, 2000)]
    queries = base[rng.integers(0, 200, 300)]
    for arr in (entries, queries):
        for _ in range(int(rng.integers(1, 16))):
            arr ^= np.uint64(1) << rng.integers(0, 64, size=len(arr), dtype=np.uint64)
    near = hamming(queries[:, None], entries[None, :]) <= threshold
    expected = set(zip(*(x.tolist() for x in np.nonzero(near)), strict=True))
    layouts = [dupindex._SCAN]
    layouts += [dupindex._layout_for(threshold, m) for m in range(3, min(threshold + 1, 63) + 1)]
    for layout in layouts:
        table = dupindex._Table(threshold, 1, layout=layout)
        table.add(entries[:700], np.arange(700, dtype=np.int32))
        table.add(entries[700:], np.arange(700, 2000, dtype=np.int32))
        qi, owner, dist = table.query(queries)
        assert set(zip(qi.tolist(), owner.tolist(), strict=True)) == expected, layout
        assert np.array_equal(dist, hamming(queries[qi], entries[owner]))


@pytest.mark.parametrize("threshold", [3, 8, 10])
def test_every_layout_finds_the_tightest_pigeonhole_pairs(threshold: int) -> None:
    """Pairs exactly ``threshold`` apart with every chunk one bit past its radius except one
    chunk at its radius: the rule's tight case, which random data almost never produces."""
    rng = np.random.default_rng(threshold)
    filler = rng.integers(0, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True)
    for m in range(3, threshold + 2):
        layout = dupindex._layout_for(threshold, m)
        for j, (_, _, radius_j) in enumerate(layout):
            if radius_j < 0:
                continue
            a = rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True)
            b = int(a)
            for i, (shift, width, radius) in enumerate(layout):
                flips = radius if i == j else radius + 1
                for bit in rng.choice(width, size=min(flips, width), replace=False):
                    b ^= 1 << (shift + int(bit))
            table = dupindex._Table(threshold, 1, layout=layout)
            table.add(np.append(filler, a), np.arange(301, dtype=np.int32))
            _, owner, _ = table.query(np.array([b], dtype=np.uint64))
            d = int(hamming(a, np.uint64(b)))
            assert (300 in owner.tolist()) == (d <= threshold), (m, j, d)
            assert d == threshold or any(r + 1 > w for _, w, r in layout)
