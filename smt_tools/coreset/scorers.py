"""Coreset scorers (docs/algorithms.md §10): pure functions on arrays, no I/O.

Every function works on the CANDIDATE rows only (included tiles) and breaks ties by
``tile_id``, so results do not depend on input row order. Two kinds of output:

- a score per row in [0, 1] (``lc``, ``fa``, ``random``);
- a full selection order over the rows (``cb``, ``fd``, ``kcenter``, ``lc_fd``): a permutation
  whose first b entries are the selection for budget b. :func:`order_to_scores` turns an order
  into scores ``1 - position / (n - 1)`` so that "top b by score" and "first b of the order"
  are the same set.
"""

from __future__ import annotations

import math

import numpy as np

from smt_tools.curation.ranking import minmax

#: Quantisation of floating gains/distances before ranking: values that differ by less
#: than ~1e-12 relative count as ties (broken by tile_id). This makes CPU and GPU pick the
#: same tiles although their log/matmul round differently in the last bits.
_QUANT = float(2**40)


def _quantise(x: np.ndarray) -> np.ndarray:
    """float64 -> int64 grid used for ranking (see :data:`_QUANT`)."""
    return np.floor(np.asarray(x, dtype=np.float64) * _QUANT).astype(np.int64)


def _check_ids(tile_ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(tile_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"tile_ids has shape {ids.shape}, expected ({n},)")
    if np.unique(ids).size != n:
        raise ValueError("tile_ids must be unique")
    return ids


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


def _entropy_rows(t: np.ndarray) -> np.ndarray:
    """Natural-log entropy of each row of non-negative totals ``t`` (m, C); 0 for empty rows.

    Columns are summed one at a time (same operation order on every backend).
    """
    tot = t[:, 0].copy()
    for c in range(1, t.shape[1]):
        tot += t[:, c]
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
        acc = xlogx[:, 0].copy()
        for c in range(1, t.shape[1]):
            acc += xlogx[:, c]
        h = np.where(
            tot > 0, np.log(np.where(tot > 0, tot, 1.0)) - acc / np.where(tot > 0, tot, 1.0), 0.0
        )
    return h


def cb_batch_size(n_selected: int, growth: float) -> int:
    """Tiles added per greedy step once ``n_selected`` are chosen: ``max(1, ceil(growth·n))``."""
    return max(1, math.ceil(growth * n_selected))


def _take_top(gain_q: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions (into gain_q) of the k best by (-gain_q, ids), in that order."""
    m = gain_q.size
    if k >= m:
        return np.lexsort((ids, -gain_q))
    # Everything strictly above the k-th largest value, plus the ties at that value.
    kth = np.partition(gain_q, m - k)[m - k]
    pool = np.flatnonzero(gain_q >= kth)
    sub = np.lexsort((ids[pool], -gain_q[pool]))[:k]
    return pool[sub]


def cb_order(counts: np.ndarray, tile_ids: np.ndarray, growth: float = 0.02) -> np.ndarray:
    """Class balance: greedy order that maximises the entropy of the selected set's pixels.

    counts: (n, C) class pixel counts of the candidate tiles; tile_ids: (n,) int64.
    Step: with S the summed counts of the tiles chosen so far, every remaining tile i gets
    the gain ``H(S + counts[i])`` (natural-log entropy of the cumulative class-pixel
    distribution); the best ``cb_batch_size(|chosen|, growth)`` tiles by (gain desc,
    tile_id asc) are appended. growth = 0 means one tile per step (exact greedy); the
    default adds 2 % of the chosen set per step, so S changes by at most ~2 % between
    re-evaluations and n = 155k needs a few hundred vectorised steps.
    Returns the full order: (n,) int64 positions.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"counts must be 2-D (n, C); got shape {c.shape}")
    n = c.shape[0]
    ids = _check_ids(tile_ids, n)
    if growth < 0:
        raise ValueError("growth must be >= 0")
    remaining = np.arange(n, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    done = 0
    s = np.zeros(c.shape[1], dtype=np.float64)
    while remaining.size:
        k = min(cb_batch_size(done, growth), remaining.size)
        gain = _quantise(_entropy_rows(s[None, :] + c[remaining]))
        top = _take_top(gain, ids[remaining], k)
        picked = remaining[top]
        order[done : done + k] = picked
        done += k
        s += c[picked].sum(axis=0)
        keep = np.ones(remaining.size, dtype=bool)
        keep[top] = False
        remaining = remaining[keep]
    return order


# --------------------------------------------------------------------------- kcenter

_NEG = np.iinfo(np.int64).min


def greedy_round(
    u: np.ndarray, pair: np.ndarray, cand_ids: np.ndarray, rest_max: int, want: int
) -> tuple[list[int], int]:
    """One round of exact k-center greedy among candidate tiles (shared by CPU and GPU).

    u: (k,) int64 quantised distance of each candidate to its nearest centre (modified);
    pair: (k, k) int64 quantised candidate-candidate squared distances; cand_ids: (k,) tile ids;
    rest_max: the largest distance among non-candidates (an upper bound for them);
    want: picks still needed. Returns (candidate positions in pick order, the smallest
    distance at pick time). The first pick is always taken (it is the global farthest),
    later ones only while strictly above rest_max.
    """
    chosen: list[int] = []
    low = _NEG
    while len(chosen) < want:
        best = int(u.max())
        if best == _NEG or (chosen and best <= rest_max):
            break
        tied = np.flatnonzero(u == best)
        j = int(tied[np.argmin(cand_ids[tied])])
        chosen.append(j)
        low = best
        np.minimum(u, pair[j], out=u)
        u[j] = _NEG
    return chosen, low


def kcenter_prepare(x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Centre and uniformly rescale features (order-preserving; keeps quantised squared
    distances small), and find the first centre: the row farthest from the mean.

    Returns (x (n, d) float64 rescaled, squared row norms (n,), first position).
    """
    mean = x.mean(axis=0, keepdims=True)
    xc = x - mean
    spread = float(np.sqrt(np.einsum("ij,ij->i", xc, xc).max())) if len(xc) else 0.0
    if spread > 0:
        xc /= spread
    x_norm = np.einsum("ij,ij->i", xc, xc)
    first = int(np.lexsort((ids, -_quantise(x_norm)))[0])
    return xc, x_norm, first


def _sq_dists(x: np.ndarray, x_norm: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (m, k) from rows of x (m, d) to centres (k, d), >= 0."""
    c_norm = np.einsum("ij,ij->i", centres, centres)
    d = x_norm[:, None] + c_norm[None, :] - 2.0 * (x @ centres.T)
    return np.maximum(d, 0.0)


def _update_min(
    x: np.ndarray,
    x_norm: np.ndarray,
    min_d: np.ndarray,
    rows: np.ndarray,
    cent: np.ndarray,
    chunk_rows: int,
) -> None:
    """min_d[rows] = min(min_d[rows], quantised squared distance to the nearest of cent)."""
    c_norm = np.einsum("ij,ij->i", cent, cent)
    neg2_ct = -2.0 * cent.T
    for start in range(0, rows.size, chunk_rows):
        r = rows[start : start + chunk_rows]
        g = x[r] @ neg2_ct
        g += c_norm
        best = g.min(axis=1)
        best += x_norm[r]
        d = _quantise(np.maximum(best, 0.0))
        min_d[r] = np.minimum(min_d[r], d)


class _Cells:
    """Voronoi cells around seeded sample rows, for exact pruning of k-center updates."""

    def __init__(self, x: np.ndarray, x_norm: np.ndarray, ids: np.ndarray, cells: int) -> None:
        n = x.shape[0]
        rng = np.random.default_rng(0)
        by_id = np.argsort(ids, kind="stable")
        seeds = by_id[np.sort(rng.choice(n, size=cells, replace=False))]
        self.centres = x[seeds]
        self.c_norm = x_norm[seeds]
        labels, dist = assign_nearest(x, self.centres)
        self.perm = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=cells)
        self.starts = np.r_[0, np.cumsum(counts)[:-1]]
        self.ends = self.starts + counts
        nonempty = counts > 0
        self.radius = np.zeros(cells)
        self.radius[nonempty] = np.maximum.reduceat(dist[self.perm], self.starts[nonempty])
        self.nonempty = nonempty

    def update(
        self,
        x: np.ndarray,
        x_norm: np.ndarray,
        min_d: np.ndarray,
        cent: np.ndarray,
        skip_below: int,
        chunk_rows: int,
    ) -> None:
        d_cell = np.sqrt(_sq_dists(self.centres, self.c_norm, cent))  # (G, B)
        ne = self.nonempty
        cell_max = np.full(self.starts.size, _NEG, dtype=np.int64)
        cell_max[ne] = np.maximum.reduceat(min_d[self.perm], self.starts[ne])
        rmax = np.sqrt(np.maximum(cell_max, 0) / _QUANT) * (1 + 1e-6) + 1e-9
        need = (d_cell - self.radius[:, None]) < rmax[:, None]
        need[cell_max <= max(skip_below, 0)] = False
        from threadpoolctl import threadpool_limits

        # Many small products: BLAS threads cost more than they give here.
        with threadpool_limits(limits=1, user_api="blas"):
            for g in np.flatnonzero(need.any(axis=1)):
                rows = self.perm[self.starts[g] : self.ends[g]]
                rows = rows[min_d[rows] > skip_below]
                if rows.size:
                    _update_min(x, x_norm, min_d, rows, cent[need[g]], chunk_rows)


def kcenter_order(
    features: np.ndarray,
    tile_ids: np.ndarray,
    budget: int,
    candidates: int = 1024,
    chunk_rows: int = 4096,
    cells: int = 512,
) -> np.ndarray:
    """k-center greedy with a running minimum distance (O(n) memory besides the features).

    features: (n, d) float64; tile_ids: (n,) int64; budget: number of greedy picks (1..n).
    The first centre is the tile farthest from the mean; each next one is the tile with the
    largest distance to its nearest chosen centre (ties by tile_id). After ``budget`` picks
    the remaining tiles follow by decreasing distance to their nearest centre.

    Exact batching: each round takes the ``candidates`` farthest tiles, runs the greedy among
    them with their mutual distances, and stops the round as soon as the best candidate is no
    longer strictly farther than every tile outside the candidate list (whose distances can
    only shrink). So the picks equal the one-at-a-time greedy; only the running minimum update
    is batched (one matrix product per round, in row chunks).

    Exact pruning of that update (results are unchanged): rows whose nearest centre is within
    R/2 (R = the round's smallest pick distance) cannot get closer to the new centres; and with
    ``cells`` > 0 the rows are grouped into Voronoi cells around seeded sample rows, and a new
    centre c skips a whole cell g when ``d(c, centre_g) - radius_g >= max_i∈g d_i`` (triangle
    inequality). Late rounds then only touch the cells next to the new centres.
    Returns the full order: (n,) int64 positions.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d); got shape {x.shape}")
    n = x.shape[0]
    ids = _check_ids(tile_ids, n)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in 1..{n}; got {budget}")
    x, x_norm, first = kcenter_prepare(x, ids)
    grid = _Cells(x, x_norm, ids, cells) if cells > 0 and n > 8 * cells else None
    picked_mask = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    done = 0
    new_centres = [first]
    skip_below = _NEG  # rows at or below this cannot get closer to the new centres
    min_d = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    while True:
        # Update the running minimum with the centres chosen in the last round. A new centre c
        # is at distance >= R from every older centre (R = smallest pick distance of the
        # round), so a row whose nearest centre is within R/2 cannot get closer: skip it.
        cent = x[np.asarray(new_centres)]
        if grid is None or (len(new_centres) == 1 and done == 0):
            active = np.flatnonzero(min_d > skip_below) if skip_below > _NEG else np.arange(n)
            _update_min(x, x_norm, min_d, active, cent, chunk_rows)
        else:
            grid.update(x, x_norm, min_d, cent, skip_below, chunk_rows)
        for p in new_centres:
            picked_mask[p] = True
            order[done] = p
            done += 1
        min_d[picked_mask] = _NEG
        if done >= budget:
            break
        # One round of exact batched greedy.
        k = min(candidates, n - done)
        cand = _take_top(min_d, ids, k)
        outside = n - done - k
        rest_max = int(np.partition(min_d, n - k - 1)[n - k - 1]) if outside > 0 else _NEG
        cx = x[cand]
        pair = _quantise(_sq_dists(cx, x_norm[cand], cx))
        chosen, low = greedy_round(min_d[cand].copy(), pair, ids[cand], rest_max, budget - done)
        new_centres = [int(cand[j]) for j in chosen]
        # (R/2)^2 = R^2/4, minus a relative margin for rounding.
        skip_below = low // 4 - (low >> 16) - 1
    rest = np.flatnonzero(~picked_mask)
    if rest.size:
        # Distances of the unpicked tiles to their nearest centre (already up to date).
        tail = rest[np.lexsort((ids[rest], -min_d[rest]))]
        order[done:] = tail
    return order


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


def assign_nearest(
    x: np.ndarray, centres: np.ndarray, chunk_rows: int = 32_768
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre per row: labels (n,) int64 and Euclidean distance (n,) float64."""
    x = np.asarray(x, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        part = x[start:stop]
        d = _sq_dists(part, np.einsum("ij,ij->i", part, part), centres)
        lab = d.argmin(axis=1)
        labels[start:stop] = lab
        dist[start:stop] = np.sqrt(d[np.arange(stop - start), lab])
    return labels, dist


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
