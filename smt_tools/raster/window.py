"""Windowed reads: the one reader of pixel windows that may run past the raster edge.

Every window read in smt-tools goes through :func:`read_pixels`, so a failed read is always
the same one-line :class:`~smt_tools.errors.RasterReadError` (:func:`~smt_tools.raster.handles.read_error`:
file, window, GDAL's cause and the fix). :func:`read_window` reads a window that may lie partly
(``--edge pad`` tiles) or wholly outside the raster: the inside part is read, the rest is
``fill``. Decimated reads (report thumbnails) share :func:`inside_part` and :func:`read_pixels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from smt_tools.raster.handles import read_error

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = ["READ_ERRORS", "inside_part", "read_pixels", "read_window"]

#: what a failed read raises: rasterio's errors, GDAL's CPLE_* errors, I/O and value errors,
#: and IndexError for a band the file does not have (a CSV ``mask_band`` is only checked here)
READ_ERRORS = (RasterioError, CPLE_BaseError, OSError, ValueError, IndexError)


def inside_part(
    row_off: int, col_off: int, height: int, width: int, raster_height: int, raster_width: int
) -> tuple[int, int, int, int] | None:
    """``(r0, c0, r1, c1)``: the rows ``r0:r1`` and columns ``c0:c1`` of the raster that the
    window covers; None when the window lies wholly outside a ``raster_width`` x
    ``raster_height`` raster."""
    r0, c0 = max(row_off, 0), max(col_off, 0)
    r1, c1 = min(row_off + height, raster_height), min(col_off + width, raster_width)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, c0, r1, c1


def read_pixels(
    ds: DatasetReader,
    path: str,
    indexes: int | Sequence[int] | None,
    window: Window,
    asked: tuple[int, int, int, int] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """``ds.read(indexes, window=window, **kwargs)`` (all bands when ``indexes`` is None); a
    failed read is the one-line :class:`~smt_tools.errors.RasterReadError` naming ``path`` and
    ``asked`` (``row_off, col_off, height, width`` of the window the caller asked for; default
    ``window`` itself)."""
    args = () if indexes is None else (indexes if isinstance(indexes, int) else list(indexes),)
    try:
        return np.asarray(ds.read(*args, window=window, **kwargs))
    except READ_ERRORS as exc:
        r, c, h, w = asked or (
            int(window.row_off),
            int(window.col_off),
            int(window.height),
            int(window.width),
        )
        raise read_error(path, exc, r, c, h, w) from None


def _fill_in(dtype: np.dtype, fill: float) -> Any:
    """``fill`` as a value of ``dtype`` the way GDAL's boundless reads store it: integers are
    rounded half away from zero and clamped to the dtype's range, NaN becomes 0."""
    if dtype.kind not in "ui":
        return dtype.type(fill)
    if np.isnan(fill):
        return dtype.type(0)
    info = np.iinfo(dtype)
    value = np.sign(fill) * np.floor(abs(fill) + 0.5)
    return dtype.type(int(min(max(value, info.min), info.max)))


def read_window(
    ds: DatasetReader,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    bands: Sequence[int] | None,
    fill: float,
    *,
    path: str | None = None,
    keep_dtype: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a window that may run past the raster edge (or lie wholly outside it).

    Returns ``(data, inside)``: data (len(bands), height, width) (every band when ``bands`` is
    None), pixels outside the raster set to ``fill``; inside None when the whole window lies
    inside the raster, else a (height, width) bool array (True = pixel inside).
    dtype: a window wholly inside is in the raster's dtype. Otherwise, by default, the raster's
    dtype widened to hold ``fill`` (``numpy.result_type`` with ``fill``'s smallest type, e.g.
    uint8 stays uint8 for fill 0 or 255, becomes int16 for fill -1); with ``keep_dtype`` always
    the raster's dtype, ``fill`` rounded and clamped to its range as GDAL's boundless reads do.
    path: the name in error lines (default ``ds.name``).
    """
    idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
    part = inside_part(row_off, col_off, height, width, ds.height, ds.width)
    data = None
    if part is not None:
        r0, c0, r1, c1 = part
        data = read_pixels(
            ds,
            path if path is not None else ds.name,
            idx,
            Window(c0, r0, c1 - c0, r1 - r0),
            (row_off, col_off, height, width),
        )
        if (r0, c0, r1, c1) == (row_off, col_off, row_off + height, col_off + width):
            return data, None
    dtype = np.dtype(ds.dtypes[idx[0] - 1])
    if keep_dtype:
        out = np.full((len(idx), height, width), _fill_in(dtype, fill), dtype=dtype)
    else:
        wide = np.result_type(dtype, np.min_scalar_type(fill))
        out = np.full((len(idx), height, width), fill, dtype=wide)
    inside = np.zeros((height, width), dtype=bool)
    if part is not None and data is not None:
        r0, c0, r1, c1 = part
        out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data
        inside[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = True
    return out, inside
