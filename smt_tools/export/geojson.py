"""Tile footprints as RFC 7946 GeoJSON (EPSG:4326 lon/lat, counter-clockwise exterior rings).

Footprints are reprojected from each tile's native CRS (``minx, miny, maxx, maxy, crs``) by
:func:`smt_tools.geo.footprints_lonlat`. Properties are serialised by pandas (NaN -> null,
booleans -> true/false), so 155k tiles take seconds, not minutes.

Tiles without a CRS (rasters in pixel space: slide scans) cannot be placed in lon/lat, and a
GeoJSON cannot declare another CRS (RFC 7946), so they are LEFT OUT: the file holds the tiles
with a CRS (none at all: an empty FeatureCollection, so no older layer is left under that name),
says how many were left out in the foreign member ``"tiles_without_crs"``, and
:func:`write_geojson` returns the one warning line the command prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.atomic import atomic_path
from smt_tools.geo import footprints_lonlat, has_crs

#: decimal places of lon/lat (1e-7 degree is about 1 cm)
COORD_DECIMALS = 7


def _geometries(frame: pd.DataFrame, densify: int) -> Any:
    """Polygon geometry JSON per row (Arrow string array), built with vectorised kernels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rings = np.round(footprints_lonlat(frame, densify=densify), COORD_DECIMALS)
    m = rings.shape[1]
    parts: list[Any] = [pa.scalar('{"type":"Polygon","coordinates":[[')]
    for i in range(m):
        parts.append(pa.scalar("[" if i == 0 else "],["))
        parts.append(pc.cast(pa.array(rings[:, i, 0]), pa.string()))
        parts.append(pa.scalar(","))
        parts.append(pc.cast(pa.array(rings[:, i, 1]), pa.string()))
    parts.append(pa.scalar("]]]}"))
    return pc.binary_join_element_wise(*parts, "")


def _json_values(col: pd.Series) -> Any:
    """JSON text of every value of ``col`` (Arrow string array): numbers as numbers (NaN ->
    null), booleans as true/false, everything else as an escaped JSON string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf"
    try:
        arr = pa.array(col.to_numpy() if plain else col, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects: write their text
        arr = pa.array(col.astype(str), from_pandas=True)
    t = arr.type
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_floating(t):
        finite = pc.is_finite(arr)
        text = pc.if_else(pc.fill_null(finite, False), pc.cast(arr, pa.string()), pa.scalar("null"))
    else:
        text = pc.cast(arr, pa.string())
        for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
            text = pc.replace_substring(text, old, new)
        text = pc.binary_join_element_wise('"', text, '"', "")
    return pc.fill_null(text, "null")


def _properties(frame: pd.DataFrame, props: Sequence[str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not props:
        return pa.array(["{}"] * len(frame), pa.string())
    parts: list[Any] = []
    for i, name in enumerate(props):
        key = json.dumps(str(name))
        parts.append(pa.scalar(("{" if i == 0 else ",") + key + ":"))
        parts.append(_json_values(frame[name]))
    parts.append(pa.scalar("}"))
    return pc.binary_join_element_wise(*parts, "")


@dataclass(frozen=True)
class GeoJSONWritten:
    """What :func:`write_geojson` wrote: features (tiles with a CRS), left_out (tiles without
    one) and note, the one warning line to print when any tile was left out (else None)."""

    features: int
    left_out: int
    note: str | None


def left_out_note(path: str | os.PathLike[str], left_out: int, total: int) -> str | None:
    """The warning line for ``left_out`` of ``total`` tiles without a CRS (None when 0)."""
    if not left_out:
        return None
    what = "no tile has a CRS" if left_out == total else f"{left_out} of {total} tiles have no CRS"
    return (
        f"{path}: {what} (rasters in pixel space), so {'they are' if left_out > 1 else 'it is'} "
        "left out of this GeoJSON and its QGIS style (GeoJSON holds lon/lat only, RFC 7946)"
    )


def write_geojson(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    properties: Sequence[str],
    *,
    densify: int = 1,
    chunk: int = 50_000,
    name: str | os.PathLike[str] | None = None,
) -> GeoJSONWritten:
    """Write one Polygon Feature per tile of ``frame`` WITH a CRS to ``path`` (atomic).

    frame needs ``minx, miny, maxx, maxy, crs`` and every column in ``properties``.
    ``densify`` points per edge (1 = the four corners; tiles are small, so corners suffice).
    Tiles without a CRS are left out (see the module docstring); the result says how many, and
    its note names ``name`` (default ``path``; pass the final path when writing a staging file).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    props = list(properties)
    missing = [c for c in [*props, "minx", "miny", "maxx", "maxy", "crs"] if c not in frame.columns]
    if missing:
        raise ValueError(f"GeoJSON export: frame lacks column(s) {', '.join(missing)}")
    georef = has_crs(frame)
    left_out = int((~georef).sum())
    total = len(frame)
    if left_out:
        frame = frame.iloc[np.flatnonzero(georef)]
    head = '{"type":"FeatureCollection",'
    if left_out:
        head += f'"tiles_without_crs":{left_out},'
    with atomic_path(path, suffix=".geojson") as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(head + '"features":[\n')
        first = True
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start : start + chunk]
            if not len(part):
                continue
            features = pc.binary_join_element_wise(
                '{"type":"Feature","geometry":',
                _geometries(part, densify),
                ',"properties":',
                _properties(part, props),
                "}",
                "",
            )
            if isinstance(features, pa.ChunkedArray):
                features = features.combine_chunks()
            lists = pa.ListArray.from_arrays(pa.array([0, len(features)], pa.int32()), features)
            text = pc.binary_join(lists, ",\n")[0].as_py()
            fh.write(("" if first else ",\n") + text)
            first = False
        fh.write("\n]}\n")
    return GeoJSONWritten(
        len(frame), left_out, left_out_note(name if name is not None else path, left_out, total)
    )
