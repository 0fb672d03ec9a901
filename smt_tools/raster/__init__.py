"""Raster layer: the only package that opens rasters (handle cache, windows, per-tile stats)."""

from __future__ import annotations

from smt_tools.raster.handles import RasterCache, open_raster
from smt_tools.raster.info import RasterInfo, check_pair, read_info, window_bounds
from smt_tools.raster.scan import (
    SCAN_RULES,
    PairSpec,
    SourceRecord,
    inspect_pair,
    resolve_workers,
    scan,
)
from smt_tools.raster.tiling import EDGE_POLICIES, tile_windows

__all__ = [
    "EDGE_POLICIES",
    "SCAN_RULES",
    "PairSpec",
    "RasterCache",
    "RasterInfo",
    "SourceRecord",
    "check_pair",
    "inspect_pair",
    "open_raster",
    "read_info",
    "resolve_workers",
    "scan",
    "tile_windows",
    "window_bounds",
]
