"""Numbers a user checks before training (docs/algorithms.md §9.5)."""

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
