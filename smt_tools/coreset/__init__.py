"""Coreset selection (docs/algorithms.md §10): pure scorers, the selector and post-selection weights.

Nothing here opens files or connections; :mod:`smt_tools.pipelines.coreset` does the I/O.
"""

from __future__ import annotations

from smt_tools.coreset.select import (
    CORESET_METHODS,
    EMBEDDING_METHODS,
    SPATIAL_METHODS,
    CoresetParams,
    CoresetSelection,
    budget_size,
    feature_space,
    select_coreset,
)
from smt_tools.coreset.weights import coreset_sampler_weights

__all__ = [
    "CORESET_METHODS",
    "EMBEDDING_METHODS",
    "SPATIAL_METHODS",
    "CoresetParams",
    "CoresetSelection",
    "budget_size",
    "coreset_sampler_weights",
    "feature_space",
    "select_coreset",
]
