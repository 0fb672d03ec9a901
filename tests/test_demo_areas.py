"""``make-demo-data``'s ``areas.geojson`` (the hybrid coreset example's map layer), written as
plain RFC 7946 JSON: read back through GDAL, in lon/lat, a ``building`` and a ``field`` polygon
over the stated parts of each scene but the revisit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from pyproj import Transformer

from smt_tools.raster.demo_data import make_demo_data
from smt_tools.raster.synthetic import DEMO_CRS, PIXEL_SIZE, scene_specs


def test_demo_areas_are_rfc7946_polygons_over_the_stated_parts_of_each_scene(
    tmp_path: Path,
) -> None:
    make_demo_data(tmp_path, scenes=3, size=256, seed=0)
    path = tmp_path / "areas.geojson"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and "crs" not in doc  # RFC 7946: lon/lat only
    meta, _, geoms, fields = pyogrio.raw.read(path)  # GDAL reads what we wrote
    assert meta["crs"] == "EPSG:4326" and meta["geometry_type"] == "Polygon"
    polys = shapely.from_wkb(geoms)
    assert all(p.exterior.is_ccw for p in polys)  # RFC 7946's right-hand rule
    specs = [s for s in scene_specs(3, 256, 0) if "revisit" not in s.name]
    assert list(fields[0]) == ["building", "field"] * len(specs)
    back = Transformer.from_crs("EPSG:4326", DEMO_CRS, always_xy=True)
    for k, spec in enumerate(specs):
        side = spec.size * PIXEL_SIZE
        for j, (lo, hi) in enumerate(((0.1, 0.35), (0.55, 0.9))):
            ring = np.asarray(polys[2 * k + j].exterior.coords)
            x, y = back.transform(ring[:, 0], ring[:, 1])
            bounds = (x.min(), y.min(), x.max(), y.max())
            want = (
                spec.x0 + lo * side,
                spec.y0 - hi * side,
                spec.x0 + hi * side,
                spec.y0 - lo * side,
            )
            np.testing.assert_allclose(bounds, want, atol=1e-3)  # metres
