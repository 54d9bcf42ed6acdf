"""Throughput of the seed-set labeler: fit on 20 seeds per class, label 10,000 images.

Images are scikit-learn's handwritten digits, upscaled to 32×32 with random shifts so that no
two are identical. For the regression alone (the baseline) and for the labeler adapted to the
pool (label propagation), as the Data Label agent drives it (``adapt`` on the round's batches,
then ``predict`` batch by batch, 256 a batch), prints the fit time, images/s of adapt+predict
and the accuracy reached. Usage: python benchmarks/seed_bench.py [POOL_SIZE]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from datasetagent.models.seed import SeedClassifier

BATCH = 256


def digit_pool(n: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    digits = load_digits()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        k = int(rng.integers(len(digits.images)))
        canvas = np.zeros((40, 40), dtype=np.float64)
        big = np.kron(digits.images[k] / 16.0, np.ones((4, 4)))
        dy, dx = rng.integers(0, 9, size=2)
        canvas[dy : dy + 32, dx : dx + 32] = big
        noisy = canvas + rng.normal(0, 0.03, canvas.shape)
        arr = (np.clip(noisy, 0, 1) * 255).astype(np.uint8)
        images.append(Image.fromarray(arr, "L").resize((32, 32)))
        labels.append(str(digits.target[k]))
    return images, labels


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    pool, truth = digit_pool(n, seed=1)
    seeds, seed_labels = [], []
    per_class: dict[str, int] = {}
    extra, extra_labels = digit_pool(2000, seed=2)
    for img, lab in zip(extra, extra_labels, strict=True):
        if per_class.get(lab, 0) < 20:
            seeds.append(img)
            seed_labels.append(lab)
            per_class[lab] = per_class.get(lab, 0) + 1
    base_rate = 0.0
    for transductive in (False, True):
        model = SeedClassifier(transductive=transductive)
        start = time.perf_counter()
        info = model.fit(seeds, seed_labels)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        model.adapt(pool[i : i + BATCH] for i in range(0, n, BATCH))
        preds = []
        for i in range(0, n, BATCH):
            preds.extend(model.predict(pool[i : i + BATCH]))
        label_s = time.perf_counter() - start
        rate = n / label_s
        base_rate = base_rate or rate
        acc = np.mean([p.label == t for p, t in zip(preds, truth, strict=True)])
        sure = [p.label == t for p, t in zip(preds, truth, strict=True) if p.confidence >= 0.9]
        print(
            f"{'adapted to the pool' if transductive else 'regression only':<20} "
            f"seeds {info.examples} ({len(per_class)} classes), fit {fit_s:.2f} s; "
            f"labelled {n} in {label_s:.2f} s: {rate:.0f} images/s ({rate / base_rate:.2f}x); "
            f"accuracy {acc:.3f}; {len(sure)} at confidence >= 0.9, accuracy "
            f"{np.mean(sure) if sure else float('nan'):.3f}"
        )


if __name__ == "__main__":
    main()
