"""Near-duplicate decisions with thumbnail verification (tools/dedupe.py)."""

from __future__ import annotations

import io
import random

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from datasetagent.tools import dedupe, quality
from datasetagent.tools.dedupe import (
    THUMB,
    Deduplicator,
    Thumb,
    _crop_matrices,
    _crop_ncc,
    _crop_scores,
    _full_view,
    _normalise,
    _pick,
    _span_table,
    decode_thumb,
    encode_thumb,
    same_picture,
    thumbnail,
)
from datasetagent.tools.phash import image_hashes
from helpers import digit_images, photos


def features(img: Image.Image) -> tuple[np.ndarray, Thumb]:
    gray = quality.gray_of(quality.analysis_image(img))
    return image_hashes(gray), Thumb(thumbnail(gray), min(img.size))


def run(images: list[Image.Image], verify: bool) -> list[bool]:
    hashes, thumbs = zip(*(features(im) for im in images), strict=True)
    dedupe = Deduplicator(near_bits=8)
    found = dedupe.check(
        [str(i) for i in range(len(images))],
        [None] * len(images),
        list(hashes),
        list(thumbs) if verify else [None] * len(images),
    )
    return [f is not None for f in found]


def test_small_images_keep_different_digits_and_lose_their_copies() -> None:
    """32×32 digits: hashes collide, whole frames and crops of one class correlate highly, so
    small images are compared strictly; their re-encoded, enlarged and brightened copies are
    still found."""
    digits = [img for img, _ in digit_images(60)]
    hash_only = sum(run(digits, verify=False))
    assert hash_only > 100  # 64-bit hashes of 8×8-detail digits collide often
    copies = []
    for img in digits[:50]:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=75)
        copies += [
            Image.open(io.BytesIO(buf.getvalue())),
            img.resize((64, 64), Image.Resampling.BICUBIC),
            ImageEnhance.Brightness(img).enhance(1.05),
        ]
    flags = run(digits + copies, verify=True)
    assert sum(flags[: len(digits)]) <= 3  # of 600 different digits (crop search flagged 46)
    assert all(flags[len(digits) :])


def test_verification_still_finds_copies_of_photos() -> None:
    originals, copies = [], []
    for photo in photos():
        for x in range(0, 480, 160):
            tile = photo.crop((x, 0, x + 160, 240))
            buf = io.BytesIO()
            tile.save(buf, "JPEG", quality=40)
            originals.append(tile)
            copies += [
                Image.open(io.BytesIO(buf.getvalue())),
                tile.resize((240, 360)),
                ImageEnhance.Brightness(tile).enhance(1.12),
                tile.crop((8, 0, 160, 228)),
            ]
    flags = run(originals + copies, verify=True)
    assert not any(flags[: len(originals)])
    assert sum(flags[len(originals) :]) >= 0.9 * len(copies)


def test_crops_between_the_grid_scales_and_placements_are_refined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tiles cut by 0-10% on each side at random and re-encoded: searching off the crop grid
    finds copies the grid alone misses, and no two different tiles are taken for one."""
    rng = random.Random(0)
    tiles, copies = [], []
    for photo in photos():
        for x in range(0, 520, 100):
            for y in range(0, 320, 100):
                tile = photo.crop((x, y, x + 120, y + 120))
                cut = [round(rng.uniform(0, 0.1) * 120) for _ in range(4)]
                buf = io.BytesIO()
                tile.crop((cut[0], cut[1], 120 - cut[2], 120 - cut[3])).save(
                    buf, "JPEG", quality=90
                )
                tiles.append(features(tile)[1])
                copies.append(features(Image.open(io.BytesIO(buf.getvalue())))[1])

    def found() -> int:
        return sum(same_picture(a, b) for a, b in zip(tiles, copies, strict=True))

    refined = found()
    monkeypatch.setattr(dedupe, "REFINE_FROM", 2.0)  # the grid alone
    assert refined >= 0.9 * len(tiles)
    assert refined >= found() + 4
    monkeypatch.undo()
    others = [same_picture(a, b) for i, a in enumerate(tiles) for j, b in enumerate(tiles) if i < j]
    assert not any(others)


def test_thumbnails_round_trip_as_text() -> None:
    pixels = thumbnail(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64))
    for side in (48, 0):
        back = decode_thumb(encode_thumb(Thumb(pixels, side)))
        assert np.array_equal(back.pixels, pixels)
        assert back.side == side


def test_thumbnail_is_cv2_area_resampling_within_a_grey_level() -> None:
    for photo in photos():
        for size in ((160, 107), (97, 160), (24, 40)):
            gray = np.asarray(photo.convert("L").resize(size))
            reference = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
            assert np.abs(thumbnail(gray).astype(int) - reference).max() <= 1


def _views(thumb: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reference: every view (row span × column span) of ``thumb`` made and normalised."""
    t = thumb.astype(np.float64)
    views = np.matmul((rows @ t)[:, None], cols.transpose(0, 2, 1)[None])
    return _normalise(views.reshape(-1, views.shape[-2] * views.shape[-1]))


def test_crop_scores_equal_normalised_views() -> None:
    """The closed form of the crop NCC gives what making and normalising every view gives,
    on the crop grid and on the refinement's off-grid spans."""
    rng = np.random.default_rng(0)
    grid = _crop_matrices()[0]
    off = _pick(_span_table(), np.array([0, 3, 7, 25]), np.array([25, 19, 11, 0]))
    for photo in photos():
        gray = np.asarray(photo.convert("L").resize((160, 120)))
        a, b = thumbnail(gray), thumbnail(np.ascontiguousarray(gray[8:, 12:]))
        full = _full_view(a)
        assert np.allclose(_crop_ncc(b, full), _views(b, grid, grid) @ full, atol=1e-4)
        noise = rng.integers(0, 256, (THUMB, THUMB), dtype=np.uint8)
        assert np.allclose(_crop_ncc(noise, full), _views(noise, grid, grid) @ full, atol=1e-4)
        refined = _crop_scores(b, full, off, off).ravel()
        assert np.allclose(refined, _views(b, off[0], off[0]) @ full, atol=1e-4)
    flat = np.full((THUMB, THUMB), 90, np.uint8)
    assert not _crop_ncc(flat, _full_view(a)).any()  # a flat view correlates with nothing


def test_best_copies_keep_the_largest_then_lossless_then_least_compressed() -> None:
    from datasetagent.tools.dedupe import BestCopies, Duplicate, Quality

    best = BestCopies()
    items = [
        ("a", None, Quality.of(100, 100, "JPEG", 5000), "x"),
        ("b", Duplicate("exact_duplicate", "a"), Quality.of(100, 100, "JPEG", 6000), "x"),
        ("c", Duplicate("near_duplicate", "a", 4), Quality.of(200, 200, "JPEG", 20000), "y"),
        ("d", None, Quality.of(100, 100, "JPEG", 5000), "z"),
        ("e", Duplicate("exact_duplicate", "d"), Quality.of(100, 100, "JPEG", 9000), "z"),
        ("f", None, Quality.of(100, 100, "JPEG", 9000), "u"),
        ("g", Duplicate("near_duplicate", "f", 2), Quality.of(100, 100, "PNG", 3000), "v"),
        ("h", None, Quality.of(100, 100, "JPEG", 4000), "w"),
        ("i", Duplicate("near_duplicate", "h", 2), Quality.of(100, 100, "JPEG", 8000), "t"),
        ("j", None, Quality.of(50, 50, "PNG", 4000), None),
    ]
    for key, verdict, rank, exact in items:
        best.add(key, verdict, rank, exact)
    assert best.changes() == {
        "c": None,
        "a": Duplicate("near_duplicate", "c"),
        "b": Duplicate("near_duplicate", "c"),
        # d and e hold the same pixels: e's extra bytes are metadata, d stays (first seen)
        "g": None,
        "f": Duplicate("near_duplicate", "g"),
        "i": None,
        "h": Duplicate("near_duplicate", "i"),
    }


def _named(verdicts: list[dedupe.Duplicate | None]) -> list[tuple[str, str] | None]:
    return [None if d is None else (d.issue, d.of) for d in verdicts]


def test_a_check_that_remembers_nothing_gives_the_verdicts_a_real_one_gives() -> None:
    imgs = [p.crop((0, 0, 200, 200)) for p in photos()]
    feats = [features(im) for im in (*imgs, imgs[0].resize((100, 100), Image.Resampling.LANCZOS))]
    keys, exact = ["a", "b", "a-copy", "b-again"], ["x", "y", "z", "y"]
    hashes = [h for h, _ in feats] + [feats[1][0]]
    thumbs = [t for _, t in feats] + [feats[1][1]]
    checker = Deduplicator(near_bits=8)
    dry = checker.check(keys, exact, hashes, thumbs, remember=False)
    assert _named(dry) == [None, None, ("near_duplicate", "a"), ("exact_duplicate", "b")]
    assert len(checker) == 0
    assert checker.check(keys, exact, hashes, thumbs) == dry
    assert len(checker) == 2
    # a better copy in the place of "a": later copies are compared with it
    checker.replace("a", "a-copy", feats[2][0], feats[2][1])
    again = checker.check(["a-again"], ["w"], [feats[0][0]], [feats[0][1]])
    assert _named(again) == [("near_duplicate", "a-copy")]


def test_keeping_the_verdicts_of_a_dry_check_remembers_what_a_real_check_does() -> None:
    """``keep`` with a dry check's verdicts leaves the state a real check leaves: every later
    check gives the same verdicts (copies, exact keys, items without hashes included)."""
    imgs = [p.crop((0, 0, 200, 200)) for p in photos()]
    copy = imgs[0].resize((100, 100), Image.Resampling.LANCZOS)
    feats = [features(im) for im in (*imgs, copy)]
    keys = ["a", "b", "a-copy", "b-again", "broken", "c"]
    exact = ["x", "y", "z", "y", "v", None]
    hashes: list[np.ndarray | None] = [feats[0][0], feats[1][0], feats[2][0], feats[1][0]]
    hashes += [None, feats[1][0]]
    thumbs: list[Thumb | None] = [feats[0][1], feats[1][1], feats[2][1], feats[1][1], None]
    thumbs += [feats[1][1]]
    real, kept = Deduplicator(near_bits=8), Deduplicator(near_bits=8)
    verdicts = real.check(keys, exact, hashes, thumbs)
    dry = kept.check(keys, exact, hashes, thumbs, remember=False)
    assert dry == verdicts
    assert _named(dry)[2:4] == [("near_duplicate", "a"), ("exact_duplicate", "b")]
    kept.keep(keys, exact, hashes, thumbs, dry)
    assert len(kept) == len(real) == 2
    later = (
        ["n1", "n2", "n3", "n4", "n5"],
        ["x", "z", "v", "y", "q"],
        [feats[0][0], feats[2][0], None, feats[1][0], feats[2][0]],
        [feats[0][1], feats[2][1], None, feats[1][1], feats[2][1]],
    )
    assert kept.check(*later) == real.check(*later)
    assert kept._exact == real._exact
    assert kept._thumbs.keys() == real._thumbs.keys()
