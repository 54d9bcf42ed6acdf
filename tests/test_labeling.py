from __future__ import annotations

import numpy as np
import pytest

from datasetagent.agents.labeling import DataLabelAgent
from datasetagent.errors import NoLabelerError
from datasetagent.models import Prediction
from datasetagent.models.seed import SeedClassifier
from datasetagent.records import Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec
from datasetagent.store import BlobStore, RunStore
from helpers import digit_images, photos


@pytest.fixture(scope="module")
def fitted() -> SeedClassifier:
    seeds = digit_images(20)
    model = SeedClassifier()
    model.fit([im for im, _ in seeds], [lab for _, lab in seeds])
    return model


def test_seed_classifier_labels_unseen_digits(fitted: SeedClassifier) -> None:
    pool = digit_images(60, offset=20)
    preds = fitted.predict([im for im, _ in pool])
    truth = np.array([lab for _, lab in pool])
    labels = np.array([p.label for p in preds])
    conf = np.array([p.confidence for p in preds])
    assert (labels == truth).mean() > 0.93
    # confident labels are more accurate than the rest, and about as accurate as claimed
    sure = conf >= 0.9
    assert sure.mean() > 0.6
    assert (labels[sure] == truth[sure]).mean() > 0.97
    ok = labels == truth
    bins = np.digitize(conf, [0.5, 0.7, 0.9])
    ece = sum(
        abs(ok[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    )
    assert ece < 0.06
    assert all(abs(sum(p.probs.values()) - 1) < 1e-6 for p in preds)
    assert fitted.fit_info is not None
    assert fitted.fit_info.cv_accuracy > 0.85


def test_seed_classifier_needs_two_classes() -> None:
    seeds = digit_images(5, classes=(3,))
    with pytest.raises(NoLabelerError, match="at least 2 classes"):
        SeedClassifier().fit([im for im, _ in seeds], [lab for _, lab in seeds])


def test_seed_classifier_on_colour_photos() -> None:
    # two real photos, cut into tiles: the classifier must tell the scenes apart
    tiles, labels = [], []
    for name, photo in zip(("china", "flower"), photos(), strict=True):
        for x in range(0, 600, 40):
            for y in range(0, 380, 40):
                tiles.append(photo.crop((x, y, x + 40, y + 40)))
                labels.append(name)
    order = np.random.default_rng(0).permutation(len(tiles))
    train, test = order[:60], order[60:]
    model = SeedClassifier()
    model.fit([tiles[i] for i in train], [labels[i] for i in train])
    preds = model.predict([tiles[i] for i in test])
    acc = np.mean([p.label == labels[i] for p, i in zip(preds, test, strict=True)])
    assert acc > 0.9


class FixedClassifier:
    """Scripted classifier: returns the predictions given, in order (tests the agent's policy)."""

    name = "scripted"

    def __init__(self, preds: list[Prediction]) -> None:
        self.preds = preds

    @property
    def classes(self) -> tuple[str, ...]:
        return ("cat", "dog")

    def predict(self, images: list[object]) -> list[Prediction]:
        out, self.preds = self.preds[: len(images)], self.preds[len(images) :]
        return out


def _store_with(
    tmp_path: object, hints: list[str | None]
) -> tuple[RunStore, BlobStore, list[Sample]]:
    from pathlib import Path

    from PIL import Image

    from helpers import encode

    root = Path(str(tmp_path))
    store = RunStore(root / "run.db")
    blobs = BlobStore(root)
    samples = []
    for i, hint in enumerate(hints):
        blob = blobs.put(f"{i:064x}", "png", encode(Image.new("L", (8, 8), i * 20)))
        samples.append(
            Sample(
                id=f"{i:064x}",
                blob=blob,
                width=8,
                height=8,
                mode="L",
                origin="collected",
                provenance=Provenance(
                    source_kind="local",
                    location=f"/x/{i}.png",
                    licence="user-supplied",
                    source_label=hint,
                ),
            )
        )
    return store, blobs, samples


def test_label_policy(tmp_path: object) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="cat"), ClassSpec(name="dog")))
    store, blobs, samples = _store_with(tmp_path, ["cat", "cat", None, None])
    clf = FixedClassifier(
        [
            Prediction("cat", 0.99, {"cat": 0.99, "dog": 0.01}),  # agrees with its folder
            Prediction("dog", 0.97, {"cat": 0.03, "dog": 0.97}),  # confidently disagrees
            Prediction("dog", 0.95, {"cat": 0.05, "dog": 0.95}),  # confident, no folder
            Prediction("cat", 0.60, {"cat": 0.60, "dog": 0.40}),  # unsure
        ]
    )
    out = DataLabelAgent(store, blobs, spec, clf).label_batch(samples)
    assert [(s.status, s.label) for s in out] == [
        ("labelled", "cat"),
        ("review", "cat"),
        ("labelled", "dog"),
        ("review", "cat"),
    ]
    assert out[0].annotations[0].labeler == "folder-name"
    assert out[2].annotations[0].labeler == "scripted"
    assert out[2].confidence == pytest.approx(0.95)
    assert "scripted says dog" in out[1].review_reasons[0]
    assert "0.60 < 0.90" in out[3].review_reasons[0]
    store.close()


def test_without_classifier_unhinted_samples_are_never_guessed(tmp_path: object) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="cat"), ClassSpec(name="dog")))
    store, blobs, samples = _store_with(tmp_path, ["dog", None])
    out = DataLabelAgent(store, blobs, spec, None).label_batch(samples)
    assert [(s.status, s.label) for s in out] == [("labelled", "dog"), ("review", None)]
    store.close()
