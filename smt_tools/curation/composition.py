"""Semantic composition: CLR transform, KMeans with a chosen k, freq_cluster_weight = 1 / cluster size.

docs/algorithms.md §6. KMeans runs on the DISTINCT CLR rows with their multiplicities as sample
weights: the objective (and so the inertia used by the elbow) is exactly that of KMeans on
all rows, but many identical rows (pure-background tiles) cost nothing. Distinct rows come out
of :func:`numpy.unique` in sorted order, so the result does not depend on input row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smt_tools.choices import DEFAULT_K_SELECTION, K_SELECTIONS, KSelection


def clr(p: np.ndarray, pseudocount: float = 1e-6) -> np.ndarray:
    """Centred log-ratio of proportions.

    p: (n, C) float64 rows of class proportions. Returns (n, C) float64
    ``ln(p + eps) - mean_c ln(p + eps)``.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"clr expects a 2-D array (n, C); got shape {p.shape}")
    if pseudocount <= 0:
        raise ValueError(f"clr pseudocount must be > 0; got {pseudocount}")
    logp = p + pseudocount  # in place from here on: one (n, C) array, the same numbers
    np.log(logp, out=logp)
    logp -= logp.mean(axis=1, keepdims=True)
    return logp


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(x, axis=0, return_inverse=True, return_counts=True)`` for finite float rows
    (n, C), with the same distinct rows (sorted lexicographically), inverse (n,) int64 and
    counts (d,) int64, in a fraction of the time and memory: rows are ordered by column 0 and
    only rows that tie there are ordered by the next columns (:func:`_lex_order`)."""
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    order = _lex_order(x)
    first = np.zeros(n, bool)
    first[:1] = True
    for j in range(x.shape[1]):  # a new distinct row wherever any column changes
        col = x[order, j]
        first[1:] |= col[1:] != col[:-1]
    starts = np.flatnonzero(first)
    inverse = np.empty(n, np.int64)
    inverse[order] = np.cumsum(first) - 1
    counts = np.diff(np.append(starts, n)).astype(np.int64)
    return x[order[starts]], inverse, counts


def _lex_order(x: np.ndarray) -> np.ndarray:
    """Row order (n,) int64 sorting ``x`` (n, C) lexicographically (column 0 first): a sort on
    column 0, then the runs of equal column-0 values sorted by the other columns."""
    order = np.argsort(x[:, 0])  # equal rows are interchangeable: no need for a stable sort
    if x.shape[1] == 1 or x.shape[0] < 2:
        return order
    col = x[order, 0]
    same = col[1:] == col[:-1]
    if not same.any():
        return order
    tied = np.zeros(x.shape[0], bool)
    tied[1:] |= same
    tied[:-1] |= same
    pos = np.flatnonzero(tied)  # positions (in sorted order) of rows in runs of ties
    run = np.cumsum(np.concatenate([[True], ~same]))[pos]
    sub = order[pos]
    inner = _lex_order(x[sub, 1:])
    inner = inner[np.argsort(run[inner], kind="stable")]
    order[pos] = sub[inner]
    return order


def elbow_k(ks: np.ndarray, inertias: np.ndarray) -> int:
    """The k with the largest perpendicular distance to the chord first -> last point.

    k and inertia are min-max normalised to [0, 1] first; exact ties go to the smaller k.
    ks: (m,) int, ascending; inertias: (m,) float.
    """
    ks = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    if ks.shape != y.shape or ks.ndim != 1 or ks.size == 0:
        raise ValueError("ks and inertias must be 1-D arrays of the same non-zero length")
    if ks.size <= 2:
        return int(ks[0])
    xn = (ks - ks.min()) / (ks.max() - ks.min())
    span = y.max() - y.min()
    yn = (y - y.min()) / span if span > 0 else np.zeros_like(y)
    dx, dy = xn[-1] - xn[0], yn[-1] - yn[0]
    norm = float(np.hypot(dx, dy))
    if norm == 0:
        return int(ks[0])
    dist = np.abs(dy * (xn - xn[0]) - dx * (yn - yn[0])) / norm
    return int(ks[int(np.argmax(dist))])  # argmax: first (smallest k) of exact ties


@dataclass
class CompositionResult:
    """Result of :func:`cluster_compositions` for n rows.

    labels: (n,) int64 cluster id per row, numbered by first appearance among the sorted
    distinct CLR rows (so ids do not depend on input row order).
    sizes: (n,) int64 size of each row's cluster; freq_cluster_weight: (n,) float64 = 1 / sizes.
    k: chosen number of clusters; k_scores: {k: inertia (elbow) or silhouette}.
    """

    labels: np.ndarray
    sizes: np.ndarray
    freq_cluster_weight: np.ndarray
    k: int
    k_selection: str
    k_scores: dict[int, float] = field(default_factory=dict)
    k_range: tuple[int, int] = (1, 1)
    distinct_rows: int = 0

    @property
    def cluster_sizes(self) -> dict[int, int]:
        """{cluster id: number of rows}."""
        ids, counts = np.unique(self.labels, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


def cluster_weights(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, freq_cluster_weight) for cluster ids (n,): size of each row's cluster and 1 / size.

    Cluster ids [0,0,1,1,1,2] -> freq_cluster_weight [.5,.5,1/3,1/3,1/3,1].
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < 1 << 20:
        sizes = np.bincount(labels.reshape(-1))[labels.reshape(-1)].astype(np.int64)
        return sizes, 1.0 / sizes  # the same numbers as np.unique, without sorting n labels
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts[inv.reshape(-1)].astype(np.int64)
    return sizes, 1.0 / sizes


def _kmeans(
    x: np.ndarray, w: np.ndarray, k: int, random_state: int, init: np.ndarray | None = None
) -> Any:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    if init is None:
        km = KMeans(n_clusters=k, random_state=random_state, n_init="auto")
    else:
        km = KMeans(n_clusters=k, random_state=random_state, n_init=1, init=init)
    # CLR rows have a handful of columns: OpenMP threads cost more than they save (10-60x
    # slower on a busy 2-core machine) and one thread keeps the sums in a fixed order.
    with threadpool_limits(limits=1):
        return km.fit(x, sample_weight=w)


def _sample(mult: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of ``size`` of the n = sum(mult) rows, drawn in the order of the sorted
    distinct rows (so it does not depend on input row order): (distinct ids, multiplicities)."""
    pos = np.sort(rng.choice(int(mult.sum()), size=size, replace=False))
    ids = np.searchsorted(np.cumsum(mult), pos, side="right")
    uniq, counts = np.unique(ids, return_counts=True)
    return uniq.astype(np.int64), counts.astype(np.float64)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0.. by first appearance (KMeans ids are arbitrary)."""
    uniq, first = np.unique(labels, return_index=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return rank[np.searchsorted(uniq, labels)].astype(np.int64)


def cluster_compositions(
    p: np.ndarray,
    *,
    k_min: int = 4,
    k_max: int = 16,
    k_selection: KSelection = DEFAULT_K_SELECTION,
    k: int | None = None,
    random_state: int = 42,
    pseudocount: float = 1e-6,
    silhouette_sample_size: int = 10_000,
    selection_sample_size: int | None = 20_000,
) -> CompositionResult:
    """CLR + KMeans over proportions p (n, C) float64 of the INCLUDED tiles.

    k_max is clamped to (distinct CLR rows - 1) and k_min to k_max; fewer than 2 distinct rows
    gives one cluster. ``fixed`` uses ``k`` (clamped the same way), ``elbow`` fits every k in
    [k_min, k_max] and takes :func:`elbow_k` of the inertias, ``silhouette`` takes the k with
    the best silhouette on a seeded sample of at most ``silhouette_sample_size`` rows (ties:
    smaller k).

    When n > ``selection_sample_size`` (None or 0: never), the fits that CHOOSE k run on a
    seeded sample of that many rows; the chosen k is then fitted on all rows, initialised from
    the sample fit's centroids. ``k_scores`` are then the sample's inertias / silhouettes.
    """
    p = np.asarray(p, dtype=np.float64)
    n = p.shape[0]
    _check_args(n, k_min, k_max, k_selection, k)
    x = clr(p, pseudocount)
    del p  # the caller's array may be the only other reference: millions of rows
    distinct, inverse, mult = unique_rows(x)
    del x
    n_distinct = distinct.shape[0]
    weights = mult.astype(np.float64)
    if n_distinct < 2:
        labels = np.zeros(n, np.int64)
        sizes, freq_cluster_weight = cluster_weights(labels)
        return CompositionResult(
            labels, sizes, freq_cluster_weight, 1, k_selection, {}, (1, 1), n_distinct
        )
    hi = min(k_max, n_distinct - 1)
    lo = min(k_min, hi)
    rng = np.random.default_rng(random_state)
    # the rows the k-choosing fits run on: all distinct rows, or a seeded sample of them
    sel_x, sel_w = distinct, weights
    sampled = False
    if k_selection != "fixed" and selection_sample_size and n > selection_sample_size:
        ids, counts = _sample(mult, selection_sample_size, rng)
        if ids.size > hi:
            sel_x, sel_w, sampled = distinct[ids], counts, True
    scores: dict[int, float] = {}
    models: dict[int, Any] = {}
    if k_selection == "fixed":
        assert k is not None
        chosen = min(k, n_distinct)
    elif k_selection == "elbow":
        chosen = _choose_k_elbow(sel_x, sel_w, lo, hi, random_state, scores, models)
    else:
        chosen = _choose_k_silhouette(
            sel_x, sel_w, lo, hi, random_state, silhouette_sample_size, rng, scores, models
        )
    distinct_labels = _distinct_labels(
        distinct, weights, chosen, models, sampled, k_selection, random_state, scores
    )
    labels = _relabel(distinct_labels)[inverse]
    sizes, freq_cluster_weight = cluster_weights(labels)
    k_eff = int(np.unique(labels).size)
    return CompositionResult(
        labels, sizes, freq_cluster_weight, k_eff, k_selection, scores, (lo, hi), n_distinct
    )


def _check_args(n: int, k_min: int, k_max: int, k_selection: str, k: int | None) -> None:
    """ValueError for no rows, a bad k range, ``fixed`` without k, or an unknown selection."""
    if n == 0:
        raise ValueError("cluster_compositions needs at least one row")
    if k_min < 1 or k_max < k_min:
        raise ValueError(f"need 1 <= k_min <= k_max; got k_min={k_min}, k_max={k_max}")
    if k_selection == "fixed" and (k is None or k < 1):
        raise ValueError("k_selection 'fixed' needs k >= 1")
    if k_selection not in K_SELECTIONS:
        raise ValueError(f"unknown k_selection {k_selection!r}")


def _choose_k_elbow(
    sel_x: np.ndarray,
    sel_w: np.ndarray,
    lo: int,
    hi: int,
    random_state: int,
    scores: dict[int, float],
    models: dict[int, Any],
) -> int:
    """Fit every k in [lo, hi] (filling ``models`` and ``scores`` with inertias); elbow k."""
    for kk in range(lo, hi + 1):
        models[kk] = _kmeans(sel_x, sel_w, kk, random_state)
        scores[kk] = float(models[kk].inertia_)
    ks = np.array(sorted(scores))
    return elbow_k(ks, np.array([scores[int(v)] for v in ks]))


def _choose_k_silhouette(
    sel_x: np.ndarray,
    sel_w: np.ndarray,
    lo: int,
    hi: int,
    random_state: int,
    silhouette_sample_size: int,
    rng: np.random.Generator,
    scores: dict[int, float],
    models: dict[int, Any],
) -> int:
    """Fit every k in [max(lo, 2), hi] (filling ``models`` and ``scores`` with silhouettes on
    a seeded sample of at most ``silhouette_sample_size`` rows); the best k (ties: smaller)."""
    from sklearn.metrics import silhouette_score

    m = int(sel_w.sum())
    sil_ids, sil_counts = (
        _sample(sel_w.astype(np.int64), silhouette_sample_size, rng)
        if m > silhouette_sample_size
        else (np.arange(sel_x.shape[0]), sel_w)
    )
    sil_rows = np.repeat(sel_x[sil_ids], sil_counts.astype(np.int64), axis=0)
    best_k, best = lo, -np.inf
    for kk in range(max(lo, 2), hi + 1):
        models[kk] = _kmeans(sel_x, sel_w, kk, random_state)
        lab = models[kk].predict(sil_rows)
        if not 2 <= np.unique(lab).size < sil_rows.shape[0]:
            continue
        score = float(silhouette_score(sil_rows, lab))
        scores[kk] = score
        if score > best:
            best_k, best = kk, score
    return best_k


def _distinct_labels(
    distinct: np.ndarray,
    weights: np.ndarray,
    chosen: int,
    models: dict[int, Any],
    sampled: bool,
    k_selection: str,
    random_state: int,
    scores: dict[int, float],
) -> np.ndarray:
    """Cluster id per distinct row for the chosen k: the k-choosing fit's labels when it ran
    on all rows, else a fit on all rows (initialised from the sample fit's centroids; for
    ``fixed`` its inertia goes into ``scores``)."""
    if chosen <= 1:
        return np.zeros(distinct.shape[0], np.int64)
    if chosen in models and not sampled:
        return np.asarray(models[chosen].labels_.astype(np.int64))
    init = models[chosen].cluster_centers_ if chosen in models else None
    model = _kmeans(distinct, weights, chosen, random_state, init=init)
    if k_selection == "fixed":
        scores[chosen] = float(model.inertia_)
    return np.asarray(model.labels_.astype(np.int64))
