"""Group k-fold splitters on source images (docs/algorithms.md §11).

Both splitters have the scikit-learn splitter shape: ``split(X, y=None, groups=None)`` yields
``(train_idx, test_idx)`` positional index arrays, one pair per fold, so they plug into any
cross-validation loop. All tiles of one group (by default one source image) land in one fold.

Determinism: groups are first put in a canonical order (sorted group values), then shuffled
with ``random_state``; nothing depends on the order of the input rows, so the same seed and
the same tile set always give the same folds.

- :class:`GroupKFoldSplitter` balances the number of tiles per fold (largest group first, to
  the fold with the fewest tiles; ties broken by the seeded shuffle).
- :class:`StratifiedGroupKFoldSplitter` balances class PIXEL counts: whole groups, largest
  (most valid pixels) first, go to the fold that keeps every fold's class distribution closest
  to the global one. As in scikit-learn's StratifiedGroupKFold, "closest" is measured by the
  spread across folds of each class's share: ``mean_c std_f(counts[f, c] / total[c])``, which is
  0 exactly when every fold holds 1/k of every class (and therefore the global distribution).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.choices import SplitStrategy
from smt_tools.errors import InputDataError

__all__ = [
    "FoldReport",
    "GroupKFoldSplitter",
    "StratifiedGroupKFoldSplitter",
    "assign_folds",
    "encode_groups",
    "fold_report",
    "holdout_mask",
]


def encode_groups(groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Canonical group codes: ``(codes (n,) int64, uniques (g,))`` with ``uniques`` sorted.

    Codes depend only on the group VALUES, never on row order. Missing values are an error.
    """
    series = pd.Series(np.asarray(groups))
    if series.isna().any():
        raise InputDataError(
            f"groups: {int(series.isna().sum())} rows have no group value; every tile needs one"
        )
    try:
        codes, uniques = pd.factorize(series, sort=True)
    except TypeError:  # mixed types (e.g. int and str): order by their text
        codes, uniques = pd.factorize(series.astype(str), sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _check_n_splits(n_splits: int, n_groups: int) -> None:
    if n_splits < 2:
        raise InputDataError(f"n_splits must be at least 2; got {n_splits}")
    if n_groups < n_splits:
        raise InputDataError(
            f"only {n_groups} groups for n_splits={n_splits}: every fold needs at least one "
            "group; lower n_splits or group by a finer column"
        )


def _tie_order(n_groups: int, random_state: int | None) -> np.ndarray:
    """Seeded rank of each (canonically ordered) group, used to break ties."""
    rng = np.random.default_rng(random_state)
    rank = np.empty(n_groups, dtype=np.int64)
    rank[rng.permutation(n_groups)] = np.arange(n_groups)
    return rank


def _assign_group_kfold(sizes: np.ndarray, n_splits: int, tie_rank: np.ndarray) -> np.ndarray:
    """Group -> fold, largest group first, to the fold with the fewest items (ties: lowest fold)."""
    order = np.lexsort((tie_rank, -sizes))
    load = np.zeros(n_splits, dtype=np.float64)
    out = np.empty(len(sizes), dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        out[g] = f
        load[f] += sizes[g]
    return out


def _assign_stratified(
    group_counts: np.ndarray, group_tiles: np.ndarray, n_splits: int, tie_rank: np.ndarray
) -> np.ndarray:
    """Group -> fold minimising ``mean_c std_f(share[f, c])`` greedily (see module docstring).

    Ties go to the fold with the fewest pixels, then the fewest tiles, then the lowest index;
    when as many groups remain as folds are empty, only empty folds are candidates, so no fold
    ends up empty.
    """
    counts = group_counts.astype(np.float64)
    total = counts.sum(axis=0)
    present = total > 0
    share = np.zeros_like(counts)
    share[:, present] = counts[:, present] / total[present]
    sizes = counts.sum(axis=1)
    order = np.lexsort((tie_rank, -sizes))
    k = float(n_splits)
    fold_share = np.zeros((n_splits, counts.shape[1]), dtype=np.float64)
    fold_size = np.zeros(n_splits, dtype=np.float64)
    fold_tiles = np.zeros(n_splits, dtype=np.int64)
    s1 = fold_share.sum(axis=0)  # (C,) sum over folds
    s2 = (fold_share**2).sum(axis=0)  # (C,) sum of squares over folds
    out = np.empty(len(sizes), dtype=np.int64)
    for step, g in enumerate(order):
        d = share[g]  # (C,)
        # variance across folds after adding d to fold f, for every f at once: (k, C)
        s1n = s1 + d
        s2n = s2[None, :] + 2.0 * fold_share * d[None, :] + (d * d)[None, :]
        var = np.maximum(s2n / k - (s1n / k) ** 2, 0.0)
        cost = np.sqrt(var).mean(axis=1)
        empty = fold_tiles == 0
        if len(order) - step <= int(empty.sum()):
            cost = np.where(empty, cost, np.inf)
        best = np.flatnonzero(np.isclose(cost, cost.min(), rtol=1e-12, atol=1e-15))
        if len(best) > 1:  # ties: fewest pixels, then fewest tiles, then the lowest index
            best = best[np.flatnonzero(fold_size[best] == fold_size[best].min())]
            best = best[np.flatnonzero(fold_tiles[best] == fold_tiles[best].min())]
        f = int(best[0])
        out[g] = f
        s2 = s2 + 2.0 * fold_share[f] * d + d * d
        s1 = s1n
        fold_share[f] += d
        fold_size[f] += sizes[g]
        fold_tiles[f] += group_tiles[g]
    return out


def assign_folds(
    groups: Any,
    n_splits: int,
    *,
    counts: np.ndarray | None = None,
    strategy: SplitStrategy | str = "group",
    random_state: int | None = 0,
) -> np.ndarray:
    """Fold of every row: (n,) int64 in ``[0, n_splits)``; all rows of a group share a fold.

    groups: (n,) group value per row (any hashable, e.g. source_image_id).
    counts: (n, C) class pixel counts per row; required for ``strategy="stratified_group"``.
    strategy: ``"group"`` (balance tile counts) or ``"stratified_group"`` (balance pixels).
    """
    codes, uniques = encode_groups(groups)
    n_groups = len(uniques)
    _check_n_splits(n_splits, n_groups)
    tie_rank = _tie_order(n_groups, random_state)
    if strategy == "group":
        sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
        group_fold = _assign_group_kfold(sizes, n_splits, tie_rank)
    elif strategy == "stratified_group":
        if counts is None:
            raise InputDataError(
                "strategy stratified_group needs class pixel counts per tile (y = (n, C) counts)"
            )
        c = np.asarray(counts)
        if c.ndim != 2 or c.shape[0] != len(codes):
            raise InputDataError(
                f"class counts have shape {c.shape}; expected ({len(codes)}, n_classes)"
            )
        if (c < 0).any():
            raise InputDataError("class counts must be non-negative")
        group_counts = np.zeros((n_groups, c.shape[1]), dtype=np.float64)
        np.add.at(group_counts, codes, c.astype(np.float64))
        group_tiles = np.bincount(codes, minlength=n_groups)
        group_fold = _assign_stratified(group_counts, group_tiles, n_splits, tie_rank)
    else:
        raise InputDataError(f"strategy must be 'group' or 'stratified_group'; got {strategy!r}")
    return group_fold[codes]


def holdout_mask(groups: Any, fraction: float, random_state: int | None = 0) -> np.ndarray:
    """Rows whose group is kept out as a test set: (n,) bool.

    ``round(fraction * n_groups)`` groups (at least one when ``fraction > 0``) are drawn by a
    seeded permutation of the sorted group values, so the choice is independent of row order.
    """
    codes, uniques = encode_groups(groups)
    if not 0.0 <= fraction < 1.0:
        raise InputDataError(f"holdout must be in [0, 1); got {fraction}")
    n_groups = len(uniques)
    n_test = 0 if fraction == 0 else max(1, round(fraction * n_groups))
    if n_test >= n_groups:
        raise InputDataError(f"holdout={fraction} keeps all {n_groups} groups out; lower it")
    # a different stream from the fold tie-breaks, so holdout and folds are independent draws
    rng = np.random.default_rng([0 if random_state is None else random_state, 7919])
    chosen = np.zeros(n_groups, dtype=bool)
    chosen[rng.permutation(n_groups)[:n_test]] = True
    return chosen[codes]


class _BaseSplitter:
    n_splits: int
    random_state: int | None
    _strategy = "group"

    def __init__(self, n_splits: int = 5, *, random_state: int | None = 0) -> None:
        self.n_splits = int(n_splits)
        self.random_state = random_state

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits

    def _folds(self, X: Any, y: Any, groups: Any) -> np.ndarray:
        raise NotImplementedError

    def split(
        self, X: Any, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` (int64 positional indices) for each fold in order."""
        if groups is None:
            raise InputDataError(f"{type(self).__name__}.split needs groups=")
        n = len(groups)
        if X is not None and len(X) != n:
            raise InputDataError(f"X has {len(X)} rows but groups has {n}")
        fold = self._folds(X, y, groups)
        self.folds_ = fold
        for f in range(self.n_splits):
            yield np.flatnonzero(fold != f), np.flatnonzero(fold == f)


class GroupKFoldSplitter(_BaseSplitter):
    """K folds of whole groups, balancing the number of tiles per fold.

    ``split(X, y=None, groups)``: ``y`` is ignored. After a split, ``folds_`` holds the fold
    of every row ((n,) int64).
    """

    def _folds(self, X: Any, y: Any, groups: Any) -> np.ndarray:
        return assign_folds(groups, self.n_splits, strategy="group", random_state=self.random_state)


class StratifiedGroupKFoldSplitter(_BaseSplitter):
    """K folds of whole groups, balancing class PIXEL counts across folds.

    ``split(X, y, groups)``: ``y`` is the (n, C) class pixel count matrix (one row per tile).
    After a split, ``folds_`` holds the fold of every row and ``report_`` a :class:`FoldReport`.
    """

    def _folds(self, X: Any, y: Any, groups: Any) -> np.ndarray:
        if y is None:
            raise InputDataError(
                "StratifiedGroupKFoldSplitter.split needs y = (n, C) class pixel counts"
            )
        fold = assign_folds(
            groups,
            self.n_splits,
            counts=np.asarray(y),
            strategy="stratified_group",
            random_state=self.random_state,
        )
        self.report_ = fold_report(np.asarray(y), fold, self.n_splits)
        return fold


@dataclass(frozen=True)
class FoldReport:
    """Class pixel shares per fold.

    shares: (k, C) float64, row f = class distribution of fold f's pixels.
    global_share: (C,) float64 over all folds.
    max_deviation: largest |shares[f, c] - global_share[c]|.
    tiles: (k,) int64 tiles per fold; pixels: (k,) int64 valid pixels per fold.
    """

    shares: np.ndarray
    global_share: np.ndarray
    max_deviation: float
    tiles: np.ndarray
    pixels: np.ndarray


def fold_report(counts: np.ndarray, fold: np.ndarray, n_splits: int) -> FoldReport:
    """Per-fold class shares of ``counts`` (n, C) under ``fold`` (n,); rows with fold < 0 ignored."""
    c = np.asarray(counts, dtype=np.float64)
    fold = np.asarray(fold, dtype=np.int64)
    keep = fold >= 0
    per = np.zeros((n_splits, c.shape[1]), dtype=np.float64)
    np.add.at(per, fold[keep], c[keep])
    pixels = per.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(pixels[:, None] > 0, per / np.where(pixels > 0, pixels, 1)[:, None], 0.0)
    total = per.sum(axis=0)
    global_share = total / total.sum() if total.sum() > 0 else np.zeros_like(total)
    dev = float(np.abs(shares - global_share[None, :]).max()) if shares.size else 0.0
    return FoldReport(
        shares=shares,
        global_share=global_share,
        max_deviation=dev,
        tiles=np.bincount(fold[keep], minlength=n_splits).astype(np.int64),
        pixels=pixels.astype(np.int64),
    )
