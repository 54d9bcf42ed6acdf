"""Small real test images (scikit-learn's digits and sample photos) and writers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from datasetagent.store import Candidate


def digit_images(
    n_per_class: int, *, classes: tuple[int, ...] = tuple(range(10)), offset: int = 0
) -> list[tuple[Image.Image, str]]:
    """Real handwritten digits rendered at 32×32 grey, ``n_per_class`` of each class.

    Digits are taken in a fixed shuffled order (the bundled order groups writers), so calls
    with disjoint ``offset`` ranges give disjoint images.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    out: list[tuple[Image.Image, str]] = []
    for c in classes:
        idx = order[d.target[order] == c][offset : offset + n_per_class]
        for i in idx:
            img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8), mode="L")
            out.append((img.resize((32, 32), Image.Resampling.BILINEAR), str(c)))
    return out


def photos() -> list[Image.Image]:
    """The two colour photos bundled with scikit-learn (427×640)."""
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(a) for a in load_sample_images().images]


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_class_folders(
    root: Path, items: list[tuple[Image.Image, str]], prefix: str = "img"
) -> list[Path]:
    paths = []
    for k, (img, label) in enumerate(items):
        path = root / label / f"{prefix}_{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(img))
        paths.append(path)
    return paths


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Slow float64 SSIM straight from Wang et al. (2004), with scipy's Gaussian filter."""
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(z: np.ndarray) -> np.ndarray:
        out: np.ndarray = gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")
        return out

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    if min(a.shape) < 11:
        return float(smap.mean())
    return float(smap[5:-5, 5:-5].mean())


class PathSource:
    """A ``local`` source that lists nothing and reads any path (what the processing agent
    needs of a source, for candidates a test adds to the store itself)."""

    kind = "local"

    def candidates(self) -> Iterator[Candidate]:
        return iter(())

    def read(self, location: str) -> bytes:
        return Path(location).read_bytes()
