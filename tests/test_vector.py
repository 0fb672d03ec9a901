"""output.format geojson | gpkg | fgb, the style inside a GeoPackage, and the catalog's run views
with their default QGIS style in layer_styles (no QGIS needed: see test_qgis.py for QGIS)."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
from sqlalchemy import text

from smt_tools.atomic import StagedOutputs
from smt_tools.config._loader import validate_mapping
from smt_tools.config.split import SplitFile
from smt_tools.errors import ConfigError
from smt_tools.export.qgis_style import fold_qml, leak_qml
from smt_tools.export.vector import format_for, write_vector
from smt_tools.geo import footprints_lonlat
from tests.split_data import grid_frame


def tiles(n: int = 6) -> pd.DataFrame:
    i = np.arange(n)
    minx = 500_000.0 + 100.0 * i
    return pd.DataFrame(
        {
            "tile_id": 7 + i,
            "minx": minx,
            "miny": 5_000_000.0,
            "maxx": minx + 100.0,
            "maxy": 5_000_100.0,
            "crs": "EPSG:32631",
            "fold": [0, 1, 2, -1, 0, 1][:n],
            "buffer_excluded_folds": ["", "0;2", None, "-1", "", "1"][:n],
            "weight": [0.5, np.nan, 1.0, 0.0, 0.25, 0.75][:n],
            "excluded": [False, True, False, False, False, True][:n],
        }
    )


def legend(qml: str) -> list[str]:
    root = ET.fromstring(qml.split("\n", 1)[1])
    return [r.get("label") or "" for r in root.findall("./renderer-v2/rules/rule")]


def test_format_from_extension_and_conflicts() -> None:
    assert format_for("a/b.geojson") == "geojson" and format_for("b.json") == "geojson"
    assert format_for("b.GPKG") == "gpkg" and format_for("b.fgb") == "fgb"
    assert format_for("b.map") == "geojson" and format_for("b.map", "fgb") == "fgb"
    with pytest.raises(ValueError, match=r"name the file b\.gpkg or set format: geojson"):
        format_for("b.geojson", "gpkg")
    with pytest.raises(ConfigError) as err:
        validate_mapping(
            {
                "split": {
                    "input_csv_path": "x.csv",
                    "output": {"geojson_path": "m.fgb", "format": "gpkg"},
                }
            },
            SplitFile,
            "s.yaml",
        )
    assert str(err.value) == (
        "s.yaml: split.output: geojson_path m.fgb has the extension of fgb, but format is gpkg; "
        "name the file m.gpkg or set format: fgb"
    )
    with pytest.raises(
        ConfigError,
        match=r"^s\.yaml: split\.output\.format: must be 'geojson', 'gpkg' or 'fgb'; got 'shp'$",
    ):
        validate_mapping(
            {"split": {"input_csv_path": "x.csv", "output": {"format": "shp"}}}, SplitFile, "s.yaml"
        )


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
def test_indexed_formats_round_trip(tmp_path: Path, fmt: str) -> None:
    """Same features, values and lon/lat corners as the GeoJSON; spatial index present."""
    frame = tiles()
    props = ["tile_id", "fold", "buffer_excluded_folds", "weight", "excluded"]
    path = tmp_path / f"folds.{fmt}"
    written = write_vector(frame, path, props, fold_qml(3), fmt=fmt)
    assert (written.features, written.left_out, written.note) == (6, 0, None)
    assert written.style == (None if fmt == "gpkg" else tmp_path / "folds.qml")
    info = pyogrio.read_info(path, layer="folds")
    assert info["features"] == 6 and info["crs"] == "EPSG:4326"
    assert info["geometry_type"] == "Polygon" and info["capabilities"]["fast_spatial_filter"]
    meta, _, geom, fields = pyogrio.raw.read(path, layer="folds")
    # FlatGeobuf stores features in the spatial index's (Hilbert) order: compare by tile_id
    order = np.argsort(fields[list(meta["fields"]).index("tile_id")])
    got = {name: values[order] for name, values in zip(meta["fields"], fields, strict=True)}
    geom = geom[order]
    assert got["tile_id"].tolist() == list(range(7, 13))
    assert got["fold"].tolist() == [0, 1, 2, -1, 0, 1]
    assert got["buffer_excluded_folds"].tolist() == ["", "0;2", None, "-1", "", "1"]
    assert got["excluded"].tolist() == [False, True, False, False, False, True]
    w = got["weight"]
    assert np.isnan(w[1]) and w[[0, 2, 3, 4, 5]].tolist() == [0.5, 1.0, 0.0, 0.25, 0.75]
    import shapely

    rings = np.round(footprints_lonlat(frame, densify=1), 7)
    polys = shapely.from_wkb(geom)
    np.testing.assert_array_equal(shapely.get_coordinates(polys).reshape(6, 5, 2), rings)


def test_gpkg_carries_its_style(tmp_path: Path) -> None:
    path = tmp_path / "folds.gpkg"
    write_vector(tiles(), path, ["tile_id", "fold", "buffer_excluded_folds"], fold_qml(3))
    con = sqlite3.connect(path)
    try:
        assert con.execute("pragma application_id").fetchone() == (0x47504B47,)  # 'GPKG'
        assert con.execute("pragma user_version").fetchone() == (10200,)  # 1.2: QGIS 3.22 reads it
        rows = con.execute(
            'select f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "styleName", '
            '"useAsDefault", "styleQML" from layer_styles'
        ).fetchall()
        contents = con.execute(
            "select table_name, data_type from gpkg_contents order by table_name"
        ).fetchall()
        rtree = con.execute(
            "select table_name, column_name from gpkg_extensions where extension_name = "
            "'gpkg_rtree_index'"
        ).fetchall()
    finally:
        con.close()
    assert rows == [("", "", "folds", "geom", "folds", 1, fold_qml(3))]
    assert contents == [("folds", "features"), ("layer_styles", "attributes")]
    assert rtree == [("folds", "geom")]
    assert legend(fold_qml(3)) == [
        "fold 0",
        "fold 1",
        "fold 2",
        "holdout test",
        "no fold",
        "dropped from a training set by the buffer",
    ]


def test_staged_layers_are_files_and_pixel_space_left_out(tmp_path: Path) -> None:
    """Staged (multi-output) writes land as plain files; tiles without a CRS are counted."""
    frame = tiles()
    frame.loc[[1, 4], "crs"] = ""
    staging = StagedOutputs()
    out = {}
    for fmt in ("gpkg", "fgb", "geojson"):
        out[fmt] = write_vector(
            frame, tmp_path / f"m_{fmt}.{fmt}", ["tile_id"], fold_qml(2), staging=staging
        )
    assert list(tmp_path.iterdir()) == [] or all(p.name.startswith(".") for p in tmp_path.iterdir())
    staging.commit()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m_fgb.fgb", "m_fgb.qml", "m_geojson.geojson", "m_geojson.qml", "m_gpkg.gpkg"]
    assert all((tmp_path / n).is_file() for n in names)
    for fmt in ("gpkg", "fgb"):
        assert (out[fmt].features, out[fmt].left_out) == (4, 2)
        assert pyogrio.read_info(tmp_path / f"m_{fmt}.{fmt}", layer=f"m_{fmt}")["features"] == 4
        assert out[fmt].note == (
            f"{tmp_path / f'm_{fmt}.{fmt}'}: 2 of 6 tiles have no CRS (rasters in pixel space), so "
            f"they are left out of this {fmt} layer (the map is in lon/lat, EPSG:4326)"
        )


def test_leak_report_as_gpkg(tmp_path: Path) -> None:
    """check-leakage --report x.gpkg: the leaking tiles, styled by check and side."""
    from smt_tools.pipelines.leakage import run_check_leakage

    frame, _ = grid_frame(2, 4, gap_m=0.0)
    img1 = frame["source_image_id"] == 10_001
    train = pd.concat([frame[~img1], frame[img1].iloc[:8]])
    val = frame[img1].iloc[8:]
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    report = tmp_path / "leaks.gpkg"
    res = run_check_leakage(
        train=tmp_path / "train.csv", val=tmp_path / "val.csv", buffer_m=1.0, report=report
    )
    flags = res.audit.flags
    assert flags[:, 0].sum() == 16 and flags[:, 1].sum() > 0  # all of image 1; touching rows
    con = sqlite3.connect(report)
    try:
        (qml,) = con.execute('select "styleQML" from layer_styles').fetchone()
    finally:
        con.close()
    assert legend(qml) == [
        "same source image: train",
        "same source image: val",
        "overlap or within buffer: train",
        "overlap or within buffer: val",
    ]
    assert qml == leak_qml(["train", "val"], ["source_image", "spatial"])
    info = pyogrio.read_info(report, layer="leaks")
    assert info["features"] == len(res.audit.leaking_rows) == int(flags.any(axis=1).sum())


@pytest.mark.db
def test_run_view_and_default_style(fresh_database_url: str, demo_pairs: Path) -> None:
    """record_run makes run_<id>_<kind> (first column tile_id, unique) and its default style
    in layer_styles (QGIS's layout); deleting the run drops both."""
    from smt_tools.catalog import connect, load_tiles, record_run
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    run_catalog_init(fresh_database_url)
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=128, nodata_class=0, workers=1)
    engine = connect(fresh_database_url)
    try:
        ids = load_tiles(engine).frame["tile_id"].to_numpy(np.int64)
        folds = np.arange(len(ids)) % 3 - 1
        dropped = np.where(np.arange(len(ids)) % 5 == 0, "0;-1", "")
        dropped[1] = "a\tb\\c"  # COPY escapes
        results = pd.DataFrame({"tile_id": ids, "fold": folds, "buffer_excluded_folds": dropped})
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        qml = fold_qml(2)
        run_id = record_run(engine, "split", {}, {}, results, now, now, map_style=qml)
        other = record_run(engine, "split", {}, {}, results.iloc[:3], now, now)
        view = f"run_{run_id}_folds"
        with engine.connect() as conn:
            cols = (
                conn.execute(
                    text(
                        "select column_name from information_schema.columns where table_name = :v "
                        "order by ordinal_position"
                    ),
                    {"v": view},
                )
                .scalars()
                .all()
            )
            rows = conn.execute(
                text(f'select tile_id, fold, buffer_excluded_folds from "{view}" order by tile_id')
            ).all()
            styles = conn.execute(
                text(
                    "select f_table_catalog = current_database(), f_table_schema, f_table_name, "
                    "f_geometry_column, stylename, styleqml::text, useasdefault, type, owner "
                    "from layer_styles"
                )
            ).all()
            layout = (
                conn.execute(
                    text(
                        "select column_name from information_schema.columns where table_name = "
                        "'layer_styles' order by ordinal_position"
                    )
                )
                .scalars()
                .all()
            )
            map_views = conn.execute(text("select id, map_view from run order by id")).all()
            geometry = conn.execute(
                text("select type, srid from geometry_columns where f_table_name = :v"), {"v": view}
            ).one()
        assert cols[0] == "tile_id" and cols[-1] == "footprint" and "buffer_excluded_folds" in cols
        order = np.argsort(ids)
        assert [r[0] for r in rows] == ids[order].tolist()
        assert [r[1] for r in rows] == folds[order].tolist()
        assert [r[2] for r in rows] == dropped[order].tolist()
        ((same_db, schema, table, geom, name, stored, default, gtype, owner),) = styles
        assert (same_db, schema, table, geom, name) == (
            True,
            "public",
            view,
            "footprint",
            "smt-tools split",
        )
        assert default is True and gtype is None and owner == "postgres"
        assert legend(stored if stored.startswith("<!DOCTYPE") else "\n" + stored) == legend(qml)
        assert layout == [
            "id",
            "f_table_catalog",
            "f_table_schema",
            "f_table_name",
            "f_geometry_column",
            "stylename",
            "styleqml",
            "stylesld",
            "useasdefault",
            "description",
            "owner",
            "ui",
            "update_time",
            "type",
        ]
        assert map_views == [(run_id, view), (other, f"run_{other}_folds")]
        assert tuple(geometry) == ("POLYGON", 4326)
        with engine.begin() as conn:
            conn.execute(text("delete from run where id = :r"), {"r": run_id})
        with engine.connect() as conn:
            left = conn.execute(
                text("select to_regclass(:v) is null, (select count(*) from layer_styles)"),
                {"v": view},
            ).one()
            still = conn.execute(text(f'select count(*) from "run_{other}_folds"')).scalar()
        assert tuple(left) == (True, 0) and still == 3
    finally:
        engine.dispose()


def test_large_layer_without_a_format_becomes_flatgeobuf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above GEOJSON_MAX_TILES a .geojson path with no output.format is written as FlatGeobuf
    beside it (one warning line); an explicit format: geojson is kept."""
    from smt_tools.export import vector

    monkeypatch.setattr(vector, "GEOJSON_MAX_TILES", 5)  # tiles() has 6
    frame, props = tiles(), ["tile_id", "fold"]
    written = write_vector(frame, tmp_path / "m.geojson", props, fold_qml(3))
    assert (written.path, written.format) == (tmp_path / "m.fgb", "fgb")
    assert written.style == tmp_path / "m.qml" and written.features == 6
    assert written.note == (
        f"{tmp_path / 'm.geojson'}: 6 tiles are more than GeoJSON serves well (5); wrote m.fgb "
        "(FlatGeobuf, spatially indexed, opens in QGIS with the same style) instead; set "
        "output.format: geojson to force GeoJSON"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fgb", "m.qml"]
    assert pyogrio.read_info(tmp_path / "m.fgb")["features"] == 6
    forced = write_vector(frame, tmp_path / "f.geojson", props, None, fmt="geojson")
    assert (forced.format, forced.note) == ("geojson", None)
    monkeypatch.setattr(vector, "GEOJSON_MAX_TILES", 6)  # at the limit: GeoJSON
    assert write_vector(frame, tmp_path / "k.geojson", props, None).format == "geojson"
