"""Final sampler_weight: rare-class boost, scale to max 1, temperature, floor, excluded = 0
(docs/algorithms.md §9)."""

from __future__ import annotations

import numpy as np

from smt_tools.errors import EmptySelectionError


def rare_classes(counts: np.ndarray, class_values: np.ndarray) -> np.ndarray:
    """Class values whose pixel share over ``counts`` (n, C) int64 is below the mean share.

    Returns (r,) int64 class values (subset of ``class_values`` (C,)).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.zeros(0, np.int64)
    share = counts.sum(axis=0) / total
    return np.asarray(class_values, dtype=np.int64)[share < share.mean()]


def rare_class_boost(
    p: np.ndarray, class_values: np.ndarray, rare: np.ndarray, multiplier: float
) -> np.ndarray:
    """``boost_i = 1 + (multiplier - 1) * sum_{c in rare} p[i, c]``: (n,) float64.

    p: (n, C) float64 proportions; class_values: (C,) int64; rare: class values to boost.
    """
    p = np.asarray(p, dtype=np.float64)
    if multiplier < 1:
        raise ValueError(f"rare-class multiplier must be >= 1; got {multiplier}")
    cols = np.isin(np.asarray(class_values, dtype=np.int64), np.asarray(rare, dtype=np.int64))
    return 1.0 + (multiplier - 1.0) * p[:, cols].sum(axis=1)


def resolve_floor(weight_floor: float | str, n_included: int) -> float:
    """``weight_floor`` as a number: ``'auto'`` = 1 / n_included (the older behaviour)."""
    if weight_floor == "auto":
        return 1.0 / max(n_included, 1)
    value = float(weight_floor)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"weight_floor must be in [0, 1] or 'auto'; got {weight_floor!r}")
    return value


def final_weights(
    score: np.ndarray,
    included: np.ndarray,
    *,
    boost: np.ndarray | None = None,
    weight_floor: float | str = 0.05,
    temperature: float = 1.0,
) -> np.ndarray:
    """sampler_weight for ALL n tiles: (n,) float64.

    score: (m,) float64 combined score of the m INCLUDED tiles (in the order of
    ``np.flatnonzero(included)``); included: (n,) bool; boost: (m,) float64 or None.
    Steps: multiply by boost, scale so the largest weight is 1 (an all-zero score means all
    tiles are equal: all 1), raise to ``temperature`` (alpha in (0, 1]; 1 = unchanged, 0.5 =
    square root), floor at ``weight_floor``, excluded tiles 0.
    Nothing included -> :class:`EmptySelectionError`.
    """
    if not 0.0 < temperature <= 1.0:
        raise ValueError(f"temperature must be in (0, 1]; got {temperature!r}")
    included = np.asarray(included, dtype=bool)
    idx = np.flatnonzero(included)
    m = idx.size
    if m == 0:
        raise EmptySelectionError(
            "every tile is excluded, so no tile can be sampled; relax the exclusion settings "
            "(exclude_border_nodata, exclude_black_border, min_entropy, max_nodata_ratio)"
        )
    w = np.asarray(score, dtype=np.float64).copy()
    if w.shape != (m,):
        raise ValueError(f"score has shape {w.shape}, expected ({m},) (one per included tile)")
    if boost is not None:
        b = np.asarray(boost, dtype=np.float64)
        if b.shape != (m,):
            raise ValueError(f"boost has shape {b.shape}, expected ({m},)")
        w = w * b
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    top = float(w.max())
    w = w / top if top > 0 else np.ones_like(w)
    if temperature != 1.0:  # w in [0, 1] with max 1: w ** alpha keeps the max at 1
        w = np.power(w, temperature)
    w = np.maximum(w, resolve_floor(weight_floor, m))
    out = np.zeros(included.shape[0], np.float64)
    out[idx] = w
    return out
