"""Time our OpenCV SSIM against a slow float64 numpy/scipy reference, in the same run.

Both get the same 512×512 greyscale pairs (a real photo and a noisy / blurred copy); prints the
median time per pair, the ratio, and the largest difference between the two results.
scikit-image is timed too when it happens to be installed (it is not a dependency).

Usage: python benchmarks/ssim_bench.py [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_sample_images

from datasetagent.tools.ssim import ssim, to_gray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import ssim_reference

Pair = tuple[np.ndarray, np.ndarray]


def pairs() -> list[Pair]:
    rng = np.random.default_rng(0)
    out: list[Pair] = []
    for photo in load_sample_images().images:
        g = cv2.resize(to_gray(photo), (512, 512), interpolation=cv2.INTER_AREA)
        noisy = np.clip(g + rng.normal(0, 10, g.shape), 0, 255).astype(np.uint8)
        out += [(g, noisy), (g, cv2.GaussianBlur(g, (0, 0), 2.0))]
    return out


def per_pair_ms(
    fn: Callable[[np.ndarray, np.ndarray], float], data: list[Pair], reps: int
) -> float:
    for a, b in data:  # warm up
        fn(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for a, b in data:
            fn(a, b)
        times.append((time.perf_counter() - start) / len(data) * 1e3)
    return statistics.median(times)


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    data = pairs()
    ours = per_pair_ms(ssim, data, reps * 10)
    ref = per_pair_ms(ssim_reference, data, reps)
    diff = max(abs(ssim(a, b) - ssim_reference(a, b)) for a, b in data)
    print(f"512x512 pairs: {len(data)}, cv2 threads: {cv2.getNumThreads()}")
    print(f"ours (OpenCV, float32, strips): {ours:8.2f} ms/pair")
    print(f"reference (scipy, float64):     {ref:8.2f} ms/pair   ratio {ref / ours:5.1f}x")
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        print("scikit-image: not installed, skipped")
    else:

        def sk(a: np.ndarray, b: np.ndarray) -> float:
            return float(
                structural_similarity(
                    a,
                    b,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=255,
                )
            )

        skt = per_pair_ms(sk, data, reps)
        skdiff = max(abs(ssim(a, b) - sk(a, b)) for a, b in data)
        print(f"scikit-image:                   {skt:8.2f} ms/pair   ratio {skt / ours:5.1f}x")
        print(f"max |ours - scikit-image|: {skdiff:.2e}")
    print(f"max |ours - reference|: {diff:.2e}")


if __name__ == "__main__":
    main()
