"""cb's second-order filter (smt_tools/coreset/cb.py): a superset of the tiles that can be
picked, tight while S is small, and the greedy's picks equal to evaluating every tile."""

from __future__ import annotations

import numpy as np
import pytest

from smt_tools.coreset import cb, scorers
from smt_tools.coreset.cb import cb_batch_size, entropy_rows
from smt_tools.coreset.kcenter import _quantise, _take_top


def _reference(c: np.ndarray, ids: np.ndarray, growth: float) -> np.ndarray:
    """The cb greedy evaluating every remaining tile at every step."""
    n = c.shape[0]
    remaining = np.arange(n)
    order = np.empty(n, dtype=np.int64)
    s = np.zeros(c.shape[1])
    done = 0
    while remaining.size:
        k = min(cb_batch_size(done, growth), remaining.size)
        top = _take_top(_quantise(entropy_rows(s[None, :] + c[remaining])), ids[remaining], k)
        order[done : done + k] = remaining[top]
        done += k
        s += c[remaining[top]].sum(axis=0)
        remaining = np.delete(remaining, top)
    return order


def _counts(n: int, seed: int) -> np.ndarray:
    """256x256 tiles: a Dirichlet mixture, 10 % pure tiles, a rare class, nodata in 5 %."""
    rng = np.random.default_rng(seed)
    alphas = rng.uniform(0.05, 5.0, size=(5, 6))
    alphas[:, -1] = 0.05
    p = rng.gamma(alphas[rng.integers(0, 5, n)])
    p /= p.sum(axis=1, keepdims=True)
    pure = rng.random(n) < 0.1
    p[pure] = 0.0
    p[pure, rng.integers(0, 6, pure.sum())] = 1.0
    valid = 65536 - np.where(rng.random(n) < 0.05, rng.integers(0, 40000, n), 0)
    c = np.floor(p * valid[:, None])
    c[:, 0] += valid - c.sum(axis=1)
    return c


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_equals_full_evaluation_at_20k(seed: int) -> None:
    c = _counts(20_000, seed)
    ids = np.random.default_rng(seed).permutation(10**6)[:20_000].astype(np.int64)
    np.testing.assert_array_equal(scorers.cb_order(c, ids, 0.02), _reference(c, ids, 0.02))


@pytest.mark.parametrize("picked", [5, 20, 200])
def test_second_order_filter_keeps_every_tile_at_or_above_t(picked: int) -> None:
    c = _counts(50_000, 7)
    pool = cb._Pool(c, np.arange(c.shape[0], dtype=np.int64))
    s = c[(c > 0).all(axis=1)][:picked].sum(axis=0)  # S with every class (no +inf bounds)
    assert cb._second_order_on(pool, float(s.sum()))  # the term is on
    exact = entropy_rows(s[None, :] + c)
    t = float(np.sort(exact)[-5]) - cb._DELTA  # the 5th best gain, as a step with k = 5
    kept = cb._first_filter(pool, s, t)
    assert set(np.flatnonzero(exact >= t).tolist()) <= set(kept.tolist())
