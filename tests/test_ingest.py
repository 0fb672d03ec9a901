"""catalog ingest into a local Parquet tile table, pairs CSV parsing, and bad input (no server)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools.catalog.parquet_io import read_class_names, read_tile_table
from smt_tools.cli.app import app
from smt_tools.errors import InputDataError
from smt_tools.pipelines.catalog_stats import run_catalog_stats
from smt_tools.pipelines.ingest import read_class_names_csv, read_pairs_csv, run_ingest
from smt_tools.raster import PairSpec, inspect_pair, scan, tile_windows
from tests.catalog_data import HAND_COUNTS, two_scenes, write_pairs_csv
from tests.rasters import write_pair, write_tif

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_pairs_csv_paths_groups_and_errors(tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path / "data")
    got = read_pairs_csv(pairs)
    assert [Path(p.image_path).name for p in got] == ["a_img.tif", "b_img.tif"]
    assert all(Path(p.image_path).is_absolute() for p in got)
    assert Path(got[0].mask_path) == (tmp_path / "data" / "a_mask.tif")
    assert got[0].group_id is None
    grouped = write_pairs_csv(
        tmp_path / "data" / "g.csv",
        [("a_img.tif", "a_mask.tif", "site1")],  # type: ignore[list-item]
        header=("Image", " mask ", "group"),
    )
    assert read_pairs_csv(grouped)[0].group_id == "site1"
    with pytest.raises(InputDataError, match=r"nope\.csv: pairs CSV not found"):
        read_pairs_csv(tmp_path / "nope.csv")
    cols = write_pairs_csv(tmp_path / "cols.csv", [("x", "y")], header=("img", "msk"))
    with pytest.raises(
        InputDataError,
        match=r"lacks column\(s\) image, mask; expected columns image, mask\[, group\]; found: img, msk",
    ):
        read_pairs_csv(cols)
    missing = write_pairs_csv(tmp_path / "data" / "m.csv", [("a_img.tif", "zzz.tif")])
    with pytest.raises(
        InputDataError,
        match=r"line 2: mask file .*zzz\.tif not found \(relative paths are resolved against .*data\)",
    ):
        read_pairs_csv(missing)
    dup = write_pairs_csv(tmp_path / "data" / "d.csv", [("a_img.tif", "a_mask.tif")] * 2)
    with pytest.raises(InputDataError, match="already listed on line 2"):
        read_pairs_csv(dup)
    empty = write_pairs_csv(tmp_path / "e.csv", [])
    with pytest.raises(InputDataError, match="no rows"):
        read_pairs_csv(empty)


def test_class_names_csv(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("class_value,name,color\n1,field,#00ff00\n2,forest,\n")
    assert read_class_names_csv(p) == {1: ("field", "#00ff00"), 2: ("forest", None)}
    p.write_text("value,name\n1,field\n")
    with pytest.raises(InputDataError, match=r"lacks column\(s\) class_value"):
        read_class_names_csv(p)
    p.write_text("class_value,name\none,field\n")
    with pytest.raises(InputDataError, match="line 2: class_value must be an integer; got 'one'"):
        read_class_names_csv(p)


def test_parquet_ingest_matches_scan_and_is_incremental(tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    out = tmp_path / "tiles.parquet"
    names = tmp_path / "names.csv"
    names.write_text("class_value,name,colour\n0,nodata,#000000\n3,water,#0000ff\n")
    args = (
        "catalog", "ingest", str(pairs), "--patch-size", "4", "--nodata-class", "0",
        "--catalog", str(out),
    )  # fmt: skip
    code, stdout, err = invoke(*args, "--class-names", str(names), "--workers", "2")
    assert code == 0, err
    assert "Images: 2 listed, 2 scanned (2 new, 0 changed), 0 unchanged skipped" in stdout
    assert (
        "Tiles written: 8 in " in stdout
        and "tiles.parquet now holds 8 tiles of 2 source images" in stdout
    )
    table = read_tile_table(out)
    assert table.counts[:4].tolist() == HAND_COUNTS
    assert read_class_names(out) == {3: ("water", "#0000ff")}  # nodata class not a class
    recs = [inspect_pair(PairSpec(p.image_path, p.mask_path)) for p in read_pairs_csv(pairs)]
    local = scan(recs, [tile_windows(8, 8, 4)] * 2, nodata_class=0, workers=1)
    pd.testing.assert_frame_equal(table.frame, local.frame)
    # unchanged: nothing scanned, file not rewritten
    stamp = out.stat().st_mtime_ns
    code, stdout, err = invoke(*args)
    assert code == 0, err
    assert "0 scanned (0 new, 0 changed), 2 unchanged skipped" in stdout
    assert out.stat().st_mtime_ns == stamp
    # changed image (new content + new mtime) -> only that source re-scanned
    write_pair(tmp_path, "b", np.full((8, 8), 2, np.uint8), origin=(500_008.0, 5_000_000.0))
    later = os.stat(tmp_path / "b_img.tif").st_mtime + 5
    os.utime(tmp_path / "b_img.tif", (later, later))
    code, stdout, err = invoke(*args)
    assert code == 0, err
    assert "1 scanned (0 new, 1 changed), 1 unchanged skipped" in stdout
    after = read_tile_table(out)
    assert len(after) == 8
    b_rows = after.frame["image_path"].str.endswith("b_img.tif").to_numpy()
    assert after.counts[b_rows].tolist() == [[0, 16, 0]] * 4
    assert after.counts[~b_rows].tolist() == HAND_COUNTS
    # other tiling parameters make every source "changed"
    code, stdout, err = invoke(*args[:-6], "--patch-size", "8", *args[-4:])
    assert code == 0, err
    assert "2 scanned (0 new, 2 changed)" in stdout and "now holds 2 tiles" in stdout
    stats = run_catalog_stats(str(out))
    assert (stats.tiles, stats.source_images, stats.window_pixels) == (2, 2, 128)
    assert stats.valid_pixels == 12 + 16 + 16 + 64
    assert [c.class_value for c in stats.classes] == [1, 2, 3]


def test_bad_inputs_leave_parquet_unchanged(tmp_path: Path) -> None:
    pairs = two_scenes(tmp_path)
    out = tmp_path / "tiles.parquet"
    nd0 = ("--nodata-class", "0")  # the hand-built masks use 0 = nodata
    assert (
        invoke("catalog", "ingest", str(pairs), "--patch-size", "4", *nd0, "--catalog", str(out))[0]
        == 0
    )
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00garbage")
    write_tif(tmp_path / "big_mask.tif", np.ones((8, 9), np.uint8))
    write_tif(tmp_path / "crs_mask.tif", np.ones((8, 8), np.uint8), crs="EPSG:3857")
    write_pair(tmp_path, "new", np.ones((8, 8), np.uint8), origin=(500_016.0, 5_000_000.0))
    good = ("new_img.tif", "new_mask.tif")
    cases = [
        (
            [good, ("missing_img.tif", "a_mask.tif")],
            ("image", "mask"),
            r"image file .*missing_img\.tif not found",
        ),
        (
            [good, ("a_img.tif", "corrupt.tif")],
            ("image", "mask"),
            r"corrupt\.tif: not a readable raster",
        ),
        (
            [good, ("a_img.tif", "big_mask.tif")],
            ("image", "mask"),
            r"a_img\.tif and mask .*big_mask\.tif disagree: size 8x8 vs 9x8",
        ),
        ([good, ("a_img.tif", "crs_mask.tif")], ("image", "mask"), r"CRS EPSG:32631 vs EPSG:3857"),
        ([good], ("image", "labels"), r"lacks column\(s\) mask"),
    ]
    for i, (listed, header, pattern) in enumerate(cases):
        csv_path = write_pairs_csv(tmp_path / f"case{i}.csv", listed, header=header)
        code, _, err = invoke(
            "catalog", "ingest", str(csv_path), "--patch-size", "4", *nd0, "--catalog", str(out)
        )
        assert code == 1, (pattern, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert re.search(pattern, err), (pattern, err)
        assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    code, _, err = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "64", "--catalog", str(out)
    )
    assert code == 1
    assert (
        "all 2 images listed are smaller than the 64 px patch (largest: "
        f"{(tmp_path / 'a_img.tif').as_posix()}, 8x8 px); nothing was ingested: use --edge pad, "
        "or --patch-size 8 or less"
    ) in err
    code, _, err = invoke("catalog", "ingest", str(pairs), "--edge", "wrap", "--catalog", str(out))
    assert code == 2 and "Invalid value for '--edge'" in err  # usage error, listing the choices
    assert "'wrap' is not one of 'drop', 'shift', 'pad'" in " ".join(err.replace("│", " ").split())
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.glob("*parquet*")) == ["tiles.parquet"]


def test_no_catalog_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMT_DATABASE_URL", raising=False)
    pairs = two_scenes(tmp_path)
    code, _, err = invoke("catalog", "ingest", str(pairs), "--patch-size", "4")
    assert code == 1
    assert (
        err.strip()
        == "error: no catalog: pass --catalog postgresql://... (or a .parquet tile table) or set "
        "SMT_DATABASE_URL"
    )
    code, _, err = invoke("catalog", "stats", "--catalog", str(tmp_path / "none.parquet"))
    assert code == 1 and "none.parquet: tile table not found" in err


def test_pad_edge_and_run_ingest_api(tmp_path: Path) -> None:
    img, msk = write_pair(tmp_path, "s", np.ones((6, 6), np.uint8))
    pairs = write_pairs_csv(tmp_path / "p.csv", [(img.name, msk.name)])
    res = run_ingest(
        pairs, catalog=str(tmp_path / "t.parquet"), patch_size=4, edge="pad", workers=1
    )
    assert (res.kind, res.images_new, res.tiles_written, res.tiles_in_catalog) == (
        "parquet",
        1,
        4,
        4,
    )
    table = read_tile_table(tmp_path / "t.parquet")
    assert table.frame["nodata_ratio"].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.75])
