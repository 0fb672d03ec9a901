"""``split.strategy: spatial_blocks`` (docs/algorithms.md §11, "Spatial blocks"): square blocks
of ``block_size_m`` are the groups, assigned like stratified_group; block ids as hand-computed;
tiles in two UTM zones; errors; the CLI end to end and the shipped example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pyproj import Transformer
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config.split import SplitConfig
from smt_tools.errors import InputDataError
from smt_tools.pipelines.split import compute_split
from smt_tools.splits.blocks import spatial_blocks, utm_epsg
from smt_tools.splits.kfold import assign_folds
from tests.split_data import balanced_csv_from_pairs, grid_frame

EXAMPLE = (
    Path(__file__).resolve().parents[1] / "smt_tools" / "examples" / "split_spatial_blocks.yaml"
)


def _tiles(centres: list[tuple[float, float]], crs: str, half: float) -> pd.DataFrame:
    x = np.array([c[0] for c in centres])
    y = np.array([c[1] for c in centres])
    return pd.DataFrame(
        {"minx": x - half, "miny": y - half, "maxx": x + half, "maxy": y + half, "crs": crs}
    )


def _two_zone_frame(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """1 km tiles at ~45°N: 400 in EPSG:32631 (lon ~5.4-5.9°E, all in zone 31) and 400 in
    EPSG:32632 (lon ~5.7-6.2°E, across the 6°E zone boundary). Scenes of 10 x 10 tiles."""
    rng = np.random.default_rng(seed)
    parts = []
    for zone, (crs, x0) in enumerate((("EPSG:32631", 690_000.0), ("EPSG:32632", 240_000.0))):
        r, c = np.meshgrid(np.arange(10), np.arange(40), indexing="ij")
        r, c = r.ravel(), c.ravel()
        parts.append(
            pd.DataFrame(
                {
                    "tile_id": zone * 10_000 + r * 40 + c + 1,
                    "source_image_id": zone * 100 + c // 10,
                    "minx": x0 + c * 1000.0,
                    "miny": 4_980_000.0 + r * 1000.0,
                    "maxx": x0 + (c + 1) * 1000.0,
                    "maxy": 4_980_000.0 + (r + 1) * 1000.0,
                    "crs": crs,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame, rng.integers(0, 1000, size=(len(frame), 4)).astype(np.int64)


def _cfg(**kw: Any) -> SplitConfig:
    base: dict[str, Any] = {
        "input_csv_path": "unused.csv",
        "n_splits": 4,
        "strategy": "spatial_blocks",
        "block_size_m": 2000,
        "output": {"csv_path": "unused_out.csv"},
    }
    return SplitConfig.model_validate({**base, **kw})


def _with_counts_json(frame: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    out["class_counts_json"] = [
        json.dumps({str(c): int(v) for c, v in enumerate(row)}) for row in counts
    ]
    return out


# --- block ids -----------------------------------------------------------------------------


def test_block_ids_planar_as_hand_computed() -> None:
    # centres (500128, 5000064) and (499850, 4999950); 300 m blocks:
    # 500128 / 300 = 1667.09 -> 1667, 5000064 / 300 = 16666.88 -> 16666;
    # 499850 / 300 = 1666.17 -> 1666, 4999950 / 300 = 16666.5 -> 16666
    frame = _tiles([(500_128.0, 5_000_064.0), (499_850.0, 4_999_950.0)], "EPSG:32631", 64.0)
    blocks = spatial_blocks(frame, 300.0)
    assert blocks.method.kind == "planar" and blocks.crs == "EPSG:32631"
    assert blocks.ids().tolist() == ["EPSG:32631:1667:16666", "EPSG:32631:1666:16666"]
    assert blocks.codes.tolist() == [1, 0]  # canonical: sorted by (EPSG, column, row)
    assert blocks.n_blocks == 2
    assert blocks.describe() == "2 blocks of 300 m in EPSG:32631"


def test_block_ids_geographic_tiles_use_the_utm_zone_of_the_centre() -> None:
    # lon/lat tiles (geodesic method): UTM x = 500000 + k0 N cos(lat) dlon = 501112.7 m for
    # 0.01° east of the central meridian at 0.5° latitude, y = k0 * meridian arc = 55265 m
    # (north) or 10,000,000 - 55265 = 9,944,735 m (south); 1 km blocks
    frame = _tiles([(3.01, 0.5), (3.01, -0.5), (9.01, 0.5)], "EPSG:4326", 0.001)
    blocks = spatial_blocks(frame, 1000.0)
    assert blocks.method.kind == "geodesic" and blocks.crs == "utm"
    assert blocks.ids().tolist() == [
        "EPSG:32631:501:55",
        "EPSG:32731:501:9944",
        "EPSG:32632:501:55",
    ]
    assert utm_epsg(np.array([-180.0, -0.001, 0.0, 179.999]), np.zeros(4)).tolist() == [
        32601,
        32630,
        32631,
        32660,
    ]
    assert blocks.describe() == "3 blocks of 1000 m in the UTM zone of each tile centre"


def test_two_utm_zones_blocks_hold_the_tile_centres() -> None:
    """Each tile's block is the square of the UTM zone (of its centre) containing its centre,
    checked with pyproj directly; zone-32 scenes west of 6°E get zone-31 blocks."""
    frame, _ = _two_zone_frame()
    size = 2000.0
    ids = spatial_blocks(frame, size).ids()
    cx = ((frame["minx"] + frame["maxx"]) / 2).to_numpy()
    cy = ((frame["miny"] + frame["maxy"]) / 2).to_numpy()
    expected = np.empty(len(frame), dtype=object)
    for crs in ("EPSG:32631", "EPSG:32632"):
        rows = np.flatnonzero(frame["crs"].to_numpy() == crs)
        lon, _lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            cx[rows], cy[rows]
        )
        zone = (np.floor((lon + 180) / 6).astype(int) % 60 + 1) + 32600  # all north
        for r, z, x, y in zip(rows, zone, cx[rows], cy[rows], strict=True):
            if f"EPSG:{z}" != crs:
                x, y = Transformer.from_crs(crs, f"EPSG:{z}", always_xy=True).transform(x, y)
            expected[r] = f"EPSG:{z}:{int(np.floor(x / size))}:{int(np.floor(y / size))}"
    assert ids.tolist() == expected.tolist()
    zone32 = frame["crs"].to_numpy() == "EPSG:32632"
    moved = np.char.startswith(ids[zone32].astype(str), "EPSG:32631:")
    assert 0 < moved.sum() < zone32.sum()  # the scenes across 6°E are split between zones


# --- folds ---------------------------------------------------------------------------------


def test_blocks_never_split_across_folds_in_two_utm_zones() -> None:
    frame, counts = _two_zone_frame()
    cfg = _cfg(buffer_m=500, holdout=0.1)
    fold, exclusions, method = compute_split(frame, counts, cfg)
    assert method.kind == "geodesic"  # two CRSs: the buffer is geodesic, blocks per UTM zone
    ids = spatial_blocks(frame, 2000.0).ids()
    per_block = pd.Series(fold).groupby(ids).nunique()
    assert (per_block == 1).all()
    assert set(np.unique(fold)) == {-1, 0, 1, 2, 3}
    # the buffer still applies: neighbouring blocks in other folds lose training tiles
    assert exclusions[:, :4].any()
    cross = exclusions[np.arange(len(fold)), np.where(fold >= 0, fold, 4)]
    assert not cross.any()  # a tile is never excluded from its own fold's training set


def test_folds_are_the_stratified_group_folds_of_the_blocks() -> None:
    """The same code path as stratified_group: block codes as the groups."""
    frame, counts = _two_zone_frame()
    fold, _, _ = compute_split(frame, counts, _cfg(random_state=7))
    codes = spatial_blocks(frame, 2000.0).codes
    expected = assign_folds(codes, 4, counts=counts, strategy="stratified_group", random_state=7)
    np.testing.assert_array_equal(fold, expected)


def test_deterministic_with_the_seed_whatever_the_row_order() -> None:
    frame, counts = _two_zone_frame()
    perm = np.random.default_rng(3).permutation(len(frame))
    a, _, _ = compute_split(frame, counts, _cfg(random_state=5))
    b, _, _ = compute_split(
        frame.iloc[perm].reset_index(drop=True), counts[perm], _cfg(random_state=5)
    )
    by_id_a = dict(zip(frame["tile_id"], a, strict=True))
    by_id_b = dict(zip(frame["tile_id"].to_numpy()[perm], b, strict=True))
    assert by_id_a == by_id_b
    blocks_a = spatial_blocks(frame, 2000.0)
    blocks_b = spatial_blocks(frame.iloc[perm].reset_index(drop=True), 2000.0)
    assert blocks_a.names.tolist() == blocks_b.names.tolist()
    np.testing.assert_array_equal(blocks_a.codes[perm], blocks_b.codes)


def test_equal_blocks_give_equal_folds() -> None:
    """64 blocks of 4 identical tiles, 4 folds: the stratified greedy gives 16 blocks each."""
    frame, counts = grid_frame(n_images=1, per_side=16, tile_m=100.0)
    counts[:] = [10, 20, 30, 40, 0, 0]
    cfg = _cfg(block_size_m=200)
    fold, _, _ = compute_split(frame, counts, cfg)
    ids = spatial_blocks(frame, 200.0).ids()
    assert len(set(ids)) == 64
    assert np.bincount(fold).tolist() == [64, 64, 64, 64]
    assert pd.Series(ids).groupby(fold).nunique().tolist() == [16, 16, 16, 16]


def test_every_fold_gets_a_block_with_uneven_blocks() -> None:
    # the stratified logic's guarantee: no fold is left empty while blocks remain
    frame, counts = grid_frame(n_images=3, per_side=4, tile_m=128.0)
    counts[: len(counts) // 2] *= 50
    fold, _, _ = compute_split(frame, counts, _cfg(n_splits=5, block_size_m=256))
    assert sorted(np.unique(fold).tolist()) == [0, 1, 2, 3, 4]


# --- errors --------------------------------------------------------------------------------


def _conf(tmp_path: Path, body: str) -> Path:
    conf = tmp_path / "c.yaml"
    conf.write_text(
        f"split:\n  input_csv_path: {tmp_path / 'in.csv'}\n"
        f"  output: {{csv_path: {tmp_path / 'out.csv'}}}\n" + body,
        "utf-8",
    )
    return conf


def _invoke(tmp_path: Path, body: str) -> Any:
    return CliRunner().invoke(app, ["split", str(_conf(tmp_path, body))])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  strategy: spatial_blocks\n",
            "split: strategy spatial_blocks needs block_size_m, the side of the square blocks "
            "in metres (e.g. block_size_m: 1000)",
        ),
        (
            "  strategy: spatial_blocks\n  block_size_m: 0\n",
            "split.block_size_m: must be > 0; got 0",
        ),
        (
            "  strategy: spatial_blocks\n  block_size_m: -5\n",
            "split.block_size_m: must be > 0; got -5",
        ),
        (
            "  strategy: spatial_blocks\n  block_size_m: .inf\n",
            "split.block_size_m: must be a finite number; got inf",
        ),
        (
            "  block_size_m: 1000\n",
            "split: block_size_m is only used by strategy spatial_blocks (strategy is "
            "stratified_group); remove block_size_m or set strategy: spatial_blocks",
        ),
        (
            "  strategy: group\n  block_size_m: 1000\n",
            "split: block_size_m is only used by strategy spatial_blocks (strategy is group); "
            "remove block_size_m or set strategy: spatial_blocks",
        ),
    ],
)
def test_bad_block_size_is_one_line(tmp_path: Path, body: str, message: str) -> None:
    res = _invoke(tmp_path, body)
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert " ".join(res.stderr.split()) == f"error: {tmp_path / 'c.yaml'}: {message}"


def test_library_refuses_bad_block_sizes() -> None:
    frame = _tiles([(500_000.0, 5_000_000.0)], "EPSG:32631", 64.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputDataError, match="block_size_m must be a finite number"):
            spatial_blocks(frame, bad)


def test_a_centre_without_coordinates_is_refused_naming_the_tile() -> None:
    frame = _tiles([(500_000.0, 5_000_000.0), (500_100.0, 5_000_000.0)], "EPSG:32631", 32.0)
    frame["tile_id"] = [11, 12]
    frame.loc[1, "maxx"] = np.nan
    with pytest.raises(InputDataError) as err:
        spatial_blocks(frame, 100.0, method=spatial_blocks(frame.iloc[:1], 100.0).method)
    assert str(err.value) == (
        "split: tile_id 12 (row 1) has no finite block: its centre is NaN or outside its CRS's "
        "projection, or block_size_m 100 is too small; fix its bounds and crs, or use larger "
        "blocks"
    )


def test_tiles_without_crs_are_refused_naming_the_file(tmp_path: Path) -> None:
    frame, counts = grid_frame(n_images=2, per_side=2)
    frame["image_path"] = [f"/data/slide_{i}.tif" for i in frame["source_image_id"]]
    frame.loc[frame["source_image_id"] == 10_001, "crs"] = ""
    src = tmp_path / "in.csv"
    _with_counts_json(frame, counts).to_csv(src, index=False)
    res = _invoke(tmp_path, "  strategy: spatial_blocks\n  block_size_m: 100\n")
    assert res.exit_code == 1
    text = " ".join(res.stderr.split())
    assert text == (
        f"error: {src}: 4 of 8 tiles have no CRS (their source raster is not georeferenced, "
        "e.g. /data/slide_10001.tif): strategy spatial_blocks needs every tile on the map; "
        "georeference the rasters and ingest again, or use strategy group / stratified_group "
        "(folds by source image work in pixel space)"
    )
    assert not (tmp_path / "out.csv").exists()


def test_too_few_blocks_for_the_folds(tmp_path: Path) -> None:
    frame, counts = grid_frame(n_images=1, per_side=2)
    _with_counts_json(frame, counts).to_csv(tmp_path / "in.csv", index=False)
    res = _invoke(tmp_path, "  strategy: spatial_blocks\n  block_size_m: 100000\n")
    assert res.exit_code == 1
    assert " ".join(res.stderr.split()) == (
        "error: split.block_size_m: blocks of 100000 m hold the tiles in only 1 blocks, fewer "
        "than n_splits=5; use smaller blocks or fewer folds"
    )


# --- the command ---------------------------------------------------------------------------


def test_cli_writes_block_id_and_prints_blocks(tmp_path: Path) -> None:
    frame, counts = _two_zone_frame()
    frame["image_path"] = [f"scene_{i}.tif" for i in frame["source_image_id"]]
    src = tmp_path / "in.csv"
    _with_counts_json(frame, counts).to_csv(src, index=False)
    conf = _conf(
        tmp_path,
        "  strategy: spatial_blocks\n  block_size_m: 2000\n  n_splits: 4\n  buffer_m: 500\n"
        "  holdout: 0.1\n",
    )
    summary = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["split", str(conf), "--json", str(summary)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "out.csv", dtype={"buffer_excluded_folds": str})
    assert out["block_id"].map(type).eq(str).all()
    assert out["block_id"].tolist() == spatial_blocks(frame, 2000.0).ids().tolist()
    assert (out.groupby("block_id")["fold"].nunique() == 1).all()
    n_blocks = out["block_id"].nunique()
    flat = " ".join(res.stdout.split())
    assert f"4 folds (spatial_blocks, by {n_blocks} blocks of 2000 m)" in flat
    assert (
        f"Split 800 tiles from {n_blocks} blocks of 2000 m in the UTM zone of each tile centre "
        "(column block_id)" in flat
    )
    sizes = out["fold"].value_counts()
    for f in (0, 1, 2, 3):  # the table: fold, tiles, blocks
        blocks = out.loc[out["fold"] == f, "block_id"].nunique()
        assert f"│ {f} │ {sizes[f]} │ {blocks} │" in flat
    data = json.loads(summary.read_text())["summary"]
    assert data["blocks"] == n_blocks and data["block_crs"] == "utm"
    assert data["groups"] == n_blocks and data["group_column"] == "block_id"
    assert data["buffer_method"] == "geodesic"
    # the folds audit clean when grouped by block (tiles of one scene lie in several folds)
    res = CliRunner().invoke(
        app,
        [
            *("check-leakage", "--folds", str(tmp_path / "out.csv")),
            *("--group-column", "block_id", "--buffer-m", "500"),
        ],
    )
    assert res.exit_code == 0, res.output


def test_spatial_blocks_example_runs_on_demo_data(demo_pairs: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    cfg = data["split"]
    assert (
        cfg["strategy"] == "spatial_blocks" and cfg["input_csv_path"] == "demo/balanced_train.csv"
    )
    (tmp_path / "demo").mkdir()
    balanced_csv_from_pairs(demo_pairs, tmp_path / cfg["input_csv_path"], patch=128)
    for key in ("csv_path", "geojson_path"):
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    cfg["input_csv_path"] = str(tmp_path / cfg["input_csv_path"])
    conf = tmp_path / "split_spatial_blocks.yaml"
    conf.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["split", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"])
    assert len(out) == 64
    # 64 m tiles, 128 m blocks: the tile with centre (500032, 4999968) is in block
    # floor(500032 / 128) = 3906, floor(4999968 / 128) = 39062
    first = out[(out["minx"] == 500_000.0) & (out["maxy"] == 5_000_000.0)]
    assert first["block_id"].tolist() == ["EPSG:32631:3906:39062"]
    assert (out.groupby("block_id")["fold"].nunique() == 1).all()
    assert sorted(out["fold"].unique()) == [0, 1, 2, 3]
    assert out.groupby("source_image_id")["fold"].nunique().max() > 1  # blocks, not scenes
    gj = json.loads(Path(cfg["output"]["geojson_path"]).read_text())
    assert {"block_id", "fold"} <= set(gj["features"][0]["properties"])
    res = CliRunner().invoke(
        app,
        [
            *("check-leakage", "--folds", cfg["output"]["csv_path"]),
            *("--group-column", "block_id", "--buffer-m", str(cfg["buffer_m"])),
        ],
    )
    assert res.exit_code == 0, res.output


INGEST = ["--patch-size", "128", "--workers", "1", "--nodata-class", "0"]


def _catalog_split(
    demo_pairs: Path, target: str, tmp_path: Path
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Ingest the demo into ``target``, split it by 128 m blocks; (folds CSV, summary)."""
    res = CliRunner().invoke(
        app, ["catalog", "ingest", str(demo_pairs), *INGEST, "--catalog", target]
    )
    assert res.exit_code == 0, res.output
    key = "path" if target.endswith(".parquet") else "url"
    body = {
        "catalog": {key: target},
        "n_splits": 4,
        "strategy": "spatial_blocks",
        "block_size_m": 128,
        "buffer_m": 50,
        "output": {"csv_path": str(tmp_path / "folds.csv")},
    }
    conf = tmp_path / "split.yaml"
    conf.write_text(yaml.safe_dump({"split": body}))
    res = CliRunner().invoke(app, ["split", str(conf), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s.json").read_text())
    return pd.read_csv(tmp_path / "folds.csv", dtype={"buffer_excluded_folds": str}), summary


@pytest.mark.parametrize("kind", ["parquet", pytest.param("postgis", marks=pytest.mark.db)])
def test_catalog_input_splits_by_blocks(
    kind: str, request: pytest.FixtureRequest, demo_pairs: Path, tmp_path: Path
) -> None:
    if kind == "postgis":
        target = request.getfixturevalue("fresh_database_url")
        assert CliRunner().invoke(app, ["catalog", "init", "--catalog", target]).exit_code == 0
    else:
        target = str(tmp_path / "tiles.parquet")
    out, summary = _catalog_split(demo_pairs, target, tmp_path)
    assert isinstance(summary["run_id"], int)
    assert summary["summary"]["blocks"] == out["block_id"].nunique() > 4
    assert out["block_id"].tolist() == spatial_blocks(out, 128.0).ids().tolist()
    assert (out.groupby("block_id")["fold"].nunique() == 1).all()
    assert sorted(out["fold"].unique()) == [0, 1, 2, 3]
