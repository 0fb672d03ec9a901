"""Distances across CRS zones (issue 11, A4): each pair measured correctly, the method printed.

Known values: two real GeoTIFFs in EPSG:32631 and EPSG:32632 either side of the 6°E zone
boundary, footprints 45.000 m apart on WGS 84 (pyproj.Geod), plus a bigger scene at 57°E that
pulled the old "one common UTM zone" choice to EPSG:32640, where the same pair measured 53.8 m
and was missed by a 50 m buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
import yaml
from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.geo import footprints_lonlat
from smt_tools.splits import (
    buffer_exclusions,
    distance_method,
    measure_pairs,
    metric_crs,
    metric_footprints,
    tile_footprints,
)
from tests.crs_data import GEOD, ZoneScenes, reference_distance, zone_scenes
from tests.split_data import balanced_csv_from_pairs

runner = CliRunner()


def _boxes(rows: list[tuple[float, float, float, float]], crs: list[str]) -> pd.DataFrame:
    a = np.asarray(rows, dtype=np.float64)
    return pd.DataFrame(
        {
            "source_image_id": np.arange(len(rows)),
            "minx": a[:, 0],
            "miny": a[:, 1],
            "maxx": a[:, 2],
            "maxy": a[:, 3],
            "crs": crs,
        }
    )


def _native(frame: pd.DataFrame, k: int) -> tuple[str, float, float, float, float]:
    r = frame.iloc[k]
    return (str(r["crs"]), float(r["minx"]), float(r["miny"]), float(r["maxx"]), float(r["maxy"]))


# --- the method --------------------------------------------------------------------------


def test_distance_method_is_chosen_from_the_tiles() -> None:
    utm = _boxes([(500_000, 5_000_000, 500_100, 5_000_100)] * 2, ["EPSG:32631"] * 2)
    m = distance_method(utm)
    assert (m.kind, m.crs) == ("planar", "EPSG:32631")
    assert m.scale_error == pytest.approx(4e-4, abs=1e-6)  # 0.9996 on the central meridian
    assert m.describe() == (
        "measured planar in EPSG:32631 (every tile in this CRS; scale error at most 0.04 %)"
    )
    # Web Mercator at 50°N: scale 1/cos(50°) = 1.556 -> geodesic, and the line says why
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(4.0, 50.0)
    merc = _boxes([(x, y, x + 100, y + 100)], ["EPSG:3857"])
    m = distance_method(merc)
    assert m.kind == "geodesic" and m.scale_error == pytest.approx(0.5557, abs=1e-3)
    assert "EPSG:3857, whose scale error reaches 55.57 %" in m.describe()
    lonlat = _boxes([(4.0, 50.0, 4.001, 50.001)], ["EPSG:4326"])
    assert distance_method(lonlat).kind == "geodesic"
    mixed = _boxes([(500_000, 5_000_000, 500_100, 5_000_100)] * 2, ["EPSG:32631", "EPSG:32632"])
    assert distance_method(mixed).describe() == (
        "measured geodesically on WGS 84 (tiles in 2 CRSs: EPSG:32631, EPSG:32632)"
    )
    # far outside its zone a UTM CRS is no longer good enough: 20° east of zone 31's meridian
    far = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(23.0, 45.0)
    m = distance_method(_boxes([(far[0], far[1], far[0] + 100, far[1] + 100)], ["EPSG:32631"]))
    assert m.kind == "geodesic" and m.scale_error > 0.02


def test_one_decision_of_the_shared_metric_crs() -> None:
    """``shared_metric_crs`` is the one decision both distance helpers start from."""
    from smt_tools.errors import InputDataError
    from smt_tools.geo import MetricCrs, shared_metric_crs

    assert shared_metric_crs(["EPSG:32631"]) == MetricCrs("EPSG:32631", 32631)
    assert shared_metric_crs(["epsg:32631"]) == MetricCrs("EPSG:32631", 32631)
    assert shared_metric_crs(["EPSG:4326"]) is None  # degrees, not metres
    assert shared_metric_crs(["EPSG:2263"]) is None  # US survey feet
    assert shared_metric_crs(["EPSG:32631", "EPSG:32632"]) is None
    assert shared_metric_crs([]) is None
    custom = "+proj=tmerc +lat_0=0 +lon_0=3.3 +k=1 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m"
    assert shared_metric_crs([custom]) == MetricCrs(custom, None)
    # without an EPSG code: metric_crs keeps the CRS, distances are geodesic
    frame = _boxes([(500_000, 5_000_000, 500_100, 5_000_100)], [custom])
    assert metric_crs(frame) == custom
    m = distance_method(frame)
    assert (m.kind, m.crs) == ("geodesic", "EPSG:4326") and np.isnan(m.scale_error)
    assert "not a projected metric CRS with an EPSG code" in m.describe()
    with pytest.raises(InputDataError, match="unknown CRS 'EPSG:1'"):
        distance_method(_boxes([(0, 0, 1, 1)], ["EPSG:1"]))


def test_geodesic_distance_is_edge_to_edge_not_vertex_to_vertex() -> None:
    # a 128 m tile and a 10 m tile 45 m east of the MIDDLE of its east edge, between the
    # densified vertices (every 32 m)
    big = (736_000.0, 4_987_000.0, 736_128.0, 4_987_128.0)
    small = (736_173.0, 4_987_043.0, 736_183.0, 4_987_053.0)
    # the same small tile expressed in the neighbouring zone: tiles in 2 CRSs -> geodesic
    tr = Transformer.from_crs("EPSG:32631", "EPSG:32632", always_xy=True)
    x0, y0 = tr.transform(small[0], small[1])
    x1, y1 = tr.transform(small[2], small[3])
    mixed = _boxes([big, (x0, y0, x1, y1)], ["EPSG:32631", "EPSG:32632"])
    fp = tile_footprints(mixed)
    assert fp.method.kind == "geodesic"
    i, j, d = measure_pairs(fp, 50.0)
    assert (i.tolist(), j.tolist()) == ([0], [1])
    # (the small box is re-drawn in zone 32 from two corners, so it is not the same shape:
    # compare with the reference distance of the shapes actually measured)
    ref = reference_distance(_native(mixed, 0), _native(mixed, 1))
    assert ref == pytest.approx(44.304, abs=0.002)
    assert d[0] == pytest.approx(ref, abs=0.005)
    # the nearest footprint vertices are more than 1 m farther: vertex-only would be wrong
    rings = footprints_lonlat(mixed)
    lon_a, lat_a = np.repeat(rings[0, :, 0], 17), np.repeat(rings[0, :, 1], 17)
    lon_b, lat_b = np.tile(rings[1, :, 0], 17), np.tile(rings[1, :, 1], 17)
    vertex_min = GEOD.inv(lon_a, lat_a, lon_b, lat_b)[2].min()
    assert vertex_min > ref + 1.0
    assert measure_pairs(fp, 40.0)[0].size == 0


# --- the zone pair, local path -----------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> ZoneScenes:
    return zone_scenes(tmp_path_factory.mktemp("zones"))


def _split(tmp: Path, source: dict[str, object], buffer_m: float, name: str) -> pd.DataFrame:
    conf = tmp / f"{name}.yaml"
    out = tmp / f"{name}.csv"
    cfg = {
        "split": {
            **source,
            "n_splits": 3,
            "strategy": "group",
            "group_column": "group_id",
            "buffer_m": buffer_m,
            "output": {"csv_path": str(out)},
        }
    }
    conf.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["split", str(conf)])
    assert res.exit_code == 0, res.output
    line = (
        f"buffer {buffer_m:g} m, measured geodesically on WGS 84 "
        "(tiles in 3 CRSs: EPSG:32631, EPSG:32632, EPSG:32640)"
    )
    assert line in res.output
    return pd.read_csv(out, dtype={"buffer_excluded_folds": str}).sort_values("tile_id")


def _expected_drops(frame: pd.DataFrame, buffer_m: float) -> set[tuple[int, int]]:
    """(tile_id, fold it must not train) from the independent geodesic reference."""
    out = set()
    rows = frame.reset_index(drop=True)
    for a in range(len(rows)):
        for b in range(len(rows)):
            if rows["fold"][a] == rows["fold"][b]:
                continue
            if rows["crs"][a] == "EPSG:32640" or rows["crs"][b] == "EPSG:32640":
                continue  # 4,000 km away
            if reference_distance(_native(rows, a), _native(rows, b), n=100) <= buffer_m:
                out.add((int(rows["tile_id"][a]), int(rows["fold"][b])))
    return out


def _drops(frame: pd.DataFrame) -> set[tuple[int, int]]:
    out = set()
    for t, text_ in zip(frame["tile_id"], frame["buffer_excluded_folds"].fillna(""), strict=True):
        out |= {(int(t), int(f)) for f in str(text_).split(";") if f}
    return out


def test_zone_pair_45_m_apart_local_split_and_audit(scenes: ZoneScenes, tmp_path: Path) -> None:
    assert scenes.gap_m == pytest.approx(45.0, abs=1e-3)
    bal = balanced_csv_from_pairs(scenes.pairs_csv, tmp_path / "balanced.csv", patch=128)
    assert sorted(bal["crs"].unique()) == ["EPSG:32631", "EPSG:32632", "EPSG:32640"]
    # the bug this guards against: one common UTM zone (the tiles' median: 57°E -> zone 40)
    old = metric_footprints(bal, metric_crs(bal))
    assert metric_crs(bal) == "EPSG:32640"
    a_b = [(i, j) for i in range(4) for j in range(4, 8)]
    old_min = min(shapely.distance(old[i], old[j]) for i, j in a_b)
    assert old_min > 53.0  # 45 m measured as 53.8 m: missed by a 50 m buffer

    source = {"input_csv_path": str(tmp_path / "balanced.csv")}
    f50 = _split(tmp_path, source, 50.0, "s50")
    assert f50.groupby("group_id")["fold"].nunique().eq(1).all()
    assert f50.groupby("group_id")["fold"].first().nunique() == 3  # one scene per fold
    drops = _drops(f50)
    expected = _expected_drops(f50, 50.0)
    assert drops == expected
    # exactly the closest pair: a's top-right tile and b's top-left tile, both ways
    assert len(drops) == 2
    f40 = _split(tmp_path, source, 40.0, "s40")
    assert f40["buffer_excluded_folds"].isna().all()  # 45 m > 40 m: nothing dropped

    # check-leakage: a and c train, b validates
    bal = pd.read_csv(tmp_path / "balanced.csv")
    bal[bal["group_id"] != "b"].to_csv(tmp_path / "train.csv", index=False)
    bal[bal["group_id"] == "b"].to_csv(tmp_path / "val.csv", index=False)
    args = ["check-leakage", "--train", str(tmp_path / "train.csv"), "--val"]
    args += [str(tmp_path / "val.csv"), "--buffer-m"]
    res = runner.invoke(app, [*args, "50"])
    assert res.exit_code == 3, res.output
    assert "1 tile pairs closer than 50 m across splits (closest 45.00 m)" in res.output
    assert (
        "Spatial check: buffer 50 m, measured geodesically on WGS 84 (tiles in 3 CRSs: "
        "EPSG:32631, EPSG:32632, EPSG:32640)"
    ) in res.output
    res = runner.invoke(app, [*args, "40"])
    assert res.exit_code == 0, res.output
    assert "0 tile pairs closer than 40 m across splits" in res.output


def test_buffer_exclusions_agree_with_reference_for_every_buffer(scenes: ZoneScenes) -> None:
    frame = balanced_csv_from_pairs(scenes.pairs_csv, scenes.pairs_csv.parent / "b2.csv", 128)
    fold = pd.factorize(frame["group_id"])[0].astype(np.int64)  # a=0, b=1, c=2
    fp = tile_footprints(frame)
    i, j, d = measure_pairs(fp, 60.0, labels=fold)
    for a, b, dist in zip(i, j, d, strict=True):
        assert dist == pytest.approx(
            reference_distance(_native(frame, int(a)), _native(frame, int(b))), abs=0.005
        )
    assert sorted(np.round(d, 2).tolist()) == [45.0, 54.44, 54.44, 54.48]
    # rows 0-3: scene a (fold 0: 0 1 / 2 3 by row), rows 4-7: scene b (fold 1)
    expected = {
        40.0: set(),
        50.0: {(1, 1), (4, 0)},  # a's top-right and b's top-left tile, 45.00 m
        54.45: {(1, 1), (3, 1), (4, 0), (6, 0)},  # + the 54.44 m pairs
        60.0: {(1, 1), (3, 1), (4, 0), (6, 0)},
    }
    for buffer_m, pairs in expected.items():
        ex = buffer_exclusions(fp, fold, buffer_m, 3)
        got = {(int(r), int(c)) for r, c in zip(*np.nonzero(ex), strict=True)}
        assert got == pairs, buffer_m


# --- the zone pair, catalog path (PostGIS geography) ------------------------------------


@pytest.fixture
def zone_catalog(fresh_database_url: str, scenes: ZoneScenes) -> Iterator[tuple[str, Engine]]:
    from smt_tools.catalog import connect

    res = runner.invoke(app, ["catalog", "init", "--catalog", fresh_database_url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["catalog", "ingest", str(scenes.pairs_csv), "--patch-size", "128", "--workers", "1",
         "--nodata-class", "0", "--catalog", fresh_database_url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    engine = connect(fresh_database_url)
    try:
        yield fresh_database_url, engine
    finally:
        engine.dispose()


@pytest.mark.db
def test_zone_pair_catalog_split_matches_local_and_postgis_geography(
    zone_catalog: tuple[str, Engine], scenes: ZoneScenes, tmp_path: Path
) -> None:
    from smt_tools.catalog import load_tiles
    from smt_tools.catalog.spatial import buffer_exclusions_postgis

    url, engine = zone_catalog
    frame = load_tiles(engine).frame
    assert len(frame) == 17
    fp = tile_footprints(frame)
    assert fp.method.kind == "geodesic"
    fold = pd.factorize(frame["group_id"])[0].astype(np.int64)
    i, j, d = measure_pairs(fp, 1000.0, labels=fold)
    ids = frame["tile_id"].to_numpy(np.int64)
    with engine.connect() as conn:
        for a, b, dist in zip(i, j, d, strict=True):
            pg = conn.execute(
                text(
                    "select ST_Distance(a.footprint::geography, b.footprint::geography) "
                    "from tile a, tile b where a.id = :a and b.id = :b"
                ),
                {"a": int(ids[a]), "b": int(ids[b])},
            ).scalar_one()
            assert abs(pg - dist) < 0.5, (pg, dist)
    assert float(d.min()) == pytest.approx(45.0, abs=0.01)
    # the PostGIS geodesic buffer gives exactly the shapely geodesic buffer
    for buffer_m in (0.0, 40.0, 50.0, 54.45, 60.0):
        got = buffer_exclusions_postgis(engine, ids, fold, buffer_m, 3, "", geodesic=True)
        np.testing.assert_array_equal(got, buffer_exclusions(fp, fold, buffer_m, 3))

    # split on the catalog: same folds and exclusions as the CSV path, method in the run summary
    cat = _split(tmp_path, {"catalog": {"url": url}}, 50.0, "cat50")
    assert len(_drops(cat)) == 2 and _drops(cat) == _expected_drops(cat, 50.0)
    with engine.connect() as conn:
        summary = conn.execute(text("select summary from run where command = 'split'")).scalar_one()
    assert summary["buffer_method"] == "geodesic"
    assert summary["distance_crs"] == "EPSG:4326"
    assert summary["buffer_method_detail"].startswith(
        "buffer 50 m, measured geodesically on WGS 84"
    )


@pytest.mark.db
def test_pair_across_the_antimeridian(fresh_database_url: str, tmp_path: Path) -> None:
    """Zones 60 and 1 either side of 180°: lon/lat jumps from +180 to -180 between the two
    scenes, 45 m apart. Both backends measure them (PostGIS takes its geography-only path)."""
    from smt_tools.catalog import connect, load_tiles
    from smt_tools.catalog.spatial import buffer_exclusions_postgis

    z = zone_scenes(tmp_path, zones=(60, 1, 55), boundary_lon=180.0)
    url = fresh_database_url
    assert runner.invoke(app, ["catalog", "init", "--catalog", url]).exit_code == 0
    res = runner.invoke(
        app,
        ["catalog", "ingest", str(z.pairs_csv), "--patch-size", "128", "--workers", "1",
         "--nodata-class", "0", "--catalog", url],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    engine = connect(url)
    try:
        frame = load_tiles(engine).frame
        fp = tile_footprints(frame)
        rings = fp.rings
        assert rings is not None and rings[..., 0].max() > 179.99 and rings[..., 0].min() < -179.99
        fold = pd.factorize(frame["group_id"])[0].astype(np.int64)
        d = measure_pairs(fp, 60.0, labels=fold)[2]
        assert float(d.min()) == pytest.approx(45.0, abs=0.01)
        ids = frame["tile_id"].to_numpy(np.int64)
        for buffer_m in (40.0, 50.0, 60.0):
            expected = buffer_exclusions(fp, fold, buffer_m, 3)
            got = buffer_exclusions_postgis(engine, ids, fold, buffer_m, 3, "", geodesic=True)
            np.testing.assert_array_equal(got, expected, err_msg=str(buffer_m))
        assert buffer_exclusions(fp, fold, 50.0, 3).sum() == 2
    finally:
        engine.dispose()
