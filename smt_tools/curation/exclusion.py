"""Which tiles are excluded from sampling (ALGORITHMS.md §2)."""

from __future__ import annotations

import numpy as np


def exclusion_mask(
    has_mask_border_nodata: np.ndarray,
    has_image_black_border: np.ndarray,
    class_entropy: np.ndarray,
    nodata_ratio: np.ndarray,
    valid_pixels: np.ndarray,
    *,
    exclude_border_nodata: bool = True,
    exclude_black_border: bool = True,
    min_entropy: float | None = None,
    max_nodata_ratio: float = 1.0,
) -> np.ndarray:
    """(n,) bool: True where a tile is excluded.

    ``excluded = (exclude_border_nodata and has_mask_border_nodata) or (exclude_black_border
    and has_image_black_border) or class_entropy < min_entropy or nodata_ratio >
    max_nodata_ratio or valid == 0``.

    All inputs are (n,) arrays: two bool flags, class_entropy float64 (NaN when valid = 0),
    nodata_ratio float64 in [0, 1], valid_pixels int64.
    """
    mask_border = np.asarray(has_mask_border_nodata, dtype=bool)
    black = np.asarray(has_image_black_border, dtype=bool)
    entropy = np.asarray(class_entropy, dtype=np.float64)
    nodata = np.asarray(nodata_ratio, dtype=np.float64)
    valid = np.asarray(valid_pixels, dtype=np.int64)
    n = valid.shape[0]
    for name, arr in (
        ("has_mask_border_nodata", mask_border),
        ("has_image_black_border", black),
        ("class_entropy", entropy),
        ("nodata_ratio", nodata),
    ):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    excluded = valid <= 0
    if exclude_border_nodata:
        excluded |= mask_border
    if exclude_black_border:
        excluded |= black
    if min_entropy is not None:
        with np.errstate(invalid="ignore"):
            excluded |= entropy < min_entropy
    with np.errstate(invalid="ignore"):
        excluded |= nodata > max_nodata_ratio
    return excluded
