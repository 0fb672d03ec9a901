"""Tile positions for select-coreset's spatial options (docs/algorithms.md §10): the projected
centres of ``spatial_weight`` (fd, lc_fd, kcenter) and the centres of the proximity penalty of
``cb_use_spatial`` / ``fa_use_spatial`` (:mod:`smt_tools.coreset.spatial`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from smt_tools.config.coreset import CoresetConfig
from smt_tools.coreset.spatial import SpatialTerm, tile_centres
from smt_tools.errors import InputDataError
from smt_tools.pipelines._coreset_input import BOUNDS_COLUMNS, projected_centroids


def spatial_inputs(
    cfg: CoresetConfig, frame: pd.DataFrame, source: str
) -> np.ndarray | SpatialTerm | None:
    """What :func:`smt_tools.coreset.select_coreset` takes as ``centroids_xy``: None (no
    spatial option), the (n, 2) projected centres (``spatial_weight`` alone) or a
    :class:`SpatialTerm` (``cb_use_spatial`` / ``fa_use_spatial``, with those centres)."""
    from smt_tools.geo import crs_strings, has_crs, no_crs_message

    xy = projected_centroids(frame, source) if cfg.spatial_weight > 0 else None
    cb = cfg.cb_use_spatial and cfg.method in ("cb", "fa_cb")
    fa = cfg.fa_use_spatial and cfg.method in ("fa", "fa_cb")
    if not (cb or fa):
        return xy
    key = "cb_use_spatial" if cb else "fa_use_spatial"
    missing = [c for c in BOUNDS_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{source}: coreset.{key} needs column(s) {', '.join(missing)} (tile bounds); "
            f"rebuild the input with build-balanced-dataset or set {key}: false"
        )
    if not has_crs(frame).all():  # pixel-space tiles have no place on the Earth
        raise InputDataError(
            f"{source}: "
            + no_crs_message(frame, f"coreset.{key} needs every tile's position; set it false")
        )
    centres = tile_centres(
        frame["minx"].to_numpy(np.float64),
        frame["miny"].to_numpy(np.float64),
        frame["maxx"].to_numpy(np.float64),
        frame["maxy"].to_numpy(np.float64),
        crs_strings(frame),
    )
    return SpatialTerm(centres, cfg.spatial_radius_m, cfg.spatial_penalty, cb, fa, xy)
