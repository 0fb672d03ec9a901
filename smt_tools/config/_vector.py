"""``output.format`` of the map layer: ``geojson | gpkg | fgb`` (see smt_tools.export.vector)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from smt_tools.choices import VECTOR_FORMATS, VectorFormat

__all__ = ["EXTENSIONS", "FORMAT_HELP", "VECTOR_FORMATS", "VectorFormat", "format_for"]

#: file extension of each format
EXTENSIONS: dict[str, str] = {"geojson": ".geojson", "gpkg": ".gpkg", "fgb": ".fgb"}
_BY_SUFFIX: dict[str, str] = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".fgb": "fgb",
}
FORMAT_HELP = (
    "map layer format: geojson, gpkg (GeoPackage, style inside) or fgb (FlatGeobuf); "
    "default: from the extension of geojson_path (.gpkg, .fgb), else geojson"
)


def format_for(path: str | os.PathLike[str], fmt: str | None = None) -> VectorFormat:
    """The format to write ``path`` in: ``fmt`` when given, else from the extension
    (``.gpkg``, ``.fgb``; anything else is GeoJSON). A path whose extension names ANOTHER
    format than ``fmt`` is an error (``ValueError`` naming both and the fix)."""
    suffix = Path(path).suffix.lower()
    by_suffix = _BY_SUFFIX.get(suffix)
    if fmt is None:
        return cast(VectorFormat, by_suffix or "geojson")
    if fmt not in VECTOR_FORMATS:
        raise ValueError(f"format must be one of {', '.join(VECTOR_FORMATS)}; got {fmt!r}")
    if by_suffix is not None and by_suffix != fmt:
        raise ValueError(
            f"geojson_path {path} has the extension of {by_suffix}, but format is {fmt}; name "
            f"the file {Path(path).with_suffix(EXTENSIONS[fmt]).name} or set format: {by_suffix}"
        )
    return fmt
