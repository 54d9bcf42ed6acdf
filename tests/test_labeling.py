from __future__ import annotations

import numpy as np
import pytest

from datasetagent.agents.labeling import DataLabelAgent, LabelerSet, merge_detections
from datasetagent.errors import NoLabelerError
from datasetagent.models import Detection, Prediction
from datasetagent.models.seed import SeedClassifier
from datasetagent.records import Box, Provenance, Sample
from datasetagent.spec import ClassSpec, DatasetSpec
from datasetagent.store import BlobStore, Candidate, RunStore
from datasetagent.tools.boxes import iou
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
    out = DataLabelAgent(store, blobs, spec, LabelerSet((clf,))).label_batch(samples)
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


class NamedClassifier(FixedClassifier):
    def __init__(self, name: str, preds: list[Prediction]) -> None:
        super().__init__(preds)
        self.name = name


def _pred(label: str, conf: float) -> Prediction:
    return Prediction(label, conf, {label: conf})


@pytest.mark.parametrize(
    ("a", "b", "status", "label", "agreement"),
    [
        (_pred("cat", 0.97), _pred("cat", 0.95), "labelled", "cat", 1.0),
        (_pred("cat", 0.97), _pred("dog", 0.95), "review", None, 0.5),
        (_pred("cat", 0.95), _pred("cat", 0.70), "review", "cat", 1.0),  # mean 0.825 < 0.9
        (_pred("none", 0.99), _pred("none", 0.95), "rejected", None, 1.0),
        (_pred("none", 0.50), _pred("none", 0.50), "review", None, 1.0),
        (_pred("none", 0.0), _pred("cat", 0.99), "review", None, 0.5),  # a failed call
    ],
)
def test_two_classifiers_must_agree(
    tmp_path: object,
    a: Prediction,
    b: Prediction,
    status: str,
    label: str | None,
    agreement: float,
) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="cat"), ClassSpec(name="dog")))
    store, blobs, samples = _store_with(tmp_path, [None])
    labelers = LabelerSet((NamedClassifier("a", [a]), NamedClassifier("b", [b])))
    [out] = DataLabelAgent(store, blobs, spec, labelers).label_batch(samples)
    assert out.status == status
    assert out.scores["agreement"] == pytest.approx(agreement)
    if status == "labelled":
        assert out.label == label
        assert out.annotations[0].labeler == "a+b"
    elif status == "rejected":
        assert out.review_reasons[0].startswith("out_of_domain")
    else:
        assert out.review_reasons
    store.close()


def test_uncertain_samples_rejected_when_the_spec_says_so(tmp_path: object) -> None:
    spec = DatasetSpec.model_validate(
        {"classes": [{"name": "cat"}, {"name": "dog"}], "quality": {"uncertain": "reject"}}
    )
    store, blobs, samples = _store_with(tmp_path, [None, None])
    clf = FixedClassifier([_pred("cat", 0.5), _pred("dog", 0.99)])
    out = DataLabelAgent(store, blobs, spec, LabelerSet((clf,))).label_batch(samples)
    assert [(s.status, s.label) for s in out] == [("rejected", "cat"), ("labelled", "dog")]
    assert "agreement" not in out[1].scores  # one labeler: nothing to agree with
    store.close()


def test_run_round_prefetches_and_labels_every_batch(tmp_path: object) -> None:
    spec = DatasetSpec(classes=(ClassSpec(name="cat"), ClassSpec(name="dog")))
    store, blobs, samples = _store_with(tmp_path, [None] * 7)
    store.add_candidates(
        Candidate(source_kind="local", location=s.provenance.location, licence="user-supplied")
        for s in samples
    )
    for i, s in enumerate(samples):
        store.record_outcome(i + 1, 1, s)
    seen: list[int] = []

    class Counting(FixedClassifier):
        def predict(self, images: list[object]) -> list[Prediction]:
            seen.append(len(images))
            return [_pred("dog", 0.99)] * len(images)

    agent = DataLabelAgent(store, blobs, spec, LabelerSet((Counting([]),)), batch_size=3)
    counts = agent.run_round(1)
    assert seen == [3, 3, 1]
    assert counts == {"labelled": 7}
    assert store.label_counts(["labelled"]) == {"dog": 7}
    store.close()


class FixedDetector:
    """Scripted detector: the detections given for each image, in order."""

    def __init__(self, name: str, per_image: list[list[Detection]]) -> None:
        self.name = name
        self.per_image = per_image

    def detect(self, images: list[object]) -> list[list[Detection]]:
        out, self.per_image = self.per_image[: len(images)], self.per_image[len(images) :]
        return out


def _det(label: str, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(label, score, box)


def test_merge_detections_needs_overlap_and_same_class() -> None:
    a = [_det("car", 0.9, (0, 0, 10, 10)), _det("bus", 0.8, (20, 20, 30, 30))]
    b = [_det("car", 0.7, (1, 1, 11, 11)), _det("car", 0.6, (20, 20, 30, 30))]
    merged = merge_detections([a, b])
    by_found = sorted((m.label, sorted(m.found_by)) for m in merged)
    assert by_found == [("bus", [0]), ("car", [0, 1]), ("car", [1])]
    car = next(m for m in merged if len(m.found_by) == 2)
    assert car.score == pytest.approx(0.8)  # mean over both detectors
    assert car.box[0] == pytest.approx(0.9 * 0 / 1.6 + 0.7 * 1 / 1.6)  # score-weighted
    assert iou(np.array((0, 0, 10, 10)), np.array([(5, 0, 15, 10)]))[0] == pytest.approx(50 / 150)
    assert merge_detections([[], []]) == []


def test_detection_policy(tmp_path: object) -> None:
    spec = DatasetSpec.model_validate(
        {"task": "detection", "classes": [{"name": "car"}, {"name": "bus"}], "formats": ["coco"]}
    )
    store, blobs, samples = _store_with(tmp_path, [None, None, "bus", None])
    one = FixedDetector(
        "d1",
        [
            [_det("car", 0.9, (-2, 1, 5, 9))],  # both find it: kept, clipped to the 8x8 image
            [_det("car", 0.9, (0, 0, 4, 4))],  # only d1: uncertain
            [_det("car", 0.8, (0, 0, 4, 4))],  # folder says bus, only a car: uncertain
            [],  # nothing at all
        ],
    )
    two = FixedDetector(
        "d2",
        [[_det("car", 0.7, (-1, 1, 6, 9))], [], [_det("car", 0.6, (0, 0, 4, 4))], []],
    )
    out = DataLabelAgent(store, blobs, spec, LabelerSet(detectors=(one, two))).label_batch(samples)
    assert [s.status for s in out] == ["labelled", "review", "review", "review"]
    [box] = out[0].annotations
    assert isinstance(box, Box)
    assert (box.x, box.w, box.labeler) == (0.0, pytest.approx(8.7 / 1.6), "d1+d2")
    assert box.confidence == pytest.approx(0.8)
    assert out[0].scores["agreement"] == 1.0
    assert out[0].label == "car"
    assert "only d1 found car" in out[1].review_reasons[0]
    assert out[2].review_reasons == ("folder says bus, no bus found",)
    assert out[3].review_reasons[0].startswith("no_object")
    store.close()


def test_a_confidence_just_under_the_threshold_reads_as_under_it(tmp_path: object) -> None:
    """0.8994 against 0.9 prints "0.899 < 0.900", never "0.90 < 0.90"."""
    spec = DatasetSpec(classes=(ClassSpec(name="cat"), ClassSpec(name="dog")))
    store, blobs, samples = _store_with(tmp_path, [None])
    clf = FixedClassifier([Prediction("cat", 0.8994, {"cat": 0.8994, "dog": 0.1006})])
    [out] = DataLabelAgent(store, blobs, spec, LabelerSet((clf,))).label_batch(samples)
    assert out.status == "review"
    assert out.review_reasons == ("confidence 0.899 < 0.900",)
    store.close()


@pytest.mark.parametrize(
    ("value", "threshold", "digits", "expected"),
    [
        (0.8994, 0.9, 2, ("0.899", "0.900")),
        (0.6, 0.9, 2, ("0.60", "0.90")),
        (0.89999999, 0.9, 2, ("0.89999999", "0.90000000")),
        (0.9, 0.9, 2, ("0.90", "0.90")),
        (0.02104, 0.021, 4, ("0.02104", "0.02100")),
    ],
)
def test_compared_prints_digits_enough_to_differ(
    value: float, threshold: float, digits: int, expected: tuple[str, str]
) -> None:
    from datasetagent.metrics import compared

    assert compared(value, threshold, digits) == expected
