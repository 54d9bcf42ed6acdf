"""Does the built dataset train a better model? ``datasetagent evaluate RUN --test DIR``.

A small classifier — the seed labeler's regression on its image features, without the pool
adaptation (``SeedClassifier(transductive=False)``), CPU only — is trained twice: on the
export's train and val splits, and, where the run expanded an existing dataset, on that
dataset's images alone. Both are scored on ``--test``, a labelled folder in any layout the
importers read, which must be held out: a test image whose pixels are those of a training
sample is left out and counted (``overlap``), never scored.

Classification runs only so far (detection: a later step).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasetagent.errors import UsageError
from datasetagent.models.seed import SeedClassifier
from datasetagent.records import Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore
from datasetagent.tools.hashing import pixel_hash


def evaluate_run(run_dir: Path, test_dir: Path) -> dict[str, Any]:
    """The held-out accuracy of the classifier trained on the export, and on the existing
    dataset alone where there is one (``None`` otherwise), as plain data for ``--json``."""
    from datasetagent.pipeline import FINAL, final_samples

    db = run_dir / "run.db"
    if not db.is_file():
        raise UsageError(f"{run_dir} holds no run (no run.db); give a run folder")
    with RunStore(db) as store:
        spec = store.load_spec()
        if spec is None or not store.stage_done(FINAL, "split"):
            raise UsageError(
                f"the run in {run_dir} has not finished; finish it with "
                f"datasetagent build --resume -o {run_dir}"
            )
        if spec.task != "classification":
            raise UsageError(
                f"evaluate trains a classifier; the run in {run_dir} is a {spec.task} run "
                "(detection and segmentation evaluation is not built yet)"
            )
        exported = final_samples(store, spec)
        seeds = store.samples(status=["labelled"], origin="existing")
    blobs = BlobStore(run_dir)
    train = [s for s in exported if s.split in ("train", "val")]
    images, labels, skipped, overlap = _test_set(spec, test_dir, {s.id for s in [*train, *seeds]})
    if not images:
        raise UsageError(
            f"{test_dir} holds no image labelled with a class of the run "
            f"({', '.join(spec.class_names)}); give a labelled test folder"
        )
    result: dict[str, Any] = {
        "trained_on_export": _scored(train, blobs, spec, images, labels),
        "trained_on_seed": _scored(seeds, blobs, spec, images, labels) if seeds else None,
        "test": {
            "n": len(images),
            "path": str(test_dir),
            "skipped": skipped,
            "overlap": overlap,
        },
    }
    return result


def _test_set(
    spec: DatasetSpec, test_dir: Path, trained: set[str]
) -> tuple[list[Image.Image], list[str], int, int]:
    """The test folder's images with a class of the spec; how many had none; how many are
    pixel for pixel a training sample (``trained``: left out, as they are not held out)."""
    dataset = open_existing(test_dir)
    images: list[Image.Image] = []
    labels: list[str] = []
    skipped = overlap = 0
    for item in dataset.images():
        label = spec.resolve_class(item.label) if item.label else None
        if label is None:
            skipped += 1
            continue
        with Image.open(io.BytesIO(dataset.read(item.location))) as opened:
            img = opened.convert("L" if spec.image.color_mode == "L" else "RGB")
        if pixel_hash(img) in trained:
            overlap += 1
            continue
        images.append(img)
        labels.append(label)
    return images, labels, skipped, overlap


def _scored(
    train: Sequence[Sample],
    blobs: BlobStore,
    spec: DatasetSpec,
    images: list[Image.Image],
    labels: list[str],
) -> dict[str, Any]:
    model = SeedClassifier(transductive=False)
    model.fit([blobs.open_image(s.blob) for s in train], [s.label or "" for s in train])
    probs = model.probabilities(images)[:, : len(model.classes)]  # the classes, not "none"
    guessed = [model.classes[i] for i in np.argmax(probs, axis=1)]
    right = Counter(t for t, g in zip(labels, guessed, strict=True) if t == g)
    total = Counter(labels)
    confusion: dict[str, dict[str, int]] = {c: {} for c in spec.class_names}
    for t, g in zip(labels, guessed, strict=True):
        confusion[t][g] = confusion[t].get(g, 0) + 1
    return {
        "accuracy": round(sum(right.values()) / len(labels), 6),
        "per_class": {c: round(right[c] / total[c], 6) for c in spec.class_names if total[c]},
        "n_train": len(train),
        "confusion": confusion,
    }
