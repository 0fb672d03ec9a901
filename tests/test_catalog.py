"""The PostGIS catalog against a real database: schema, ingest, load_tiles, record_run, bad input."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from smt_tools import catalog as cat
from smt_tools.cli.app import app
from smt_tools.errors import (
    CatalogError,
    CatalogSchemaError,
    EmptySelectionError,
    UnsafeQueryError,
)
from smt_tools.raster import PairSpec, inspect_pair, scan, tile_windows
from smt_tools.tiletable import tile_key
from tests.catalog_data import (
    HAND_BLACK_BORDER,
    HAND_COUNTS,
    HAND_MASK_BORDER,
    HAND_NODATA_RATIO,
    corrupt_last_block_pair,
    hand_pair,
    two_scenes,
    write_pairs_csv,
)
from tests.rasters import write_pair, write_tif

runner = CliRunner()
#: The hand-built masks of tests.catalog_data use 0 = nodata.
ND0 = ("--nodata-class", "0")


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def catalog_url(fresh_database_url: str) -> str:
    """A fresh database with the catalog schema applied."""
    engine = cat.connect(fresh_database_url)
    try:
        cat.apply_migrations(engine)
    finally:
        engine.dispose()
    return fresh_database_url


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    eng = cat.connect(catalog_url)
    yield eng
    eng.dispose()


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every catalog table (order-independent), to prove nothing changed."""
    return {
        "source_image": rows(
            engine, "select id, image_size, image_mtime, ingested_at from source_image order by id"
        ),
        "tile": rows(
            engine,
            "select id, class_counts, valid_pixels, nodata_ratio, class_entropy, "
            "ST_AsText(footprint) from tile order by id",
        ),
        "catalog_class": rows(engine, "select * from catalog_class order by position"),
        "run": rows(engine, "select id from run order by id"),
    }


# ------------------------------------------------------------------ URLs (no database needed)


def test_redact_and_resolve_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cat.redact("postgresql://bob:s3cr3t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert cat.redact("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert cat.redact("host=db password=s3cr3t user=bob") == "host=db password=*** user=bob"
    assert cat.redact("postgresql://db/x?password=s3cr3t&sslmode=off") == (
        "postgresql://db/x?password=***&sslmode=off"
    )
    monkeypatch.setenv("SMT_DATABASE_URL", "postgresql://env@h/db")
    assert cat.resolve_url(None) == "postgresql://env@h/db"
    assert cat.resolve_url("postgresql://x@h/db") == "postgresql://x@h/db"
    monkeypatch.delenv("SMT_DATABASE_URL")
    with pytest.raises(CatalogError, match="no catalog: pass --catalog"):
        cat.resolve_url(None)


def test_unreachable_database_one_line_no_password(tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    url = "postgresql://postgres:hunter2@127.0.0.1:1/x"
    for args in (
        ("catalog", "init", "--catalog", url),
        ("catalog", "ingest", str(pairs), "--patch-size", "4", "--catalog", url),
        ("catalog", "stats", "--catalog", url),
    ):
        code, out, err = invoke(*args)
        assert code == 1, err
        assert err.startswith(
            "error: cannot connect to the catalog postgresql://postgres:***@127.0.0.1:1/x"
        )
        assert "catalog init" not in err and "docker compose up -d" in err
        assert len(err.strip().splitlines()) == 1
        assert "hunter2" not in err + out


def test_where_clause_static_checks() -> None:
    assert cat.check_where_clause("nodata_ratio < 0.05") == "nodata_ratio < 0.05"
    for bad in ("1=1; drop table tile", "valid_pixels > 0 -- x", "a /* b */ = 1", "  "):
        with pytest.raises(UnsafeQueryError):
            cat.check_where_clause(bad)


# ------------------------------------------------------------------ schema


def test_docker_compose_matches_readme_url() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
    svc = compose["services"]["postgis"]  # the dask services are behind a profile
    assert svc["image"].startswith("postgis/postgis:")
    # `docker compose up -d --wait` (README) waits for it; over TCP, not the init-time socket
    assert svc["healthcheck"]["test"] == [
        "CMD-SHELL",
        "pg_isready -h 127.0.0.1 -U postgres -d smt",
    ]
    assert "docker compose up -d --wait" in (Path(__file__).parents[1] / "README.md").read_text()
    assert svc["ports"] == ["127.0.0.1:5432:5432"]  # never published on every interface
    env = svc["environment"]
    url = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@localhost:5432/{env['POSTGRES_DB']}"
    assert url == "postgresql://postgres:postgres@localhost:5432/smt"


@pytest.mark.db
def test_init_is_idempotent_and_documented(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local test server trusts connections, so a password in the URL is accepted (and
    # must never be printed)
    with_pw = fresh_database_url.replace(
        "postgresql://postgres@", "postgresql://postgres:s3cr3tpw@"
    )
    monkeypatch.setenv("SMT_DATABASE_URL", with_pw)
    code, out, err = invoke("catalog", "init")
    assert code == 0, err
    assert "postgres:***@" in out and "s3cr3tpw" not in out + err
    files = [m.filename for m in cat.migration_files()]
    assert files[:2] == ["0001_catalog.sql", "0002_mask_band.sql"]
    assert all(f"applied          {f}" in out for f in files)
    assert f"{len(files)} migration(s) applied" in out
    pairs = two_scenes(tmp_path)
    code, out, err = invoke("catalog", "ingest", str(pairs), "--patch-size", "4")
    assert code == 0, err
    code, out2, err2 = invoke("catalog", "stats")
    assert code == 0, err2
    assert "s3cr3tpw" not in out + err + out2 + err2
    with pytest.raises(EmptySelectionError, match=r"\*\*\*"):
        eng = cat.connect(with_pw)
        try:
            cat.load_tiles(eng, where_clause="valid_pixels < 0")
        finally:
            eng.dispose()
    monkeypatch.delenv("SMT_DATABASE_URL")
    code, out, err = invoke("catalog", "init", "--catalog", fresh_database_url)
    assert code == 0, err
    assert all(f"already applied  {f}" in out for f in files) and "up to date" in out
    eng = cat.connect(fresh_database_url)
    try:
        assert rows(eng, "select filename from schema_migrations order by 1") == [
            (f,) for f in files
        ]
        cat.require_schema(eng)
        # every column of every catalog table/view has a COMMENT
        undocumented = rows(
            eng,
            "select c.relname, a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid "
            "where c.relname in ('source_image','tile','catalog_class','run','tile_result',"
            "'tile_result_map','schema_migrations') and a.attnum > 0 and not a.attisdropped "
            "and col_description(c.oid, a.attnum) is null",
        )
        assert undocumented == []
        idx = rows(eng, "select indexdef from pg_indexes where tablename = 'tile'")
        assert any("USING gist (footprint)" in r[0] for r in idx)
        assert any("(source_image_id, row_off, col_off, height, width)" in r[0] for r in idx)
        geo = rows(
            eng,
            "select f_table_name, srid, type from geometry_columns order by f_table_name",
        )
        assert ("tile", 4326, "POLYGON") in geo and ("source_image", 4326, "POLYGON") in geo
        fk = rows(
            eng,
            "select confdeltype from pg_constraint where conrelid = 'tile_result'::regclass "
            "and confrelid = 'tile'::regclass",
        )
        assert fk == [("c",)]  # ON DELETE CASCADE
    finally:
        eng.dispose()


@pytest.mark.db
def test_database_without_schema(fresh_database_url: str, tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    code, _, err = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "4", "--catalog", fresh_database_url
    )
    assert code == 1
    assert err.strip() == (
        f"error: Catalog schema missing in {fresh_database_url}; run `pytorch-smt-tools catalog init`"
    )
    code, _, err = invoke("catalog", "stats", "--catalog", fresh_database_url)
    assert code == 1 and "catalog init" in err
    eng = cat.connect(fresh_database_url)
    try:
        with pytest.raises(CatalogSchemaError, match="catalog init"):
            cat.load_tiles(eng)
        # nothing was created
        assert rows(eng, "select to_regclass('tile'), to_regclass('schema_migrations')") == [
            (None, None)
        ]
    finally:
        eng.dispose()


# ------------------------------------------------------------------ ingest


@pytest.mark.db
def test_hand_built_tiles_exact_in_postgis(
    catalog_url: str, engine: Engine, tmp_path: Path
) -> None:
    img, msk = hand_pair(tmp_path)
    pairs = write_pairs_csv(tmp_path / "pairs.csv", [(img.name, msk.name)])
    code, out, err = invoke(
        "catalog",
        "ingest",
        str(pairs),
        "--patch-size",
        "4",
        "--workers",
        "1",
        *ND0,
        "--catalog",
        catalog_url,
    )
    assert code == 0, err
    assert "1 scanned (1 new, 0 changed), 0 unchanged skipped" in out
    assert "Tiles written: 4" in out
    assert rows(engine, "select position, class_value from catalog_class order by position") == [
        (1, 1),
        (2, 2),
        (3, 3),
    ]
    got = rows(
        engine,
        "select id, row_off, col_off, class_counts, valid_pixels, nodata_ratio, class_entropy, "
        "has_mask_border_nodata, has_image_black_border, ST_SRID(footprint), ST_NPoints(footprint) "
        "from tile order by row_off, col_off",
    )
    assert [r[3] for r in got] == HAND_COUNTS
    assert [r[4] for r in got] == [12, 16, 16, 0]
    assert [r[5] for r in got] == HAND_NODATA_RATIO
    assert got[0][6] == 0.0 and got[1][6] == 0.0
    assert got[2][6] == pytest.approx(math.log(2), abs=1e-15)
    assert got[3][6] is None  # no valid pixel
    assert [r[7] for r in got] == HAND_MASK_BORDER
    assert [r[8] for r in got] == HAND_BLACK_BORDER
    assert {r[9] for r in got} == {4326} and {r[10] for r in got} == {17}
    assert [r[0] for r in got] == [tile_key(img, r[1], r[2], 4, 4) for r in got]
    # footprints: lon/lat polygons that back-project onto the native windows (1 m pixels)
    back = rows(
        engine,
        "select row_off, col_off, ST_XMin(g), ST_YMin(g), ST_XMax(g), ST_YMax(g) from "
        "(select row_off, col_off, ST_Transform(footprint, 32631) g from tile) t order by 1, 2",
    )
    for r, c, x0, y0, x1, y1 in back:
        assert (x0, y0, x1, y1) == pytest.approx(
            (500_000 + c, 5_000_000 - r - 4, 500_000 + c + 4, 5_000_000 - r), abs=1e-4
        )
    wkt = rows(
        engine, "select ST_AsText(footprint, 9) from tile where row_off = 0 and col_off = 0"
    )[0][0]
    assert wkt.startswith(
        "POLYGON((3 45.153441177,3.000012722 45.153441177,"
    )  # lon 3 = UTM 31 centre
    assert wkt.count(",") == 16
    # each tile contains its own centre and not its neighbour's
    contains = rows(
        engine,
        "select t.row_off, t.col_off, ST_Contains(t.footprint, ST_Transform(ST_SetSRID("
        "ST_MakePoint(500002, 4999998), 32631), 4326)) from tile t order by 1, 2",
    )
    assert [c[2] for c in contains] == [True, False, False, False]
    src = rows(
        engine,
        "select image_path, mask_path, group_id, crs, transform, width, height, nodata_class, "
        "patch_size, stride, edge_policy, image_size, mask_size, tile_count, "
        "ST_Covers(ST_Buffer(footprint, 1e-9), (select ST_Union(footprint) from tile)) "
        "from source_image",
    )[0]
    assert src[:4] == (img.as_posix(), msk.as_posix(), "hand_img", "EPSG:32631")
    assert src[4] == [1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0]
    assert src[5:11] == (8, 8, 0, 4, 4, "drop")
    assert src[11:14] == (img.stat().st_size, msk.stat().st_size, 4)
    assert src[14] is True
    # load_tiles gives exactly what a local scan gives
    loaded = cat.load_tiles(engine)
    rec = inspect_pair(PairSpec(str(img), str(msk)))
    local = scan([rec], [tile_windows(8, 8, 4)], nodata_class=0, workers=1).sorted_by_id()
    pd.testing.assert_frame_equal(loaded.frame, local.frame)
    assert np.array_equal(loaded.counts, local.counts)
    assert loaded.class_values.tolist() == local.class_values.tolist() == [1, 2, 3]
    assert loaded.nodata_class == 0


@pytest.mark.db
def test_ingest_twice_then_changed_file(catalog_url: str, engine: Engine, tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    args = ("catalog", "ingest", str(pairs), "--patch-size", "4", *ND0, "--catalog", catalog_url)
    code, out, err = invoke(*args)
    assert code == 0, err
    assert "2 scanned (2 new, 0 changed)" in out
    first = snapshot(engine)
    assert len(first["tile"]) == 8
    code, out, err = invoke(*args)
    assert code == 0, err
    assert "0 scanned (0 new, 0 changed), 2 unchanged skipped" in out and "Tiles written: 0" in out
    assert snapshot(engine) == first  # same rows, same ingested_at
    # rewrite scene b's mask (all class 3) and give it a new mtime
    mask_b = np.full((8, 8), 3, np.uint8)
    write_pair(tmp_path, "b", mask_b, origin=(500_008.0, 5_000_000.0))
    later = os.stat(tmp_path / "b_mask.tif").st_mtime + 10
    os.utime(tmp_path / "b_mask.tif", (later, later))
    code, out, err = invoke(*args)
    assert code == 0, err
    assert "1 scanned (0 new, 1 changed), 1 unchanged skipped" in out
    after = snapshot(engine)
    a_id = (
        first["source_image"][0][0]
        if first["source_image"][0][0] != after["source_image"][1][0]
        else None
    )
    assert len(after["tile"]) == 8
    b = rows(
        engine,
        "select t.class_counts from tile t join source_image s on s.id = t.source_image_id "
        "where s.image_path like '%b_img.tif' order by t.id",
    )
    assert [r[0] for r in b] == [[0, 0, 16]] * 4
    a_before = [r for r in first["source_image"] if r[0] != _id_of(engine, "b_img.tif")]
    a_after = [r for r in after["source_image"] if r[0] != _id_of(engine, "b_img.tif")]
    assert a_before == a_after  # scene a untouched (same ingested_at)
    del a_id


def _id_of(engine: Engine, suffix: str) -> int:
    return int(rows(engine, f"select id from source_image where image_path like '%{suffix}'")[0][0])


@pytest.mark.db
def test_new_class_pads_existing_arrays(catalog_url: str, engine: Engine, tmp_path: Path) -> None:
    m1 = np.ones((4, 4), np.uint8)
    m1[:, 2:] = 2
    write_pair(tmp_path, "p", m1)
    write_pair(tmp_path, "q", np.full((4, 4), 5, np.uint8), origin=(500_004.0, 5_000_000.0))
    names = tmp_path / "names.csv"
    names.write_text(
        "class_value,name,colour\n0,nodata,#000000\n1,field,#00ff00\n5,water,#0000ff\n"
    )
    first = write_pairs_csv(tmp_path / "one.csv", [("p_img.tif", "p_mask.tif")])
    both = write_pairs_csv(
        tmp_path / "both.csv", [("p_img.tif", "p_mask.tif"), ("q_img.tif", "q_mask.tif")]
    )
    assert (
        invoke(
            "catalog", "ingest", str(first), "--patch-size", "4", *ND0, "--catalog", catalog_url
        )[0]
        == 0
    )
    both_args = (
        "catalog", "ingest", str(both), "--patch-size", "4", "--class-names", str(names), *ND0,
        "--catalog", catalog_url,
    )  # fmt: skip
    before = snapshot(engine)
    code, _, err = invoke(*both_args)  # class 5 is new: refused without the flag
    line = err.strip().splitlines()[-1]  # after the progress bar: one error line
    assert code == 1 and line.startswith("error: ") and line.count("error") == 1, err
    assert "5 (first in " in line and "q_mask.tif)" in line and "--allow-new-classes" in line
    assert snapshot(engine) == before
    code, _, err = invoke(*both_args, "--allow-new-classes")
    assert code == 0, err
    assert rows(
        engine, "select position, class_value, name, colour from catalog_class order by 1"
    ) == [
        (1, 1, "field", "#00ff00"),
        (2, 2, None, None),
        (3, 5, "water", "#0000ff"),
    ]
    assert sorted(r[0] for r in rows(engine, "select class_counts from tile")) == [
        [0, 0, 16],
        [8, 8, 0],
    ]
    # names alone (nothing to scan) are still applied
    names.write_text("class_value,name\n2,forest\n")
    code, out, err = invoke(
        "catalog",
        "ingest",
        str(first),
        "--patch-size",
        "4",
        "--class-names",
        str(names),
        *ND0,
        "--catalog",
        catalog_url,
    )
    assert code == 0 and "0 scanned" in out, err
    assert rows(engine, "select name from catalog_class where class_value = 2") == [("forest",)]
    loaded = cat.load_tiles(engine)
    assert loaded.class_values.tolist() == [1, 2, 5]
    code, out, err = invoke("catalog", "stats", "--catalog", catalog_url)
    assert code == 0, err
    assert "2 tiles, 2 source images, 2 groups, 0 runs" in out
    assert "water" in out and "50.00 %" in out and "25.00 %" in out


@pytest.mark.db
def test_failed_ingest_leaves_catalog_unchanged(
    catalog_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Every bad input: one line, exit 1, the catalog exactly as before."""
    pairs = two_scenes(tmp_path)
    assert (
        invoke(
            "catalog", "ingest", str(pairs), "--patch-size", "4", *ND0, "--catalog", catalog_url
        )[0]
        == 0
    )
    before = snapshot(engine)
    (tmp_path / "corrupt.tif").write_text("this is not a GeoTIFF")
    write_tif(tmp_path / "big_mask.tif", np.ones((9, 8), np.uint8))
    write_tif(tmp_path / "crs_mask.tif", np.ones((8, 8), np.uint8), crs="EPSG:32632")
    write_pair(tmp_path, "new", np.ones((8, 8), np.uint8), origin=(500_016.0, 5_000_000.0))
    good = ("new_img.tif", "new_mask.tif")
    cases = {
        "missing": ([good, ("gone_img.tif", "gone_mask.tif")], r"gone_img\.tif not found"),
        "corrupt last": (
            [good, ("a_img.tif", "corrupt.tif")],
            r"corrupt\.tif: not a readable raster",
        ),
        "size": ([good, ("a_img.tif", "big_mask.tif")], r"disagree: size 8x8 vs 8x9"),
        "crs": ([good, ("a_img.tif", "crs_mask.tif")], r"CRS EPSG:32631 vs EPSG:32632"),
    }
    for name, (listed, pattern) in cases.items():
        csv_path = write_pairs_csv(tmp_path / f"{name}.csv", listed)
        code, _, err = invoke(
            "catalog", "ingest", str(csv_path), "--patch-size", "4", *ND0, "--catalog", catalog_url
        )
        assert code == 1, name
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(pattern, err), (name, err)
        assert snapshot(engine) == before, name
    bad_col = write_pairs_csv(tmp_path / "cols.csv", [good], header=("image", "label"))
    code, _, err = invoke(
        "catalog", "ingest", str(bad_col), "--patch-size", "4", *ND0, "--catalog", catalog_url
    )
    assert (
        code == 1
        and "lacks column(s) mask; expected columns image, mask[, group]; found: image, label"
        in err
    )
    code, _, err = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "16", *ND0, "--catalog", catalog_url
    )
    assert code == 1 and "all 2 images listed are smaller than the 16 px patch" in err
    # a file that opens but fails to read mid-scan (last block garbage): nothing written
    broken = corrupt_last_block_pair(tmp_path)
    csv_path = write_pairs_csv(tmp_path / "broken.csv", [good, (broken[0].name, broken[1].name)])
    code, _, err = invoke(
        "catalog",
        "ingest",
        str(csv_path),
        "--patch-size",
        "8",
        "--workers",
        "2",
        *ND0,
        "--catalog",
        catalog_url,
    )
    assert code == 1
    # the inspection's pixel sample (it covers this small mask) or the scan meets the garbage
    # block first: either way one line naming the file and a window, nothing written
    assert re.search(r"broken_mask\.tif: failed to read window row_off=\d+ col_off=\d+", err), err
    assert snapshot(engine) == before
    # another nodata class than the catalog's: refused before the scan (and again in the write)
    code, _, err = invoke(
        "catalog",
        "ingest",
        str(write_pairs_csv(tmp_path / "n.csv", [good])),
        "--patch-size",
        "4",
        "--nodata-class",
        "255",
        "--catalog",
        catalog_url,
    )
    assert code == 1 and "nodata class 0; got --nodata-class 255" in err
    assert snapshot(engine) == before


# ------------------------------------------------------------------ load_tiles, record_run


@pytest.mark.db
def test_load_tiles_where_clause(catalog_url: str, engine: Engine, tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    assert (
        invoke(
            "catalog", "ingest", str(pairs), "--patch-size", "4", *ND0, "--catalog", catalog_url
        )[0]
        == 0
    )
    everything = cat.load_tiles(engine)
    assert len(everything) == 8
    assert everything.frame["tile_id"].is_monotonic_increasing
    sub = cat.load_tiles(engine, where_clause="nodata_ratio < 0.1 and valid_pixels = 16")
    assert len(sub) == 6 and (sub.frame["nodata_ratio"] == 0).all()
    with pytest.raises(UnsafeQueryError, match="contains ';'"):
        cat.load_tiles(engine, where_clause="1=1; drop table tile")
    with pytest.raises(UnsafeQueryError, match="comment"):
        cat.load_tiles(engine, where_clause="1=1 --")
    with pytest.raises(UnsafeQueryError, match=r"rejected by the database: .*syntax error"):
        cat.load_tiles(engine, where_clause="nodata_ratio < < 2")
    with pytest.raises(UnsafeQueryError, match="rejected by the database"):
        cat.load_tiles(engine, where_clause="no_such_column > 1")
    with pytest.raises(UnsafeQueryError, match="calls the function nextval"):
        cat.load_tiles(engine, where_clause="nextval('run_id_seq') > 0")
    with pytest.raises(EmptySelectionError, match="valid_pixels > 1000"):
        cat.load_tiles(engine, where_clause="valid_pixels > 1000")
    with pytest.raises(UnsafeQueryError, match="rejected by the database"):
        cat.load_tiles(engine, table='tile"; drop table tile; --', where_clause="true")
    assert rows(engine, "select count(*) from tile") == [(8,)]


@pytest.mark.db
def test_record_run_rows_and_map_view(catalog_url: str, engine: Engine, tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    assert (
        invoke(
            "catalog", "ingest", str(pairs), "--patch-size", "4", *ND0, "--catalog", catalog_url
        )[0]
        == 0
    )
    ids = cat.load_tiles(engine).frame["tile_id"].to_numpy()
    results = pd.DataFrame(
        {
            "tile_id": ids,
            "sampler_weight": np.linspace(0, 1, len(ids)),
            "freq_cluster_id": np.arange(len(ids)) % 3,
            "excluded": [True] + [False] * (len(ids) - 1),
            "fold": [None, *range(1, len(ids))],
            "not_a_result_column": "ignored",
        }
    )
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    run_id = cat.record_run(
        engine, "build-balanced-dataset", {"k": 3}, {"tiles": 8}, results, t0, t0
    )
    got = rows(
        engine,
        f"select tile_id, sampler_weight, freq_cluster_id, excluded, fold, uniqueness_score "
        f"from tile_result where run_id = {run_id} order by tile_id",
    )
    assert [r[0] for r in got] == sorted(ids.tolist())
    assert [r[1] for r in got] == pytest.approx(np.linspace(0, 1, len(ids)).tolist())
    assert got[0][2:5] == (0, True, None) and got[1][2:5] == (1, False, 1)
    assert {r[5] for r in got} == {None}
    run = rows(
        engine, f"select command, config, summary, tool_version from run where id = {run_id}"
    )[0]
    assert run[:3] == ("build-balanced-dataset", {"k": 3}, {"tiles": 8})
    view = rows(
        engine,
        f"select count(*), count(footprint), min(command) from tile_result_map where run_id = {run_id}",
    )
    assert view == [(8, 8, "build-balanced-dataset")]
    bad = pd.DataFrame({"tile_id": [12345], "sampler_weight": [1.0]})
    with pytest.raises(CatalogError, match="not in the catalog"):
        cat.record_run(engine, "x", {}, {}, bad, t0, t0)
    assert rows(engine, "select count(*) from run") == [(1,)]
    # re-ingesting a tile drops its results (ON DELETE CASCADE)
    with engine.begin() as conn:
        conn.execute(text("delete from source_image"))
    assert rows(engine, "select count(*) from tile_result") == [(0,)]
