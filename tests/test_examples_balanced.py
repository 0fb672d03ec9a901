"""Every smt_tools/examples/balanced_*.yaml runs as shipped on the demo data (paths re-pointed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "smt_tools" / "examples"
TESTED = {
    "balanced_train.yaml",
    "balanced_patch_records.yaml",
    "balanced_postgres.yaml",
    "balanced_10m.yaml",
}


#: balanced examples run by other test modules (embeddings: tests of the embed command)
#: (balanced_longtail_repeat: tests/test_example_longtail_repeat.py, on the long-tail demo)
TESTED_ELSEWHERE = {"balanced_embeddings.yaml", "balanced_longtail_repeat.yaml"}


def test_every_balanced_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("balanced_*.yaml")} == TESTED | TESTED_ELSEWHERE


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    assert set(data) == {"balanced_dataset"}
    return data


def _redirect_outputs(cfg: dict[str, Any], tmp: Path) -> None:
    for key in ("csv_path", "geojson_path", "report_dir"):
        value = cfg["output"].get(key)
        if value is not None:
            assert value.startswith("demo/")
            cfg["output"][key] = str(tmp / value)


def _run(data: dict[str, Any], tmp: Path) -> Any:
    conf = tmp / "conf.yaml"
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    res = CliRunner().invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    return res


def _check_csv(path: Path, n: int) -> pd.DataFrame:
    out = pd.read_csv(path)
    assert len(out) == n
    w = out["sampler_weight"]
    assert (w[out["excluded"]] == 0).all()
    assert w[~out["excluded"]].min() >= 0.05 - 1e-12
    assert w.max() == pytest.approx(1.0)
    for _, grp in out[~out["excluded"]].groupby("freq_cluster_id"):
        assert grp["sampler_weight"].nunique() == 1
    return out


def test_balanced_train_example(demo_pairs: Path, tmp_path: Path) -> None:
    from smt_tools.pipelines.ingest import run_ingest

    data = _load("balanced_train.yaml")
    cfg = data["balanced_dataset"]
    assert cfg["mode"] == "masks_only" and cfg["input"]["tiles"] == "demo/tiles.parquet"
    # what `make demo` does: catalog ingest demo/pairs.csv --patch-size 256 --nodata-class 0
    # --catalog demo/tiles.parquet
    tiles = tmp_path / cfg["input"]["tiles"]
    tiles.parent.mkdir()
    run_ingest(
        demo_pairs,
        catalog=str(tiles),
        patch_size=256,
        nodata_class=0,  # the demo masks use 0 = nodata
        workers=1,
        class_names_csv=demo_pairs.parent / "classes.csv",
    )
    cfg["input"]["tiles"] = str(tiles)
    _redirect_outputs(cfg, tmp_path)
    res = _run(data, tmp_path)
    assert "Tiles: 16 in" in res.stdout
    assert "6 building" in res.stdout  # the summary names classes ingested from classes.csv
    assert "effective sample size" in res.stdout
    assert "warning: sampling_method rank_max: mode masks_only" in res.stderr
    out = _check_csv(Path(cfg["output"]["csv_path"]), 16)
    assert out["excluded"].sum() > 0
    gj = json.loads(Path(cfg["output"]["geojson_path"]).read_text())
    assert len(gj["features"]) == 16
    assert Path(cfg["output"]["geojson_path"]).with_suffix(".qml").is_file()
    report = Path(cfg["output"]["report_dir"])
    assert sorted(p.name for p in report.iterdir()) == [
        "class_share.png",
        "report.html",
        "weight_hist.png",
        "weight_map.png",
    ]


def test_balanced_patch_records_example(demo_dir: Path, tmp_path: Path) -> None:
    data = _load("balanced_patch_records.yaml")
    cfg = data["balanced_dataset"]
    records = cfg["input"]["patch_records"]
    for rec in records:
        for key in ("image_path", "mask_path"):
            assert rec[key].startswith("demo/")
            rec[key] = str(demo_dir / rec[key].removeprefix("demo/"))
    _redirect_outputs(cfg, tmp_path)
    res = _run(data, tmp_path)
    assert f"Tiles: {len(records)} in" in res.stdout
    out = _check_csv(Path(cfg["output"]["csv_path"]), len(records))
    assert out["row_off"].tolist() == [r["row_off"] for r in records]


@pytest.mark.db
def test_balanced_postgres_example(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    monkeypatch.setenv("SMT_DATABASE_URL", fresh_database_url)
    run_catalog_init()
    run_ingest(
        demo_pairs,
        patch_size=256,
        nodata_class=0,  # the demo masks use 0 = nodata
        workers=1,
        class_names_csv=demo_pairs.parent / "classes.csv",
    )
    data = _load("balanced_postgres.yaml")
    cfg = data["balanced_dataset"]
    assert cfg["input"]["dsn"] == "${SMT_DATABASE_URL}"
    assert cfg["input"]["where_clause"] == "nodata_ratio < 0.05"
    _redirect_outputs(cfg, tmp_path)
    res = _run(data, tmp_path)
    assert "Recorded catalog run" in res.stdout
    assert "1 background" in res.stdout  # names from catalog_class
    with psycopg.connect(fresh_database_url) as conn:
        selected = conn.execute("select count(*) from tile where nodata_ratio < 0.05").fetchone()
        results = conn.execute(
            "select count(*), count(*) filter (where excluded), max(sampler_weight) "
            "from tile_result_map"
        ).fetchone()
    assert selected is not None and results is not None
    out = _check_csv(Path(cfg["output"]["csv_path"]), selected[0])
    assert results[0] == len(out) and results[1] == int(out["excluded"].sum())
    assert results[2] == pytest.approx(1.0)


def test_balanced_10m_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10M example as shipped, on 30,000 tiles of the same generator (the FlatGeobuf
    switch and batch sizes are exercised by lowering their thresholds)."""
    import sys

    import pyarrow.parquet as pq
    import pyogrio

    from smt_tools.export import vector

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gen_tiles import write_tiles

    data = _load("balanced_10m.yaml")
    cfg = data["balanced_dataset"]
    out = cfg["output"]
    assert cfg["input"]["tiles"] == "bench_data/tiles_10m.parquet" and "csv_path" not in out
    tiles = tmp_path / "tiles.parquet"
    write_tiles(tiles, 30_000, per_side=10)
    cfg["input"]["tiles"] = str(tiles)
    for key in ("parquet_path", "geojson_path"):
        assert out[key].startswith("bench_data/")
        out[key] = str(tmp_path / out[key].removeprefix("bench_data/"))
    monkeypatch.setattr(vector, "GEOJSON_MAX_TILES", 1_000)  # .fgb is named anyway
    res = _run(data, tmp_path)
    assert "Tiles: 30000 in" in res.stdout.replace(",", "")
    table = pq.read_table(out["parquet_path"]).to_pandas()
    assert len(table) == 30_000 and table["tile_id"].is_unique
    w = table["sampler_weight"]
    assert (w[table["excluded"]] == 0).all() and w.max() == pytest.approx(1.0)
    assert w[~table["excluded"]].min() >= 0.05 - 1e-12
    info = pyogrio.read_info(out["geojson_path"])
    assert info["features"] == 30_000 and info["capabilities"]["fast_spatial_filter"]
    assert Path(out["geojson_path"]).with_suffix(".qml").is_file()
