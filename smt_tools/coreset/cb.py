"""Class-balance greedy (``cb``, docs/algorithms.md §10) with exact candidate pruning.

The greedy appends, each step, the ``k`` remaining tiles with the highest quantised gain
``H(S + counts[i])`` (ties by tile_id). Evaluating every remaining tile at every step costs
O(n·C) entropies per step. Here each step evaluates the gain only on the tiles that CAN be
among the step's top ``k``; the picks are exactly those of the full evaluation (same tiles,
same order; tests/test_scale_batched.py compares the two).

Why it is exact: write ``p`` for S's class shares, ``q`` for the tile's and
``w = |c| / (|S| + |c|)``. ``h(w) = H((1 − w)·p + w·q)`` is concave in w (entropy is concave),
so ``h(w) <= h(0) + w·h'(0)``:

    H(S + c) <= UB(c) = H(S) + (Σ_j c_j·a_j − |c|·H(S)) / (|S| + |c|),   a_j = −ln p_j

(+inf when the tile has pixels of a class S has none of). The k-th best exact gain among any
k tiles is a lower bound ``g`` of the step's k-th best gain; a tile with ``UB < g − δ`` is
strictly below it and cannot be picked. ``UB >= t`` is tested as
``Σ_j c_j (a_j − t) >= (t − H(S))·|S|``: one float32 matrix-vector product per step, loosened
by its rounding bound. δ = 1e-10 covers the float64 error of the bound and of the gains (both
below 1e-13 for tiles of up to 2^24 pixels), so no tile the full evaluation would pick is
pruned; a larger δ would let through every tile within δ of the k-th gain, and late in the
greedy, when the gains of all tiles differ by about 1e-6, that is a large share of them. The bound's error is
O(w²): once S holds a few hundred tiles a step evaluates little more than k tiles, and the
per-step cost is one pass over the counts.

While S is small (w up to 1/2) the O(w²) error lets most tiles through, so the pass then uses
the second-order bound ``h(w) <= h(0) + w·h'(0) − w²/2 · κ`` with κ a lower bound of −h'' on
[0, w]: ``−h''(u) = Σ_j (q_j − p_j)² / r_j(u)``, ``r_j(u) = p_j + u (q_j − p_j) <= p_j + w_max``
(w_max: the largest tile's w), so ``κ = Σ_j (q_j − p_j)² / (p_j + w_max)`` (classes of S). In
float32 it is lowered by its rounding bound (:func:`_kappa_low`); it only ever removes tiles
whose UB2 is below t, so the picks stay exact.
"""

from __future__ import annotations

import math

import numpy as np

from smt_tools.coreset.kcenter import _QUANT, _quantise, _take_top

#: slack between the bound and the gains (far above their floating-point error, ~1e-13)
_DELTA = 1e-10
#: below this many remaining tiles a step evaluates all of them
_FULL_BELOW = 2048
#: gains are computed this many rows at a time (bounds the temporaries)
_GAIN_CHUNK = 1 << 19
#: the filter adds the second-order term while the largest tile's w is above this (S holds
#: fewer than about 500 tiles' pixels; later the first-order bound is already tight)
_SECOND_ORDER_ABOVE = 2e-3


def entropy_rows(t: np.ndarray) -> np.ndarray:
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


class _Pool:
    """The remaining tiles, compacted when half of the rows are used up (positions ``rem``
    into the input, their counts ``c`` (m, C), row totals ``tot``, ids, ``alive`` flags)."""

    def __init__(self, c: np.ndarray, ids: np.ndarray) -> None:
        self.rem = np.arange(c.shape[0], dtype=np.int64)
        self.c = c
        # the per-step filter: float32 columns (half the bytes; column loops, no BLAS threads,
        # which stall on a busy 2-core machine)
        self.c32 = np.ascontiguousarray(c.T, dtype=np.float32)
        self.cmax = c.max(axis=0) if c.shape[0] else np.zeros(c.shape[1])
        self.tot = c.sum(axis=1)
        # the second-order term of the filter: 1/|c| and |c| (float32; integer totals are exact)
        self.inv32 = np.where(self.tot > 0, 1.0 / np.where(self.tot > 0, self.tot, 1.0), 0.0)
        self.inv32 = self.inv32.astype(np.float32)
        self.tot32 = self.tot.astype(np.float32)
        #: the largest row total (of all rows: an upper bound for the alive ones)
        self.tot_max = float(self.tot.max()) if self.tot.size else 0.0
        self.ids = ids
        self.alive = np.ones(c.shape[0], dtype=bool)
        self.n_alive = c.shape[0]
        #: rows that passed the previous step's first filter (where the next top k are sought)
        self.near = np.zeros(0, dtype=np.int64)

    def compact(self) -> bool:
        """Drop used rows when they are over half of the arrays; True when it did."""
        if self.n_alive * 2 > self.rem.size:
            return False
        keep = np.flatnonzero(self.alive)
        self.rem, self.c, self.c32, self.tot, self.ids = (
            self.rem[keep],
            self.c[keep],
            np.ascontiguousarray(self.c32[:, keep]),
            self.tot[keep],
            self.ids[keep],
        )
        self.inv32, self.tot32 = self.inv32[keep], self.tot32[keep]
        self.near = np.zeros(0, dtype=np.int64)
        self.alive = np.ones(keep.size, dtype=bool)
        return True

    def gains(self, s: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Quantised gains ``H(s + c[rows])``: (len(rows),) int64, in chunks of
        :data:`_GAIN_CHUNK` rows (row by row the same operations, so the same values)."""
        if rows.size <= _GAIN_CHUNK:
            return self._gains(s, rows)
        return np.concatenate(
            [self._gains(s, rows[a : a + _GAIN_CHUNK]) for a in range(0, rows.size, _GAIN_CHUNK)]
        )

    def _gains(self, s: np.ndarray, rows: np.ndarray) -> np.ndarray:
        t = s[None, :] + self.c[rows]
        if not (s > 0).all():
            return _quantise(entropy_rows(t))
        # every entry > 0: the same operations as entropy_rows without its guards
        tot = t[:, 0].copy()
        for j in range(1, t.shape[1]):
            tot += t[:, j]
        xlogx = t * np.log(t)
        acc = xlogx[:, 0].copy()
        for j in range(1, t.shape[1]):
            acc += xlogx[:, j]
        return _quantise(np.log(tot) - acc / tot)

    def take(self, rows: np.ndarray) -> None:
        self.alive[rows] = False
        self.n_alive -= rows.size


def _kth_best(pool: _Pool, s: np.ndarray, rows: np.ndarray, k: int) -> float:
    """The k-th best exact gain among ``rows`` (distinct): a lower bound of the step's k-th
    best gain; -inf when there are fewer than k rows."""
    if rows.size < k:
        return -np.inf
    g = pool.gains(s, rows)
    return float(np.partition(g, g.size - k)[g.size - k]) / _QUANT


def _shares_logs(s: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """|S|, H(S), ``a_j = −ln p_j`` (0 where S has no pixel of class j) and that mask."""
    total = float(s.sum())
    h = float(entropy_rows(s[None, :])[0])
    present = s > 0
    a = np.zeros_like(s)
    a[present] = -np.log(s[present] / total)
    return total, h, a, present


def _bounds(pool: _Pool, s: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """First-order UB (module docstring) of ``rows`` (None: every row, used rows -inf); +inf
    for rows with pixels of a class S lacks. float64."""
    total, h, a, present = _shares_logs(s)
    c = pool.c if rows is None else pool.c[rows]
    tc = pool.tot if rows is None else pool.tot[rows]
    ub = np.einsum("ij,j->i", c, a)
    ub -= tc * h
    ub /= total + tc
    ub += h
    if not present.all():
        ub[(c[:, ~present] > 0).any(axis=1)] = np.inf
    if rows is None:
        ub[~pool.alive] = -np.inf
    return ub


def _upper_bounds(pool: _Pool, s: np.ndarray) -> np.ndarray:
    """UB of every row; -inf for used rows. (m,) float64."""
    return _bounds(pool, s, None)


def _top_by_bound(ub: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` highest ``ub`` (used rows are -inf; ``m`` <= rows alive).

    A strided sample gives a cut that about 4m rows pass; the partition runs on those only
    (falls back to the whole array when fewer than m pass)."""
    stride = 64
    if ub.size > 64 * m:
        sample = ub[::stride]
        j = min(sample.size, max(8, 4 * m // stride))
        cut = np.partition(sample, sample.size - j)[sample.size - j]
        rows = np.flatnonzero(ub >= cut)
        if rows.size >= m:
            return rows[np.argpartition(ub[rows], rows.size - m)[rows.size - m :]]
    return np.argpartition(ub, ub.size - m)[ub.size - m :]


def _second_order_on(pool: _Pool, total: float) -> bool:
    """Whether the filter adds the second-order term (w_max > :data:`_SECOND_ORDER_ABOVE`)."""
    return pool.tot_max > _SECOND_ORDER_ABOVE * (total + pool.tot_max)


def _dot32(c: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``Σ_j c[j] · coef[j]`` over the float32 columns ``c`` (C, m), column by column in
    place (one temporary; no BLAS threads). (m,) float32."""
    w = coef.astype(np.float32)
    v = np.multiply(c[0], w[0])
    tmp = np.empty_like(v)
    for j in range(1, w.size):
        np.multiply(c[j], w[j], out=tmp)
        v += tmp
    return v


def _approx_bounds(pool: _Pool, s: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """UB of ``rows`` (None: all; used rows -inf) in float32: only to choose which rows the
    threshold is sought among, never to leave a row out. float32."""
    total, h, a, present = _shares_logs(s)
    c = pool.c32 if rows is None else pool.c32[:, rows]
    u = _dot32(c, a)
    tc = pool.tot32 if rows is None else pool.tot32[rows]
    u -= tc * np.float32(h)
    u /= tc + np.float32(total)
    if _second_order_on(pool, total):  # UB2 (ranking only)
        w = tc / (tc + np.float32(total))
        u -= np.float32(0.5) * w * w * _kappa_low(pool, s, rows, c)
    for j in np.flatnonzero(~present).tolist():
        u[c[j] > 0] = np.inf
    if rows is None:
        u[~pool.alive] = -np.inf
    return u


def _threshold(pool: _Pool, s: np.ndarray, hint: np.ndarray, k: int, rows: np.ndarray) -> float:
    """t: the k-th best exact gain among ``hint`` and the ``2k + 64`` of ``rows`` (alive) with
    the highest bound, minus δ (-inf when fewer than k)."""
    m = min(rows.size, 2 * k + 64)
    if m == 0:
        return _kth_best(pool, s, hint, k) - _DELTA
    stride = max(1, rows.size // (64 * m + 65536))
    if stride > 1:  # many rows: seek among an even sample of them (t stays a lower bound)
        rows = rows[::stride]
        m = min(rows.size, m)
    best = rows[_top_by_bound(_approx_bounds(pool, s, rows), m)]
    return _kth_best(pool, s, _distinct(hint, best), k) - _DELTA


def _first_filter(
    pool: _Pool, s: np.ndarray, t: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """Alive rows (of ``rows``; None: all) with UB >= t (a superset), in one float32 pass;
    UB2 >= t instead while S is small (:func:`_curvature`).

    ``UB >= t  <=>  Σ_j c_j (a_j − t) >= (t − H)|S|``; b_j = a_j − t (0 on classes S lacks:
    rows with such pixels have UB = +inf and are kept). float32 rounds v by at most
    ``C · 2^-22 · Σ_j cmax_j |b_j|``; the test is loosened by that much.
    """
    total, h, a, present = _shares_logs(s)
    b = np.where(present, a - t, 0.0)
    err = (s.size + 2) * 2.0**-22 * float((pool.cmax * np.abs(b)).sum()) + 1e-6
    c = pool.c32 if rows is None else pool.c32[:, rows]
    v = _dot32(c, b)
    rhs = (t - h) * total - err
    if _second_order_on(pool, total):
        keep = v >= _curvature(pool, s, rows, c, rhs)
    else:
        keep = v >= rhs
    for j in np.flatnonzero(~present).tolist():
        keep |= c[j] > 0
    if rows is None:
        keep &= pool.alive
        return np.flatnonzero(keep)
    return rows[keep]


def _curvature(
    pool: _Pool, s: np.ndarray, rows: np.ndarray | None, c: np.ndarray, rhs: float
) -> np.ndarray:
    """``rhs + z``: the filter's right-hand side raised by a lower bound ``z`` of the
    second-order term ``w²/2 · κ · (|S| + |c|)`` (module docstring), float32."""
    total = float(s.sum())
    tc = pool.tot32 if rows is None else pool.tot32[rows]
    z = _kappa_low(pool, s, rows, c)
    d = tc * tc  # z = K/2 · |c|² / (|S| + |c|)
    d /= tc + np.float32(total)
    d *= z
    d *= np.float32(0.5 * (1.0 - 1e-5))
    d += np.float32(rhs)
    return d


def _kappa_low(pool: _Pool, s: np.ndarray, rows: np.ndarray | None, c: np.ndarray) -> np.ndarray:
    """A lower bound K of each row's curvature κ, float32 (0 where S has no pixels).

    κ >= Σ_j β_j (q_j − p_j)² with β_j = 1/(p_j + w_max) (classes of S). float32 rounds
    ``q_j − p_j`` by at most 8 ε (q, p <= 1): K is lowered by ``40 ε Σ β`` and by a relative
    1e-5 (far above the ε = 2^-24 of each of the few roundings).
    """
    total = float(s.sum())
    present = np.flatnonzero(s > 0)
    p = s[present] / total
    beta = 1.0 / (p + pool.tot_max / (total + pool.tot_max))
    inv = pool.inv32 if rows is None else pool.inv32[rows]
    k_sum = np.zeros(inv.size, dtype=np.float32)
    d = np.empty(inv.size, dtype=np.float32)
    for j, pj, bj in zip(present.tolist(), p.tolist(), beta.tolist(), strict=True):
        np.multiply(c[j], inv, out=d)
        d -= np.float32(pj)
        d *= d
        d *= np.float32(bj)
        k_sum += d
    k_sum *= np.float32(1.0 - 1e-5)
    k_sum -= np.float32(40 * 2.0**-24 * float(beta.sum()))
    return np.maximum(k_sum, np.float32(0), out=k_sum)


def _candidates(pool: _Pool, s: np.ndarray, hint: np.ndarray, k: int) -> np.ndarray:
    """Rows that may be among the step's top k (every row the full evaluation would pick).

    t (:func:`_threshold`) is sought among the previous step's first-filter rows when there are
    enough of them, else among all; :func:`_first_filter` keeps the rows with UB >= t (UB2
    while S is small). When many are left (t was loose), t is sharpened among them and they are
    filtered again.
    """
    if float(s.sum()) <= 0 or pool.n_alive <= max(_FULL_BELOW, 4 * k):
        return np.flatnonzero(pool.alive)
    near = pool.near[pool.alive[pool.near]]
    if near.size < k:
        near = np.flatnonzero(pool.alive)
    t = _threshold(pool, s, hint, k, near)
    rows = _first_filter(pool, s, t)
    pool.near = rows
    if rows.size <= 8 * k + 256:
        return rows
    t2 = _threshold(pool, s, hint, k, rows)
    return _first_filter(pool, s, t2, rows) if t2 > t else rows


def _distinct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``a`` and ``b`` (one sort; np.union1d hashes)."""
    v = np.sort(np.concatenate([a, b]))
    return v[np.r_[True, v[1:] != v[:-1]]] if v.size else v


def cb_order_pruned(c: np.ndarray, ids: np.ndarray, growth: float) -> np.ndarray:
    """The cb greedy order of :func:`smt_tools.coreset.scorers.cb_order` (same picks, same
    order), evaluating each step's gains only on the candidates :func:`_candidates` keeps.

    c: (n, C) float64 class pixel counts; ids: (n,) int64 unique. Returns (n,) int64 positions.
    """
    n = c.shape[0]
    pool = _Pool(c, ids)
    order = np.empty(n, dtype=np.int64)
    s = np.zeros(c.shape[1], dtype=np.float64)
    hint = np.zeros(0, dtype=np.int64)
    done = 0
    while done < n:
        k = min(cb_batch_size(done, growth), n - done)
        if pool.compact():
            hint = np.zeros(0, dtype=np.int64)
        cand = _candidates(pool, s, hint, k)
        gain = pool.gains(s, cand)
        top = _take_top(gain, pool.ids[cand], k)
        picked = cand[top]
        order[done : done + k] = pool.rem[picked]
        done += k
        s += pool.c[picked].sum(axis=0)
        pool.take(picked)
        hint = _best_unpicked(cand, gain, top, pool.ids, 4 * k + 64)
    return order


def _best_unpicked(
    cand: np.ndarray, gain: np.ndarray, top: np.ndarray, ids: np.ndarray, m: int
) -> np.ndarray:
    """The ``m`` best candidates of this step that were not picked (next step's hint)."""
    rest = np.ones(cand.size, dtype=bool)
    rest[top] = False
    left = cand[rest]
    if left.size <= m:
        return left
    return left[_take_top(gain[rest], ids[left], m)]
