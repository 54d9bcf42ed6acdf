"""Small labelled samples with real image files, for the export and import tests.

Boxes include ones at every image edge, one reaching past the right edge (clipped) and a
degenerate one (dropped); masks include one with a hole and one in two parts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from datasetagent.records import Box, ClassLabel, Mask, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec, SplitName, TaskKind
from datasetagent.tools.masks import mask_to_rle

CLASSES = ("cat", "dog", "traffic light")
WIDTH, HEIGHT = 64, 48
LICENCES = ("CC-BY-4.0", "CC0-1.0", "user-supplied")


def spec_for(task: TaskKind, fmt: str = "coco") -> DatasetSpec:
    formats = ("imagefolder",) if task == "classification" else (fmt,)
    return DatasetSpec(
        name="pets",
        task=task,
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        formats=formats,
        request=f"pets for {task}",
    )


def _image(root: Path, k: int, rng: np.random.Generator) -> tuple[Path, str]:
    arr = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = root / f"img{k:03d}.{'jpg' if k % 4 == 3 else 'png'}"
    Image.fromarray(arr).save(path, quality=95)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _boxes(k: int, rng: np.random.Generator) -> list[Box]:
    boxes = []
    for j in range(1 + k % 3):
        w, h = (round(float(v), 3) for v in rng.uniform(4, 30, size=2))
        x = round(float(rng.uniform(0, WIDTH - w)), 3)
        y = round(float(rng.uniform(0, HEIGHT - h)), 3)
        boxes.append(Box(label=CLASSES[(k + j) % 3], labeler="owlv2", x=x, y=y, w=w, h=h))
    if k % 3 == 0:  # the whole image, touching every edge
        boxes.append(Box(label="dog", labeler="owlv2", x=0, y=0, w=WIDTH, h=HEIGHT))
    if k == 1:  # reaches past the right edge: clipped to it
        boxes.append(Box(label="cat", labeler="owlv2", x=50.5, y=10, w=20, h=8.25))
    if k == 2:  # a sliver: dropped as degenerate
        boxes.append(Box(label="cat", labeler="owlv2", x=10, y=10, w=0.4, h=12))
    return boxes


def _masks(k: int) -> list[Mask]:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    disc = np.hypot(yy - 20 - k % 5, xx - 30 - k % 7) < 9 + k % 4
    ring = disc & ~(np.hypot(yy - 20 - k % 5, xx - 30 - k % 7) < 3)
    parts = np.zeros((HEIGHT, WIDTH), bool)
    parts[2:9, 2 + k % 3 : 14] = True
    parts[38:46, 50:63] = True
    edge = np.zeros((HEIGHT, WIDTH), bool)
    edge[HEIGHT - 6 :, :] = True  # along the bottom edge, corner to corner
    masks = [ring if k % 2 else disc, parts]
    if k % 3 == 0:
        masks.append(edge)
    return [
        Mask(label=CLASSES[(k + j) % 3], labeler="owlv2+sam", rle=mask_to_rle(m))
        for j, m in enumerate(masks)
    ]


def make_samples(root: Path, task: TaskKind, n: int = 9, seed: int = 0) -> list[Sample]:
    """``n`` labelled samples with splits, their images written under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits: tuple[SplitName, ...] = ("train", "train", "val", "train", "test")
    out = []
    for k in range(n):
        path, digest = _image(root, k, rng)
        if task == "classification":
            anns: tuple[ClassLabel | Box | Mask, ...] = (
                ClassLabel(label=CLASSES[k % 3], labeler="clip", confidence=0.97),
            )
        elif task == "detection":
            anns = tuple(_boxes(k, rng))
        else:
            anns = tuple(_masks(k))
        out.append(
            Sample(
                id=digest,
                blob=str(path),
                width=WIDTH,
                height=HEIGHT,
                mode="RGB",
                origin="collected",
                provenance=Provenance(
                    source_kind="openverse",
                    location=f"https://example.org/photos/{k}",
                    licence=LICENCES[k % 3],
                    creator=f"Photographer {k} | studio" if k % 2 else None,
                ),
                annotations=anns,
                status="labelled",
                split=splits[k % len(splits)],
            )
        )
    return out


def blob_path(sample: Sample) -> Path:
    return Path(sample.blob)


#: The formats :func:`export_each_format` writes, by task.
EXPORTED: dict[TaskKind, tuple[str, ...]] = {
    "detection": ("coco", "yolo", "voc", "hf"),
    "classification": ("csv",),
}


def export_each_format(root: Path) -> Path:
    """One clean export of :func:`make_samples` per format in ``EXPORTED``, each in
    ``root/FORMAT`` (the images in ``root/img-TASK``); returns ``root``."""
    from datasetagent.export import export_samples

    for task, formats in EXPORTED.items():
        items = make_samples(root / f"img-{task}", task, n=6)
        for fmt in formats:
            export_samples(fmt, root / fmt, spec_for(task, fmt), items, blob_path, None)
    return root
