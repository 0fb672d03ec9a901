"""Tiling math: which windows cover a raster (pure, no I/O)."""

from __future__ import annotations

import numpy as np

from smt_tools.choices import DEFAULT_EDGE_POLICY, EDGE_POLICIES, EdgePolicy
from smt_tools.errors import InputDataError


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
    edge: EdgePolicy | str = DEFAULT_EDGE_POLICY,
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


def fits(width: int, height: int, patch_size: int) -> bool:
    """True if a ``patch_size`` window fits inside a ``width`` x ``height`` raster."""
    return patch_size <= width and patch_size <= height


def grid_coverage(width: int, height: int, patch_size: int, stride: int | None = None) -> float:
    """Share of a raster's pixels that the ``edge="drop"`` grid reaches, in [0, 1].

    Per axis the grid spans ``last_start + patch_size`` pixels of ``size`` (the rest, past the
    last whole window, is in no tile); the share is the product of the two axes' spans over
    the raster's pixels. With ``stride <= patch_size`` this is exactly tiled pixels / raster
    pixels. 0.0 when the patch does not fit.
    """
    stride = patch_size if stride is None else stride
    if not fits(width, height, patch_size) or width <= 0 or height <= 0:
        return 0.0

    def span(size: int) -> int:
        return (size - patch_size) // stride * stride + patch_size

    return span(width) * span(height) / (width * height)


def outside_pixels(windows: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels of each window that lie outside a ``width`` x ``height`` raster.

    windows: (n, 4) int ``[row_off, col_off, height, width]``. Returns (n,) int64; a window with
    a positive count runs past the raster edge (``edge="pad"``, or a patch record near the edge).
    """
    win = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    r, c, h, w = win[:, 0], win[:, 1], win[:, 2], win[:, 3]
    inside_h = np.clip(np.minimum(r + h, height) - np.maximum(r, 0), 0, None)
    inside_w = np.clip(np.minimum(c + w, width) - np.maximum(c, 0), 0, None)
    return h * w - inside_h * inside_w
