"""Labelling throughput of the CLIP backend against its own forward pass, in the same run.

The model is CLIP ViT-B/32 built from its published configuration with random weights (no
download; the compute is that of the real checkpoint: vision 768 wide, 12 layers, 12 heads,
32 px patches at 224 px; text 512 wide, 12 layers, 8 heads), saved with ``save_pretrained`` and
loaded by ``build_backend("clip", ...)`` like a hub checkpoint. Images are real photos
(benchmarks/corpus.py: scikit-learn's and, where installed, OpenCV's sample photos, cut into
640 px regions) written as JPEG files.

It times, at the same batch size, alternating the runs ``--repeats`` times and reporting the
median of each:

(a) the bare forward pass ``model.get_image_features(pixel_values)`` on tensors made beforehand,
    at every torch thread count from 1 to the usable cores; the best of these is the reference;
(b) the whole labelling path with the thread counts the backend chooses by default (it times
    its batches at each candidate count and keeps the fastest: ``models.hf_base.
    ThreadChooser``; ``--threads N`` passes the backend option instead, fixing it): JPEG
    files on disk → strict decode → ``prepare`` (OpenCV) → forward → class probabilities →
    ``Prediction`` list, with batch k+1 decoded and prepared on a background thread while
    batch k runs (``models.hf.run_overlapped``);
(c) the same path without the overlap, to show what the overlap buys.

The ratio (b)/best(a) is the share of the model's best speed on this machine that the default
labelling path keeps (goal >= 0.95, issue 10).

Usage: python benchmarks/label_bench.py [--images 128] [--batch 32] [--threads N] [--repeats 3]
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

import torch
from PIL import Image

from corpus import base_images, jpeg
from datasetagent.models import BackendConfig, ClassQuery, Prediction, Prepared, build_backend
from datasetagent.models.hf import run_overlapped
from datasetagent.models.hf_base import usable_cores
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
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="backend option (0: its default)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    counts = range(1, usable_cores() + 1)
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
                options={"threads": args.threads},
            ),
        )
        chosen = torch.get_num_threads()  # what the backend set up
        chooser = backend.threads
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

        def bare(threads: int) -> float:
            torch.set_num_threads(threads)
            try:
                return timed(forward_only)
            finally:
                torch.set_num_threads(chosen)

        forward_only()  # warm-up: first calls allocate and pick kernels
        whole(True)
        runs: dict[str, list[float]] = {f"a{n}": [] for n in counts} | {"b": [], "c": []}
        for _ in range(args.repeats):
            for n in counts:
                runs[f"a{n}"].append(bare(n))
            runs["b"].append(timed(lambda: whole(True)))
            runs["c"].append(timed(lambda: whole(False)))
        med = {k: statistics.median(v) for k, v in runs.items()}
        best = max(counts, key=lambda n: med[f"a{n}"])

    print(
        f"machine: {os.cpu_count()} CPU cores, {usable_cores()} usable (shared with other work; "
        f"load average {os.getloadavg()[0]:.2f}), torch {torch.__version__}"
    )
    print(
        f"model: CLIP ViT-B/32 from its config, random weights ({params / 1e6:.1f} M vision "
        f"parameters), float32 on CPU, batch {args.batch}"
    )
    print(f"images: {len(paths)} JPEG files of real photos, 640 px long side; {args.repeats} runs")
    for n in counts:
        each = ", ".join(f"{v:.1f}" for v in runs[f"a{n}"])
        print(f"(a) forward pass only, {n} thread(s): {med[f'a{n}']:.1f} images/s (runs: {each})")
    how = "backend option" if args.threads else "the backend's default"
    for key, label in (
        ("b", f"(b) files -> ... -> predictions, overlapped, threads by {how}"),
        ("c", "(c) the same path, serial"),
    ):
        each = ", ".join(f"{v:.1f}" for v in runs[key])
        print(f"{label}: {med[key]:.1f} images/s (runs: {each})")
    if chooser is not None:
        rates = ", ".join(f"{n}: {r:.1f}" for n, r in sorted(chooser.rates.items()))
        print(f"(b) the backend's timings, images/s by thread count: {rates}")
    print(f"best bare forward: {med[f'a{best}']:.1f} images/s with {best} thread(s)")
    print(f"ratio (b)/best(a): {med['b'] / med[f'a{best}']:.3f}  (goal >= 0.95)")
    print(f"ratio (c)/best(a): {med['c'] / med[f'a{best}']:.3f}  (without the overlap)")


if __name__ == "__main__":
    main()
