"""Combining composition and uniqueness into one score (docs/algorithms.md §8).

Ranks are AVERAGE ranks (ties share a rank) scaled to [0, 1], so every tile of one cluster
gets the same composition rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from smt_tools.choices import Signals, resolve_sampling_method
from smt_tools.errors import ConfigError


def average_rank(x: np.ndarray) -> np.ndarray:
    """``(rankdata(x, "average") - 1) / (n - 1)``: (n,) float64 in [0, 1]; n = 1 -> [1.0]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"average_rank expects a 1-D array; got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("average_rank: the signal contains NaN; a missing score is an error")
    n = x.size
    if n == 0:
        return np.zeros(0, np.float64)
    if n == 1:
        return np.ones(1, np.float64)
    return (rankdata(x, method="average") - 1.0) / (n - 1.0)


def minmax(x: np.ndarray, *, constant: float) -> np.ndarray:
    """Scale x (n,) to [0, 1] as ``(x - min x) / (max x - min x)``. Returns (n,) float64.

    ``constant`` is the value of every element when x is constant (max == min), where the
    formula divides by zero; each caller states its choice. The ``multiplicative`` ranking uses
    1.0 (a signal equal on every tile leaves the other signal to decide, docs/algorithms.md §8);
    the coreset ``fa`` scorer uses 0.0 (every tile then scores ``1 - 0 = 1``, §10).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.full_like(x, constant)
    return (x - lo) / (hi - lo)


@dataclass(frozen=True)
class Combined:
    """score: (n,) float64 in [0, 1]; effective_method: the formula actually used;
    fallback: a one-line warning when a method had to use one signal only, else None."""

    score: np.ndarray
    effective_method: str
    fallback: str | None = None


def combine(
    method: str,
    freq_cluster_weight: np.ndarray | None,
    uniq: np.ndarray | None,
    *,
    repeat: np.ndarray | None = None,
) -> Combined:
    """Score per included tile from freq_cluster_weight (n,) and/or uniq (n,) float64
    (None = signal absent); ``repeat_factor`` takes the tiles' repeat factors ``repeat`` (n,)
    float64 (:mod:`smt_tools.curation.repeat_factor`) as they are, in every mode.

    With only one signal present, the four two-signal methods reduce to that signal's rank
    (``composition_only`` / ``uniqueness_only``) and ``fallback`` says so. Asking for a signal
    that is absent (``uniqueness_only`` without uniqueness) is a :class:`ConfigError`. The
    rule is :func:`smt_tools.choices.resolve_sampling_method`, the one the config checks.
    """
    signals = Signals(composition=freq_cluster_weight is not None, uniqueness=uniq is not None)
    try:  # an unknown method is reported first, even with no signal at all
        effective, fallback = resolve_sampling_method(
            method, signals if any(signals) else Signals(True, True)
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if effective == "repeat_factor":  # from the class counts, not from the two signals
        if repeat is None:
            raise ValueError("sampling_method repeat_factor needs the tiles' repeat factors")
        return Combined(np.asarray(repeat, dtype=np.float64).copy(), effective, fallback)
    if freq_cluster_weight is None and uniq is None:
        raise ValueError("combine needs at least one signal")
    n = (freq_cluster_weight if freq_cluster_weight is not None else uniq).shape[0]  # type: ignore[union-attr]
    if freq_cluster_weight is not None and uniq is not None and uniq.shape[0] != n:
        raise ValueError(f"freq_cluster_weight has {n} rows but uniq has {uniq.shape[0]}")
    return Combined(_score(effective, freq_cluster_weight, uniq), effective, fallback)


def _score(
    method: str, freq_cluster_weight: np.ndarray | None, uniq: np.ndarray | None
) -> np.ndarray:
    if method == "composition_only":
        assert freq_cluster_weight is not None
        return average_rank(freq_cluster_weight)
    if method == "uniqueness_only":
        assert uniq is not None
        return average_rank(uniq)
    assert freq_cluster_weight is not None and uniq is not None
    if method == "multiplicative":
        return minmax(freq_cluster_weight, constant=1.0) * minmax(uniq, constant=1.0)
    rc, ru = average_rank(freq_cluster_weight), average_rank(uniq)
    if method == "rank_max":
        return np.maximum(rc, ru)
    if method == "rank_multiply":
        return rc * ru
    if method == "rank_add":
        return (rc + ru) / 2.0
    raise ValueError(f"unknown sampling_method {method!r}")  # pragma: no cover
