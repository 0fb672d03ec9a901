"""Tile footprints as RFC 7946 GeoJSON (EPSG:4326 lon/lat, counter-clockwise exterior rings).

Footprints are reprojected from each tile's native CRS (``minx, miny, maxx, maxy, crs``) by
:func:`smt_tools.geo.footprints_lonlat`. Properties are serialised by pandas (NaN -> null,
booleans -> true/false), so 155k tiles take seconds, not minutes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from smt_tools.export._atomic import atomic_path
from smt_tools.geo import footprints_lonlat

#: decimal places of lon/lat (1e-7 degree is about 1 cm)
COORD_DECIMALS = 7


def _geometries(frame: pd.DataFrame, densify: int) -> list[str]:
    rings = np.round(footprints_lonlat(frame, densify=densify), COORD_DECIMALS)
    n, m, _ = rings.shape
    point = f"[%.{COORD_DECIMALS}f,%.{COORD_DECIMALS}f]"
    template = '{"type":"Polygon","coordinates":[[' + ",".join([point] * m) + "]]}"
    flat = rings.reshape(n, 2 * m).tolist()
    return [template % tuple(row) for row in flat]


def feature_collection_bbox(frame: pd.DataFrame, densify: int = 1) -> tuple[float, ...]:
    """(west, south, east, north) of all footprints in lon/lat."""
    rings = footprints_lonlat(frame, densify=densify)
    return (
        float(rings[..., 0].min()),
        float(rings[..., 1].min()),
        float(rings[..., 0].max()),
        float(rings[..., 1].max()),
    )


def write_geojson(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    properties: Sequence[str],
    *,
    densify: int = 1,
    chunk: int = 50_000,
) -> None:
    """Write one Polygon Feature per row of ``frame`` to ``path`` (atomic).

    frame needs ``minx, miny, maxx, maxy, crs`` and every column in ``properties``.
    ``densify`` points per edge (1 = the four corners; tiles are small, so corners suffice).
    """
    props = list(properties)
    missing = [c for c in [*props, "minx", "miny", "maxx", "maxy", "crs"] if c not in frame.columns]
    if missing:
        raise ValueError(f"GeoJSON export: frame lacks column(s) {', '.join(missing)}")
    with atomic_path(path, suffix=".geojson") as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","features":[\n')
        first = True
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start : start + chunk]
            geoms = _geometries(part, densify)
            if props:
                text = part[props].to_json(orient="records", lines=True, double_precision=10)
                prop_lines = text.rstrip("\n").split("\n")
            else:
                prop_lines = ["{}"] * len(part)
            lines = [
                f'{{"type":"Feature","geometry":{g},"properties":{pr}}}'
                for g, pr in zip(geoms, prop_lines, strict=True)
            ]
            if lines:
                fh.write(("" if first else ",\n") + ",\n".join(lines))
                first = False
        fh.write("\n]}\n")
