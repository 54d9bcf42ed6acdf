"""Does the built dataset train a better model? ``datasetagent evaluate RUN --test DIR``.

A model is trained twice: on the export's train and val splits, and, where the run expanded an
existing dataset, on that dataset's images alone. Both are scored on ``--test``, a labelled
folder in any layout the importers read, which must be held out: a test image whose pixels are
those of a training sample is left out and counted (``overlap``), never scored.

Classification: where an image embedder is configured (``--embedder NAME[:MODEL]``, else the
first of the run's labelers that embeds images, e.g. ``clip``), a linear probe: scikit-learn's
logistic regression on the embeddings, standardised (``linear-probe:clip:MODEL``); otherwise
the seed labeler's regression on its hand-made image features, without the pool adaptation
(``SeedClassifier(transductive=False)``, ``seed-features``), CPU only. Detection: COCO mAP of
a baseline or of the user's own detector (``evaluate_detect``).

The result is stored in the run (meta ``evaluation``); the run's ``report.html`` and the data
card (``README.md``) of each of its exports under ``RUN/export/`` are written again to show it.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from datasetagent.errors import UsageError
from datasetagent.evaluate_result import EVALUATION_META, Evaluation, Scores, TestSet
from datasetagent.records import Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore, run_lock
from datasetagent.store.blobs import write_atomic
from datasetagent.tools.hashing import pixel_hash

if TYPE_CHECKING:
    from datasetagent.evaluate_detect import DetectorCommand
    from datasetagent.models import ImageEmbedder

#: ``--embedder`` values that ask for the seed labeler's own image features.
NO_EMBEDDER = ("none", "seed-features")
#: Images loaded and embedded at a time.
CHUNK = 256


@dataclass
class Features:
    """How images become vectors: a model backend's embeddings, or (no ``embedder``) the
    seed labeler's hand-made features."""

    embedder: ImageEmbedder | None = None

    @property
    def name(self) -> str:
        return "seed-features" if self.embedder is None else self.embedder.name

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        from datasetagent.tools.features import feature_matrix

        if self.embedder is None:
            return feature_matrix(images).astype(np.float64)
        return np.asarray(self.embedder.embed(images), dtype=np.float64)

    def of_samples(self, samples: Sequence[Sample], blobs: BlobStore) -> np.ndarray:
        """The rows of ``samples``' stored images, read ``CHUNK`` at a time."""
        rows = [
            self([blobs.open_image(s.blob) for s in samples[i : i + CHUNK]])
            for i in range(0, len(samples), CHUNK)
        ]
        return np.concatenate(rows) if rows else np.zeros((0, 0))


def evaluate_run(
    run_dir: Path,
    test_dir: Path,
    *,
    embedder: str | None = None,
    detector: DetectorCommand | None = None,
    record: bool = True,
) -> Evaluation:
    """Train on the export, and on the existing dataset alone where there is one; score both
    on ``test_dir``. With ``record`` (the default) the result is stored in the run and its
    report and export data cards are written again to show it."""
    from datasetagent.pipeline import FINAL, final_samples

    db = run_dir / "run.db"
    if not db.is_file():
        raise UsageError(f"{run_dir} holds no run (no run.db); give a run folder")
    with run_lock(run_dir, "evaluate"), RunStore(db) as store:
        spec = store.load_spec()
        if spec is None or not store.stage_done(FINAL, "split"):
            raise UsageError(
                f"the run in {run_dir} has not finished; finish it with "
                f"datasetagent build --resume -o {run_dir}"
            )
        exported = final_samples(store, spec)
        seeds = store.samples(status=["labelled"], origin="existing")
        train = [s for s in exported if s.split in ("train", "val")]
        if detector is not None and spec.task == "classification":
            raise UsageError(
                f"the run in {run_dir} is a classification run; --detector-command "
                "serves detection and segmentation runs only"
            )
        if detector is not None and embedder is not None:
            raise UsageError(
                "--embedder chooses the features of the built-in models; a --detector-command "
                "trains its own: give one of them"
            )
        features = Features(open_embedder(spec, store, embedder))
        if spec.task == "classification":
            result = _classification(spec, BlobStore(run_dir), train, seeds, test_dir, features)
        else:
            from datasetagent.evaluate_detect import evaluate_detection

            result = evaluate_detection(
                spec, BlobStore(run_dir), train, seeds, test_dir, features, detector
            )
        if record:
            record_evaluation(run_dir, store, spec, result)
    return result


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_embedder(spec: DatasetSpec, store: RunStore, given: str | None) -> ImageEmbedder | None:
    """The embedder ``given`` (``NAME[:MODEL]``; ``none``: none), else the first of the run's
    labelers whose factory embeds images (``embeds``), built with the run's settings for it;
    None where there is none."""
    from datasetagent.config import check_labelers, stored_options
    from datasetagent.models import (
        BACKENDS,
        BackendConfig,
        ImageEmbedder,
        build_backend,
        class_queries,
        factory_flag,
        load_builtin_backends,
        parse_labeler,
    )

    if given is not None and given.strip().lower() in NO_EMBEDDER:
        return None
    options = stored_options(store)
    if given is None:
        labelers = options.labelers if options is not None else None
        load_builtin_backends()
        names = [(t, parse_labeler(t)[0]) for t in labelers or ()]
        # a labeler whose plugin is gone since the build embeds nothing here
        named = [t for t, n in names if n in BACKENDS and factory_flag(n, "embeds")]
        if not named:
            return None
        given = named[0]
    check_labelers([given])
    name, model = parse_labeler(given)
    settings = (options.backend_options or {}).get(name, {}) if options is not None else {}
    backend = build_backend(
        name,
        BackendConfig(
            classes=class_queries(spec), model=model, options=settings, seed=spec.splits.seed
        ),
    )
    if not isinstance(backend, ImageEmbedder):
        raise UsageError(
            f"{backend.name} makes no image embeddings; give --embedder clip[:MODEL] or "
            "siglip[:MODEL], or --embedder none for the seed labeler's image features"
        )
    return backend


# -- classification ----------------------------------------------------------------------------


def _classification(
    spec: DatasetSpec,
    blobs: BlobStore,
    train: Sequence[Sample],
    seeds: Sequence[Sample],
    test_dir: Path,
    features: Features,
) -> Evaluation:
    images, labels, skipped, overlap = _test_set(spec, test_dir, {s.id for s in [*train, *seeds]})
    if not images:
        raise UsageError(
            f"{test_dir} holds no image labelled with a class of the run "
            f"({', '.join(spec.class_names)}); give a labelled test folder, e.g. CLASS/image "
            "folders named after the run's classes"
        )
    probe = features.embedder is not None
    test_x = _chunked(features, images) if probe else None

    def scored(samples: Sequence[Sample]) -> Scores:
        if test_x is not None:
            guessed = _probe(features, samples, blobs, test_x)
        else:
            guessed = _seed_classifier(samples, blobs, images)
        return _scores(spec, labels, guessed, len(samples))

    return Evaluation(
        task="classification",
        model=f"linear-probe:{features.name}" if probe else features.name,
        trained_on_export=scored(train),
        trained_on_seed=scored(seeds) if seeds else None,
        test=TestSet(n=len(images), path=str(test_dir), skipped=skipped, overlap=overlap),
        when=now_iso(),
    )


def _chunked(features: Features, images: list[Image.Image]) -> np.ndarray:
    rows = [features(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    return np.concatenate(rows)


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


def _seed_classifier(
    train: Sequence[Sample], blobs: BlobStore, images: list[Image.Image]
) -> list[str]:
    from datasetagent.models.seed import SeedClassifier

    model = SeedClassifier(transductive=False)
    model.fit([blobs.open_image(s.blob) for s in train], [s.label or "" for s in train])
    probs = model.probabilities(images)[:, : len(model.classes)]  # the classes, not "none"
    return [model.classes[i] for i in np.argmax(probs, axis=1)]


def _probe(
    features: Features, train: Sequence[Sample], blobs: BlobStore, test_x: np.ndarray
) -> list[str]:
    """A logistic regression on standardised features of ``train``; its class for each row
    of ``test_x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = [s.label or "" for s in train]
    if len(set(labels)) < 2:
        raise UsageError(
            f"a linear probe needs images of at least 2 classes to train on (got "
            f"{dict(Counter(labels)) or 'none'}); build a dataset of 2 or more classes"
        )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features.of_samples(train, blobs), labels)
    return [str(c) for c in model.predict(test_x)]


def _scores(spec: DatasetSpec, labels: list[str], guessed: list[str], n_train: int) -> Scores:
    right = Counter(t for t, g in zip(labels, guessed, strict=True) if t == g)
    total = Counter(labels)
    confusion: dict[str, dict[str, int]] = {c: {} for c in spec.class_names}
    for t, g in zip(labels, guessed, strict=True):
        confusion[t][g] = confusion[t].get(g, 0) + 1
    return Scores(
        accuracy=round(sum(right.values()) / len(labels), 6),
        per_class={c: round(right[c] / total[c], 6) for c in spec.class_names if total[c]},
        n_train=n_train,
        confusion=confusion,
    )


# -- keeping the result --------------------------------------------------------------------------


def record_evaluation(
    run_dir: Path, store: RunStore, spec: DatasetSpec, evaluation: Evaluation
) -> list[Path]:
    """Store ``evaluation`` in the run and write again what shows it: ``RUN/report.html`` and
    the data card of each export in ``RUN/export/``. Returns the files written."""
    from datasetagent.export import is_export
    from datasetagent.export.datacard import with_evaluation
    from datasetagent.report import write_report

    store.set_meta(EVALUATION_META, evaluation.model_dump_json())
    written = [write_report(run_dir, store, spec)]
    root = run_dir / "export"
    for fmt in spec.formats:
        folder = root / fmt
        card = folder / "README.md"
        if folder.is_symlink() or not folder.is_dir() or not is_export(folder):
            continue
        if card.is_symlink() or not card.is_file():
            continue
        text = with_evaluation(card.read_text(encoding="utf-8"), evaluation)
        write_atomic(card, text.encode("utf-8"), mode=0o644)
        written.append(card)
    return written
