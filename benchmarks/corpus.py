"""A corpus of real-photo JPEGs with planted defects of known ground truth, for benchmarks.

Photos: the two bundled with scikit-learn and, where installed (Debian ``opencv-doc``), the
OpenCV sample photos. Each photo is cut into a 3×3 grid of non-overlapping regions; every
region, its mirror image and both turned a quarter, becomes a distinct base image (long side
640 px). Defects are
planted copies or damaged files; every file's expected issues are recorded.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples")
# Stereo pairs and edited copies among the OpenCV samples: keep one of each.
_SECOND_OF_PAIR = {
    "aloeR",
    "right",
    "leuvenB",
    "graf3",
    "Blender_Suzanne2",
    "rubberwhale2",
    "ela_modified",
    "aero3",
}
NEAR_KINDS = ("reencoded", "resized", "cropped", "brightened")


def photos() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    out = [Image.fromarray(a) for a in load_sample_images().images]
    if OPENCV_DOC.is_dir():
        for path in sorted(OPENCV_DOC.rglob("*.jpg")):
            if path.stem in _SECOND_OF_PAIR:
                continue
            with Image.open(path) as img:
                if img.mode == "RGB" and min(img.size) >= 300:
                    out.append(img.copy())
    return out


def base_images(grid: int = 3, side: int = 640) -> Iterator[Image.Image]:
    for photo in photos():
        w, h = photo.size
        for gx in range(grid):
            for gy in range(grid):
                box = (gx * w // grid, gy * h // grid, (gx + 1) * w // grid, (gy + 1) * h // grid)
                region = photo.crop(box)
                scale = side / max(region.size)
                region = region.resize(
                    (round(region.width * scale), round(region.height * scale)),
                    Image.Resampling.LANCZOS,
                )
                turned = region.transpose(Image.Transpose.ROTATE_90)
                yield from (region, ImageOps.mirror(region), turned, ImageOps.mirror(turned))


def jpeg(img: Image.Image, quality: int = 90, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def with_comment(data: bytes, text: bytes = b"copied by a user") -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, identical pixels."""
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return data[:2] + segment + data[2:]


@dataclass
class Corpus:
    root: Path
    #: file name -> the issue it must be reported with ("" for a clean image)
    truth: dict[str, str] = field(default_factory=dict)
    #: file name -> kind of planted near or exact copy
    copy_kind: dict[str, str] = field(default_factory=dict)
    #: file name -> group id, for files of a duplicate group (the original included)
    group: dict[str, int] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return sorted(self.root.iterdir())


def build_corpus(root: Path, *, copies_per_kind: int = 100, seed: int = 0) -> Corpus:
    """Write the corpus; names are random so that defects are not grouped by name."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    bases = list(base_images())
    entries: list[tuple[bytes, str, str, int | None]] = []  # data, truth, copy kind, group
    for img in bases:
        entries.append((jpeg(img, rng.randint(80, 95)), "", "", None))
    picks = rng.sample(range(len(bases)), min(len(bases), copies_per_kind * 6))
    it = iter(picks)
    for kind in (*NEAR_KINDS, "exact"):
        for _ in range(copies_per_kind):
            i = next(it)
            img = bases[i]
            if kind == "reencoded":
                data = jpeg(img, rng.randint(30, 70))
            elif kind == "resized":
                f = rng.choice([0.5, 0.6, 0.75, 1.5, 2.0])
                data = jpeg(img.resize((round(img.width * f), round(img.height * f))), 90)
            elif kind == "cropped":
                w, h = img.size
                cut = [rng.uniform(0, 0.1) * (w if k % 2 == 0 else h) for k in range(4)]
                keep = rng.sample(range(4), rng.randint(1, 4))  # crop one to four sides
                cut = [c if k in keep else 0 for k, c in enumerate(cut)]
                data = jpeg(img.crop((cut[0], cut[1], w - cut[2], h - cut[3])), 90)
            elif kind == "brightened":
                data = jpeg(ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15)), 90)
            else:  # exact: the same file, or the same JPEG data with a comment added
                data = entries[i][0] if rng.random() < 0.5 else with_comment(entries[i][0])
            entries.append((data, "dup", kind, i))
            old = entries[i]
            entries[i] = (old[0], old[1], old[2], i)
    for i in rng.sample(range(len(bases)), copies_per_kind):
        entries.append(
            (
                jpeg(ImageEnhance.Brightness(bases[i]).enhance(rng.uniform(0.05, 0.2)), 90),
                "dark",
                "",
                None,
            )
        )
    for i in rng.sample(range(len(bases)), copies_per_kind // 2):
        small = bases[i].resize((rng.randint(8, 30), rng.randint(8, 30)))
        entries.append((jpeg(small, 90), "tiny", "", None))
    for k in range(copies_per_kind // 2):
        good = jpeg(bases[rng.randrange(len(bases))], 90)
        bad = [
            b"",
            b"<!DOCTYPE html><html><body>404</body></html>",
            good[: len(good) // 2],
            good[: len(good) - 200],
        ][k % 4]
        entries.append((bad, "corrupt", "", None))
    names = list(range(len(entries)))
    rng.shuffle(names)
    corpus = Corpus(root)
    for (data, truth, kind, grp), n in zip(entries, names, strict=True):
        name = f"{n:06d}.jpg"
        (root / name).write_bytes(data)
        corpus.truth[name] = truth
        if kind:
            corpus.copy_kind[name] = kind
        if grp is not None:
            corpus.group[name] = grp
    return corpus
