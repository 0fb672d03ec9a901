"""select-coreset's diversity numbers: the Vendi score (docs/algorithms.md §10) of the pool of
included tiles and of the selection, on the tiles' embeddings.

The embeddings are those the method loaded, those the caller passed, or (for a method that needs
none) the cache at ``coreset.parquet_path`` when one is given. Without embeddings both numbers
are None; a cache that lacks some included tiles gives a warning line instead of an error (the
numbers are a report, not the selection).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from smt_tools.coreset.vendi import vendi_pool_and_subset
from smt_tools.errors import SmtError

if TYPE_CHECKING:
    import pandas as pd

    from smt_tools.config.coreset import CoresetConfig


@dataclass
class Diversity:
    """Vendi scores of the included tiles and of the selection (None: not measured, and a
    warning in ``warnings`` says why), and the seconds it took."""

    pool: float | None = None
    selected: float | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _cached_embeddings(
    cfg: CoresetConfig, frame: pd.DataFrame, eligible: np.ndarray, warnings: list[str]
) -> np.ndarray | None:
    """(n, D) rows of ``coreset.parquet_path`` when every included tile has one, else None
    and a warning naming what is missing."""
    from smt_tools.embeddings.cache import cache_files, read_embeddings

    path = cfg.parquet_path
    assert path is not None
    if not cache_files(path):
        warnings.append(f"no Vendi score: there is no embedding cache at {path}")
        return None
    ids = frame["tile_id"].to_numpy(dtype=np.int64)
    try:
        emb, found = read_embeddings(path, ids, model_id=cfg.model_id)
    except SmtError as exc:
        warnings.append(f"no Vendi score: {exc}")
        return None
    missing = int((eligible & ~found).sum())
    if missing:
        warnings.append(
            f"no Vendi score: {missing} of {int(eligible.sum())} included tiles have no "
            f"embedding in {path}"
        )
        return None
    return emb


def measure_diversity(
    cfg: CoresetConfig,
    frame: pd.DataFrame,
    eligible: np.ndarray,
    selected: np.ndarray,
    embeddings: np.ndarray | None,
) -> Diversity:
    """Vendi scores of all included tiles (``eligible`` (n,) bool) and all ``selected`` tiles:
    O(n·D²), no sample.

    embeddings: (n, D) rows of ``frame`` (NaN allowed on excluded tiles), or None: the
    embedding cache ``coreset.parquet_path`` when the config names one, else not measured.
    """
    t = time.perf_counter()
    out = Diversity()
    emb = embeddings
    if emb is None and cfg.parquet_path is not None:
        emb = _cached_embeddings(cfg, frame, eligible, out.warnings)
    if emb is not None:
        try:
            out.pool, out.selected = vendi_pool_and_subset(emb, selected, eligible)
        except ValueError as exc:  # a zero embedding: cosine similarity undefined
            out.warnings.append(f"no Vendi score: {exc}")
    out.seconds = time.perf_counter() - t
    return out
