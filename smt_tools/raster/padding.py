"""Which tiles of a loaded tile table run past their raster's edge (``--edge pad`` windows).

The tile table stores windows, not raster sizes; this reads the size of each source image
that could hold such a tile (only tiles with ``nodata_ratio > 0`` can: pixels outside the
raster always count as nodata), one header read per source image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smt_tools.errors import RasterError
from smt_tools.raster.handles import open_raster
from smt_tools.raster.tiling import outside_pixels

_WINDOW = ["row_off", "col_off", "height", "width"]


def padded_tiles(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """``(padded, unreadable)``: padded (n,) bool, True where the tile's window runs past its
    image's edge; unreadable: image paths that could not be opened (their tiles stay False).

    frame: a tile-table frame with ``image_path``, ``row_off``, ``col_off``, ``height``,
    ``width`` and ``nodata_ratio``.
    """
    n = len(frame)
    padded = np.zeros(n, bool)
    if n == 0:
        return padded, []
    candidates = np.flatnonzero(frame["nodata_ratio"].to_numpy(np.float64) > 0)
    if candidates.size == 0:
        return padded, []
    paths = frame["image_path"].to_numpy(object)[candidates]
    windows = frame[_WINDOW].to_numpy(np.int64)[candidates]
    unreadable: list[str] = []
    for path in pd.unique(paths):
        rows = paths == path
        try:
            with open_raster(str(path)) as ds:
                width, height = int(ds.width), int(ds.height)
        except RasterError:
            unreadable.append(str(path))
            continue
        padded[candidates[rows]] = outside_pixels(windows[rows], width, height) > 0
    return padded, unreadable
