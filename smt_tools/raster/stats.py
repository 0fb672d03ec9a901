"""Per-tile statistics from one mask window and one image window (ALGORITHMS.md §1).

Pure functions on arrays; reading happens in :mod:`smt_tools.raster.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowStats:
    """Statistics of one window.

    value_counts: (V,) int64, pixel count of every mask value 0..V-1 (nodata included).
    """

    value_counts: np.ndarray
    nodata_pixels: int
    window_pixels: int
    has_mask_border_nodata: bool
    has_image_black_border: bool


def ring(arr: np.ndarray) -> np.ndarray:
    """The 1-pixel outer ring of the last two axes, flattened to (..., n_ring)."""
    h, w = arr.shape[-2], arr.shape[-1]
    if h <= 2 or w <= 2:
        return arr.reshape(*arr.shape[:-2], -1)
    top = arr[..., 0, :]
    bottom = arr[..., h - 1, :]
    left = arr[..., 1 : h - 1, 0]
    right = arr[..., 1 : h - 1, w - 1]
    return np.concatenate([top, bottom, left, right], axis=-1)


def mask_window_stats(
    mask: np.ndarray, nodata_class: int | None, minlength: int = 256
) -> tuple[np.ndarray, int, bool]:
    """(value_counts, nodata_pixels, has_mask_border_nodata) of a (h, w) integer mask window."""
    flat = mask.reshape(-1)
    if flat.dtype.kind not in "ui":
        raise ValueError(f"mask must hold integer class values; got dtype {flat.dtype}")
    if flat.dtype.kind == "i" and flat.size and int(flat.min()) < 0:
        raise ValueError("mask holds negative class values")
    counts = np.bincount(flat, minlength=minlength).astype(np.int64, copy=False)
    if nodata_class is None:
        return counts, 0, False
    nodata_pixels = int(counts[nodata_class]) if nodata_class < counts.shape[0] else 0
    border = bool(nodata_pixels) and bool(np.any(ring(mask) == nodata_class))
    return counts, nodata_pixels, border


def image_black_border(
    image: np.ndarray, tolerance: float = 0, image_nodata: float | None = None
) -> bool:
    """True if any pixel of the ring of a (bands, h, w) image window is black in every band
    (``<= tolerance``) or equals the image's declared nodata value in every band."""
    r = ring(image)  # (bands, n_ring)
    black = np.all(r <= tolerance, axis=0)
    if image_nodata is not None and not np.isnan(image_nodata):
        black |= np.all(r == image_nodata, axis=0)
    return bool(black.any())


def window_stats(
    mask: np.ndarray,
    image: np.ndarray | None,
    nodata_class: int | None = 0,
    black_tolerance: float = 0,
    image_nodata: float | None = None,
    minlength: int = 256,
) -> WindowStats:
    """All §1 statistics of one window (mask (h, w); image (bands, h, w) or None)."""
    counts, nodata_pixels, border = mask_window_stats(mask, nodata_class, minlength)
    black = image_black_border(image, black_tolerance, image_nodata) if image is not None else False
    return WindowStats(
        value_counts=counts,
        nodata_pixels=nodata_pixels,
        window_pixels=int(mask.size),
        has_mask_border_nodata=border,
        has_image_black_border=black,
    )
