"""Size and render time of ``datasetagent report RUN`` for a run of N samples (default 10000).

The run store is written directly through ``RunStore`` (no build): N labelled samples over 10
classes, each its own small real JPEG blob (128×128 tiles of the photos bundled with
scikit-learn), a fifth of them enhanced (an SSIM), half from a web source with a page, title,
creator and licence URL; plus rejections by several reasons (near duplicates naming a kept
sample), samples held for review, events and one round's report, and the final split stage
done, as a finished build leaves them. Then ``datasetagent report RUN`` runs as a whole CLI
process: once (cold: the first run after the store was written; the OS file cache holds what
was just written) and three more times (warm: the median). The baseline, measured in the same
run, is ``datasetagent --version`` (the interpreter and CLI starting), so the ratio is what the
report itself costs.

Usage: python benchmarks/report_bench.py [N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from datasetagent.agents.supervision import SupervisionAgent
from datasetagent.records import ClassLabel, Provenance, Rejection, Sample
from datasetagent.spec import ClassSpec, DatasetSpec
from datasetagent.store import BlobStore, Candidate, RunStore

CLASSES = tuple(f"class{i}" for i in range(10))
SIDE = 128
REASONS = ("corrupt", "dark", "near_duplicate", "tiny", "low_information")


def tiles() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    out = []
    for photo in load_sample_images().images:
        for y in range(0, photo.shape[0] - SIDE, 60):
            for x in range(0, photo.shape[1] - SIDE, 60):
                out.append(Image.fromarray(photo[y : y + SIDE, x : x + SIDE]))
    return out


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_run(run: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    spec = DatasetSpec(
        classes=tuple(ClassSpec(name=c) for c in CLASSES),
        target_per_class=n // len(CLASSES),
        request=f"{n} photos of {len(CLASSES)} classes, for the report benchmark",
    )
    run.mkdir(parents=True)
    blobs = BlobStore(run)
    pictures = tiles()
    held, rejected = n // 30, n // 20
    total = n + held + rejected
    with RunStore(run / "run.db") as store:
        store.save_spec(spec)
        store.add_candidates(
            Candidate(source_kind="openverse", location=f"https://img.example/{i}.jpg",
                      licence="CC-BY-4.0")
            for i in range(total)
        )  # fmt: skip
        store.take_candidates(1, total, origin="collected", wanted=None)
        ids = [c.id for c in store.candidates_to_process(1)]
        for k in range(n + held):
            picture = pictures[k % len(pictures)]
            data = jpeg(picture, 70 + k % 25)  # distinct bytes, distinct blobs
            digest = hashlib.sha256(data + k.to_bytes(4, "big")).hexdigest()
            web = k % 2 == 0
            prov = Provenance(
                source_kind="openverse" if web else "local",
                location=f"https://img.example/{k}.jpg" if web else f"/data/photos/{k}.jpg",
                licence="CC-BY-4.0" if web else "user-supplied",
                creator=f"creator {k % 97}" if web else None,
                page=f"https://www.example/photo/{k}" if web else None,
                licence_url="https://creativecommons.org/licenses/by/4.0/" if web else None,
                title=f"photo {k}" if web else None,
            )
            label = CLASSES[k % len(CLASSES)]
            sample = Sample(
                id=digest,
                blob=blobs.put(digest, "jpg", data),
                width=SIDE,
                height=SIDE,
                mode="RGB",
                origin="collected",
                provenance=prov,
                annotations=(
                    ClassLabel(label=label, confidence=float(rng.uniform(0.9, 1.0)), labeler="b"),
                ),
                status="labelled" if k < n else "review",
                review_reasons=() if k < n else ("confidence 0.62 < 0.90",),
                scores={
                    "highlights": float(rng.uniform(0.5, 1)),
                    "shadows": float(rng.uniform(0, 0.3)),
                    "contrast": float(rng.uniform(10, 80)),
                    "entropy": float(rng.uniform(4, 7.9)),
                    "sharpness": float(rng.uniform(50, 3000)),
                },
                ssim=float(rng.uniform(0.85, 1.0)) if k % 5 == 0 else None,
            )
            store.record_outcome(ids[k], 1, sample)
        for j in range(rejected):
            k = n + held + j
            reason = REASONS[j % len(REASONS)]
            rej = Rejection(
                location=f"https://img.example/{k}.jpg",
                source_kind="openverse",
                reasons=(reason,),
                detail=f"{reason} detail",
                duplicate_of=f"https://img.example/{2 * j}.jpg"
                if reason == "near_duplicate"
                else None,
            )
            store.record_outcome(ids[k], 1, rej)
        for stage in ("select", "fetch", "process", "label", "supervise"):
            store.event(1, stage, f"{stage}: benchmark")
            store.mark_stage(1, stage)
        report = SupervisionAgent(store, spec).assess(1)
        store.save_report(report.model_copy(update={"verdict": "done"}))
        store.mark_stage(-1, "split")


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the run here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = (args.keep or Path(tmp)) / "run"
        start = time.perf_counter()
        make_run(run, args.n)
        print(f"run store of {args.n} samples written in {time.perf_counter() - start:.1f} s")
        cli = [sys.executable, "-m", "datasetagent"]
        base = statistics.median(timed([*cli, "--version"]) for _ in range(3))
        cold = timed([*cli, "report", str(run)])
        warm = statistics.median(timed([*cli, "report", str(run)]) for _ in range(3))
        page = run / "report.html"
        size = page.stat().st_size
        html = page.read_text(encoding="utf-8")
        print(f"report.html: {size / 1e6:.2f} MB, {html.count('<img ')} thumbnails, "
              f"{html.count('<svg ')} charts")  # fmt: skip
        print(f"datasetagent --version (baseline): {base:.2f} s")
        print(f"datasetagent report, cold: {cold:.2f} s ({cold / base:.1f}x baseline)")
        print(f"datasetagent report, warm (median of 3): {warm:.2f} s ({warm / base:.1f}x)")


if __name__ == "__main__":
    main()
