"""smt_tools/examples/balanced_embeddings.yaml runs as shipped (dino_model -> a tiny local model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.curation.uniqueness import uniqueness_scores
from smt_tools.embeddings.cache import read_embeddings
from tests.test_embeddings import save_tiny_dinov2

pytest.importorskip("torch")
pytest.importorskip("transformers")

EXAMPLE = (
    Path(__file__).resolve().parents[1] / "smt_tools" / "examples" / "balanced_embeddings.yaml"
)


def _demo_tiles(demo_pairs: Path, target: Path, patch: int = 128) -> int:
    """`make demo`'s tile table (catalog ingest to Parquet), smaller tiles for speed."""
    from smt_tools.catalog.parquet_io import read_tile_table
    from smt_tools.pipelines.ingest import run_ingest

    run_ingest(demo_pairs, catalog=str(target), patch_size=patch, nodata_class=0, workers=1)
    return len(read_tile_table(target))


def _prepare(data: dict[str, Any], tmp_path: Path, model: Path) -> dict[str, Any]:
    cfg = data["balanced_dataset"]
    cfg["input"]["tiles"] = str(tmp_path / cfg["input"]["tiles"])
    cfg["embeddings"]["dino_model"] = str(model)
    cfg["embeddings"]["parquet_path"] = str(tmp_path / cfg["embeddings"]["parquet_path"])
    for key in ("csv_path", "geojson_path"):
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    cfg["output"]["report_dir"] = str(tmp_path / "demo" / "report")
    return cfg


def test_balanced_embeddings_example_runs_on_demo_data(demo_pairs: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    shipped = data["balanced_dataset"]
    assert shipped["mode"] == "embeddings"
    assert shipped["input"]["tiles"] == "demo/tiles.parquet"
    assert shipped["uniqueness"]["backend"] == "hnsw"
    assert shipped["embeddings"]["dino_model"] == "facebook/dinov2-small"
    assert shipped["embeddings"]["parquet_path"] == "demo/embeddings.parquet"
    (tmp_path / "demo").mkdir()
    n_tiles = _demo_tiles(demo_pairs, tmp_path / "demo" / "tiles.parquet")
    model = save_tiny_dinov2(tmp_path / "tiny_dinov2")
    cfg = _prepare(data, tmp_path, model)
    conf = tmp_path / "balanced_embeddings.yaml"
    conf.write_text(yaml.safe_dump(data))
    runner = CliRunner()

    # 1) embed: fill the cache for the included tiles
    res = runner.invoke(app, ["embed", str(conf)])
    assert res.exit_code == 0, res.output
    assert "0 cached" in res.output and "computed at" in res.output
    assert f"Model: {model.resolve()} (32-d CLS)" in res.output
    cache = Path(cfg["embeddings"]["parquet_path"])
    assert cache.is_file()

    # 2) build-balanced-dataset: composition + uniqueness, embeddings all from the cache
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"])
    assert len(out) == n_tiles
    inc = out[~out["excluded"].astype(bool)]
    exc = out[out["excluded"].astype(bool)]
    assert len(inc) > cfg["uniqueness"]["k_neighbors"] and len(exc) > 0
    assert np.isfinite(inc["uniqueness_score"]).all()
    assert (inc["uniqueness_score"] >= 0).all() and (inc["uniqueness_score"] <= 2).all()
    assert (inc["freq_cluster_id"] >= 0).all()
    # the scores are the docs/algorithms.md §7 definition over the INCLUDED tiles' cached embeddings
    emb, found = read_embeddings(cache, inc["tile_id"].to_numpy(np.int64))
    assert found.all()
    expected = uniqueness_scores(emb, cfg["uniqueness"]["k_neighbors"], "sklearn")
    np.testing.assert_allclose(inc["uniqueness_score"].to_numpy(), expected, atol=1e-6)
    gj = json.loads(Path(cfg["output"]["geojson_path"]).read_text())
    assert "uniqueness_score" in gj["features"][0]["properties"]
    assert (Path(cfg["output"]["report_dir"]) / "uniqueness.png").is_file()

    # 3) embed again: everything cached
    res = runner.invoke(app, ["embed", str(conf)])
    assert res.exit_code == 0, res.output
    assert f"{len(inc)} cached, 0 computed" in res.output
    assert f"({len(inc)} rows)" in res.output


def test_embeddings_only_mode_and_foreign_cache(demo_pairs: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    (tmp_path / "demo").mkdir()
    _demo_tiles(demo_pairs, tmp_path / "demo" / "tiles.parquet")
    model = save_tiny_dinov2(tmp_path / "tiny_dinov2")
    cfg = _prepare(data, tmp_path, model)
    cfg["mode"] = "embeddings_only"
    cfg["sampling_method"] = "uniqueness_only"
    cfg["uniqueness"]["backend"] = "faiss"
    conf = tmp_path / "only.yaml"
    conf.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"])
    inc = out[~out["excluded"].astype(bool)]
    assert (out["freq_cluster_id"] == -1).all()
    assert np.isfinite(inc["uniqueness_score"]).all()

    # another preprocessing (band 1 only) against this cache: one-line refusal, then --rebuild
    cfg["embeddings"]["bands"] = [1]
    conf.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["embed", str(conf)])
    assert res.exit_code == 1
    assert "--rebuild" in res.output and "preprocessing" in res.output
    res = runner.invoke(app, ["embed", str(conf), "--rebuild"])
    assert res.exit_code == 0, res.output
    assert f"0 cached, {len(inc)} computed" in res.output


def test_embed_needs_a_cache_path(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["balanced_dataset"]["embeddings"].pop("parquet_path")
    conf = tmp_path / "nocache.yaml"
    conf.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["embed", str(conf)])
    assert res.exit_code == 1
    assert "embeddings.parquet_path" in res.output


@pytest.mark.db
def test_catalog_run_records_uniqueness_and_reuses_the_cache(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    """Catalog tiles have the same tile_id as a local scan: the cache is joined, not recomputed."""
    import psycopg

    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    run_catalog_init(fresh_database_url)
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=128, nodata_class=0, workers=1)
    data = yaml.safe_load(EXAMPLE.read_text())
    (tmp_path / "demo").mkdir()
    _demo_tiles(demo_pairs, tmp_path / "demo" / "tiles.parquet")
    model = save_tiny_dinov2(tmp_path / "tiny_dinov2")
    cfg = _prepare(data, tmp_path, model)
    conf = tmp_path / "local.yaml"
    conf.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    res = runner.invoke(app, ["embed", str(conf)])  # cache filled from the local tile table
    assert res.exit_code == 0, res.output

    cfg["input"] = {"dsn": fresh_database_url}
    conf = tmp_path / "pg.yaml"
    conf.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["embed", str(conf)])
    assert res.exit_code == 0, res.output
    assert " 0 computed" in res.output  # every catalog tile found in the cache by key
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"])
    with psycopg.connect(fresh_database_url) as conn:
        rows = conn.execute(
            "select tile_id, uniqueness_score from tile_result where run_id = "
            "(select max(id) from run)"
        ).fetchall()
    db = pd.DataFrame(rows, columns=["tile_id", "uniqueness_db"])
    merged = out.merge(db, on="tile_id")
    assert len(merged) == len(out)
    inc = merged[~merged["excluded"].astype(bool)]
    assert inc["uniqueness_db"].notna().all()
    np.testing.assert_allclose(
        inc["uniqueness_db"].to_numpy(np.float64), inc["uniqueness_score"].to_numpy(), atol=1e-6
    )
