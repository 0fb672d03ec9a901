"""Coreset scorers (docs/algorithms.md §10): pure functions on arrays, no I/O.

Every function works on the CANDIDATE rows only (included tiles) and breaks ties by
``tile_id``, so results do not depend on input row order. Two kinds of output:

- a score per row in [0, 1] (``lc``, ``fa``, ``random``);
- a full selection order over the rows (``cb``, ``fd``, ``kcenter``, ``lc_fd``): a permutation
  whose first b entries are the selection for budget b. :func:`order_to_scores` turns an order
  into scores ``1 - position / (n - 1)`` so that "top b by score" and "first b of the order"
  are the same set.

k-center greedy and the shared ranking/distance primitives live in
:mod:`smt_tools.coreset.kcenter`; its public names are re-exported here.
"""

from __future__ import annotations

import math

import numpy as np

from smt_tools.coreset.cb import cb_batch_size as cb_batch_size
from smt_tools.coreset.cb import cb_order_pruned
from smt_tools.coreset.cb import entropy_rows as _entropy_rows  # noqa: F401
from smt_tools.coreset.kcenter import _NEG as _NEG
from smt_tools.coreset.kcenter import _QUANT as _QUANT
from smt_tools.coreset.kcenter import _check_ids, _quantise
from smt_tools.coreset.kcenter import _take_top as _take_top
from smt_tools.coreset.kcenter import assign_nearest as assign_nearest
from smt_tools.coreset.kcenter import greedy_round as greedy_round
from smt_tools.coreset.kcenter import kcenter_order as kcenter_order
from smt_tools.coreset.kcenter import kcenter_prepare as kcenter_prepare
from smt_tools.curation.ranking import minmax


def order_by_score(scores: np.ndarray, tile_ids: np.ndarray) -> np.ndarray:
    """Positions sorted by descending score, ties by ascending tile_id: (n,) int64."""
    s = np.asarray(scores, dtype=np.float64)
    return np.lexsort((np.asarray(tile_ids, dtype=np.int64), -s)).astype(np.int64)


def order_to_scores(order: np.ndarray) -> np.ndarray:
    """Scores from a full order: position 0 -> 1.0, last -> 0.0 (n = 1 -> 1.0). (n,) float64."""
    order = np.asarray(order, dtype=np.int64)
    n = order.size
    scores = np.empty(n, dtype=np.float64)
    if n == 1:
        scores[order] = 1.0
    elif n:
        scores[order] = 1.0 - np.arange(n, dtype=np.float64) / (n - 1)
    return scores


# --------------------------------------------------------------------------- lc, fa, random


def lc_scores(class_entropy: np.ndarray, n_classes: int) -> np.ndarray:
    """Label complexity: ``class_entropy / ln(C)``, clipped to [0, 1]. (n,) float64.

    class_entropy: (n,) float64, natural-log entropy of each tile's class proportions.
    With C <= 1 every score is 0. NaN entropies are an error (excluded tiles are not candidates).
    """
    h = np.asarray(class_entropy, dtype=np.float64)
    if np.isnan(h).any():
        raise ValueError("class_entropy has NaN values among the candidate tiles")
    if n_classes <= 1:
        return np.zeros_like(h)
    return np.clip(h / math.log(n_classes), 0.0, 1.0)


def fa_scores(embeddings: np.ndarray) -> np.ndarray:
    """Feature activity: ``γ = -(1 - μ)·ln(σ + 1e-12)``, score = ``1 - minmax(γ)``. (n,) float64.

    embeddings: (n, d) float, raw (not normalised); μ and σ are each row's mean and standard
    deviation over its d dimensions.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d); got shape {x.shape}")
    mu = x.mean(axis=1, dtype=np.float64)
    sigma = x.std(axis=1, dtype=np.float64)
    gamma = -(1.0 - mu) * np.log(sigma + 1e-12)
    return 1.0 - minmax(gamma, constant=0.0)  # equal γ everywhere: every tile scores 1


def random_scores(tile_ids: np.ndarray, random_state: int) -> np.ndarray:
    """Seeded uniform scores, assigned in tile_id order (row-order independent). (n,) float64."""
    ids = np.asarray(tile_ids, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    draws = rng.random(ids.size)
    scores = np.empty(ids.size, dtype=np.float64)
    scores[np.argsort(ids, kind="stable")] = draws
    return scores


# --------------------------------------------------------------------------- cb


def cb_order(counts: np.ndarray, tile_ids: np.ndarray, growth: float = 0.02) -> np.ndarray:
    """Class balance: greedy order that maximises the entropy of the selected set's pixels.

    counts: (n, C) class pixel counts of the candidate tiles; tile_ids: (n,) int64.
    Step: with S the summed counts of the tiles chosen so far, every remaining tile i gets
    the gain ``H(S + counts[i])`` (natural-log entropy of the cumulative class-pixel
    distribution); the best ``cb_batch_size(|chosen|, growth)`` tiles by (gain desc,
    tile_id asc) are appended. growth = 0 means one tile per step (exact greedy); the
    default adds 2 % of the chosen set per step. Each step evaluates the gain only on the
    tiles an upper bound cannot rule out (:mod:`smt_tools.coreset.cb`): the same picks as
    evaluating every remaining tile, in near-linear time.
    Returns the full order: (n,) int64 positions.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"counts must be 2-D (n, C); got shape {c.shape}")
    n = c.shape[0]
    ids = _check_ids(tile_ids, n)
    if growth < 0:
        raise ValueError("growth must be >= 0")
    if not np.isfinite(c).all() or (c < 0).any():
        raise ValueError("counts must be finite and >= 0")
    return cb_order_pruned(c, ids, growth)


# --------------------------------------------------------------------------- fd


def fd_order_from_labels(
    labels: np.ndarray, dist_to_centre: np.ndarray, tile_ids: np.ndarray
) -> np.ndarray:
    """Round robin over clusters, nearest-to-centroid first inside each cluster.

    labels: (n,) int cluster per row; dist_to_centre: (n,) float distance to the row's centroid.
    Clusters take turns in order of decreasing size (ties: smallest tile_id first); within a
    cluster rows go by increasing distance (ties by tile_id). Returns (n,) int64 positions.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.asarray(tile_ids, dtype=np.int64)
    n = labels.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dq = _quantise(dist_to_centre)
    within = np.lexsort((ids, dq, labels))  # grouped by label, nearest first
    rank = np.empty(n, dtype=np.int64)
    sorted_labels = labels[within]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank[within] = np.arange(n) - np.repeat(starts, sizes)
    uniq = sorted_labels[starts]
    min_id = np.minimum.reduceat(ids[within], starts)
    cluster_rank_order = np.lexsort((min_id, -sizes))
    cluster_rank = np.empty(uniq.size, dtype=np.int64)
    cluster_rank[cluster_rank_order] = np.arange(uniq.size)
    lookup = dict(zip(uniq.tolist(), cluster_rank.tolist(), strict=True))
    crank = np.fromiter((lookup[v] for v in labels.tolist()), dtype=np.int64, count=n)
    return np.lexsort((crank, rank)).astype(np.int64)


def kmeans_sample_rows(tile_ids: np.ndarray, sample_size: int, random_state: int) -> np.ndarray:
    """Positions of the seeded KMeans sample, in tile_id order (all rows when n <= size)."""
    ids = np.asarray(tile_ids, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    if ids.size <= sample_size:
        return by_id
    rng = np.random.default_rng(random_state)
    return by_id[np.sort(rng.choice(ids.size, size=sample_size, replace=False))]


def kmeans_clusters(
    x: np.ndarray,
    tile_ids: np.ndarray,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    sample_size: int = 20_000,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, int, dict[int, float]]:
    """KMeans for ``fd``: elbow k (or fixed ``k``) fitted on a seeded sample, all rows assigned.

    x: (n, d) float; tile_ids: (n,) int64. The sample (``sample_size`` rows, drawn in tile_id
    order with ``random_state``) keeps the fit fast at 155k x 768; every row is then assigned
    to its nearest centroid. k_max is clamped to (distinct sample rows - 1); fewer than two
    distinct rows give one cluster.
    Returns labels (n,) int64, distance to own centroid (n,) float64, chosen k, {k: inertia}.
    """
    from sklearn.cluster import KMeans

    from smt_tools.curation.composition import elbow_k

    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    ids = _check_ids(tile_ids, n)
    rows = kmeans_sample_rows(ids, sample_size, random_state)
    xs = x[rows]
    distinct = int(np.unique(xs, axis=0).shape[0])
    scores: dict[int, float] = {}
    if distinct < 2:
        centres = xs[:1]
        chosen = 1
    else:
        if k is not None:
            chosen = max(1, min(int(k), distinct))
        else:
            hi = max(1, min(k_max, distinct - 1))
            lo = max(1, min(k_min, hi))
            for kk in range(lo, hi + 1):
                km = KMeans(n_clusters=kk, random_state=random_state, n_init="auto").fit(xs)
                scores[kk] = float(km.inertia_)
            ks = np.array(sorted(scores), dtype=np.int64)
            chosen = elbow_k(ks, np.array([scores[int(v)] for v in ks]))
        km = KMeans(n_clusters=chosen, random_state=random_state, n_init="auto").fit(xs)
        centres = km.cluster_centers_
    labels, dist = assign_nearest(x, centres)
    return labels, dist, int(chosen), scores


def fd_order(
    x: np.ndarray,
    tile_ids: np.ndarray,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    sample_size: int = 20_000,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Feature diversity: :func:`kmeans_clusters` then :func:`fd_order_from_labels`.

    Returns (order (n,) int64, labels (n,) int64, chosen k).
    """
    labels, dist, chosen, _ = kmeans_clusters(
        x,
        tile_ids,
        k=k,
        k_min=k_min,
        k_max=k_max,
        sample_size=sample_size,
        random_state=random_state,
    )
    return fd_order_from_labels(labels, dist, tile_ids), labels, chosen


def lc_fd_order(fd: np.ndarray, lc: np.ndarray, tile_ids: np.ndarray, m: int) -> np.ndarray:
    """The first ``m`` tiles of the fd order, then the rest by lc score (desc, tile_id asc).

    fd: (n,) int64 order; lc: (n,) float64 scores. Returns (n,) int64 positions.
    """
    fd = np.asarray(fd, dtype=np.int64)
    n = fd.size
    m = max(0, min(int(m), n))
    head = fd[:m]
    taken = np.zeros(n, dtype=bool)
    taken[head] = True
    rest = np.flatnonzero(~taken)
    ids = np.asarray(tile_ids, dtype=np.int64)
    tail = rest[np.lexsort((ids[rest], -np.asarray(lc, dtype=np.float64)[rest]))]
    return np.concatenate([head, tail]).astype(np.int64)
