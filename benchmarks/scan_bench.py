"""Scan benchmark: speed against a plain full decode, and accuracy per defect type.

Builds the corpus of benchmarks/corpus.py (real photos, planted defects), then, in one run:

* times whole processes: ``datasetagent scan CORPUS --jsonl ...`` (start-up, imports, the
  worker pool and deduplication included) against the baseline, a plain full Pillow decode of
  every file (``Image.open(p).convert("RGB")``) by a Python process with a pool of as many
  processes; first cold (the page cache dropped where this is allowed, else the first run of
  each), then warm, alternately ``--repeat`` times, printing each ratio and their median;
* times the fixed start-up: ``datasetagent scan`` of an empty folder and of one image;
* where cleanvision is installed, times it on the same files;
* scores precision and recall per defect type against the planted ground truth;
* measures the near-duplicate index's memory for 100k images.

The processes run from bytecode (kept in a temporary ``PYTHONPYCACHEPREFIX``), as an installed
package does, even where ``PYTHONDONTWRITEBYTECODE`` is set.

Usage: python benchmarks/scan_bench.py [--workers N] [--copies 100] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from corpus import NEAR_KINDS, Corpus, build_corpus
from datasetagent.scan import ScanLine
from datasetagent.tools.dedupe import THUMB, Deduplicator, Thumb

PLAIN = """
import sys
from multiprocessing import Pool
from PIL import Image

def decode(path):
    try:
        with Image.open(path) as img:
            return img.convert("RGB").width
    except Exception:  # the baseline only decodes; damaged files are skipped
        return 0

if __name__ == "__main__":
    files = open(sys.argv[1]).read().split("\\n")
    with Pool(int(sys.argv[2])) as pool:
        for _ in pool.imap(decode, files, chunksize=8):
            pass
"""


def child_env(pycache: Path) -> dict[str, str]:
    """The environment of the timed processes: this checkout's sources, from bytecode."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_cmd(file_list: Path, workers: int) -> list[str]:
    return [sys.executable, "-c", PLAIN, str(file_list), str(workers)]


def scan_cmd(root: Path, workers: int, out: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "datasetagent", "scan", str(root)),
        *("--workers", str(workers), "--jsonl", str(out)),
    ]


def drop_page_cache() -> bool:
    """Drop the page cache (root only); False where that is not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\\n")
    except OSError:
        return False
    return True


def read_lines(path: Path) -> list[ScanLine]:
    return [ScanLine.model_validate_json(x) for x in path.read_text().splitlines()]


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
    # Each planted group is an original and one copy: one of the two (the better, by the
    # scan's rule: tests/test_dedupe.py) must be kept and the other flagged as a copy of it.
    groups: dict[int, list[str]] = {}
    for name, g in corpus.group.items():
        groups.setdefault(g, []).append(name)
    partner = {a: b for a, b in groups.values()} | {b: a for a, b in groups.values()}
    kind_of = {n: corpus.copy_kind.get(n) or corpus.copy_kind[partner[n]] for n in partner}
    flagged = {
        n for n, line in by_name.items() if {"exact_duplicate", "near_duplicate"} & set(line.issues)
    }
    for label, kinds, issue in (
        ("exact_duplicate", ("exact",), "exact_duplicate"),
        ("near_duplicate", NEAR_KINDS, "near_duplicate"),
    ):
        pairs = [sorted(m) for m in groups.values() if kind_of[m[0]] in kinds]
        said = {n for n in flagged if issue in by_name[n].issues}
        right = {
            n
            for pair in pairs
            for n in pair
            if n in said
            and partner[n] not in flagged
            and Path(by_name[n].duplicate_of or "").name == partner[n]
        }
        members = {n for pair in pairs for n in pair}
        print(f"{label:16s} {pr(len(right), len(said - members), len(pairs) - len(right))}")
    for kind in NEAR_KINDS:
        pairs = [m for m in groups.values() if kind_of[m[0]] == kind]
        found = sum(1 for m in pairs if set(m) & flagged)
        print(f"  near, {kind:11s} recall {found / max(len(pairs), 1):.3f} ({found}/{len(pairs)})")


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
        env = child_env(tmp / "pycache")
        file_list = tmp / "files.txt"
        file_list.write_text("\n".join(files))
        out = tmp / "scan.jsonl"
        plain, scan = plain_cmd(file_list, args.workers), scan_cmd(root, args.workers, out)
        empty, one = tmp / "empty", tmp / "one"
        empty.mkdir()
        one.mkdir()
        shutil.copy(files[0], one / "photo.jpg")
        timed(scan_cmd(one, args.workers, tmp / "s.jsonl"), env)  # compile the bytecode
        dropped = drop_page_cache()
        cold_plain = timed(plain, env)
        if dropped:
            drop_page_cache()
        cold_scan = timed(scan, env)
        how = "page cache dropped before each" if dropped else "first run of each"
        print(
            f"cold ({how}), {args.workers} processes: plain full decode {cold_plain:.2f} s, "
            f"datasetagent scan {cold_scan:.2f} s: {cold_scan / cold_plain:.2f}x"
        )
        # Warm: the baseline and the scan alternate, so that both see the same load on a
        # shared machine; each pair gives one ratio.
        ratios: list[float] = []
        took: list[float] = []
        for _ in range(args.repeat):
            plain_s, scan_s = timed(plain, env), timed(scan, env)
            ratios.append(scan_s / plain_s)
            took.append(scan_s)
            print(
                f"  plain {plain_s:.2f} s ({len(files) / plain_s:.0f} images/s), scan with dedup "
                f"{scan_s:.2f} s ({len(files) / scan_s:.0f} images/s): {scan_s / plain_s:.2f}x"
            )
        median = float(np.median(ratios))
        print(
            f"whole datasetagent scan process / plain decode process, warm, {args.workers} "
            f"processes: median {median:.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x over "
            f"{len(ratios)} runs; goal <= 0.8x)"
        )
        for label, folder in (("an empty folder", empty), ("one image", one)):
            runs = [timed(scan_cmd(folder, args.workers, tmp / "s.jsonl"), env) for _ in range(5)]
            print(
                f"start-up, datasetagent scan of {label}: median {np.median(runs):.2f} s "
                f"(min {min(runs):.2f}; goal <= 0.3 s)"
            )
        lines = read_lines(out)
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
