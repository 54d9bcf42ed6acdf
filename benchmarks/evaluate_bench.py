"""Does the expanded dataset train a better classifier than the seeds alone?

The expansion benchmark's data (``expansion_bench.make_data``: Fashion-MNIST, 20 labelled
seeds per class and a flat pool with defects; ``apt-get install dataset-fashion-mnist``) is
built offline with its request, then ``datasetagent evaluate RUN --test DIR --json`` runs as a
whole CLI process against ``--test-per-class`` images per class of Fashion-MNIST's own test
split (t10k), which the build never sees. Printed: the held-out accuracy of the classifier
trained on the export and of the same classifier trained on the seeds alone (the baseline,
computed in the same process), per class, and the time ``evaluate`` took; then again after a
simulated person's ``--review`` decisions on held-back samples (``expansion_bench.human_review``,
answering from the truth).

Usage: python benchmarks/evaluate_bench.py [--pool-per-class 900] [--seeds 20]
       [--test-per-class 100] [--review 300] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasetagent.pipeline import build
from expansion_bench import (
    CLASSES,
    REQUEST,
    expansion_spec,
    find_fashion_mnist,
    human_review,
    make_data,
    read_idx,
)


def test_folder(out: Path, per_class: int, seed: int) -> int:
    """``per_class`` images of each class from the t10k split, as CLASS/*.png."""
    src = find_fashion_mnist()
    images = read_idx(src / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(src / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    n = 0
    for k, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True)
        for i in rng.permutation(np.flatnonzero(labels == k))[:per_class]:
            Image.fromarray(images[i]).save(folder / f"t{i:05d}.png")
            n += 1
    return n


def evaluate(run: Path, test: Path) -> tuple[dict[str, Any], float]:
    """``datasetagent evaluate RUN --test TEST --json`` as a whole process: its result, and
    the seconds it took."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "datasetagent", "evaluate", str(run), "--test", str(test),
         "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed: {done.stderr.strip()}")
    return json.loads(done.stdout), took


def table(when: str, result: dict[str, Any]) -> None:
    export, seeds = result["trained_on_export"], result["trained_on_seed"]
    print(f"\n{when} ({result['model']}):")
    print(f"{'class':12} {'export':>8} {'seeds':>8}")
    for c in CLASSES:
        print(f"{c:12} {export['per_class'][c]:8.3f} {seeds['per_class'][c]:8.3f}")
    print(
        f"{'all':12} {export['accuracy']:8.3f} {seeds['accuracy']:8.3f}   "
        f"(trained on {export['n_train']} vs {seeds['n_train']} images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-per-class", type=int, default=900)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--review", type=int, default=300, help="then review this many held-back samples"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write data and run here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="evaluate-bench-"))
    if args.keep and root.exists():
        shutil.rmtree(root)
    try:
        data = make_data(
            root / "data", seeds=args.seeds, per_class=args.pool_per_class, seed=args.seed
        )
        spec = expansion_spec(data)
        start = time.perf_counter()
        build(spec, root / "run", workers=None)
        print(f"build '{REQUEST}': {time.perf_counter() - start:.1f} s")
        n = test_folder(root / "test", args.test_per_class, args.seed + 1)
        test = root / "test"
        result, took = evaluate(root / "run", test)
        print(
            f"held-out test: {n} images of Fashion-MNIST's t10k split; evaluate took {took:.1f} s"
        )
        table("straight after the build", result)
        if args.review:
            human_review(root / "run", data, audit=0, review=args.review)
            table(
                f"after {args.review} simulated review decisions", evaluate(root / "run", test)[0]
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
