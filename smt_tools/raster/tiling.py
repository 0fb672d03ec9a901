"""Tiling math: which windows cover a raster (pure, no I/O)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from smt_tools.errors import InputDataError

EdgePolicy = Literal["drop", "shift", "pad"]
EDGE_POLICIES: tuple[str, ...] = ("drop", "shift", "pad")


def _starts(size: int, patch: int, stride: int, edge: str) -> np.ndarray:
    if size >= patch:
        starts = np.arange(0, size - patch + 1, stride, dtype=np.int64)
        last_end = int(starts[-1]) + patch
        if last_end < size:
            if edge == "shift":
                starts = np.append(starts, size - patch)
            elif edge == "pad":
                starts = np.append(starts, int(starts[-1]) + stride)
        return np.unique(starts)
    return np.zeros(1, dtype=np.int64)  # only reached for edge == "pad"


def tile_windows(
    width: int,
    height: int,
    patch_size: int,
    stride: int | None = None,
    edge: EdgePolicy | str = "drop",
    source: str = "raster",
) -> np.ndarray:
    """Windows covering a ``width`` x ``height`` raster, row-major.

    Returns (n, 4) int64 ``[row_off, col_off, height, width]``; every window is
    ``patch_size`` x ``patch_size``.

    edge: ``drop`` skips the partial last row/column of windows; ``shift`` moves the last window
    back so it ends at the raster edge (overlapping its neighbour); ``pad`` keeps it and lets it
    run past the edge (the missing pixels read as nodata).
    """
    stride = patch_size if stride is None else stride
    if patch_size <= 0 or stride <= 0:
        raise InputDataError(
            f"patch size and stride must be positive; got {patch_size} and {stride}"
        )
    if edge not in EDGE_POLICIES:
        raise InputDataError(f"edge policy must be one of {', '.join(EDGE_POLICIES)}; got {edge!r}")
    if (patch_size > width or patch_size > height) and edge != "pad":
        raise InputDataError(
            f"{source}: patch size {patch_size} is larger than the image ({width}x{height} px); "
            "use a smaller --patch-size or --edge pad"
        )
    rows = _starts(height, patch_size, stride, str(edge))
    cols = _starts(width, patch_size, stride, str(edge))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    n = rr.size
    out = np.empty((n, 4), dtype=np.int64)
    out[:, 0] = rr.ravel()
    out[:, 1] = cc.ravel()
    out[:, 2] = patch_size
    out[:, 3] = patch_size
    return out
