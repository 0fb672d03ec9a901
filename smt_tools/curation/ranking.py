"""Combining composition and uniqueness into one score (docs/algorithms.md §8).

Ranks are AVERAGE ranks (ties share a rank) scaled to [0, 1], so every tile of one cluster
gets the same composition rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

from smt_tools.errors import ConfigError

SamplingMethod = Literal[
    "rank_max",
    "rank_multiply",
    "rank_add",
    "multiplicative",
    "composition_only",
    "uniqueness_only",
]
SAMPLING_METHODS: tuple[str, ...] = (
    "rank_max",
    "rank_multiply",
    "rank_add",
    "multiplicative",
    "composition_only",
    "uniqueness_only",
)
_BOTH = {"rank_max", "rank_multiply", "rank_add", "multiplicative"}


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


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale (n,) to [0, 1]; a constant signal maps to all 1.0 (every tile equally high)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.ones_like(x)
    return (x - lo) / (hi - lo)


@dataclass(frozen=True)
class Combined:
    """score: (n,) float64 in [0, 1]; effective_method: the formula actually used;
    fallback: a one-line warning when a method had to use one signal only, else None."""

    score: np.ndarray
    effective_method: str
    fallback: str | None = None


def combine(method: str, comp: np.ndarray | None, uniq: np.ndarray | None) -> Combined:
    """Score per included tile from comp (n,) and/or uniq (n,) float64 (None = signal absent).

    With only one signal present, the four two-signal methods reduce to that signal's rank
    (``composition_only`` / ``uniqueness_only``) and ``fallback`` says so. Asking for a signal
    that is absent (``uniqueness_only`` without uniqueness) is a :class:`ConfigError`.
    """
    if method not in SAMPLING_METHODS:
        raise ConfigError(
            f"sampling_method must be one of {', '.join(SAMPLING_METHODS)}; got {method!r}"
        )
    if comp is None and uniq is None:
        raise ValueError("combine needs at least one signal")
    n = (comp if comp is not None else uniq).shape[0]  # type: ignore[union-attr]
    if comp is not None and uniq is not None and uniq.shape[0] != n:
        raise ValueError(f"comp has {n} rows but uniq has {uniq.shape[0]}")
    if method == "uniqueness_only" and uniq is None:
        raise ConfigError(
            "sampling_method uniqueness_only needs visual uniqueness; use mode: embeddings or "
            "embeddings_only, or another sampling_method"
        )
    if method == "composition_only" and comp is None:
        raise ConfigError(
            "sampling_method composition_only needs the composition signal; use mode: "
            "masks_only or embeddings"
        )
    if method in _BOTH and (comp is None or uniq is None):
        only = "composition_only" if comp is not None else "uniqueness_only"
        signal = "composition" if comp is not None else "uniqueness"
        why = (
            "mode masks_only has no uniqueness signal"
            if comp is not None
            else ("mode embeddings_only has no composition signal")
        )
        warning = f"sampling_method {method}: {why}; weights use the {signal} rank alone ({only})"
        return Combined(_score(only, comp, uniq), only, warning)
    return Combined(_score(method, comp, uniq), method, None)


def _score(method: str, comp: np.ndarray | None, uniq: np.ndarray | None) -> np.ndarray:
    if method == "composition_only":
        assert comp is not None
        return average_rank(comp)
    if method == "uniqueness_only":
        assert uniq is not None
        return average_rank(uniq)
    assert comp is not None and uniq is not None
    if method == "multiplicative":
        return minmax(comp) * minmax(uniq)
    rc, ru = average_rank(comp), average_rank(uniq)
    if method == "rank_max":
        return np.maximum(rc, ru)
    if method == "rank_multiply":
        return rc * ru
    if method == "rank_add":
        return (rc + ru) / 2.0
    raise ValueError(f"unknown sampling_method {method!r}")  # pragma: no cover
