"""Transductive pieces of the seed labeler: a k-nearest-neighbour graph over seeds and pool,
label propagation on it, an out-of-domain prior, and power calibration. Pure numpy functions.

Label propagation (Zhou et al., 2004, with a classifier's predictions as the prior): every
unlabelled node keeps a share ``1 - alpha`` of its own prior and takes ``alpha`` from the mean
of its neighbours; seeds are clamped to their class. "None of the classes" is the last column
of every probability row and is propagated apart from the classes, so that a cluster of
out-of-domain images reinforces its own "none" instead of borrowing a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr
from sklearn.neighbors import NearestNeighbors

#: Powers tried when calibrating propagated probabilities. None sharpens by more than 2: a few
#: held-out seeds that all came out right must not make every label certain.
POWERS = np.exp(np.linspace(np.log(0.5), np.log(10.0), 91))


def unit_rows(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def knn_graph(nodes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest other nodes of each node (rows of unit vectors, so
    Euclidean order is cosine order): shape (n, min(k, n - 1))."""
    n = len(nodes)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(nodes)
    idx = nn.kneighbors(nodes, return_distance=False)
    # drop each node itself (usually first, but ties with an identical node may come first)
    keep = idx != np.arange(n)[:, None]
    keep[keep.sum(axis=1) > k, -1] = False
    out: np.ndarray = idx[keep].reshape(n, k)
    return out


def knn_query(nodes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest nodes of each query row."""
    k = min(k, len(nodes))
    if k < 1:
        return np.zeros((len(queries), 0), dtype=np.int64)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(nodes)
    out: np.ndarray = nn.kneighbors(queries, return_distance=False)
    return out


def propagate(
    prior: np.ndarray,
    none: np.ndarray,
    neighbours: np.ndarray,
    clamped: np.ndarray,
    clamp_to: np.ndarray,
    *,
    alpha: float,
    alpha_none: float,
    iterations: int = 30,
) -> np.ndarray:
    """Label propagation of "which class" and, apart from it, of "none of them".

    ``prior`` holds each node's class probabilities in its first columns (its last column,
    "none", is ignored), ``none`` each node's own out-of-domain probability. For unclamped
    nodes, repeated:

    * class shares ``c = (1 - alpha) * prior + alpha * mean(c[neighbours])``;
    * "none" ``u = none + (1 - none) * alpha_none * mean(u[neighbours])``: no neighbourhood
      talks an image out of its own "none", and a cluster of out-of-domain images, whose
      neighbours are each other, multiplies its small shares (by up to ``1 / (1 -
      alpha_none)``), while an atypical image among typical ones gains little.

    Rows where ``clamped`` is true stay ``clamp_to``. Returns rows ``(c * (1 - u), u)``."""
    cls = np.where(clamped[:, None], clamp_to[:, :-1], prior[:, :-1])
    u = np.where(clamped, 0.0, none)
    if neighbours.shape[1] > 0:
        for _ in range(iterations):
            mixed = (1.0 - alpha) * prior[:, :-1] + alpha * cls[neighbours].mean(axis=1)
            cls = np.where(clamped[:, None], clamp_to[:, :-1], mixed)
            grown = none + (1.0 - none) * alpha_none * u[neighbours].mean(axis=1)
            u = np.where(clamped, 0.0, grown)
    out: np.ndarray = np.hstack([cls * (1.0 - u)[:, None], u[:, None]])
    return out


def extend(
    prior: np.ndarray,
    none: np.ndarray,
    neighbours: np.ndarray,
    q_nodes: np.ndarray,
    *,
    alpha: float,
    alpha_none: float,
) -> np.ndarray:
    """Propagated probabilities for images outside the graph, from their nearest nodes (one
    step of ``propagate``; ``q_nodes`` are its result)."""
    cls, u = prior[:, :-1], none
    if neighbours.shape[1] > 0:
        node_u = q_nodes[:, -1]
        node_cls = q_nodes[:, :-1] / np.maximum(1.0 - node_u, 1e-12)[:, None]
        cls = (1.0 - alpha) * cls + alpha * node_cls[neighbours].mean(axis=1)
        u = none + (1.0 - none) * alpha_none * node_u[neighbours].mean(axis=1)
    out: np.ndarray = np.hstack([cls * (1.0 - u)[:, None], u[:, None]])
    return out


def power_scale(q: np.ndarray, power: float) -> np.ndarray:
    """Rows ``q ** (1 / power)`` renormalised: power > 1 softens, < 1 sharpens."""
    z = np.log(np.maximum(q, 1e-12)) / power
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def calibrate(q: np.ndarray, power: float) -> np.ndarray:
    """Power-scale the class columns of ``q`` among themselves and keep the last column
    ("none") as it is: the power is fitted on seeds, which are all of some class, so it says
    nothing about how sure "none" should be."""
    none = q[:, -1:]
    out: np.ndarray = np.hstack([power_scale(q[:, :-1], power) * (1.0 - none), none])
    return out


def fit_power(q: np.ndarray, y: np.ndarray) -> float:
    """The power (from ``POWERS``) under which ``calibrate(q)`` best predicts ``y`` (log
    loss)."""
    rows = np.arange(len(y))
    nll = [-np.log(np.maximum(calibrate(q, t)[rows, y], 1e-12)).mean() for t in POWERS]
    return float(POWERS[int(np.argmin(nll))])


def nearest_distances(
    coords: np.ndarray, residual: np.ndarray, ref: np.ndarray, k: int, *, self_rows: bool = False
) -> np.ndarray:
    """Mean Euclidean distance from each row to its ``k`` nearest reference rows.

    ``coords`` are coordinates in the subspace the references span, ``residual`` the squared
    norm of each row's part outside it (0 for the references themselves), so the distances are
    those of the full feature space. With ``self_rows`` the rows are the references, and each
    one's distance to itself is left out."""
    d2 = (
        (coords**2).sum(axis=1)[:, None]
        - 2.0 * coords @ ref.T
        + (ref**2).sum(axis=1)[None, :]
        + residual[:, None]
    )
    d2 = np.maximum(d2, 0.0)
    if self_rows:
        np.fill_diagonal(d2, np.inf)
    k = max(1, min(k, d2.shape[1] - (1 if self_rows else 0)))
    part = np.partition(d2, k - 1, axis=1)[:, :k]
    out: np.ndarray = np.sqrt(part).mean(axis=1)
    return out


#: The spread of log distances to the nearest seeds assumed before seeing any (distances
#: within ±15%), and how many seeds' worth of weight that assumption has.
PRIOR_SPREAD = 0.15
PRIOR_SEEDS = 10


@dataclass(frozen=True)
class Typicality:
    """How far each class's seeds are from their own class's nearest other seeds: median and
    scaled MAD of the log distances, per class."""

    seeds: np.ndarray
    labels: np.ndarray
    centre: np.ndarray
    spread: np.ndarray
    k: int

    @classmethod
    def fit(cls, seeds: np.ndarray, labels: np.ndarray, k: int) -> Typicality:
        classes = int(labels.max()) + 1
        centre, spread = np.zeros(classes), np.ones(classes)
        for c in range(classes):
            own = seeds[labels == c]
            logs = np.log(
                np.maximum(
                    nearest_distances(own, np.zeros(len(own)), own, k, self_rows=True), 1e-12
                )
            )
            centre[c] = np.median(logs)
            mad = 1.4826 * float(np.median(np.abs(logs - centre[c])))
            # a few seeds that happen to lie close together must not make every new image of
            # their class look far: the spread is shrunk towards a prior one, as if
            # ``PRIOR_SEEDS`` more seeds had shown it
            n = len(own)
            spread[c] = np.sqrt((n * mad**2 + PRIOR_SEEDS * PRIOR_SPREAD**2) / (n + PRIOR_SEEDS))
        spread = np.maximum(spread, float(np.median(spread)))
        return cls(seeds, labels, centre, spread, k)

    def _z(self, d: np.ndarray, c: int) -> np.ndarray:
        """How many of class ``c``'s spreads the log distances ``d`` lie beyond its median."""
        out: np.ndarray = (np.log(np.maximum(d, 1e-12)) - self.centre[c]) / self.spread[c]
        return out

    def score(self, coords: np.ndarray, residual: np.ndarray, *, skip: int = -1) -> np.ndarray:
        """Atypicality of each row: for each class, how many spreads its distance to that
        class's nearest seeds lies beyond the seeds' own median; the smallest over classes (an
        image typical of any one class is typical). Class ``skip`` is left out."""
        out = np.full(len(coords), np.inf)
        for c in range(len(self.centre)):
            if c != skip:
                d = nearest_distances(coords, residual, self.seeds[self.labels == c], self.k)
                out = np.minimum(out, self._z(d, c))
        return out

    def seed_scores(self) -> np.ndarray:
        """``score`` of each seed with itself left out of its class."""
        out = np.empty(len(self.seeds))
        for c in range(len(self.centre)):
            idx = np.flatnonzero(self.labels == c)
            own, flat = self.seeds[idx], np.zeros(len(idx))
            d = nearest_distances(own, flat, own, self.k, self_rows=True)
            out[idx] = np.minimum(self._z(d, c), self.score(own, flat, skip=c))
        return out


def ood_prior(z: np.ndarray, *, z0: float, width: float) -> np.ndarray:
    """Probability that an image is none of the classes from its atypicality ``z``:
    ``Φ((z - z0) / width)``, near 0 for images as close to a class's seeds as those seeds are
    to one another and near 1 for images many spreads further out."""
    out: np.ndarray = ndtr((z - z0) / width)
    return out
