"""The Ray Data executor against the local one: whole CLI builds of the same pool, in one run.

A pool of Fashion-MNIST photos (Debian's ``dataset-fashion-mnist``), one folder per class,
scaled up to ``--side`` pixels and saved as JPEGs, is built from the command line as a whole
process each time: the local executor (all cores, and one worker), then Ray Data with a local
runtime of 1 and of 2 CPUs. Prints each wall time, and that of its processing stage (the
stage Ray runs; from the run's stage records), with their ratios against the local executor
on all cores, and Ray's start-up (starting and stopping a local runtime) measured apart. Every
build must export the same files (checked).

Usage: python benchmarks/ray_bench.py [--images 3000] [--side 224]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from datasetagent.runtime.ray import RayExecutor
from expansion_bench import CLASSES, find_fashion_mnist, read_idx


def make_pool(root: Path, images: int, side: int) -> int:
    """``images`` Fashion-MNIST photos, as many a class, one folder per class; returns the
    number a class."""
    src = find_fashion_mnist()
    pixels = read_idx(src / "train-images-idx3-ubyte.gz")
    labels = read_idx(src / "train-labels-idx1-ubyte.gz")
    per_class = images // len(CLASSES)
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == k)[:per_class]:
            img = Image.fromarray(pixels[i], "L").resize((side, side), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            (folder / f"{name}_{i:05d}.jpg").write_bytes(buf.getvalue())
    return per_class


def stage_seconds(run: Path, stage: str) -> float:
    """Seconds the run spent in ``stage``, every round's: from the end of the stage before it
    (the stages table records when each ended) to its own end."""
    with sqlite3.connect(run / "run.db") as con:
        ends = con.execute("SELECT stage, finished FROM stages ORDER BY finished").fetchall()
    return sum(t - ends[k - 1][1] for k, (name, t) in enumerate(ends) if name == stage and k)


def build(pool: Path, run: Path, per_class: int, *flags: str) -> tuple[float, str]:
    """Wall time of one CLI build, and a digest of everything it exported."""
    request = f"{', '.join(CLASSES[:-1])} and {CLASSES[-1]}, {per_class} images per class"
    args = [sys.executable, "-m", "datasetagent", "build", request]
    args += ["--source", str(pool), "-o", str(run), "--json", *flags]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"build {' '.join(flags)} failed: {out.stderr.strip()[-500:]}")
    exported = json.loads(out.stdout)["exported"]
    digest = hashlib.sha256()
    export = run / "export"
    for path in sorted(p for p in export.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(export)).encode() + b"\0" + path.read_bytes())
    return wall, f"{exported} exported, export sha256 {digest.hexdigest()[:12]}"


def ray_startup() -> tuple[float, float]:
    """Seconds to start a local 2-CPU Ray runtime (``ray.init`` with its import), and to stop
    it, in this process."""
    start = time.perf_counter()
    executor = RayExecutor(2)
    started = time.perf_counter()
    executor.close()
    return started - start, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--side", type=int, default=224)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="raybench") as tmp:
        root = Path(tmp)
        per_class = make_pool(root / "pool", args.images, args.side)
        n = per_class * len(CLASSES)
        print(f"pool: {n} Fashion-MNIST JPEGs at {args.side}x{args.side}, {len(CLASSES)} classes")
        print(f"cores: {os.cpu_count()}, load average before: {load:.2f}")
        runs = {
            "local, all cores": ["--executor", "local"],
            "local, 1 worker": ["--executor", "local", "--workers", "1"],
            "ray, 1 CPU": ["--executor", "ray", "--workers", "1"],
            "ray, 2 CPUs": ["--executor", "ray", "--workers", "2"],
        }
        times: dict[str, float] = {}
        processing: dict[str, float] = {}
        outputs: set[str] = set()
        for k, (name, flags) in enumerate(runs.items()):
            times[name], output = build(root / "pool", root / f"run{k}", per_class, *flags)
            processing[name] = stage_seconds(root / f"run{k}", "process")
            outputs.add(output)
            print(f"{name:18s} {times[name]:7.2f} s   {output}", flush=True)
        startup, shutdown = ray_startup()
    base, base_proc = times["local, all cores"], processing["local, all cores"]
    print()
    print(f"{'':18s} {'whole build':>24s}   {'processing stage':>26s}")
    for name, wall in times.items():
        proc = processing[name]
        print(
            f"{name:18s} {wall:7.2f} s {wall / base:5.2f}x local   "
            f"{proc:7.2f} s {proc / base_proc:5.2f}x ({n / proc:6.1f} images/s)"
        )
    print(f"ray start-up (a local 2-CPU runtime): {startup:.2f} s, shut-down {shutdown:.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if len(outputs) != 1:
        sys.exit(f"the builds exported different datasets: {sorted(outputs)}")
    print("every build exported the same files")


if __name__ == "__main__":
    main()
