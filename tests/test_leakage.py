"""check-leakage: audits (a)-(d) on the demo rasters and on planted cases; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.splits import audit_splits, metric_footprints
from tests.split_data import balanced_csv_from_pairs, grid_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("leak") / "balanced.csv"
    return balanced_csv_from_pairs(demo_pairs, out, patch=128)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_overlapping_demo_scenes_are_caught_although_source_ids_differ(
    demo_tiles: pd.DataFrame, tmp_path: Path
) -> None:
    scene0 = demo_tiles[demo_tiles["group_id"] == "scene_000"]
    revisit = demo_tiles[demo_tiles["group_id"].str.endswith("revisit_of_000")]
    assert set(scene0["source_image_id"]).isdisjoint(revisit["source_image_id"])
    train = _write(scene0, tmp_path / "train.csv")
    val = _write(revisit, tmp_path / "val.csv")
    report = tmp_path / "leaks.geojson"
    res = runner.invoke(
        app,
        ["check-leakage", "--train", str(train), "--val", str(val), "--report", str(report)],
    )
    assert res.exit_code == 3, res.output
    assert "LEAK" in res.output
    # the revisit is shifted by a quarter scene (64 m = half a 128-px tile at 0.5 m): tiles of
    # scene 0 in its lower-right 3x3 block overlap revisit tiles; 3x3 tiles x (up to 4 each)
    gj = json.loads(report.read_text())
    splits = {f["properties"]["split"] for f in gj["features"]}
    assert splits == {"train", "val"}
    assert all("spatial" in f["properties"]["leak_reasons"] for f in gj["features"])
    assert report.with_suffix(".qml").is_file()
    # the same pair without the revisit (scene 1 is 1 km away) is clean
    other = demo_tiles[demo_tiles["group_id"] == "scene_001"]
    res = runner.invoke(
        app,
        [
            "check-leakage",
            "--train",
            str(train),
            "--val",
            str(_write(other, tmp_path / "v2.csv")),
            "--buffer-m",
            "100",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "No leakage found" in res.output


def test_spatial_pairs_are_exact(demo_tiles: pd.DataFrame) -> None:
    keep = demo_tiles["group_id"].isin(["scene_000", "scene_003_revisit_of_000"]).to_numpy()
    frame = demo_tiles[keep].reset_index(drop=True)
    labels = (frame["group_id"] != "scene_000").to_numpy().astype(np.int64)
    audit = audit_splits(
        frame["tile_id"].to_numpy(),
        labels,
        frame["source_image_id"].to_numpy(),
        label_names=["train", "val"],
        trains=np.array([True, False]),
        evaluated=np.array([False, True]),
        geoms=metric_footprints(frame),
    )
    spatial = next(f for f in audit.findings if f.check == "spatial")
    # 4x4 tiles of 64 m; the revisit is shifted by (+64 m, -64 m) = exactly one tile: the
    # 3x3 overlapping tiles coincide -> 9 pairs with positive overlap (edge contacts excluded)
    assert spatial.leak and spatial.n_items == 9 and spatial.n_tiles == 18
    # with a buffer, touching and nearby tiles count too
    audit50 = audit_splits(
        frame["tile_id"].to_numpy(),
        labels,
        frame["source_image_id"].to_numpy(),
        label_names=["train", "val"],
        trains=np.array([True, False]),
        evaluated=np.array([False, True]),
        geoms=metric_footprints(frame),
        buffer_m=50.0,
    )
    assert next(f for f in audit50.findings if f.check == "spatial").n_items > 9


def test_shared_source_image_is_a_leak(demo_tiles: pd.DataFrame, tmp_path: Path) -> None:
    scene1 = demo_tiles[demo_tiles["group_id"] == "scene_001"]
    train = _write(scene1.iloc[:10], tmp_path / "train.csv")
    val = _write(scene1.iloc[10:], tmp_path / "val.csv")
    res = runner.invoke(app, ["check-leakage", "--train", str(train), "--val", str(val)])
    assert res.exit_code == 3
    assert "1 groups in more than one split" in " ".join(res.output.split())


def test_split_output_passes_the_audit_thanks_to_the_buffer(
    demo_tiles: pd.DataFrame, tmp_path: Path
) -> None:
    src = _write(demo_tiles, tmp_path / "balanced.csv")
    cfg = tmp_path / "split.yaml"
    cfg.write_text(
        f"split:\n  input_csv_path: {src}\n  n_splits: 2\n  strategy: group\n"
        f"  buffer_m: 50\n  random_state: 0\n  output:\n    csv_path: {tmp_path / 'folds.csv'}\n"
    )
    res = runner.invoke(app, ["split", str(cfg)])
    assert res.exit_code == 0, res.output
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"buffer_excluded_folds": str})
    f0 = folds.loc[folds["group_id"] == "scene_000", "fold"].iloc[0]
    f3 = folds.loc[folds["group_id"] == "scene_003_revisit_of_000", "fold"].iloc[0]
    res = runner.invoke(
        app, ["check-leakage", "--folds", str(tmp_path / "folds.csv"), "--buffer-m", "50"]
    )
    assert res.exit_code == 0, res.output
    if f0 != f3:
        # without the split's buffer exclusions the overlap is a leak
        folds.drop(columns=["buffer_excluded_folds"]).to_csv(tmp_path / "raw.csv", index=False)
        res = runner.invoke(app, ["check-leakage", "--folds", str(tmp_path / "raw.csv")])
        assert res.exit_code == 3


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_planted_near_duplicate_pair_is_caught() -> None:
    rng = np.random.default_rng(0)
    x = _unit(rng, 40, 32)
    x[27] = x[3] + 0.001 * rng.normal(size=32).astype(np.float32)  # 3 (train) ~ 27 (val)
    x[27] /= np.linalg.norm(x[27])
    x[5] = x[7]  # both train: a duplicate inside one split is not a leak
    ids = np.arange(40, dtype=np.int64) + 100
    labels = (np.arange(40) >= 20).astype(np.int64)
    audit = audit_splits(
        ids,
        labels,
        ids,  # one group per tile
        label_names=["train", "val"],
        trains=np.array([True, False]),
        evaluated=np.array([False, True]),
        embeddings=x,
        near_duplicate_threshold=0.01,
        k_neighbors=3,
        knn_backend="sklearn",
    )
    nd = next(f for f in audit.findings if f.check == "near_duplicate")
    assert nd.leak and nd.n_items == 1 and nd.examples == (103, 127)
    assert audit.has_leak
    i, j = audit.pairs["near_duplicate"]
    assert (i.tolist(), j.tolist()) == ([3], [27])


def test_near_duplicates_through_the_embedding_cache(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame, _ = grid_frame(n_images=8, per_side=2)
    rng = np.random.default_rng(1)
    x = _unit(rng, len(frame), 16)
    x[-1] = x[0]  # planted: last tile (image 7, val) duplicates the first (image 0, train)
    table = pa.table(
        {
            "tile_id": pa.array(frame["tile_id"].to_numpy(np.int64)),
            "model_id": pa.array(["tiny"] * len(frame)),
            "preprocess_hash": pa.array(["h"] * len(frame)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 16),
        }
    )
    pq.write_table(table, tmp_path / "emb.parquet")
    half = frame["source_image_id"] < 10_004
    train = _write(frame[half], tmp_path / "train.csv")
    val = _write(frame[~half], tmp_path / "val.csv")
    args = ["check-leakage", "--train", str(train), "--val", str(val)]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, [*args, "--embeddings", str(tmp_path / "emb.parquet")])
    assert res.exit_code == 3, res.output
    assert "1 tile pairs with cosine distance" in " ".join(res.output.split())


def test_crop_level_smell_warns_without_failing(tmp_path: Path) -> None:
    # 1,200 crops, each from its own source image, split per crop: ~1 sample per image
    frame, _ = grid_frame(n_images=1200, per_side=1, gap_m=500.0)
    train = _write(frame.iloc[:600], tmp_path / "train.csv")
    val = _write(frame.iloc[600:], tmp_path / "val.csv")
    res = runner.invoke(app, ["check-leakage", "--train", str(train), "--val", str(val)])
    out = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "WARNING" in out and "crop instead of per source image" in out
    # 500 images or fewer: no smell
    small, _ = grid_frame(n_images=400, per_side=1, gap_m=500.0)
    res = runner.invoke(
        app,
        [
            "check-leakage",
            "--train",
            str(_write(small.iloc[:200], tmp_path / "t2.csv")),
            "--val",
            str(_write(small.iloc[200:], tmp_path / "v2.csv")),
        ],
    )
    assert res.exit_code == 0 and "WARNING" not in res.output


def test_usage_and_input_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["check-leakage", "--train", str(tmp_path / "x.csv")])
    assert res.exit_code == 1
    assert "give --train and --val" in res.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"tile_id": [1], "foo": [2]}).to_csv(bad, index=False)
    res = runner.invoke(app, ["check-leakage", "--train", str(bad), "--val", str(bad)])
    assert res.exit_code == 1
    assert "missing column(s) source_image_id" in res.output
