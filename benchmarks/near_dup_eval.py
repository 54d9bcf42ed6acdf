"""Near-duplicate detection on real photos: precision/recall of the global pHash (baseline)
against the multi-window hashes, and the index's speed and memory at 100k and 1M items.

    .venv/bin/python benchmarks/near_dup_eval.py [--sizes 100000 1000000] [--skip-index]

Distinct images: non-overlapping 96×128 tiles (grey-level spread ≥ 10) of the scikit-learn
sample photos and of photos found on disk (``apt-get install opencv-doc`` adds ~35; stereo
pairs and image series among them are left out, so no two sources show the same scene). Each
tile gets planted copies of four kinds:

* jpeg — re-encoded at quality 30–95;
* resize — scaled by 0.5–2× (log-uniform);
* crop — 3–10% cut from a random non-empty set of sides, then half the time resized 0.5–2×;
* bright — brightness ×0.85–1.15 or ±(5–15)% of full scale, clipped.

For each kind, all tiles and one copy of each are shuffled and fed to a fresh index in batches
of 256: an item is a true duplicate when an item of its group came before it; a flagged item
counts as a true positive only when the kept item it names is of its group. "all" sums the
four runs. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from datasetagent.tools.dupindex import DEFAULT_THRESHOLD, NearDuplicateIndex
from datasetagent.tools.phash import WINDOWS, image_hashes

OPENCV_EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")
# One photo per scene (the folder also holds stereo pairs, chessboard series, a box cut out of
# box_in_scene, a rotated graffiti, ...; those would be near duplicates of each other).
OPENCV_PHOTOS = (
    "data/aloeL.jpg",
    "data/ela_original.jpg",
    "data/building.jpg",
    "data/graf1.png",
    "data/pca_test1.jpg",
    "data/starry_night.jpg",
    "data/leuvenA.jpg",
    "data/stuff.jpg",
    "data/left01.jpg",
    "data/board.jpg",
    "data/basketball1.png",
    "data/aero1.jpg",
    "data/licenseplate_motion.jpg",
    "data/left.jpg",
    "data/orange.jpg",
    "data/baboon.jpg",
    "data/apple.jpg",
    "data/fruits.jpg",
    "data/squirrel_cls.jpg",
    "data/rubberwhale1.png",
    "data/home.jpg",
    "data/messi5.jpg",
    "data/butterfly.jpg",
    "data/smarties.png",
    "data/chicky_512.png",
    "data/box_in_scene.png",
    "alphamat/input_images/plant.jpg",
    "hfs/data/000.jpg",
    "ximgproc/stanford.png",
    "text/scenetext01.jpg",
    "text/scenetext02.jpg",
    "text/scenetext03.jpg",
    "text/scenetext04.jpg",
    "text/scenetext05.jpg",
    "text/scenetext06.jpg",
)
OTHER_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
TILE = (96, 128)
THRESHOLDS = (6, 8, 10, 12, 14)
Hashes = Callable[[np.ndarray], np.ndarray]


def source_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    out = [cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) for a in load_sample_images().images]
    paths = [OPENCV_EXAMPLES / p for p in OPENCV_PHOTOS]
    for folder in OTHER_DIRS:
        if folder.is_dir():
            paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
        if img is not None:
            out.append(img)
    return out


def tiles(photos: list[np.ndarray]) -> list[np.ndarray]:
    th, tw = TILE
    out = []
    for img in photos:
        for y in range(0, img.shape[0] - th + 1, th):
            for x in range(0, img.shape[1] - tw + 1, tw):
                tile = img[y : y + th, x : x + tw]
                if tile.std() >= 10:
                    out.append(np.ascontiguousarray(tile))
    return out


def _resize(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    size = (max(8, round(g.shape[1] * f)), max(8, round(g.shape[0] * f)))
    return cv2.resize(g, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _jpeg(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(30, 96))
    _, buf = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _crop(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = g.shape
    sides = int(rng.integers(1, 16))  # bit set of left, top, right, bottom
    cut = [rng.uniform(0.03, 0.10) if sides >> i & 1 else 0.0 for i in range(4)]
    out = g[round(cut[1] * h) : h - round(cut[3] * h), round(cut[0] * w) : w - round(cut[2] * w)]
    out = np.ascontiguousarray(out)
    return _resize(out, rng) if rng.random() < 0.5 else out


def _bright(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sign = rng.choice([-1.0, 1.0])
    amount = rng.uniform(0.05, 0.15)
    f = g.astype(np.float32)
    f = f * (1 + sign * amount) if rng.random() < 0.5 else f + sign * amount * 255
    return np.clip(f, 0, 255).astype(np.uint8)


KINDS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "jpeg": _jpeg,
    "resize": _resize,
    "crop": _crop,
    "bright": _bright,
}


def run_stream(
    hashes: list[np.ndarray], groups: np.ndarray, threshold: int
) -> tuple[int, int, int, int]:
    """(true positives, false positives, false negatives, distinct items flagged)."""
    index = NearDuplicateIndex(threshold)
    keys = [str(i) for i in range(len(hashes))]
    found: list[tuple[str, int] | None] = []
    for s in range(0, len(keys), 256):
        found += index.check_and_add(keys[s : s + 256], hashes[s : s + 256])
    seen: set[int] = set()
    tp = fp = fn = wrong_distinct = 0
    for i, match in enumerate(found):
        g = int(groups[i])
        is_dup = g in seen
        seen.add(g)
        ok = match is not None and int(groups[int(match[0])]) == g
        tp += ok
        fp += match is not None and not ok
        fn += is_dup and not ok
        wrong_distinct += match is not None and not is_dup
    return tp, fp, fn, wrong_distinct


def quality(originals: list[np.ndarray], seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"{len(originals)} distinct tiles of {TILE[0]}x{TILE[1]} px, one copy per kind each")
    copies = {k: [fn(g, rng) for g in originals] for k, fn in KINDS.items()}
    t0 = time.perf_counter()
    orig_h = [image_hashes(g) for g in originals]
    per_image_ms = (time.perf_counter() - t0) / len(originals) * 1e3
    copy_h = {k: [image_hashes(np.ascontiguousarray(c)) for c in cs] for k, cs in copies.items()}
    schemes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "global pHash": lambda h: h[:1],
        f"{len(WINDOWS)}-window pHash": lambda h: h,
    }
    photo = cv2.resize(source_photos()[0], (256, 171), interpolation=cv2.INTER_AREA)
    t0 = time.perf_counter()
    for _ in range(1000):
        image_hashes(photo)
    photo_ms = time.perf_counter() - t0  # 1000 calls: seconds equal ms per call
    print(
        f"hashing with {len(WINDOWS)} windows: {per_image_ms:.3f} ms per tile, "
        f"{photo_ms:.3f} ms per 256x171 photo"
    )
    n = len(originals)
    order = {k: rng.permutation(2 * n) for k in KINDS}
    print(f"\n{'scheme':18s} {'bits':>4s} " + " ".join(f"{k + ' P/R':>13s}" for k in KINDS), end="")
    print(f" {'all P/R':>13s}  distinct flagged / pair rate")
    for name, pick in schemes.items():
        for threshold in THRESHOLDS:
            cells, tot = [], np.zeros(4, dtype=np.int64)
            for kind in KINDS:
                items = [pick(h) for h in orig_h] + [pick(h) for h in copy_h[kind]]
                groups = np.concatenate([np.arange(n), np.arange(n)])[order[kind]]
                stream = [items[i] for i in order[kind]]
                counts = np.array(run_stream(stream, groups, threshold))
                tot += counts
                tp, fp, fn, _ = counts
                cells.append(f"{tp / max(tp + fp, 1):.3f}/{tp / max(tp + fn, 1):.3f}")
            tp, fp, fn, wrong = (int(x) for x in tot)
            rate = wrong / (len(KINDS) * n * (n - 1) / 2)  # per pair of distinct images
            mark = " <- default" if threshold == DEFAULT_THRESHOLD and "window" in name else ""
            print(
                f"{name:18s} {threshold:4d} " + " ".join(f"{c:>13s}" for c in cells),
                f"{tp / max(tp + fp, 1):.3f}/{tp / max(tp + fn, 1):.3f}".rjust(13),
                f" {wrong:5d} / {rate:.1e}{mark}",
            )


def realistic_items(originals: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, W) hashes shaped like real ones: a real tile's hashes, all rows XORed with the same
    random ~20-bit mask, so items keep the real bit statistics and full~window structure but
    are (almost all) farther apart than the threshold."""
    base = np.array([image_hashes(g) for g in originals])
    items = base[rng.integers(0, len(base), n)]
    mask = np.zeros(n, dtype=np.uint64)
    for _ in range(22):
        mask |= np.uint64(1) << rng.integers(1, 64, n, dtype=np.uint64)
    out: np.ndarray = items ^ mask[:, None]
    return out


def random_items(n: int, rng: np.random.Generator) -> np.ndarray:
    full = rng.integers(0, 2**63, n, dtype=np.uint64) << np.uint64(1) | np.uint64(1)
    noise = np.zeros((n, len(WINDOWS) - 1), dtype=np.uint64)
    for _ in range(16):
        noise |= np.uint64(1) << rng.integers(1, 64, noise.shape, dtype=np.uint64)
    out: np.ndarray = np.concatenate([full[:, None], full[:, None] ^ noise], axis=1)
    return out


def index_speed(originals: list[np.ndarray], sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"\nindex: threshold {DEFAULT_THRESHOLD}, {len(WINDOWS)} hashes per item, batches of")
    print("10,000 (a 1-item call at the end); times include the within-batch check")
    for label, make in (
        ("real-tile-like", lambda n: realistic_items(originals, n, rng)),
        ("uniform random", lambda n: random_items(n, rng)),
    ):
        for n in sizes:
            items = make(n + 1000)
            keys = [f"item{i}" for i in range(n + 1000)]
            index = NearDuplicateIndex()
            t0 = time.perf_counter()
            flagged = 0
            for s in range(0, n, 10_000):
                e = min(n, s + 10_000)
                flagged += sum(r is not None for r in index.check_and_add(keys[s:e], items[s:e]))
            total = time.perf_counter() - t0
            t1 = time.perf_counter()
            for i in range(n, n + 1000):
                index.check_and_add(keys[i : i + 1], items[i : i + 1])
            single = (time.perf_counter() - t1) / 1000
            print(
                f"  {label:15s} {n:>9,d} items: {total:7.1f} s ({total / n * 1e6:5.0f} us/item), "
                f"{index.memory_bytes() / 2**20:6.0f} MiB ({index.memory_bytes() / n:.0f} B/item),"
                f" {flagged / n:.2%} flagged; then one at a time: {single * 1e3:.2f} ms/item"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = source_photos()
    originals = tiles(photos)
    print(f"{len(photos)} source photos")
    if len(originals) < 1000:
        print(f"note: only {len(originals)} tiles; `apt-get install opencv-doc` adds photos")
    quality(originals, args.seed)
    if not args.skip_index:
        index_speed(originals, args.sizes, args.seed)


if __name__ == "__main__":
    main()
