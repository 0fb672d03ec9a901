"""Numbers a user checks before training (docs/algorithms.md §9.5, §9.6)."""

from __future__ import annotations

import numpy as np


def effective_sample_size(w: np.ndarray) -> float:
    """``ESS = (sum w)^2 / sum w^2`` for weights w (n,) >= 0; 0.0 when all weights are 0."""
    w = np.asarray(w, dtype=np.float64)
    s2 = float(np.square(w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0


def class_pixel_share(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expected per-epoch pixel share of each class when tiles are drawn with weights w.

    ``E_w[c] = sum_i w_i counts[i, c] / sum_i w_i valid_i``. counts: (n, C) int64; w: (n,)
    float64 >= 0. Returns (C,) float64 summing to 1 (zeros when no weighted pixel).
    """
    counts = np.asarray(counts, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if counts.shape[0] != w.shape[0]:
        raise ValueError(f"counts has {counts.shape[0]} rows but w has {w.shape[0]}")
    per_class = w @ counts
    total = float(per_class.sum())
    return per_class / total if total > 0 else np.zeros(counts.shape[1], np.float64)


def class_shares_uniform_vs_weighted(
    counts: np.ndarray, w: np.ndarray, included: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(uniform, weighted) (C,) float64 class pixel shares.

    uniform: every INCLUDED tile drawn equally often (what sampling without weights over the
    usable tiles gives); weighted: tiles drawn proportionally to ``w`` (n,).
    """
    uniform = class_pixel_share(counts, np.asarray(included, dtype=np.float64))
    return uniform, class_pixel_share(counts, w)


def nodata_pixel_share(window_pixels: np.ndarray, valid_pixels: np.ndarray, w: np.ndarray) -> float:
    """Share of window pixels that are not a class (nodata or outside the raster), with tiles
    drawn proportionally to ``w``: ``sum_i w_i (window_i - valid_i) / sum_i w_i window_i``.

    window_pixels, valid_pixels: (n,) int64 (valid <= window); w: (n,) float64 >= 0
    (ones: every tile once). 0.0 when no weighted pixel.
    """
    window = np.asarray(window_pixels, dtype=np.float64)
    valid = np.asarray(valid_pixels, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if not window.shape == valid.shape == w.shape:
        raise ValueError(
            f"window_pixels {window.shape}, valid_pixels {valid.shape} and w {w.shape} differ"
        )
    total = float(w @ window)
    return float(w @ np.maximum(window - valid, 0.0)) / total if total > 0 else 0.0


def class_tile_share(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Probability that one draw (tiles drawn proportionally to ``w``) holds class c:
    ``sum_i w_i [counts[i, c] > 0] / sum_i w_i`` (docs/algorithms.md §9.6).

    counts: (n, C) int64; w: (n,) float64 >= 0 (ones: the share of tiles holding c). Returns
    (C,) float64 (zeros when every weight is 0).
    """
    counts = np.asarray(counts)
    w = np.asarray(w, dtype=np.float64)
    if counts.shape[0] != w.shape[0]:
        raise ValueError(f"counts has {counts.shape[0]} rows but w has {w.shape[0]}")
    total = float(w.sum())
    if total <= 0:
        return np.zeros(counts.shape[1], np.float64)
    return np.asarray(w @ (counts > 0).astype(np.float64) / total, dtype=np.float64)


def epochs_to_see_tiles(counts: np.ndarray, w: np.ndarray, draws: int) -> np.ndarray:
    """Per class c, the mean over the tiles holding c with ``w_i > 0`` of ``1 / (draws p_i)``,
    ``p_i = w_i / sum w``: the epochs of ``draws`` draws with replacement it takes, on average
    over those tiles, to draw one of them once in expectation (docs/algorithms.md §9.6).

    counts: (n, C) int64; w: (n,) float64 >= 0; draws >= 1. Returns (C,) float64: 1.0 for every
    class under uniform weights with ``draws = n``; inf for a class no drawable tile holds.
    """
    counts = np.asarray(counts)
    w = np.asarray(w, dtype=np.float64)
    if counts.shape[0] != w.shape[0]:
        raise ValueError(f"counts has {counts.shape[0]} rows but w has {w.shape[0]}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}")
    drawn = w > 0
    out = np.full(counts.shape[1], np.inf)
    if not drawn.any():
        return out
    inv = float(w.sum()) / (draws * w[drawn])  # 1 / (draws p_i) of the drawable tiles
    holds = counts[drawn] > 0  # (m, C)
    n_holding = holds.sum(axis=0)
    seen = n_holding > 0
    out[seen] = (inv @ holds.astype(np.float64))[seen] / n_holding[seen]
    return out
