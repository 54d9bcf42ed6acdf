"""Does the expanded dataset train a better classifier than the seeds alone?

The expansion benchmark's data (``expansion_bench.make_data``: Fashion-MNIST, 20 labelled
seeds per class and a flat pool with defects; ``apt-get install dataset-fashion-mnist``) is
built offline with its request, then ``datasetagent evaluate RUN --test DIR --json`` runs as a
whole CLI process against ``--test-per-class`` images per class of Fashion-MNIST's own test
split (t10k), which the build never sees. Printed: the held-out accuracy of the classifier
trained on the export and of the same classifier trained on the seeds alone (the baseline,
computed in the same process), per class, and the time ``evaluate`` took; the ceiling (the
same classifier on the seeds and ``--ceiling`` pool images with their true labels); then again
after a
simulated person's ``--review`` decisions on held-back samples (``expansion_bench.human_review``,
answering from the truth).

Usage: python benchmarks/evaluate_bench.py [--pool-per-class 900] [--seeds 20]
       [--test-per-class 100] [--ceiling 2100] [--review 300] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasetagent.pipeline import build
from expansion_bench import (
    CLASSES,
    REQUEST,
    BenchData,
    expansion_spec,
    find_fashion_mnist,
    human_review,
    make_data,
    read_idx,
    work_folder,
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


def ceiling(data: BenchData, test: Path, n: int, seed: int) -> str:
    """What the same classifier reaches trained on the seeds and ``n`` pool images with
    their true labels: what a perfectly labelled expansion of that size would give."""
    from datasetagent.models.seed import SeedClassifier

    images, labels = [], []
    for name in CLASSES:
        for path in sorted((test / name).glob("*.png")):
            with Image.open(path) as img:
                images.append(img.convert("L"))
            labels.append(name)
    pick = np.random.default_rng(seed).permutation(len(data.pool_images))[:n]
    model = SeedClassifier(transductive=False)
    model.fit(
        [*data.seed_images, *(data.pool_images[i] for i in pick)],
        [*data.seed_labels, *(data.pool_labels[i] for i in pick)],
    )
    probs = model.probabilities(images)[:, : len(model.classes)]
    right = sum(model.classes[k] == t for k, t in zip(probs.argmax(axis=1), labels, strict=True))
    return (
        f"ceiling: the same classifier on the seeds and {n} pool images with their true labels: "
        f"{right / len(labels):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-per-class", type=int, default=900)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ceiling", type=int, default=2100, help="pool images with true labels (0: skip)"
    )
    parser.add_argument(
        "--review", type=int, default=300, help="then review this many held-back samples"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write data and run here")
    args = parser.parse_args()
    with work_folder(args.keep, "evaluate-bench-") as root:
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
        if args.ceiling:
            print(f"\n{ceiling(data, test, args.ceiling, args.seed)}")
        if args.review:
            human_review(root / "run", data, audit=0, review=args.review)
            table(
                f"after {args.review} simulated review decisions", evaluate(root / "run", test)[0]
            )


if __name__ == "__main__":
    main()
