"""Sampler weights recomputed over a selected coreset (docs/algorithms.md §10). Pure numpy."""

from __future__ import annotations

from typing import Literal

import numpy as np

WeightFormula = Literal["sqrt_inverse_freq", "inverse_freq"]


def coreset_sampler_weights(
    proportions: np.ndarray,
    selected: np.ndarray,
    formula: WeightFormula = "sqrt_inverse_freq",
    cap: float | None = None,
) -> np.ndarray:
    """Per-tile sampler weight over the selected set; unselected tiles get 0.

    proportions: (n, C) float64 class proportions over valid pixels (rows sum to 1 or 0);
    selected: (n,) bool. Over the selected rows ``f_c = mean_i p[i, c]``; then
    ``w_i = Σ_c sqrt(p[i, c] / f_c)`` (``sqrt_inverse_freq``) or ``Σ_c p[i, c] / f_c``
    (``inverse_freq``), summed over classes with ``f_c > 0``; ``cap`` clips from above.
    Returns (n,) float64.
    """
    p = np.asarray(proportions, dtype=np.float64)
    sel = np.asarray(selected, dtype=bool)
    if p.ndim != 2 or sel.shape != (p.shape[0],):
        raise ValueError(f"proportions (n, C) and selected (n,) disagree: {p.shape} vs {sel.shape}")
    if formula not in ("sqrt_inverse_freq", "inverse_freq"):
        raise ValueError(f"formula must be sqrt_inverse_freq or inverse_freq; got {formula!r}")
    if cap is not None and not cap > 0:
        raise ValueError(f"cap must be > 0; got {cap}")
    w = np.zeros(p.shape[0], dtype=np.float64)
    if not sel.any():
        return w
    f = p[sel].mean(axis=0)
    present = f > 0
    ratio = p[sel][:, present] / f[present]
    if formula == "sqrt_inverse_freq":
        ratio = np.sqrt(ratio)
    w[sel] = ratio.sum(axis=1)
    if cap is not None:
        np.minimum(w, cap, out=w)
    return w


def effective_sample_size(weights: np.ndarray) -> float:
    """``(Σw)² / Σw²`` over the given weights (0 when all are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0
