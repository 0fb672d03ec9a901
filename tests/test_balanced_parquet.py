"""``output.parquet_path``: the balanced table as Parquet, read by train and select-coreset
exactly as they read the CSV (the format for millions of tiles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.train import CSVWindowedSegmentationDataset

runner = CliRunner()


@pytest.fixture(scope="module")
def tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bp") / "tiles.parquet"
    args = ["catalog", "ingest", str(demo_pairs), "--patch-size", "128", "--workers", "1"]
    res = runner.invoke(app, [*args, "--nodata-class", "0", "--catalog", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _build(tiles: Path, tmp_path: Path, output: dict[str, str]) -> tuple[int, str]:
    conf = tmp_path / "b.yaml"
    body = {
        "input": {"tiles": str(tiles)},
        "clustering": {"k_selection": "fixed", "k": 3},
        "output": {**output, "write_catalog_run": False},
    }
    conf.write_text(yaml.safe_dump({"balanced_dataset": body}))
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    return res.exit_code, res.output


def test_parquet_table_holds_the_csv_rows(tiles: Path, tmp_path: Path) -> None:
    code, out = _build(
        tiles,
        tmp_path,
        {"csv_path": str(tmp_path / "b.csv"), "parquet_path": str(tmp_path / "b.parquet")},
    )
    assert code == 0, out
    csv = pd.read_csv(tmp_path / "b.csv")
    pq = pd.read_parquet(tmp_path / "b.parquet")
    assert list(pq.columns) == list(csv.columns) and len(pq) == 64
    csv["exclusion_reason"] = csv["exclusion_reason"].fillna("")  # empty field: included
    pq_reason = pq.pop("exclusion_reason")  # categorical (dictionary-encoded), same text
    assert pq_reason.astype(str).tolist() == csv.pop("exclusion_reason").tolist()
    pd.testing.assert_frame_equal(pq, csv, check_dtype=False)
    assert pq["excluded"].dtype == bool and pq["tile_id"].dtype == np.int64  # typed, not text
    # the training dataset reads either file to the same items
    a = CSVWindowedSegmentationDataset(tmp_path / "b.csv", n_classes=7)
    b = CSVWindowedSegmentationDataset(tmp_path / "b.parquet", n_classes=7)
    assert len(a) == len(b) > 0
    for i in (0, len(a) - 1):
        x, y = a[i], b[i]
        assert set(x) == set(y) and {"image", "mask"} <= set(x)
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]))


def test_parquet_only_run_and_coreset_from_it(tiles: Path, tmp_path: Path) -> None:
    code, out = _build(tiles, tmp_path, {"parquet_path": str(tmp_path / "only.parquet")})
    assert code == 0, out
    assert not (tmp_path / "only.csv").exists()
    run = json.loads((tmp_path / "only.run.json").read_text())
    assert run["command"] == "build-balanced-dataset"
    code, out = _build(tiles, tmp_path, {"csv_path": str(tmp_path / "same.csv")})
    assert code == 0, out
    picks = []
    for name in ("only.parquet", "same.csv"):
        conf = tmp_path / f"c_{name}.yaml"
        body = {"method": "lc", "budget": 0.3, "input_csv_path": str(tmp_path / name)}
        body["output"] = {"csv_path": str(tmp_path / f"c_{name}.csv")}
        conf.write_text(yaml.safe_dump({"coreset": body}))
        res = runner.invoke(app, ["select-coreset", str(conf)])
        assert res.exit_code == 0, res.output
        frame = pd.read_csv(tmp_path / f"c_{name}.csv")
        picks.append(sorted(frame.loc[frame["coreset_selected"], "tile_id"]))
    assert picks[0] and picks[0] == picks[1]


def test_a_table_output_is_required(tiles: Path, tmp_path: Path) -> None:
    code, out = _build(tiles, tmp_path, {"geojson_path": str(tmp_path / "m.geojson")})
    assert code == 1
    assert "output: give csv_path or parquet_path (or both)" in out
