"""Export throughput and peak memory per format, for a given number of annotations.

Each (format, size) runs in a fresh subprocess: it builds the samples (10 objects per image, on
eight 128×128 tiles of real photos, reused), loads the libraries, notes its peak RSS, exports,
and reports the time and how far the peak RSS rose during the export. The baseline, measured
in the same run, is ``imagefolder`` of the same images (copying files and writing the
manifest, data card and attribution that every format writes): the ratio is what the
annotations themselves cost. Running two sizes shows whether memory grows with the dataset
(streamed exports should not). Reading the export back (``open_existing``, which holds the
whole dataset's labels in memory by design) is timed too.

Usage: python benchmarks/export_bench.py [ANNOTATIONS ...] [--task detection|segmentation]
       (default: 10000 100000, detection and segmentation)
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from datasetagent.export import export_samples
from datasetagent.records import Box, ClassLabel, Mask, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec, TaskKind
from datasetagent.tools.masks import mask_to_rle

PER_IMAGE = 10
SIDE = 128
CLASSES = tuple(f"class{i}" for i in range(8))
FORMATS: dict[TaskKind, tuple[str, ...]] = {
    "classification": ("imagefolder",),
    "detection": ("coco", "yolo", "voc", "hf"),
    "segmentation": ("coco", "coco-polygons", "yolo", "voc", "hf"),
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _images(root: Path) -> list[Path]:
    from sklearn.datasets import load_sample_images

    out = []
    for k, photo in enumerate(load_sample_images().images):
        for j in range(4):
            tile = photo[j * 90 : j * 90 + SIDE, j * 120 : j * 120 + SIDE]
            path = root / f"tile{k}{j}.png"
            Image.fromarray(tile).save(path)
            out.append(path)
    return out


def samples(task: TaskKind, annotations: int, images: list[Path]) -> list[Sample]:
    rng = np.random.default_rng(0)
    n_images = max(1, annotations // PER_IMAGE) if task != "classification" else annotations
    yy, xx = np.mgrid[:SIDE, :SIDE]
    discs = [np.hypot(yy - 20 - 9 * k, xx - 30 - 7 * k) < 6 + k for k in range(PER_IMAGE)]
    rles = [mask_to_rle(d) for d in discs] if task == "segmentation" else []
    out = []
    for i in range(n_images):
        anns: tuple[ClassLabel | Box | Mask, ...]
        if task == "classification":
            anns = (ClassLabel(label=CLASSES[i % len(CLASSES)], labeler="b"),)
        elif task == "detection":
            xy = rng.uniform(0, SIDE - 20, size=(PER_IMAGE, 2))
            wh = rng.uniform(2, 20, size=(PER_IMAGE, 2))
            anns = tuple(
                Box(label=CLASSES[(i + j) % len(CLASSES)], labeler="b", x=x, y=y, w=w, h=h)
                for j, ((x, y), (w, h)) in enumerate(zip(xy.tolist(), wh.tolist(), strict=True))
            )
        else:
            anns = tuple(
                Mask(label=CLASSES[(i + j) % len(CLASSES)], labeler="b", rle=rle)
                for j, rle in enumerate(rles)
            )
        out.append(
            Sample(
                id=f"{i:016x}" + "0" * 48,
                blob=str(images[i % len(images)]),
                width=SIDE,
                height=SIDE,
                mode="RGB",
                origin="collected",
                provenance=Provenance(
                    source_kind="bench", location=f"https://example.org/{i}", licence="CC0-1.0"
                ),
                annotations=anns,
                status="labelled",
                split=("train", "train", "train", "val", "test")[i % 5],
            )
        )
    return out


def child(fmt: str, task: TaskKind, annotations: int) -> dict[str, float]:
    import pyarrow.parquet  # noqa: F401  (loaded before the baseline RSS: not data memory)
    import pycocotools.mask  # noqa: F401

    from datasetagent.export import known_formats
    from datasetagent.sources.existing import open_existing

    known_formats()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = samples(task, annotations, _images(root))
        classes = tuple(ClassSpec(name=c) for c in CLASSES)
        spec = DatasetSpec(task=task, classes=classes, formats=(fmt,))
        before = _rss_mib()
        start = time.perf_counter()
        out = export_samples(fmt, root / "out", spec, items, lambda s: Path(s.blob), None)
        seconds = time.perf_counter() - start
        grew = _rss_mib() - before
        start = time.perf_counter()
        imported = len(open_existing(out))
        read = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out)
    return {
        "images": len(items),
        "seconds": seconds,
        "rss_growth_mib": grew,
        "rss_before_mib": before,
        "import_seconds": read,
        "imported": imported,
        "export_mib": size / 2**20,
    }


def run(fmt: str, task: TaskKind, annotations: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", fmt, task, str(annotations)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], argv[2], int(argv[3]))))  # type: ignore[arg-type]
        return
    tasks: tuple[TaskKind, ...] = ("detection", "segmentation")
    if "--task" in argv:
        at = argv.index("--task")
        tasks = (argv[at + 1],)  # type: ignore[assignment]
        argv = argv[:at] + argv[at + 2 :]
    sizes = [int(a) for a in argv] or [10_000, 100_000]
    print(f"{PER_IMAGE} objects per {SIDE}x{SIDE} image; peak RSS growth measured in a subprocess")
    print(
        f"{'task':<13}{'format':<15}{'annotations':>12}{'images':>8}{'s':>8}{'ann/s':>10}"
        f"{'vs base':>9}{'RSS+ MiB':>10}{'MiB out':>9}{'import s':>10}"
    )
    for n in sizes:
        base = run("imagefolder", "classification", max(1, n // PER_IMAGE))
        print(
            f"{'(baseline)':<13}{'imagefolder':<15}{'-':>12}{base['images']:>8.0f}"
            f"{base['seconds']:>8.2f}{'-':>10}{1:>9.2f}{base['rss_growth_mib']:>10.1f}"
            f"{base['export_mib']:>9.1f}{base['import_seconds']:>10.2f}"
        )
        for task in tasks:
            for fmt in FORMATS[task]:
                r = run(fmt, task, n)
                print(
                    f"{task:<13}{fmt:<15}{n:>12}{r['images']:>8.0f}{r['seconds']:>8.2f}"
                    f"{n / r['seconds']:>10.0f}{r['seconds'] / base['seconds']:>9.2f}"
                    f"{r['rss_growth_mib']:>10.1f}{r['export_mib']:>9.1f}"
                    f"{r['import_seconds']:>10.2f}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
