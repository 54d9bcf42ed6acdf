"""Seed-set learned classifier: scikit-learn on a backend's image embeddings or hand-made features.

It learns from an existing labelled set and labels a pool, with confidences calibrated by
temperature scaling fitted on out-of-fold predictions of the seed set itself. It needs no
downloaded weights, so it is the offline default for expanding a dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from datasetagent.errors import NoLabelerError
from datasetagent.models import ImageEmbedder, Prediction
from datasetagent.tools.features import feature_matrix

log = logging.getLogger(__name__)

#: Regularisation strengths tried; the one with the best out-of-fold log loss is kept.
C_GRID = (0.05, 0.1, 0.5)
_TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 160))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def _logits(model: Pipeline, x: np.ndarray) -> np.ndarray:
    z = np.asarray(model.decision_function(x), dtype=np.float64)
    if z.ndim == 1:  # binary: one margin for the second class
        z = np.stack([np.zeros_like(z), z], axis=1)
    return z


@dataclass(frozen=True)
class SeedFit:
    """How the classifier was fitted, for the report."""

    examples: int
    classes: tuple[str, ...]
    c: float
    temperature: float
    #: Accuracy of out-of-fold predictions on the seed set (an honest estimate).
    cv_accuracy: float


class SeedClassifier:
    """Logistic regression on seed examples.

    With an ``embedder`` (a CLIP or SigLIP backend, say) it learns on the model's image
    embeddings, which separate real-world classes far better than hand-made features; without
    one it uses ``tools.features`` and needs no weights at all.
    """

    def __init__(
        self,
        *,
        max_per_class: int = 1000,
        random_state: int = 0,
        embedder: ImageEmbedder | None = None,
    ) -> None:
        self.embedder = embedder
        self.name = "seed" if embedder is None else f"seed[{embedder.name}]"
        self.max_per_class = max_per_class
        self.random_state = random_state
        self._model: Pipeline | None = None
        self._classes: tuple[str, ...] = ()
        self._temperature = 1.0
        self.fit_info: SeedFit | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def fit(self, images: list[Image.Image], labels: list[str]) -> SeedFit:
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        usable = sorted(k for k, n in counts.items() if n >= 2)
        if len(usable) < 2:
            raise NoLabelerError(
                "the seed labeler needs at least 2 classes with 2 or more labelled examples "
                f"each (got {counts or 'none'}); add seed images per class, use class folders, "
                "or configure a model labeler"
            )
        rng = np.random.default_rng(self.random_state)
        keep: list[int] = []
        for cls in usable:
            idx = [i for i, lab in enumerate(labels) if lab == cls]
            if len(idx) > self.max_per_class:
                idx = sorted(rng.choice(idx, self.max_per_class, replace=False).tolist())
            keep.extend(idx)
        x = self._features([images[i] for i in keep])
        classes = np.array(usable)
        y = np.searchsorted(classes, [labels[i] for i in keep])
        folds = min(5, min(counts[c] for c in usable))
        cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        best: tuple[float, float, float, float] | None = None  # (nll, C, T, acc)
        for c in C_GRID:
            oof = cross_val_predict(self._new(c), x, y, cv=cv, method="decision_function")
            z = oof if oof.ndim == 2 else np.stack([np.zeros_like(oof), oof], axis=1)
            nll = [-_log_softmax(z / t)[np.arange(len(y)), y].mean() for t in _TEMPERATURES]
            i = int(np.argmin(nll))
            acc = float((z.argmax(axis=1) == y).mean())
            if best is None or nll[i] < best[0]:
                best = (float(nll[i]), c, float(_TEMPERATURES[i]), acc)
        assert best is not None
        _, c, temperature, acc = best
        self._model = self._new(c).fit(x, y)
        self._classes = tuple(str(v) for v in classes)
        self._temperature = temperature
        self.fit_info = SeedFit(len(keep), self._classes, c, temperature, acc)
        log.info("seed classifier: %s", self.fit_info)
        return self.fit_info

    def _features(self, images: list[Image.Image]) -> np.ndarray:
        if self.embedder is not None:
            return np.asarray(self.embedder.embed(images), dtype=np.float64)
        return feature_matrix(images).astype(np.float64)

    def _new(self, c: float) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        if self._model is None:
            raise RuntimeError("SeedClassifier.predict called before fit")
        if not images:
            return []
        z = _logits(self._model, self._features(images))
        p = np.exp(_log_softmax(z / self._temperature))
        out = []
        for row in p:
            top = int(row.argmax())
            out.append(
                Prediction(
                    label=self._classes[top],
                    confidence=float(row[top]),
                    probs={c: float(v) for c, v in zip(self._classes, row, strict=True)},
                )
            )
        return out
