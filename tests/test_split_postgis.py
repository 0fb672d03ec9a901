"""The PostGIS buffer gives the same answer as the shapely buffer; `split` on catalog input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from smt_tools.catalog import connect, load_tiles
from smt_tools.catalog.spatial import buffer_exclusions_postgis
from smt_tools.cli.app import app
from smt_tools.splits import buffer_exclusions, encode_groups, metric_crs, metric_footprints

pytestmark = pytest.mark.db
runner = CliRunner()


@pytest.fixture
def catalog(fresh_database_url: str, demo_pairs: Path) -> Iterator[tuple[str, Engine]]:
    res = runner.invoke(app, ["catalog", "init", "--catalog", fresh_database_url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "catalog",
            "ingest",
            str(demo_pairs),
            "--patch-size",
            "128",
            "--workers",
            "1",
            "--nodata-class",
            "0",
            "--catalog",
            fresh_database_url,
        ],
    )
    assert res.exit_code == 0, res.output
    engine = connect(fresh_database_url)
    try:
        yield fresh_database_url, engine
    finally:
        engine.dispose()


def _random_folds(frame: pd.DataFrame, k: int, seed: int, with_test: bool) -> np.ndarray:
    codes, uniques = encode_groups(frame["source_image_id"].to_numpy())
    rng = np.random.default_rng(seed)
    per_group = rng.integers(-1 if with_test else 0, k, len(uniques))
    return per_group[codes]


def test_postgis_and_shapely_buffers_agree(catalog: tuple[str, Engine]) -> None:
    _, engine = catalog
    frame = load_tiles(engine).frame
    assert len(frame) == 64
    ids = frame["tile_id"].to_numpy(np.int64)
    crs = metric_crs(frame)
    assert crs == "EPSG:32631"
    geoms = metric_footprints(frame, crs)
    hits = 0
    for seed, (k, with_test) in enumerate([(2, False), (3, True), (4, False)]):
        fold = _random_folds(frame, k, seed, with_test)
        for buffer_m in (0.0, 10.0, 50.0, 100.0, 1500.0):
            expected = buffer_exclusions(geoms, fold, buffer_m, k)
            got = buffer_exclusions_postgis(engine, ids, fold, buffer_m, k, crs)
            np.testing.assert_array_equal(got, expected, err_msg=f"k={k} buffer={buffer_m}")
            hits += int(expected.sum())
    assert hits > 0  # the comparison is not vacuous
    # folds finer than a source image (e.g. group_column = tile_id): one image in many folds
    tile_fold = np.random.default_rng(5).integers(-1, 3, len(frame))
    for buffer_m in (0.0, 40.0):
        np.testing.assert_array_equal(
            buffer_exclusions_postgis(engine, ids, tile_fold, buffer_m, 3, crs),
            buffer_exclusions(geoms, tile_fold, buffer_m, 3),
        )

    # measured in the neighbouring UTM zone: both backends reproject the lon/lat footprints
    geoms = metric_footprints(frame, "EPSG:32632")
    fold = _random_folds(frame, 2, 7, False)
    for buffer_m in (10.0, 100.0):
        np.testing.assert_array_equal(
            buffer_exclusions_postgis(engine, ids, fold, buffer_m, 2, "EPSG:32632"),
            buffer_exclusions(geoms, fold, buffer_m, 2),
        )


def test_split_on_catalog_records_folds(catalog: tuple[str, Engine], tmp_path: Path) -> None:
    url, engine = catalog
    cfg = tmp_path / "split.yaml"
    cfg.write_text(  # the URL through ${VAR}, as input.dsn
        "split:\n  catalog:\n    url: ${SMT_SPLIT_URL}\n  n_splits: 2\n  strategy: stratified_group\n"
        f"  buffer_m: 50\n  output:\n    csv_path: {tmp_path / 'folds.csv'}\n"
    )
    res = runner.invoke(app, ["split", str(cfg)], env={"SMT_SPLIT_URL": None})
    assert res.exit_code == 1
    assert "split.catalog.url: environment variable SMT_SPLIT_URL is not set" in res.output
    res = runner.invoke(app, ["split", str(cfg)], env={"SMT_SPLIT_URL": url})
    assert res.exit_code == 0, res.output
    assert "postgis" in res.output
    with engine.connect() as conn:
        run_id, command = conn.execute(text("select id, command from run")).one()
        rows = conn.execute(
            text("select tile_id, fold from tile_result where run_id = :r"), {"r": run_id}
        ).all()
    assert command == "split"
    db = dict(rows)
    out = pd.read_csv(tmp_path / "folds.csv", dtype={"buffer_excluded_folds": str})
    assert len(db) == len(out) == 64
    assert all(db[int(t)] == int(f) for t, f in zip(out["tile_id"], out["fold"], strict=True))
    # same folds and same exclusions as the CSV path (shapely) on the same tiles
    table = load_tiles(engine)
    csv_in = table.frame.copy()
    csv_in["class_counts_json"] = [
        "{" + ",".join(f'"{v}": {c}' for v, c in zip(table.class_values, r, strict=True)) + "}"
        for r in table.counts
    ]
    csv_in.to_csv(tmp_path / "in.csv", index=False)
    cfg2 = tmp_path / "split_csv.yaml"
    cfg2.write_text(
        f"split:\n  input_csv_path: {tmp_path / 'in.csv'}\n  n_splits: 2\n"
        f"  strategy: stratified_group\n  buffer_m: 50\n"
        f"  output:\n    csv_path: {tmp_path / 'folds_csv.csv'}\n"
    )
    res = runner.invoke(app, ["split", str(cfg2)])
    assert res.exit_code == 0, res.output
    other = pd.read_csv(tmp_path / "folds_csv.csv", dtype={"buffer_excluded_folds": str})
    a = out.set_index("tile_id").sort_index()
    b = other.set_index("tile_id").sort_index()
    assert (a["fold"] == b["fold"]).all()
    assert (a["buffer_excluded_folds"].fillna("") == b["buffer_excluded_folds"].fillna("")).all()
    assert (a["buffer_excluded_folds"].fillna("") != "").any()

    # run_id: only the tiles of that run that it did not exclude
    with engine.begin() as conn:
        run_id = conn.execute(
            text(
                "insert into run (command, started_at, finished_at, tool_version) "
                "values ('build-balanced-dataset', now(), now(), 'test') returning id"
            )
        ).scalar_one()
        # 40 tiles kept, 8 excluded by that run; the other 16 tiles are not in it at all
        conn.execute(
            text(
                "insert into tile_result (run_id, tile_id, excluded) "
                "select :r, id, row_number() over (order by id) > 40 from tile "
                "order by id limit 48"
            ),
            {"r": run_id},
        )
    cfg = tmp_path / "split_run.yaml"
    cfg.write_text(
        f"split:\n  catalog:\n    url: {url}\n    run_id: {run_id}\n  n_splits: 2\n"
        f"  strategy: group\n  output:\n    csv_path: {tmp_path / 'f.csv'}\n"
    )
    res = runner.invoke(app, ["split", str(cfg)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "f.csv")) == 40
