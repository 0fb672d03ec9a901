"""Decimated window reads for report thumbnails (one small read per tile, never the full window).

A thumbnail read asks GDAL for the window at the thumbnail's size (``out_shape``), so a 1024 px
tile costs about as much as a 128 px one (GDAL uses overviews when the file has them). Windows
that reach past the raster edge (``--edge pad`` tiles) are read for their inside part only; the
outside part is reported by the returned ``inside`` mask (the clipping and the read are
:mod:`smt_tools.raster.window`'s). Rasters without a CRS read the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from smt_tools.raster.window import inside_part, read_pixels

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


def thumbnail_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(rows, cols) of a thumbnail whose longer side is ``size`` (aspect kept, each >= 1)."""
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"need positive sizes; got {height}x{width}, size {size}")
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_thumbnail(
    ds: DatasetReader,
    path: str,
    indexes: list[int],
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    size: int,
    resampling: Resampling = Resampling.nearest,
) -> tuple[np.ndarray, np.ndarray]:
    """Window (row_off, col_off, height, width) of bands ``indexes`` of the open dataset ``ds``
    resampled to :func:`thumbnail_shape` ``(th, tw)``.

    Returns ``(data, inside)``: data (len(indexes), th, tw) in the raster's dtype (0 outside the
    raster), inside (th, tw) bool, True where the pixel lies inside the raster. A failed read
    is a :class:`~smt_tools.errors.RasterReadError` naming ``path`` and the window.
    """
    th, tw = thumbnail_shape(height, width, size)
    data = np.zeros((len(indexes), th, tw), dtype=np.dtype(ds.dtypes[indexes[0] - 1]))
    inside = np.zeros((th, tw), dtype=bool)
    part = inside_part(row_off, col_off, height, width, ds.height, ds.width)
    if part is None:
        return data, inside
    r0, c0, r1, c1 = part
    # the inside part's place on the thumbnail grid (same scale as the whole window)
    sy, sx = th / height, tw / width
    y0, y1 = round((r0 - row_off) * sy), round((r1 - row_off) * sy)
    x0, x1 = round((c0 - col_off) * sx), round((c1 - col_off) * sx)
    if y1 <= y0 or x1 <= x0:
        return data, inside
    data[:, y0:y1, x0:x1] = read_pixels(
        ds,
        path,
        indexes,
        Window(c0, r0, c1 - c0, r1 - r0),
        (row_off, col_off, height, width),
        out_shape=(len(indexes), y1 - y0, x1 - x0),
        resampling=resampling,
    )
    inside[y0:y1, x0:x1] = True
    return data, inside
