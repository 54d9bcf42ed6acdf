"""Scan benchmark: speed against a plain full decode, and accuracy per defect type.

Builds the corpus of benchmarks/corpus.py (real photos, planted defects), then, in one run:

* times a plain full Pillow decode of every file (``Image.open(p).convert("RGB")``) with the
  same number of processes — the baseline — and the whole scan (deduplication included),
  alternately ``--repeat`` times, and prints each ratio and their median;
* where cleanvision is installed, times it on the same files;
* scores precision and recall per defect type against the planted ground truth;
* measures the near-duplicate index's memory for 100k images.

Usage: python benchmarks/scan_bench.py [--workers N] [--copies 100] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import tracemalloc
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from corpus import NEAR_KINDS, Corpus, build_corpus
from datasetagent.scan import ScanLine, ScanParams, scan_folder
from datasetagent.tools.dedupe import THUMB, Deduplicator, Thumb


def plain_decode(path: str) -> int:
    try:
        with Image.open(path) as img:
            return img.convert("RGB").width
    except Exception:  # the baseline only decodes; damaged files are skipped
        return 0


def time_plain(files: list[str], workers: int) -> float:
    start = time.perf_counter()
    with Pool(workers) as pool:
        for _ in pool.imap(plain_decode, files, chunksize=8):
            pass
    return time.perf_counter() - start


def time_scan(root: Path, workers: int) -> tuple[float, list[ScanLine]]:
    start = time.perf_counter()
    lines = list(scan_folder(root, ScanParams(), workers=workers))
    return time.perf_counter() - start, lines


def time_cleanvision(files: list[str], readable: list[str]) -> tuple[str, float | None]:
    """cleanvision's time on the same files or, where it crashes on damaged ones, on the rest
    (less work than ours, so the ratio then flatters cleanvision); None when not installed."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # its progress bars would flood the output
    try:
        from cleanvision import Imagelab  # type: ignore[import-not-found]
    except ImportError:
        return "not installed here (pip install cleanvision to compare)", None
    try:
        start = time.perf_counter()
        Imagelab(filepaths=files).find_issues()
        took = time.perf_counter() - start
        return f"{took:.2f} s on all files", took
    except Exception as exc:
        crash = f"crashed on the full corpus ({type(exc).__name__})"
    start = time.perf_counter()
    Imagelab(filepaths=readable).find_issues()
    took = time.perf_counter() - start
    return f"{crash}; {took:.2f} s on the {len(readable)} undamaged files", took


def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    p, n = np.array(pos)[:, None], np.array(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def pr(tp: int, fp: int, fn: int) -> str:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return f"precision {precision:.3f}  recall {recall:.3f}  (tp {tp}, fp {fp}, fn {fn})"


def accuracy(corpus: Corpus, lines: list[ScanLine]) -> None:
    by_name = {Path(line.path).name: line for line in lines}
    crashed = set(corpus.truth) - set(by_name)
    print(f"files without a result (crash or skip): {len(crashed)}")
    for issue in ("corrupt", "tiny", "dark"):
        truth = {n for n, t in corpus.truth.items() if t == issue}
        said = {n for n, line in by_name.items() if issue in line.issues}
        print(f"{issue:16s} {pr(len(truth & said), len(said - truth), len(truth - said))}")
    dark = [1 - by_name[n].scores["highlights"] for n, t in corpus.truth.items() if t == "dark"]
    clean = [
        1 - by_name[n].scores["highlights"]
        for n, t in corpus.truth.items()
        if t == "" and by_name[n].scores
    ]
    print(f"dark AUC (1 - highlights): {auc(dark, clean):.4f}")
    # In each planted group (an original and its copy) the first by name is kept; the other
    # must be flagged as a duplicate of it.
    groups: dict[int, list[str]] = {}
    for name, g in corpus.group.items():
        groups.setdefault(g, []).append(name)
    should = {sorted(m)[1]: sorted(m)[0] for m in groups.values()}
    flagged = {
        n for n, line in by_name.items() if {"exact_duplicate", "near_duplicate"} & set(line.issues)
    }
    for label, kinds, issue in (
        ("exact_duplicate", ("exact",), "exact_duplicate"),
        ("near_duplicate", NEAR_KINDS, "near_duplicate"),
    ):
        members = {
            n
            for n, first in should.items()
            if corpus.copy_kind.get(n, corpus.copy_kind.get(first)) in kinds
        }
        said = {n for n in flagged if issue in by_name[n].issues}
        right = {
            n
            for n in members & said
            if by_name[n].duplicate_of and Path(by_name[n].duplicate_of or "").name == should[n]
        }
        print(f"{label:16s} {pr(len(right), len(said - members), len(members - right))}")
    for kind in NEAR_KINDS:
        members = {
            n
            for n, first in should.items()
            if corpus.copy_kind.get(n, corpus.copy_kind.get(first)) == kind
        }
        found = len(members & flagged)
        print(
            f"  near, {kind:11s} recall {found / max(len(members), 1):.3f} ({found}/{len(members)})"
        )


def index_memory(n: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(n, 9), dtype=np.uint64)
    thumbs = rng.integers(0, 256, size=(n, THUMB, THUMB), dtype=np.uint8)
    tracemalloc.start()
    dedupe = Deduplicator(near_bits=10)
    start = time.perf_counter()
    for i in range(0, n, 1000):
        dedupe.check(
            [str(k) for k in range(i, i + 1000)],
            [None] * 1000,
            list(hashes[i : i + 1000]),
            [Thumb(t, 160) for t in thumbs[i : i + 1000]],
        )
    took = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"near-duplicate index, {n} images x 9 hashes: built and queried in {took:.1f} s, "
        f"traced peak {peak / 2**20:.0f} MiB, estimate {dedupe.memory_bytes() / 2**20:.0f} MiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--repeat", type=int, default=3, help="warm baseline/scan pairs to time")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scanbench-"))
    root = args.keep or tmp / "corpus"
    try:
        start = time.perf_counter()
        corpus = build_corpus(root, copies_per_kind=args.copies)
        files = [str(p) for p in corpus.files()]
        print(f"corpus: {len(files)} files in {root} ({time.perf_counter() - start:.1f} s)")
        time_plain(files[:50], args.workers)  # warm the page cache and the pool
        plain = time_plain(files, args.workers)
        cold, _ = time_scan(root, args.workers)  # includes starting the fork server
        print(
            f"plain full decode (baseline), {args.workers} processes: {plain:.2f} s "
            f"({len(files) / plain:.0f} images/s); the first scan of the process, which also "
            f"starts the worker fork server: {cold:.2f} s, {cold / plain:.2f}x"
        )
        # Warm: the baseline and the scan alternate, so that both see the same load on a
        # shared machine; each pair gives one ratio.
        ratios: list[float] = []
        took: list[float] = []
        lines: list[ScanLine] = []
        for _ in range(args.repeat):
            plain = time_plain(files, args.workers)
            scan_s, lines = time_scan(root, args.workers)
            ratios.append(scan_s / plain)
            took.append(scan_s)
            print(
                f"  plain {plain:.2f} s, scan with dedup {scan_s:.2f} s ({len(files) / scan_s:.0f} "
                f"images/s): {scan_s / plain:.2f}x"
            )
        median = float(np.median(ratios))
        print(
            f"scan / plain decode, warm, {args.workers} processes: median {median:.2f}x "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} runs; goal <= 0.8x)"
        )
        took_median = float(np.median(took))
        readable = [str(root / n) for n, t in corpus.truth.items() if t != "corrupt"]
        said, theirs = time_cleanvision(files, readable)
        ratio = f", {theirs / took_median:.1f}x ours (goal >= 15x)" if theirs else ""
        print(f"cleanvision: {said}; ours took {took_median:.2f} s on all (median){ratio}")
        accuracy(corpus, lines)
        index_memory()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
