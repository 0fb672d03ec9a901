"""Rasters without a CRS (slide scans) run end to end in pixel space (issue 11, A5).

ingest (Parquet and PostGIS) -> build-balanced-dataset (CSV + report; GeoJSON left out with one
warning line) -> split (folds by source image; a buffer cannot cross images) -> check-leakage
(spatial check skipped with one line) -> train (tiny UNet, 1 epoch). Mixed tables (some tiles
with a CRS, some without) too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.errors import InputDataError
from smt_tools.geo import crs_strings, footprints_lonlat, has_crs
from smt_tools.splits import distance_method, pixel_space_exclusions
from tests.crs_data import write_pairs_csv, write_plain_pair
from tests.rasters import write_pair

runner = CliRunner()
SCANS = ["s1", "s2", "s3"]


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """Three 256 x 256 px scans without CRS (4 tiles of 128 px each); returns the pairs CSV."""
    for k, name in enumerate(SCANS):
        write_plain_pair(tmp_path, name, 256, seed=k)
    return write_pairs_csv(tmp_path / "pairs.csv", SCANS)


def _ingest(pairs: Path, catalog: str, *extra: str) -> str:
    res = runner.invoke(
        app,
        ["catalog", "ingest", str(pairs), "--patch-size", "128", "--workers", "1",
         "--nodata-class", "0", "--catalog", catalog, *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return res.output


def _balanced(tmp: Path, input_: dict[str, object], name: str = "balanced") -> tuple[Path, str]:
    conf = tmp / f"{name}.yaml"
    cfg = {
        "balanced_dataset": {
            "mode": "masks_only",
            "input": input_,
            "clustering": {"k_selection": "fixed", "k": 2, "random_state": 0},
            "output": {
                "csv_path": str(tmp / f"{name}.csv"),
                "geojson_path": str(tmp / f"{name}.geojson"),
                "report_dir": str(tmp / f"{name}_report"),
                "write_catalog_run": False,
            },
        }
    }
    conf.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    return tmp / f"{name}.csv", res.output


def _split(tmp: Path, csv: Path, name: str, **kw: object) -> tuple[int, str, Path]:
    out = tmp / f"{name}.csv"
    cfg = {
        "split": {
            "input_csv_path": str(csv),
            "n_splits": 3,
            "strategy": "stratified_group",
            "output": {"csv_path": str(out), "geojson_path": str(tmp / f"{name}.geojson")},
            **kw,
        }
    }
    conf = tmp / f"{name}.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["split", str(conf)])
    return res.exit_code, res.output, out


# --- geo helpers -------------------------------------------------------------------------


def test_missing_crs_is_recognised_and_named() -> None:
    frame = pd.DataFrame(
        {
            "minx": [0.0, 500_000.0, 0.0],
            "miny": [0.0, 5_000_000.0, 0.0],
            "maxx": [128.0, 500_128.0, 128.0],
            "maxy": [128.0, 5_000_128.0, 128.0],
            "crs": ["", "EPSG:32631", np.nan],  # a CSV round trip turns "" into NaN
            "image_path": ["/scans/s1.tif", "/geo/a.tif", "/scans/s2.tif"],
        }
    )
    assert crs_strings(frame).tolist() == ["", "EPSG:32631", ""]
    assert has_crs(frame).tolist() == [False, True, False]
    with pytest.raises(InputDataError, match=r"2 of 3 tiles have no CRS .*e\.g\. /scans/s1\.tif"):
        footprints_lonlat(frame)
    rings = footprints_lonlat(frame, missing="nan")
    assert np.isnan(rings[[0, 2]]).all() and np.isfinite(rings[1]).all()
    m = distance_method(frame)
    assert (m.kind, m.tiles_without_crs, m.images_without_crs) == ("planar", 2, 2)
    assert m.describe().endswith(
        "; 2 tiles of 2 source images have no CRS (pixel space): not measured against other images"
    )
    assert distance_method(frame.iloc[[0, 2]]).kind == "none"


def test_pixel_space_buffer_stays_inside_one_image() -> None:
    # two scans, tiles 0-3 and 4-7 on the same pixel grid (identical bounds across images)
    boxes = [(0, 0, 128, 128), (128, 0, 256, 128), (0, 128, 128, 256), (128, 128, 256, 256)]
    frame = pd.DataFrame(boxes * 2, columns=["minx", "miny", "maxx", "maxy"], dtype=float)
    frame["crs"] = ""
    frame["source_image_id"] = [1] * 4 + [2] * 4
    frame["image_path"] = ["/scans/s1.tif"] * 4 + ["/scans/s2.tif"] * 4
    whole = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # one image per fold: nothing to drop, whatever the buffer (same pixel boxes, other image)
    assert not pixel_space_exclusions(frame, whole, 50.0, 2).any()
    # an image split over folds (tile-level groups): touching windows of other folds dropped
    split = np.array([0, 1, 1, 0, 0, 0, 0, 0])
    ex = pixel_space_exclusions(frame, split, 0.0, 2)
    got = {(int(r), int(c)) for r, c in zip(*np.nonzero(ex), strict=True)}
    # 0-1 and 0-2 touch along an edge, 3-1 and 3-2 too; 0-3 / 1-2 only at a corner (touching)
    assert got == {(0, 1), (3, 1), (1, 0), (2, 0)}
    # ... and a buffer in metres cannot be measured there: refused with the fix
    with pytest.raises(InputDataError, match=r"source image /scans/s1\.tif has no CRS .* 2 folds"):
        pixel_space_exclusions(frame, split, 50.0, 2)


# --- end to end, local tile table -------------------------------------------------------


def test_crs_less_scans_end_to_end_local(scans: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("albumentations")
    tiles = tmp_path / "tiles.parquet"
    out = _ingest(scans, str(tiles))
    assert out.count("warning: 3 of 3 scanned images have no CRS (e.g. ") == 1
    assert "their tiles are kept in pixel space" in out
    assert "NotGeoreferencedWarning" not in out and "Traceback" not in out
    table = pd.read_parquet(tiles)
    assert len(table) == 12 and (table["crs"] == "").all()
    # bounds in the raster's own pixel coordinates (identity transform)
    first = table.sort_values(["image_path", "row_off", "col_off"]).iloc[:4]
    assert first[["minx", "miny", "maxx", "maxy"]].to_numpy().tolist() == [
        [0.0, 0.0, 128.0, 128.0],
        [128.0, 0.0, 256.0, 128.0],
        [0.0, 128.0, 128.0, 256.0],
        [128.0, 128.0, 256.0, 256.0],
    ]

    csv, out = _balanced(tmp_path, {"tiles": str(tiles)})
    bal = pd.read_csv(csv)
    assert len(bal) == 12 and bal["crs"].isna().all() and (bal["sampler_weight"] > 0).all()
    assert (tmp_path / "balanced_report" / "weight_map.png").is_file()
    gj = json.loads((tmp_path / "balanced.geojson").read_text())
    assert gj["features"] == [] and gj["tiles_without_crs"] == 12 and "crs" not in gj
    warning = (
        "balanced.geojson: no tile has a CRS (rasters in pixel space), so they are left out of "
        "this GeoJSON and its QGIS style (GeoJSON holds lon/lat only, RFC 7946)"
    )
    assert out.count(warning) == 1
    assert "Traceback" not in out

    # split by source image with a 50 m buffer: folds work, the buffer has nothing to measure
    code, out, folds = _split(tmp_path, csv, "folds", buffer_m=50.0)
    assert code == 0, out
    f = pd.read_csv(folds, dtype={"buffer_excluded_folds": str})
    assert f.groupby("source_image_id")["fold"].nunique().eq(1).all()
    assert sorted(f["fold"].unique()) == [0, 1, 2]
    assert f["buffer_excluded_folds"].isna().all()
    assert (
        "buffer 50 m, not measured: no tile has a CRS (pixel space, no shared coordinates)" in out
    )
    assert out.count("left out of this GeoJSON") == 1

    # tile-level groups split each scan over folds: a buffer in metres is refused, in one line
    code, out, _ = _split(tmp_path, csv, "bad", buffer_m=50.0, group_column="tile_id")
    assert code == 1
    assert "has no CRS and its tiles fall in" in out and "set split.buffer_m: 0" in out
    assert "Traceback" not in out

    # check-leakage: (a) and (d) run; the spatial check is skipped with its reason
    res = runner.invoke(app, ["check-leakage", "--folds", str(folds), "--buffer-m", "50"])
    assert res.exit_code == 0, res.output
    assert "ok source_image: each of 3 groups is in one split" in res.output
    assert (
        "skipped spatial: no tile has a CRS (12 tiles in pixel space: no shared coordinates)"
        in res.output
    )

    # train: a tiny UNet, one epoch, validating on fold 0
    train_cfg = {
        "train_dataset": {
            "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
            "input_csv_path": str(folds),
            "n_classes": 3,
            "class_values": [1, 2, 3],
            "bands": [1, 2, 3],
            "data_loader": {
                "batch_size": 2,
                "num_workers": 0,
                "weighted_sampler": True,
                "weighted_sampler_num_samples": 4,
            },
        },
        "val_fold": 0,
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 3,
            "n_classes": 3,
            "base_channels": 4,
            "depth": 2,
        },
        "epochs": 1,
        "steps_per_epoch": 2,
        "val_steps": 1,
        "device": "cpu",
        "output_dir": str(tmp_path / "run"),
    }
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(train_cfg))
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 0, res.output
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(hist["epoch"]) == [1] and np.isfinite(hist.loc[0, "train_loss"])
    assert 0.0 <= hist.loc[0, "miou"] <= 1.0


def test_mixed_table_with_and_without_crs(scans: Path, tmp_path: Path) -> None:
    # two georeferenced scenes 20 m apart (EPSG:32631) next to the three scans
    write_pair(tmp_path, "g1", np.ones((256, 256), np.uint8), origin=(500_000.0, 5_000_000.0))
    m2 = np.full((256, 256), 2, np.uint8)
    write_pair(tmp_path, "g2", m2, origin=(500_276.0, 5_000_000.0))
    pairs = write_pairs_csv(tmp_path / "mixed.csv", [*SCANS, "g1", "g2"])
    tiles = tmp_path / "mixed.parquet"
    _ingest(pairs, str(tiles))
    csv, out = _balanced(tmp_path, {"tiles": str(tiles)}, "mixed_bal")
    gj = json.loads((tmp_path / "mixed_bal.geojson").read_text())
    assert len(gj["features"]) == 8 and gj["tiles_without_crs"] == 12
    assert (
        out.count("12 of 20 tiles have no CRS (rasters in pixel space), so they are left out") == 1
    )

    # stratified folds over 5 images; the 50 m buffer applies between g1 and g2 (20 m apart)
    code, out, folds = _split(tmp_path, csv, "mixed_folds", buffer_m=50.0, n_splits=5)
    assert code == 0, out
    assert (
        "buffer 50 m, measured planar in EPSG:32631 (every tile in this CRS; scale error at most "
        "0.04 %); 12 tiles of 3 source images have no CRS (pixel space): not measured against "
        "other images"
    ) in out
    f = pd.read_csv(folds, dtype={"buffer_excluded_folds": str})
    geo = f[f["crs"].notna()]
    scans_rows = f[f["crs"].isna()]
    assert scans_rows["buffer_excluded_folds"].isna().all()
    # g1's right column (2 tiles) is within 50 m of g2's left column and vice versa
    g1_fold = int(geo.loc[geo["group_id"] == "g1", "fold"].iloc[0])
    g2_fold = int(geo.loc[geo["group_id"] == "g2", "fold"].iloc[0])
    assert g1_fold != g2_fold
    # 20 m between g1's right column and g2's left column; the far columns are 148 m apart
    dropped = geo[geo["buffer_excluded_folds"].notna()]
    facing = ((geo["group_id"] == "g1") & (geo["minx"] == 500_128.0)) | (
        (geo["group_id"] == "g2") & (geo["minx"] == 500_276.0)
    )
    assert sorted(dropped["tile_id"]) == sorted(geo.loc[facing, "tile_id"])
    assert len(dropped) == 4
    want = {"g1": str(g2_fold), "g2": str(g1_fold)}
    assert all(
        want[g] == v
        for g, v in zip(dropped["group_id"], dropped["buffer_excluded_folds"], strict=True)
    )

    # check-leakage on the folds: the buffer was applied, the scans are skipped in one line
    res = runner.invoke(app, ["check-leakage", "--folds", str(folds), "--buffer-m", "50"])
    assert res.exit_code == 0, res.output
    assert (
        res.output.count(
            "warning: spatial check: 12 of 20 tiles (3 source images) have no CRS (pixel space) and "
            "were not checked for overlaps or distances; checks (a), (c) and (d) include them"
        )
        == 1
    )
    assert "ok spatial: 0 tile pairs closer than 50 m across splits" in res.output
    # ... and without the split's exclusions the 20 m gap between g1 and g2 is a leak
    plain = pd.read_csv(folds).drop(columns=["buffer_excluded_folds"])
    plain.to_csv(tmp_path / "plain.csv", index=False)
    res = runner.invoke(app, ["check-leakage", "--folds", str(tmp_path / "plain.csv"),
                              "--buffer-m", "50", "--report", str(tmp_path / "leaks.geojson")])  # fmt: skip
    assert res.exit_code == 3, res.output
    assert "4 tile pairs closer than 50 m across splits (closest 20.00 m)" in res.output
    report = json.loads((tmp_path / "leaks.geojson").read_text())
    assert len(report["features"]) == 4 and "tiles_without_crs" not in report


def test_coreset_spatial_weight_refuses_tiles_without_crs() -> None:
    from smt_tools.pipelines.coreset import projected_centroids

    frame = pd.DataFrame(
        {"minx": [0.0], "miny": [0.0], "maxx": [128.0], "maxy": [128.0], "crs": [np.nan],
         "image_path": ["/scans/s1.tif"]}
    )  # fmt: skip
    with pytest.raises(
        InputDataError, match=r"x\.csv: 1 of 1 tiles have no CRS .*set spatial_weight: 0"
    ):
        projected_centroids(frame, "x.csv")


@pytest.mark.db
def test_crs_less_scans_in_postgis(scans: Path, tmp_path: Path, fresh_database_url: str) -> None:
    from smt_tools.catalog import connect, load_tiles

    url = fresh_database_url
    res = runner.invoke(app, ["catalog", "init", "--catalog", url])
    assert res.exit_code == 0, res.output
    write_pair(tmp_path, "g1", np.ones((256, 256), np.uint8), origin=(500_000.0, 5_000_000.0))
    pairs = write_pairs_csv(tmp_path / "mixed.csv", [*SCANS, "g1"])
    _ingest(pairs, url)
    engine = connect(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "select s.crs, count(*), count(t.footprint), bool_and(s.footprint is null) "
                    "from tile t join source_image s on s.id = t.source_image_id "
                    "group by s.crs order by s.crs"
                )
            ).all()
        assert [tuple(r) for r in rows] == [("", 12, 0, True), ("EPSG:32631", 4, 4, False)]
        table = load_tiles(engine).frame
        scan = table[table["crs"] == ""]
        assert len(scan) == 12
        assert scan[["minx", "miny"]].min().tolist() == [0.0, 0.0]
        assert scan[["maxx", "maxy"]].max().tolist() == [256.0, 256.0]
    finally:
        engine.dispose()

    # build from the catalog, then split on the catalog: PostGIS measures only the tiles with a
    # CRS (NULL footprints never reach it)
    csv, out = _balanced(tmp_path, {"dsn": url}, "cat_bal")
    assert len(pd.read_csv(csv)) == 16
    assert out.count("12 of 16 tiles have no CRS") == 1
    conf = tmp_path / "cat_split.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "split": {
                    "catalog": {"url": url},
                    "n_splits": 2,
                    "buffer_m": 50.0,
                    "output": {"csv_path": str(tmp_path / "cat_folds.csv")},
                }
            }
        )
    )
    res = runner.invoke(app, ["split", str(conf)])
    assert res.exit_code == 0, res.output
    assert "12 tiles of 3 source images have no CRS (pixel space)" in res.output
    assert "(postgis)" in res.output
    engine = connect(url)
    try:
        with engine.connect() as conn:
            summary = conn.execute(
                text("select summary from run where command = 'split'")
            ).scalar_one()
            n = conn.execute(text("select count(*) from tile_result")).scalar_one()
    finally:
        engine.dispose()
    assert n == 16 and summary["tiles_without_crs"] == 12 and summary["buffer_method"] == "planar"


def test_check_leakage_refuses_a_crs_without_bounds(tmp_path: Path) -> None:
    # before: any blank bound silently switched the whole spatial check off
    rows = pd.DataFrame(
        {
            "tile_id": [1, 2],
            "source_image_id": [10, 20],
            "minx": [500_000.0, np.nan],
            "miny": [5_000_000.0, 5_000_000.0],
            "maxx": [500_128.0, 500_300.0],
            "maxy": [5_000_128.0, 5_000_128.0],
            "crs": ["EPSG:32631", "EPSG:32631"],
        }
    )
    rows.iloc[[0]].to_csv(tmp_path / "train.csv", index=False)
    rows.iloc[[1]].to_csv(tmp_path / "val.csv", index=False)
    res = runner.invoke(
        app,
        [
            "check-leakage",
            "--train",
            str(tmp_path / "train.csv"),
            "--val",
            str(tmp_path / "val.csv"),
        ],
    )
    assert res.exit_code == 1
    assert (
        "tile_id 2 (in val) has a CRS but no numeric minx/miny/maxx/maxy (1 such rows)"
        in res.output
    )
    assert "Traceback" not in res.output
