"""Repeat-factor sampling (LVIS, Gupta et al. 2019) for segmentation tiles (docs/algorithms.md §8).

A class is *present* in a tile when its pixel count is at least ``min_pixels``. Over the m
included tiles, ``f_c`` is the share of tiles in which class c is present and
``r_c = max(1, sqrt(t / f_c))``; a tile's score is the largest ``r_c`` of the classes present
in it (1 when none is). The count columns hold classes only (the nodata value is never a
column), so nodata never counts. A class present in no included tile gets ``r_c = 1``.

Everything here is exact in any row order and any batching: the tile counts per class are
integers and a tile's score is a maximum over its own row.
"""

from __future__ import annotations

import numpy as np

#: ``weights.repeat_threshold`` and ``weights.repeat_min_pixels`` defaults
DEFAULT_REPEAT_THRESHOLD = 0.01
DEFAULT_REPEAT_MIN_PIXELS = 1


def _check(threshold: float | None = None, min_pixels: int | None = None) -> None:
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"repeat_threshold must be in (0, 1]; got {threshold!r}")
    if min_pixels is not None and min_pixels < 1:
        raise ValueError(f"repeat_min_pixels must be >= 1; got {min_pixels!r}")


def tiles_with_class(counts: np.ndarray, min_pixels: int = DEFAULT_REPEAT_MIN_PIXELS) -> np.ndarray:
    """Number of tiles in which each class is present (``counts[i, c] >= min_pixels``).

    counts: (m, C) integer or float pixel counts. Returns (C,) int64.
    """
    _check(min_pixels=min_pixels)
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"counts must be 2-D (tiles, classes); got shape {counts.shape}")
    return (counts >= min_pixels).sum(axis=0).astype(np.int64)


def repeat_factors(
    tiles_with: np.ndarray, n_tiles: int, threshold: float = DEFAULT_REPEAT_THRESHOLD
) -> np.ndarray:
    """``r_c = max(1, sqrt(t / f_c))`` with ``f_c = tiles_with[c] / n_tiles``: (C,) float64.

    tiles_with: (C,) int64 from :func:`tiles_with_class`; a class in no tile gets 1.
    """
    _check(threshold=threshold)
    k = np.asarray(tiles_with, dtype=np.int64)
    if n_tiles < 1 or (k < 0).any() or (k > n_tiles).any():
        raise ValueError(f"tile counts per class must be in [0, {n_tiles}] with n_tiles >= 1")
    r = np.ones(k.shape, np.float64)
    seen = k > 0
    f = k[seen] / float(n_tiles)
    r[seen] = np.maximum(1.0, np.sqrt(threshold / f))
    return r


def tile_repeat_factor(
    counts: np.ndarray, r: np.ndarray, min_pixels: int = DEFAULT_REPEAT_MIN_PIXELS
) -> np.ndarray:
    """Each tile's score: the largest ``r_c`` of the classes present in it, 1 when none is.

    counts: (m, C) pixel counts; r: (C,) float64 (every r_c >= 1). Returns (m,) float64.
    """
    _check(min_pixels=min_pixels)
    counts = np.asarray(counts)
    r = np.asarray(r, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != r.shape[0]:
        raise ValueError(f"counts {counts.shape} and r {r.shape} disagree on the classes")
    if counts.shape[0] == 0:
        return np.zeros(0, np.float64)
    # r_c >= 1, so a row with no class present takes the 1 of the "absent" entries
    return np.where(counts >= min_pixels, r[None, :], 1.0).max(axis=1)


def repeat_factor_scores(
    counts: np.ndarray,
    threshold: float = DEFAULT_REPEAT_THRESHOLD,
    min_pixels: int = DEFAULT_REPEAT_MIN_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """``(r, score)`` of the m included tiles' ``counts`` (m, C), all in memory: r (C,) and
    score (m,) float64, the score that :func:`smt_tools.curation.weights.final_weights` scales
    and floors."""
    counts = np.asarray(counts)
    r = repeat_factors(tiles_with_class(counts, min_pixels), counts.shape[0], threshold)
    return r, tile_repeat_factor(counts, r, min_pixels)
