"""Labelling throughput of the CLIP backend against its own forward pass, in the same run.

The model is CLIP ViT-B/32 built from its published configuration with random weights (no
download; the compute is that of the real checkpoint: vision 768 wide, 12 layers, 12 heads,
32 px patches at 224 px; text 512 wide, 12 layers, 8 heads), saved with ``save_pretrained`` and
loaded by ``build_backend("clip", ...)`` like a hub checkpoint. Images are real photos
(benchmarks/corpus.py: scikit-learn's and, where installed, OpenCV's sample photos, cut into
640 px regions) written as JPEG files.

It times, at the same batch size and torch thread count, alternating the runs ``--repeats`` times
and reporting the median of each:

(a) the bare forward pass ``model.get_image_features(pixel_values)`` on tensors made beforehand;
(b) the whole labelling path: JPEG files on disk → strict decode → ``prepare`` (OpenCV) →
    forward → class probabilities → ``Prediction`` list, with batch k+1 decoded and prepared on
    a background thread while batch k runs (``models.hf.run_overlapped``);
(c) the same path without the overlap, to show what the overlap buys.

The ratio (b)/(a) is the share of the model's speed the labelling path keeps (goal >= 0.90).

torch runs on all cores but one by default (``--threads``): the preparation thread needs a core,
and an OpenMP pool that shares its cores with other work waits on its slowest thread at every
operation (on a busy 2-core machine, two threads made a forward pass vary from 2 s to 5.5 s; one
thread held it to 3.3-3.5 s).

Usage: python benchmarks/label_bench.py [--images 256] [--batch 32] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import cv2
import torch
from PIL import Image

from corpus import base_images, jpeg
from datasetagent.models import BackendConfig, ClassQuery, Prediction, Prepared, build_backend
from datasetagent.models.hf import run_overlapped
from datasetagent.models.hf_zeroshot import ZeroShotClassifier
from datasetagent.tools.decode import decode_strict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import clip_tokenizer  # the tests' hand-made tokenizer: no download

CLASSES = tuple(
    ClassQuery(name, (name.replace("_", " "),))
    for name in ("cat", "dog", "bird", "flower", "building", "car", "tree", "boat", "fish", "cup")
)
MAX_PIXELS = 50_000_000


def save_vit_b32(folder: Path) -> int:
    """CLIP ViT-B/32 with random weights and the processor of the published checkpoint."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=512,
    )
    model = CLIPModel(config)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return sum(p.numel() for p in model.vision_model.parameters())


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(islice(_cycle_images(), count)):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(jpeg(img, 90))
        paths.append(path)
    return paths


def _cycle_images() -> Iterator[Image.Image]:
    photos = list(base_images())
    while True:
        yield from photos


def load(paths: list[Path], backend: ZeroShotClassifier) -> Prepared:
    """Decode a batch of files strictly, as the pipeline does, and prepare it."""
    images = [decode_strict(p.read_bytes(), max_pixels=MAX_PIXELS).image for p in paths]
    return backend.prepare(images)


def timed(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    # one core is left to the thread that decodes and prepares the next batch
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)  # the overlap, not OpenCV's own pool, is what runs beside the model
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = save_vit_b32(root / "clip-vit-b32")
        paths = write_images(root / "images", args.images)
        backend = build_backend(
            "clip",
            BackendConfig(
                classes=CLASSES,
                model=str(root / "clip-vit-b32"),
                device="cpu",
                batch_size=args.batch,
            ),
        )
        if not isinstance(backend, ZeroShotClassifier):
            raise SystemExit("clip did not build a ZeroShotClassifier")
        batches = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]
        # (a) pre-made tensors: the images' own pixels, so the work is identical
        tensors = [
            torch.from_numpy(load(batch, backend).inputs["pixels"].pixel_values)
            for batch in batches
        ]
        model = backend.model

        def forward_only() -> int:
            with torch.inference_mode():
                for t in tensors:
                    model.get_image_features(pixel_values=t)
            return sum(len(t) for t in tensors)

        def whole(overlap: bool) -> int:
            preds: list[Prediction] = []

            def prepare(batch: list[Path]) -> Prepared:
                return load(batch, backend)

            if overlap:
                for part in run_overlapped(batches, prepare, backend.predict):
                    preds.extend(part)
            else:
                for batch in batches:
                    preds.extend(backend.predict(prepare(batch)))
            if len(preds) != len(paths):
                raise SystemExit(f"{len(preds)} predictions for {len(paths)} images")
            return len(preds)

        forward_only()  # warm-up: first calls allocate and pick kernels
        whole(True)
        runs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(args.repeats):
            runs["a"].append(timed(forward_only))
            runs["b"].append(timed(lambda: whole(True)))
            runs["c"].append(timed(lambda: whole(False)))
        med = {k: statistics.median(v) for k, v in runs.items()}

    print(
        f"machine: {os.cpu_count()} CPU cores (shared with other work; load average "
        f"{os.getloadavg()[0]:.2f}), torch {torch.__version__} with {args.threads} threads"
    )
    print(
        f"model: CLIP ViT-B/32 from its config, random weights ({params / 1e6:.1f} M vision "
        f"parameters), float32 on CPU, batch {args.batch}"
    )
    print(f"images: {len(paths)} JPEG files of real photos, 640 px long side; {args.repeats} runs")
    for key, label in (
        ("a", "(a) forward pass only, pre-made tensors"),
        ("b", "(b) files -> decode -> prepare -> forward -> predictions, overlapped"),
        ("c", "(c) the same path, serial"),
    ):
        each = ", ".join(f"{v:.1f}" for v in runs[key])
        print(f"{label}: {med[key]:.1f} images/s (runs: {each})")
    print(f"ratio (b)/(a): {med['b'] / med['a']:.3f}  (goal >= 0.90)")
    print(f"ratio (c)/(a): {med['c'] / med['a']:.3f}  (without the overlap)")


if __name__ == "__main__":
    main()
