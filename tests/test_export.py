"""Balanced CSV, RFC 7946 GeoJSON, QGIS style and report plots."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from smt_tools.errors import InputDataError
from smt_tools.export.csv_out import (
    BALANCED_COLUMNS,
    class_counts_json,
    class_dist_json,
    parse_class_counts_json,
    write_balanced_csv,
)
from smt_tools.export.geojson import write_geojson
from smt_tools.export.qgis_style import qml_text, write_qml
from smt_tools.export.report import ReportData, write_report
from smt_tools.raster import PairSpec, inspect_pair, read_info, scan, tile_windows
from smt_tools.tiletable import TileTable

PROPS = [
    "tile_id",
    "image_path",
    "row_off",
    "col_off",
    "sampler_weight",
    "excluded",
    "nodata_ratio",
]


@pytest.fixture(scope="module")
def demo_table(demo_pairs: Path) -> TileTable:
    pairs = pd.read_csv(demo_pairs)
    sources = [
        inspect_pair(PairSpec(str(demo_pairs.parent / r.image), str(demo_pairs.parent / r.mask)))
        for r in pairs.itertuples()
    ]
    windows = [tile_windows(s.image.width, s.image.height, 128, 128, "drop") for s in sources]
    table = scan(sources, windows, nodata_class=0, workers=1)  # the demo: 0 = nodata
    rng = np.random.default_rng(0)
    table.frame["sampler_weight"] = rng.uniform(0.05, 1, len(table))
    table.frame["excluded"] = table.frame["has_mask_border_nodata"].to_numpy()
    table.frame.loc[table.frame["excluded"], "sampler_weight"] = 0.0
    table.frame.loc[0, "nodata_ratio"] = np.nan  # NaN must become null
    return table


def _ring_area(ring: list[list[float]]) -> float:
    x = np.array([p[0] for p in ring])
    y = np.array([p[1] for p in ring])
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def test_geojson_rfc7946(demo_table: TileTable, demo_pairs: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiles.geojson"
    write_geojson(demo_table.frame, path, PROPS)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc  # RFC 7946: no crs member, always WGS 84 lon/lat
    feats = doc["features"]
    assert len(feats) == len(demo_table) == 64
    # the demo area in lon/lat: every scene's corners reprojected
    to_ll = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    corners = []
    for r in pd.read_csv(demo_pairs).itertuples():
        info = read_info(demo_pairs.parent / r.image)
        minx, miny, maxx, maxy = info.bounds
        corners += [to_ll.transform(x, y) for x in (minx, maxx) for y in (miny, maxy)]
    lon = [c[0] for c in corners]
    lat = [c[1] for c in corners]
    eps = 1e-6
    for feat, row in zip(feats, demo_table.frame.itertuples(), strict=True):
        assert feat["type"] == "Feature"
        geom = feat["geometry"]
        assert geom["type"] == "Polygon" and len(geom["coordinates"]) == 1
        ring = geom["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert _ring_area(ring) > 0  # exterior ring counter-clockwise
        for x, y in ring:
            assert min(lon) - eps <= x <= max(lon) + eps
            assert min(lat) - eps <= y <= max(lat) + eps
        props = feat["properties"]
        assert list(props) == PROPS
        assert props["tile_id"] == row.tile_id
        assert props["excluded"] is bool(row.excluded)
        assert props["sampler_weight"] == pytest.approx(row.sampler_weight)
    assert feats[0]["properties"]["nodata_ratio"] is None
    # the corners of the first tile match a direct reprojection
    r0 = demo_table.frame.iloc[0]
    x0, y0 = to_ll.transform(r0.minx, r0.miny)
    assert feats[0]["geometry"]["coordinates"][0][0] == pytest.approx([x0, y0], abs=1e-7)


def test_geojson_missing_property_is_error(demo_table: TileTable, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no_such"):
        write_geojson(demo_table.frame, tmp_path / "x.geojson", ["no_such"])
    assert not list(tmp_path.iterdir())


def test_qml_is_valid_rule_renderer(tmp_path: Path) -> None:
    path = tmp_path / "tiles.qml"
    write_qml(path)
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "RuleRenderer"
    rules = renderer.findall("./rules/rule")
    symbols = {s.get("name"): s for s in renderer.findall("./symbols/symbol")}
    assert len(rules) == 6 and len(symbols) == 6
    for rule in rules:
        assert rule.get("symbol") in symbols
    graduated = [r for r in rules if r.get("key", "").startswith("class")]
    assert all('"sampler_weight"' in (r.get("filter") or "") for r in graduated)
    assert all('NOT coalesce("excluded", false)' in (r.get("filter") or "") for r in graduated)
    hatch = next(r for r in rules if r.get("key") == "excluded")
    sym = symbols[hatch.get("symbol")]
    style = sym.find("./layer/prop[@k='style']")
    assert style is not None and style.get("v") == "b_diagonal"
    colors = {
        symbols[r.get("symbol")].find("./layer/prop[@k='color']").get("v")  # type: ignore[union-attr]
        for r in graduated
    }
    assert len(colors) == 5  # a colour ramp, one colour per class
    # other commands reuse it on another field without the hatch
    other = ET.fromstring(qml_text("fold", None, (-1.5, -0.5, 0.5)).split("\n", 1)[1])
    assert len(other.findall(".//rules/rule")) == 2
    with pytest.raises(ValueError, match="increasing"):
        qml_text(breaks=(1.0, 0.5))


def test_class_counts_json_round_trip_and_empty_cells() -> None:
    counts = np.array([[3, 1, 0], [0, 0, 7]], dtype=np.int64)
    values = np.array([1, 2, 6], dtype=np.int64)
    text = pd.Series(list(class_counts_json(counts, values)), dtype=object)
    back, back_values = parse_class_counts_json(text, "b.csv", empty_is_zero=False)
    np.testing.assert_array_equal(back, counts)
    np.testing.assert_array_equal(back_values, values)
    assert back.dtype == np.int64 and back_values.dtype == np.int64
    holes = pd.Series(['{"6": 2, "1": 5}', np.nan], dtype=object)
    got, got_values = parse_class_counts_json(holes, "b.csv", empty_is_zero=True)  # split
    np.testing.assert_array_equal(got, [[5, 2], [0, 0]])
    np.testing.assert_array_equal(got_values, [1, 6])
    with pytest.raises(InputDataError, match=r"^b\.csv: line 3: class_counts_json must be"):
        parse_class_counts_json(holes, "b.csv", empty_is_zero=False)  # coreset
    for bad in ("[1, 2]", "{not json", '{"a": 1}'):
        with pytest.raises(InputDataError, match=r"line 2: .*got "):
            parse_class_counts_json(pd.Series([bad]), "b.csv", empty_is_zero=True)


def test_balanced_csv_columns_and_json(tmp_path: Path) -> None:
    counts = np.array([[3, 1, 0], [0, 0, 0]])
    values = np.array([1, 2, 6])
    dist = [json.loads(s) for s in class_dist_json(counts, values)]
    assert dist == [{"1": 0.75, "2": 0.25, "6": 0}, {"1": 0, "2": 0, "6": 0}]
    assert next(json.loads(s) for s in class_counts_json(counts, values)) == {
        "1": 3,
        "2": 1,
        "6": 0,
    }
    frame = pd.DataFrame({c: [0, 1] for c in BALANCED_COLUMNS})
    frame["uniqueness_score"] = [0.5, np.nan]
    frame["extra"] = 1
    path = tmp_path / "b.csv"
    path.write_text("old")
    write_balanced_csv(frame, path)
    out = pd.read_csv(path)
    assert list(out.columns) == [*BALANCED_COLUMNS, "uniqueness_score"]
    with pytest.raises(ValueError, match="lacks"):
        write_balanced_csv(frame.drop(columns=["sampler_weight"]), path)
    assert list(pd.read_csv(path).columns)[-1] == "uniqueness_score"  # earlier file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]


def test_report_pngs(demo_table: TileTable, tmp_path: Path) -> None:
    f = demo_table.frame
    data = ReportData(
        class_values=demo_table.class_values,
        uniform_share=np.full(demo_table.n_classes, 1 / demo_table.n_classes),
        weighted_share=np.full(demo_table.n_classes, 1 / demo_table.n_classes),
        weights=f["sampler_weight"].to_numpy(),
        excluded=f["excluded"].to_numpy(),
        footprints=f[["minx", "miny", "maxx", "maxy", "crs"]],
        uniqueness=np.linspace(0, 1, len(f)),
    )
    files = write_report(tmp_path / "report", data)
    names = sorted(p.name for p in files)
    assert names == ["class_share.png", "uniqueness.png", "weight_hist.png", "weight_map.png"]
    for p in files:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_geojson_property_types_and_escaping(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "minx": [500_000.0, 500_010.0],
            "miny": [5_000_000.0] * 2,
            "maxx": [500_010.0, 500_020.0],
            "maxy": [5_000_010.0] * 2,
            "crs": ["EPSG:32631"] * 2,
            "name": ['a "quoted"\\path\n', None],
            "score": [np.nan, np.inf],
            "flag": [True, False],
            "n": pd.array([1, None], dtype="Int64"),
            "big": np.array([2**62 + 1, -1], dtype=np.int64),
        }
    )
    path = tmp_path / "t.geojson"
    write_geojson(frame, path, ["name", "score", "flag", "n", "big"])
    props = [f["properties"] for f in json.loads(path.read_text())["features"]]
    assert props[0] == {
        "name": 'a "quoted"\\path\n',
        "score": None,
        "flag": True,
        "n": 1,
        "big": 2**62 + 1,
    }
    assert props[1] == {"name": None, "score": None, "flag": False, "n": None, "big": -1}
