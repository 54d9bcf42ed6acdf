"""The seed labeler's parts: features, the graph functions, and the classifier adapted to a pool
(label propagation, out-of-domain "none", calibration), on real digits and photo crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datasetagent.models import NONE_LABEL, Adapting, ImageClassifier
from datasetagent.models import seed_graph as graph
from datasetagent.models.seed import SeedClassifier
from datasetagent.tools.features import DIM, VIEWS, feature_matrix, hog_batch, view_slices
from helpers import digit_images, photos


def photo_crops(n: int, side: int = 32, seed: int = 0) -> list[Image.Image]:
    """Grey crops of the two bundled photos at random scales: images of no digit."""
    rng = np.random.default_rng(seed)
    pics = photos()
    out = []
    for k in range(n):
        pic = pics[k % 2]
        s = int(rng.integers(40, 200))
        x, y = int(rng.integers(0, pic.width - s)), int(rng.integers(0, pic.height - s))
        out.append(pic.crop((x, y, x + s, y + s)).convert("L").resize((side, side)))
    return out


# -- features ------------------------------------------------------------------------------------
def test_feature_views_cover_the_row() -> None:
    images = [im for im, _ in digit_images(2)] + photos()
    x = feature_matrix(images)
    assert x.shape == (len(images), DIM)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    slices = view_slices()
    assert [s.stop - s.start for s in slices] == [w for _, w in VIEWS]
    assert slices[-1].stop == DIM
    colour = slices[[n for n, _ in VIEWS].index("colour")]
    assert not x[:20, colour].any()  # grey digits: no colour view
    assert x[20:, colour].any()
    assert feature_matrix([]).shape == (0, 0)


def test_hog_ignores_contrast_and_sees_orientation() -> None:
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))[None]  # vertical edges everywhere
    a, b = hog_batch(ramp, 4), hog_batch(0.5 * ramp, 4)
    np.testing.assert_allclose(a, b, atol=1e-3)  # block normalisation
    turned = hog_batch(np.transpose(ramp, (0, 2, 1)), 4)
    assert np.abs(a - turned).max() > 0.1


# -- graph functions -----------------------------------------------------------------------------
def test_knn_graph_leaves_each_node_out() -> None:
    pts = graph.unit_rows(np.random.default_rng(0).normal(size=(30, 5)))
    pts[1] = pts[0]  # an identical pair
    nb = graph.knn_graph(pts, 4)
    assert nb.shape == (30, 4)
    assert not (nb == np.arange(30)[:, None]).any()
    assert 1 in nb[0]
    assert 0 in nb[1]


def test_propagation_follows_neighbours_and_keeps_none_floor() -> None:
    # a chain 0-1-2-3-4: node 0 is a seed of class 0, node 4 a seed of class 1
    nb = np.array([[1, 1], [0, 2], [1, 3], [2, 4], [3, 3]])
    clamped = np.array([True, False, False, False, True])
    onehot = np.zeros((5, 3))
    onehot[0, 0] = onehot[4, 1] = 1.0
    prior = np.tile([0.5, 0.5, 0.0], (5, 1))
    prior[1] = [0.3, 0.7, 0.0]  # the regression is wrong about node 1
    none = np.array([0.0, 0.0, 0.0, 0.9, 0.0])
    q = graph.propagate(prior, none, nb, clamped, onehot, alpha=0.8, alpha_none=0.5)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    np.testing.assert_allclose(q[[0, 4]], onehot[[0, 4]])
    assert q[1, 0] > q[1, 1]  # its neighbours outvote the prior
    assert q[3, 2] >= 0.9  # own "none" is a floor
    assert q[2, 2] > 0.0  # and spreads to a neighbour


def test_none_grows_in_a_cluster_with_no_way_out() -> None:
    # nodes 0-3 link only to each other, nodes 4-7 are a typical group around a seed (8)
    nb = np.array([[1, 2], [2, 3], [3, 0], [0, 1], [5, 8], [6, 8], [7, 8], [4, 8], [4, 5]])
    clamped = np.zeros(9, dtype=bool)
    clamped[8] = True
    onehot = np.zeros((9, 2))
    onehot[8, 0] = 1.0
    prior = np.tile([1.0, 0.0], (9, 1))
    none = np.full(9, 0.1)
    none[8] = 0.0
    q = graph.propagate(prior, none, nb, clamped, onehot, alpha=0.3, alpha_none=0.6)
    assert q[:4, 1].min() > 0.2 > 0.15 > q[4:8, 1].max()


def test_calibrate_keeps_none_and_fit_power_sharpens_underconfidence() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    q = np.full((400, 4), 0.2)
    q[np.arange(400), y] = 0.6  # always right, only 0.6 sure
    q[:, 3] = 0.0
    power = graph.fit_power(q, y)
    assert power == pytest.approx(graph.POWERS[0])  # as sharp as it may go
    cal = graph.calibrate(q, power)
    assert cal[np.arange(400), y].min() > 0.8
    np.testing.assert_allclose(cal.sum(axis=1), 1.0)
    q2 = q.copy()
    q2[:, 3] = 0.5
    q2[:, :3] *= 0.5
    np.testing.assert_allclose(graph.calibrate(q2, 0.7)[:, 3], 0.5)


def test_typicality_needs_more_than_a_few_close_seeds_to_call_an_image_far() -> None:
    rng = np.random.default_rng(0)
    seeds = rng.normal(size=(12, 4))
    seeds[:6] *= 0.01  # class 0: six seeds that happen to lie very close together
    labels = np.repeat([0, 1], 6)
    typ = graph.Typicality.fit(seeds, labels, 3)
    assert typ.spread.min() > 0.1
    near = seeds[:1] + 0.05
    far = seeds[:1] + 100.0
    z = typ.score(np.vstack([near, far]), np.zeros(2))
    assert z[0] < 5 < z[1]


# -- the classifier ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapted() -> tuple[SeedClassifier, list[Image.Image], np.ndarray]:
    seeds = digit_images(10)  # the out-of-domain prior wants OOD_MIN_SEEDS per class
    pool = digit_images(40, offset=10)
    images = [im for im, _ in pool] + photo_crops(60)
    truth = np.array([lab for _, lab in pool] + [NONE_LABEL] * 60)
    model = SeedClassifier()
    model.fit([im for im, _ in seeds], [lab for _, lab in seeds])
    model.adapt(images[i : i + 64] for i in range(0, len(images), 64))
    return model, images, truth


def test_seed_classifier_is_an_adapting_classifier(adapted: tuple[SeedClassifier, ...]) -> None:
    model = adapted[0]
    assert isinstance(model, ImageClassifier)
    assert isinstance(model, Adapting)
    assert model.classes == tuple(str(d) for d in range(10))


def test_photos_among_digits_are_none(
    adapted: tuple[SeedClassifier, list[Image.Image], np.ndarray],
) -> None:
    model, images, truth = adapted
    preds = model.predict(images)
    label = np.array([p.label for p in preds])
    conf = np.array([p.confidence for p in preds])
    ood = truth == NONE_LABEL
    # confidently none: the Data Label agent rejects them as out_of_domain
    assert ((label == NONE_LABEL) & (conf >= 0.9))[ood].mean() > 0.9
    assert not ((label != NONE_LABEL) & (conf >= 0.9))[ood].any()  # never a confident digit
    assert (label[~ood] == NONE_LABEL).mean() < 0.04
    assert model.adapt_info is not None
    assert model.adapt_info.pool == len(images)
    assert model.adapt_info.out_of_domain >= 54  # the 60 photos, give or take
    assert all(NONE_LABEL in p.probs and abs(sum(p.probs.values()) - 1) < 1e-6 for p in preds)


def test_adapted_confidence_is_honest(
    adapted: tuple[SeedClassifier, list[Image.Image], np.ndarray],
) -> None:
    model, images, truth = adapted
    digits = truth != NONE_LABEL
    preds = [p for p, d in zip(model.predict(images), digits, strict=True) if d]
    ok = np.array([p.label == t for p, t in zip(preds, truth[digits], strict=True)])
    conf = np.array([p.confidence for p in preds])
    assert ok.mean() > 0.9
    sure = conf >= 0.9
    assert sure.mean() > 0.5
    assert ok[sure].mean() >= 0.97
    bins = np.digitize(conf, [0.5, 0.7, 0.9])
    ece = sum(
        abs(ok[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    )
    assert ece < 0.06


def test_adapt_again_gives_the_same_labels_and_new_images_come_from_the_graph(
    adapted: tuple[SeedClassifier, list[Image.Image], np.ndarray],
) -> None:
    model, images, _ = adapted
    before = model.probabilities(images)
    unseen = digit_images(10, offset=50)
    preds = model.predict([im for im, _ in unseen])  # not in the graph: labelled from it
    assert np.mean([p.label == lab for p, (_, lab) in zip(preds, unseen, strict=True)]) > 0.8
    model.adapt([images[:50]])  # another round: it replaces the pool
    assert model.adapt_info is not None
    assert model.adapt_info.pool == 50
    model.adapt([images[i : i + 64] for i in range(0, len(images), 64)] + [images[:10]])
    assert model.adapt_info.pool == len(images)  # repeats count once
    np.testing.assert_allclose(model.probabilities(images), before)


def test_with_few_seeds_nothing_is_called_out_of_domain() -> None:
    # six seeds a class, and a pool resized on another path (blurrier): far from the seeds,
    # but of their classes
    seeds = [(im.resize((28, 28)), lab) for im, lab in digit_images(6, classes=(1, 2))]
    pool = digit_images(10, classes=(1, 2), offset=6)
    images = [im.resize((56, 56)).resize((28, 28)) for im, _ in pool]
    model = SeedClassifier()
    model.fit([im for im, _ in seeds], [lab for _, lab in seeds])
    model.adapt([images])
    preds = model.predict(images)
    assert all(p.label != NONE_LABEL for p in preds)
    assert np.mean([p.label == lab for p, (_, lab) in zip(preds, pool, strict=True)]) >= 0.9


def test_without_transduction_adapt_is_a_no_op() -> None:
    seeds = digit_images(5, classes=(0, 1, 7))
    model = SeedClassifier(transductive=False)
    model.fit([im for im, _ in seeds], [lab for _, lab in seeds])
    pool = [im for im, _ in digit_images(10, classes=(0, 1, 7), offset=5)]
    before = model.probabilities(pool)
    model.adapt(iter([pool]))
    assert model.adapt_info is None
    np.testing.assert_allclose(model.probabilities(pool), before)


def test_adapt_before_fit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        SeedClassifier().adapt([[Image.new("L", (8, 8))]])
