"""Tile footprints as a vector layer in one of three formats, with its QGIS style.

``output.format`` picks the format (default: from the path's extension, else GeoJSON; a
GeoJSON path with more than :data:`GEOJSON_MAX_TILES` tiles and no ``output.format`` is written
as FlatGeobuf beside it, ``<name>.fgb``, with a warning line):

- ``geojson``: RFC 7946 text (:mod:`smt_tools.export.geojson`), style in ``<name>.qml`` beside
  it. No spatial index: QGIS reads the whole file on open and scans it on every repaint.
- ``gpkg``: GeoPackage 1.2 (SQLite) with an R-tree spatial index; the style travels INSIDE the
  file (its ``layer_styles`` table, which QGIS reads when the layer is added), so one file is
  the whole map layer.
- ``fgb``: FlatGeobuf with its packed Hilbert R-tree; style in ``<name>.qml`` beside it.

GeoPackage and FlatGeobuf are written by GDAL through ``pyogrio`` (imported only for these two
formats): the same library QGIS reads them with, so the spatial indexes are built the way GDAL
expects. Above :data:`INDEXED_FORMAT_ABOVE_TILES` tiles an indexed format is recommended
(headless QGIS 3.22, ``benchmarks/qgis_layer_formats.py``: 155k tiles open in 1.55 s and
repaint in 2.3 s as GeoJSON, 0.006 s and 1.3 s as GeoPackage; a 1 % zoom draws in 0.70 s vs
0.03 s; at 50k tiles GeoJSON still takes 0.5 s to open and 1.0 s to paint).

Every format holds the tiles WITH a CRS, in lon/lat (EPSG:4326); tiles without one (rasters in
pixel space) are left out and counted, as for GeoJSON.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.atomic import StagedOutputs, atomic_path, reraise_output_error
from smt_tools.config._vector import (
    EXTENSIONS,
    VECTOR_FORMATS,
    VectorFormat,
    format_for,
)
from smt_tools.export.geojson import COORD_DECIMALS, write_geojson
from smt_tools.geo import footprints_lonlat, has_crs

__all__ = [
    "EXTENSIONS",
    "GEOJSON_MAX_TILES",
    "INDEXED_FORMAT_ABOVE_TILES",
    "VECTOR_FORMATS",
    "VectorFormat",
    "VectorWritten",
    "add_gpkg_style",
    "format_for",
    "style_path",
    "write_vector",
]

_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}
#: above this many tiles an indexed format (gpkg, fgb) is recommended over GeoJSON
INDEXED_FORMAT_ABOVE_TILES = 50_000
#: above this many tiles a map layer whose format is not set explicitly is written as
#: FlatGeobuf, not GeoJSON: 500,000 tiles are a ~220 MB GeoJSON that QGIS parses whole on open
#: and rescans on every repaint (1M: 444 MB, 10M: ~4.4 GB, which it cannot open)
GEOJSON_MAX_TILES = 500_000
#: geometry column name GDAL gives a GeoPackage layer (``layer_styles.f_geometry_column``)
GPKG_GEOMETRY_COLUMN = "geom"


def style_path(path: str | os.PathLike[str], fmt: str) -> Path | None:
    """Where the QGIS style of a layer file goes: ``<name>.qml`` beside it, or None for a
    GeoPackage (the style is inside)."""
    return None if fmt == "gpkg" else Path(path).with_suffix(".qml")


@dataclass(frozen=True)
class VectorWritten:
    """What :func:`write_vector` wrote: the layer file, its format, features (tiles with a CRS),
    left_out (tiles without one), note (the warning line when any was left out) and the style
    file beside it (None when the style is inside a GeoPackage)."""

    path: Path
    format: VectorFormat
    features: int
    left_out: int
    note: str | None
    style: Path | None


@contextmanager
def _target(path: Path, staging: StagedOutputs | None, suffix: str) -> Iterator[Path]:
    """A temporary path that becomes ``path``: staged (moved in by the caller's commit) or
    atomically replaced at the end of the block."""
    if staging is not None:
        staged = staging.file(path)
        # GDAL picks the layout from the extension (FlatGeobuf writes a FOLDER of layers to a
        # name without .fgb): write under the staged name + the extension, then rename
        tmp = staged.with_name(staged.name + suffix)
        try:
            yield tmp
            if tmp.exists():
                os.replace(tmp, staged)
        finally:
            tmp.unlink(missing_ok=True)
        return
    with atomic_path(path, suffix=suffix) as tmp:
        yield tmp


def write_vector(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    properties: Sequence[str],
    style_qml: str | None,
    *,
    fmt: str | None = None,
    staging: StagedOutputs | None = None,
    densify: int = 1,
) -> VectorWritten:
    """Write the tiles of ``frame`` that have a CRS to ``path`` in ``fmt`` (see
    :func:`format_for`) with the QGIS style ``style_qml`` (None: no style).

    frame needs ``minx, miny, maxx, maxy, crs`` and every column in ``properties``. With
    ``staging`` the files are staged (the caller commits them), else each is replaced
    atomically. Returns what was written.
    """
    target = Path(path)
    kind = format_for(target, fmt)
    switched = None
    if fmt is None and kind == "geojson" and len(frame) > GEOJSON_MAX_TILES:
        target, kind = target.with_suffix(EXTENSIONS["fgb"]), "fgb"
        switched = (
            f"{Path(path)}: {len(frame):,} tiles are more than GeoJSON serves well "
            f"({GEOJSON_MAX_TILES:,}); wrote {target.name} (FlatGeobuf, spatially indexed, "
            "opens in QGIS with the same style) instead; set output.format: geojson to force "
            "GeoJSON"
        )
    qml = style_path(target, kind)
    if kind == "geojson":
        with _target(target, staging, ".geojson") as tmp:
            gj = write_geojson(frame, tmp, properties, densify=densify, name=target)
        features, left_out, note = gj.features, gj.left_out, gj.note
    else:
        features, left_out, note = _write_ogr(
            frame, target, properties, kind, style_qml, staging, densify
        )
    if qml is not None and style_qml is not None:
        with _target(qml, staging, ".qml") as tmp:
            tmp.write_text(style_qml, encoding="utf-8")
    note = "; ".join(n for n in (switched, note) if n) or None
    return VectorWritten(target, kind, features, left_out, note, qml if style_qml else None)


def _left_out_note(path: Path, kind: str, left_out: int, total: int) -> str | None:
    if not left_out:
        return None
    what = "no tile has a CRS" if left_out == total else f"{left_out} of {total} tiles have no CRS"
    return (
        f"{path}: {what} (rasters in pixel space), so {'they are' if left_out > 1 else 'it is'} "
        f"left out of this {kind} layer (the map is in lon/lat, EPSG:4326)"
    )


def polygon_wkb(rings: np.ndarray) -> np.ndarray:
    """rings: (n, m, 2) float64 closed lon/lat rings -> (n,) object array of little-endian
    WKB Polygons (one ring each)."""
    n, m, _ = rings.shape
    dt = np.dtype(
        [
            ("order", "u1"),
            ("type", "<u4"),
            ("nrings", "<u4"),
            ("npts", "<u4"),
            ("xy", "<f8", (m, 2)),
        ]
    )
    buf = np.empty(n, dtype=dt)
    buf["order"], buf["type"], buf["nrings"], buf["npts"] = 1, 3, 1, m
    buf["xy"] = rings
    raw = buf.tobytes()
    size = dt.itemsize
    return np.array([raw[i * size : (i + 1) * size] for i in range(n)], dtype=object)


def _field_array(col: pd.Series) -> np.ndarray:
    """A column as pyogrio writes it: numbers and booleans as numpy arrays (NaN = null for
    floats), everything else as text (None = null)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return col.to_numpy()
    if pd.api.types.is_bool_dtype(dtype) and not col.isna().any():
        return col.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(dtype, pd.CategoricalDtype):  # e.g. exclusion_reason: text of each category
        cats = np.array([str(v) for v in dtype.categories] + [None], dtype=object)
        return np.asarray(cats[col.cat.codes.to_numpy()])  # code -1 (missing): the last, None
    values = col.astype(object).to_numpy()
    return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)


def _write_ogr(
    frame: pd.DataFrame,
    target: Path,
    properties: Sequence[str],
    kind: str,
    style_qml: str | None,
    staging: StagedOutputs | None,
    densify: int,
) -> tuple[int, int, str | None]:
    props = list(properties)
    missing = [c for c in [*props, "minx", "miny", "maxx", "maxy", "crs"] if c not in frame.columns]
    if missing:
        raise ValueError(f"{kind} export: frame lacks column(s) {', '.join(missing)}")
    try:
        from pyogrio.raw import write as ogr_write
    except ImportError:
        from smt_tools.errors import ConfigError

        raise ConfigError(
            f"{target}: writing {kind} needs the pyogrio package (GDAL); install it with "
            "`pip install pyogrio`, or write GeoJSON (output.format: geojson)"
        ) from None
    georef = has_crs(frame)
    total, left_out = len(frame), int((~georef).sum())
    if left_out:
        frame = frame.iloc[np.flatnonzero(georef)]
    rings = np.round(footprints_lonlat(frame, densify=densify), COORD_DECIMALS)
    layer = target.stem
    dataset_options: dict[str, Any] = {"VERSION": "1.2"} if kind == "gpkg" else {}
    with _target(target, staging, EXTENSIONS[kind]) as tmp:
        tmp.unlink(missing_ok=True)  # GDAL creates the file itself
        try:
            ogr_write(
                str(tmp),
                polygon_wkb(rings),
                [_field_array(frame[c]) for c in props],
                props,
                layer=layer,
                driver=_DRIVERS[kind],
                geometry_type="Polygon",
                crs="EPSG:4326",
                encoding="UTF-8",
                promote_to_multi=False,
                dataset_options=dataset_options,
                layer_options={"SPATIAL_INDEX": "YES"},
            )
            if kind == "gpkg" and style_qml is not None:
                add_gpkg_style(tmp, layer, style_qml)
        except OSError as exc:
            reraise_output_error(exc, target)
            raise
    return len(frame), left_out, _left_out_note(target, kind, left_out, total)


#: ``layer_styles`` as GDAL/QGIS create it inside a GeoPackage (QGIS 3.22, GDAL 3.6)
_GPKG_STYLES_TABLE = """
CREATE TABLE IF NOT EXISTS "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
 "f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256),
 "f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT,
 "useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30),
 "update_time" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))
"""


def add_gpkg_style(
    path: str | os.PathLike[str],
    layer: str,
    style_qml: str,
    name: str | None = None,
    geometry_column: str = GPKG_GEOMETRY_COLUMN,
) -> None:
    """Store ``style_qml`` as the default style of ``layer`` in the GeoPackage's
    ``layer_styles`` table (created, and registered as an attribute table, when missing), as
    QGIS's "Save as default" does; QGIS applies it when the layer is added."""
    con = sqlite3.connect(str(path))
    try:
        with con:
            con.execute(_GPKG_STYLES_TABLE)
            now = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
            registered = con.execute(
                "SELECT 1 FROM gpkg_contents WHERE lower(table_name) = 'layer_styles'"
            ).fetchone()
            if not registered:
                con.execute(
                    "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                    f"last_change, srs_id) VALUES ('layer_styles', 'attributes', 'layer_styles', "
                    f"'', {now}, 0)"
                )
            con.execute(
                "UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ? "
                "AND f_geometry_column = ?",
                (layer, geometry_column),
            )
            con.execute(
                'INSERT INTO layer_styles ("f_table_catalog", "f_table_schema", "f_table_name", '
                '"f_geometry_column", "styleName", "styleQML", "styleSLD", "useAsDefault", '
                "\"description\", \"owner\", \"ui\") VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', "
                "NULL)",
                (layer, geometry_column, name or layer, style_qml, "written by smt-tools"),
            )
    finally:
        con.close()
