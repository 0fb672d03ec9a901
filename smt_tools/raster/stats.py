"""Per-tile statistics from one mask window and one image window (docs/algorithms.md §3).

Pure functions on arrays; reading happens in :mod:`smt_tools.raster.scan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smt_tools.raster.maskcheck import mask_value_counts


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


def _require_ndim(
    arr: np.ndarray, ndim: int, layout: str, what: str, at_least: bool = False
) -> None:
    """ValueError naming the expected layout and the shape received, unless ``arr`` has
    ``ndim`` axes (``at_least``: ``ndim`` or more)."""
    got = np.ndim(arr)
    if got == ndim or (at_least and got > ndim):
        return
    need = f"an array of at least {ndim} dimensions" if at_least else f"a {ndim}-D array"
    raise ValueError(f"{what} must be {need} {layout}; got shape {np.shape(arr)} ({got}-D)")


def ring(arr: np.ndarray) -> np.ndarray:
    """The 1-pixel outer ring of the last two axes of a (..., h, w) array, flattened to
    (..., n_ring). Fewer than two axes is a ValueError."""
    _require_ndim(arr, 2, "(..., h, w)", "ring input", at_least=True)
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
    """(value_counts, nodata_pixels, has_mask_border_nodata) of a (h, w) integer mask window.

    value_counts: (max(minlength, largest value + 1),) int64. A value below 0 or above
    65,535 raises :class:`~smt_tools.raster.maskcheck.MaskValueError` (a ValueError), so the
    array is never sized by a stray huge value. A mask that is not 2-D (e.g. a (1, h, w) band
    stack) is a ValueError naming its shape.
    """
    _require_ndim(mask, 2, "(h, w)", "mask window")
    values, value_counts = mask_value_counts(mask)
    size = max(int(minlength), int(values[-1]) + 1 if values.size else 0)
    counts = np.zeros(size, np.int64)
    counts[values] = value_counts
    if nodata_class is None:
        return counts, 0, False
    nodata_pixels = int(counts[nodata_class]) if nodata_class < counts.shape[0] else 0
    border = bool(nodata_pixels) and bool(np.any(ring(mask) == nodata_class))
    return counts, nodata_pixels, border


#: A run of black pixels along one window edge shorter than this (in pixels) is not a border
#: (a shadow pixel or a few dark pixels of real imagery must not exclude a tile); an edge
#: shorter than this must be black over its whole length.
BLACK_BORDER_MIN_RUN = 8
#: On long edges the run must also cover this share of the edge (2 %: 11 px on a 512 px edge).
BLACK_BORDER_MIN_SHARE = 0.02


def black_run_threshold(
    edge_length: int,
    min_run: int = BLACK_BORDER_MIN_RUN,
    min_share: float = BLACK_BORDER_MIN_SHARE,
) -> int:
    """Shortest run of black pixels along an edge of ``edge_length`` px that makes a black border:
    ``max(min_run, ceil(min_share * edge_length))`` (8 px up to a 400 px edge, 11 at 512, 21 at
    1024); an edge shorter than that must be black over its whole length. A 1-px edge is a single
    pixel and never a border on its own (returns 2)."""
    run = max(int(min_run), math.ceil(round(min_share * edge_length, 9)))
    return max(2, min(run, int(edge_length)))


def _has_run(black: np.ndarray, run: int) -> bool:
    """True if some row of ``black`` (k, n) bool holds ``run`` consecutive True values."""
    _require_ndim(black, 2, "(k, n)", "black-pixel rows")
    n = black.shape[1]
    if run < 1 or n < run:
        return False
    black = black[np.count_nonzero(black, axis=1) >= run]  # rows that can hold such a run
    if black.shape[0] == 0:
        return False
    cs = np.zeros((black.shape[0], n + 1), np.int32)
    np.cumsum(black, axis=1, out=cs[:, 1:])
    return bool(np.any(cs[:, run:] - cs[:, :-run] >= run))


def image_black_border(
    image: np.ndarray,
    tolerance: float = 0,
    image_nodata: float | None = None,
    *,
    min_run: int = BLACK_BORDER_MIN_RUN,
    min_share: float = BLACK_BORDER_MIN_SHARE,
) -> bool:
    """True if one edge of a (bands, h, w) image window carries a run of consecutive black pixels
    at least :func:`black_run_threshold` long (docs/algorithms.md §4).

    A pixel is black when every band is ``<= tolerance`` or every band equals the declared
    ``image_nodata``. Each of the four edges (top and bottom rows, left and right columns, corners
    included) is checked on its own. An image that is not 3-D (e.g. a single band as (h, w))
    is a ValueError naming its shape.
    """
    _require_ndim(image, 3, "(bands, h, w)", "image window")
    _, h, w = image.shape
    if h == 0 or w == 0:
        return False
    edges = np.concatenate(
        [image[:, 0, :], image[:, h - 1, :], image[:, :, 0], image[:, :, w - 1]], axis=1
    )  # (bands, 2w + 2h): top, bottom, left, right
    black = np.all(edges <= tolerance, axis=0)
    if image_nodata is not None and not np.isnan(image_nodata):
        black |= np.all(edges == image_nodata, axis=0)
    if not black.any():
        return False
    rows = black[: 2 * w].reshape(2, w)
    cols = black[2 * w :].reshape(2, h)
    return _has_run(rows, black_run_threshold(w, min_run, min_share)) or _has_run(
        cols, black_run_threshold(h, min_run, min_share)
    )


def window_stats(
    mask: np.ndarray,
    image: np.ndarray | None,
    nodata_class: int | None = 0,
    black_tolerance: float = 0,
    image_nodata: float | None = None,
    minlength: int = 256,
) -> WindowStats:
    """All §3 statistics of one window (mask (h, w); image (bands, h, w) or None).

    Other layouts are a ValueError naming the expected and the received shape."""
    counts, nodata_pixels, border = mask_window_stats(mask, nodata_class, minlength)
    black = image_black_border(image, black_tolerance, image_nodata) if image is not None else False
    return WindowStats(
        value_counts=counts,
        nodata_pixels=nodata_pixels,
        window_pixels=int(mask.size),
        has_mask_border_nodata=border,
        has_image_black_border=black,
    )
