"""Sampler weights recomputed over a selected coreset (docs/algorithms.md §10). Pure numpy."""

from __future__ import annotations

import numpy as np

from smt_tools.choices import DEFAULT_WEIGHT_FORMULA, WEIGHT_FORMULAS, WeightFormula


def coreset_sampler_weights(
    proportions: np.ndarray,
    selected: np.ndarray,
    formula: WeightFormula = DEFAULT_WEIGHT_FORMULA,
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
    if formula not in WEIGHT_FORMULAS:
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
