"""Small images and edge policies at ingest (issue 11 A2): images smaller than the patch are
skipped and all named, the rest is ingested; low ``--edge drop`` coverage is reported; padded
tiles (``--edge pad``) are kept, counted, and reported again by build-balanced-dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools.catalog.parquet_io import read_tile_table
from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.errors import InputDataError
from smt_tools.pipelines._tiling_report import (
    MAX_LISTED,
    TilingReport,
    padded_tiles_note,
)
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.pipelines.ingest import run_ingest
from smt_tools.raster import PairSpec, inspect_pair, scan
from smt_tools.raster.padding import padded_tiles
from smt_tools.raster.tiling import fits, grid_coverage, outside_pixels, tile_windows
from smt_tools.tiletable import canonical_path, source_image_key
from tests.rasters import write_pair
from tests.tiling_data import pairs_for, striped_mask, textured_image

runner = CliRunner()
PATCH = 256
#: a 100x100 image in one 256 px padded window: 10,000 of 65,536 pixels inside
SMALL_MISSING = 1 - 100 * 100 / (PATCH * PATCH)


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _path(folder: Path, name: str) -> str:
    return canonical_path(folder / f"{name}_img.tif")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 512 px scenes and one 100 px scene (listed third); returns the pairs CSV."""
    folder = tmp_path_factory.mktemp("mixed")
    return pairs_for(
        folder, [("big0", 512, 512), ("big1", 512, 512), ("small", 100, 100), ("big2", 512, 512)]
    )


# ----------------------------------------------------------------------------- tiling math


def test_coverage_and_outside_pixels_exact() -> None:
    assert grid_coverage(512, 512, 256) == 1.0
    assert grid_coverage(600, 600, 256) == 512 * 512 / (600 * 600)  # 72.8 %
    assert grid_coverage(520, 520, 256) == 512 * 512 / (520 * 520)  # 96.9 %
    # stride 128: the grid reaches 896 of 1000 columns and 512 of 600 rows
    assert grid_coverage(1000, 600, 256, 128) == 896 * 512 / (1000 * 600)
    assert grid_coverage(100, 100, 256) == 0.0
    assert fits(256, 256, 256) and not fits(255, 4000, 256)
    win = tile_windows(600, 600, 512, edge="pad")
    assert win[:, :2].tolist() == [[0, 0], [0, 512], [512, 0], [512, 512]]
    assert outside_pixels(win, 600, 600).tolist() == [
        0,
        512 * 512 - 512 * 88,
        512 * 512 - 88 * 512,
        512 * 512 - 88 * 88,
    ]
    assert outside_pixels(tile_windows(100, 100, 256, edge="pad"), 100, 100).tolist() == [
        PATCH * PATCH - 100 * 100
    ]


# ----------------------------------------------------------------------------- ingest (Parquet)


def test_small_image_skipped_named_and_picked_up_by_pad(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles.parquet"
    folder = mixed.parent
    small = _path(folder, "small")
    args = ("catalog", "ingest", str(mixed), "--patch-size", str(PATCH), "--catalog", str(out))
    code, stdout, stderr = invoke(*args, "--nodata-class", "none")
    assert code == 0, stderr
    assert "Images: 4 listed, 3 scanned (3 new, 0 changed), 0 unchanged skipped" in stdout
    assert "Tiles written: 12 in" in stdout and "now holds 12 tiles of 3 source images" in stdout
    err = stderr.splitlines()
    head = (
        "warning: 1 image smaller than the 256 px patch skipped (not ingested, --edge drop); "
        "to include it use --edge pad, or --patch-size 100 or less:"
    )
    assert head in err
    assert err[err.index(head) + 1] == f"  {small} (100x100 px)"
    assert "Padded" not in stdout and "less than 90 %" not in stderr  # 512 = 2 x 256: no loss
    table = read_tile_table(out)
    ids = set(table.frame["source_image_id"].tolist())
    assert len(ids) == 3 and source_image_key(small) not in ids
    assert small not in set(table.frame["image_path"])

    # the same ingest again: the 3 scenes are unchanged; the small one is still skipped (not
    # recorded as a source, so it is neither "unchanged" nor silently forgotten)
    code, stdout, stderr = invoke(*args, "--nodata-class", "none")
    assert code == 0, stderr
    assert "Images: 4 listed, 0 scanned (0 new, 0 changed), 3 unchanged skipped" in stdout
    assert head in stderr.splitlines()

    # --edge pad: the small image is new, its one padded tile is kept with the missing pixels
    # as nodata and no border flag; the summary says so
    code, stdout, stderr = invoke(*args, "--nodata-class", "none", "--edge", "pad")
    assert code == 0, stderr
    assert "Images: 4 listed, 4 scanned (1 new, 3 changed), 0 unchanged skipped" in stdout
    assert "now holds 13 tiles of 4 source images" in stdout
    assert (
        "Padded: 1 tile runs past the image edge (--edge pad) and is kept; "
        f"{100 * SMALL_MISSING:.1f} % of its pixels lie outside the image and count as nodata "
        "(nodata_ratio), not as a class"
    ) in stdout.splitlines()
    assert "smaller than the" not in stderr
    f = read_tile_table(out).frame
    row = f.loc[f["image_path"] == small]
    assert len(row) == 1
    assert row["nodata_ratio"].iloc[0] == pytest.approx(SMALL_MISSING, abs=1e-12)
    assert int(row["valid_pixels"].iloc[0]) == 100 * 100
    assert not row["has_mask_border_nodata"].iloc[0]
    assert not row["has_image_black_border"].iloc[0]
    assert not f["has_mask_border_nodata"].any() and not f["has_image_black_border"].any()


def test_skipped_list_is_capped_and_counted(tmp_path: Path) -> None:
    sizes = [(f"s{i:02d}", 8 + i, 8) for i in range(12)] + [("big", 32, 32)]
    pairs = pairs_for(tmp_path, sizes)
    res = run_ingest(
        pairs, catalog=str(tmp_path / "t.parquet"), patch_size=16, nodata_class=None, workers=1
    )
    rep = res.tiling
    assert (res.images_total, res.images_new, res.tiles_written) == (13, 1, 4)
    assert [(Path(p).name, w, h) for p, w, h in rep.skipped_small] == [
        (f"s{i:02d}_img.tif", 8 + i, 8) for i in range(12)
    ]
    lines = rep.warning_lines()
    assert lines[0] == (
        "warning: 12 images smaller than the 16 px patch skipped (not ingested, --edge drop); "
        "to include them use --edge pad, or --patch-size 8 or less:"
    )
    assert len(lines) == 1 + MAX_LISTED + 1
    assert lines[1] == f"  {_path(tmp_path, 's00')} (8x8 px)"
    assert lines[MAX_LISTED] == f"  {_path(tmp_path, 's09')} (17x8 px)"
    assert lines[-1] == "  ... and 2 more"


def test_every_image_too_small_is_one_error_nothing_written(tmp_path: Path) -> None:
    pairs = pairs_for(tmp_path, [("a", 100, 100), ("b", 300, 90)])
    out = tmp_path / "tiles.parquet"
    code, _, stderr = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "256", "--nodata-class", "none",
        "--edge", "shift", "--catalog", str(out),
    )  # fmt: skip
    assert code == 1
    assert stderr.strip() == (
        f"error: all 2 images listed are smaller than the 256 px patch (largest: "
        f"{_path(tmp_path, 'a')}, 100x100 px); nothing was ingested: use --edge pad, or "
        "--patch-size 90 or less"
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.glob("tiles*")) == []
    with pytest.raises(InputDataError, match="all 2 images listed are smaller"):
        run_ingest(pairs, catalog=str(out), patch_size=256, nodata_class=None, workers=1)


def test_low_drop_coverage_reported_with_the_fix(tmp_path: Path) -> None:
    pairs = pairs_for(tmp_path, [("exact", 512, 512), ("near", 520, 520), ("far", 600, 600)])
    args = ("catalog", "ingest", str(pairs), "--patch-size", "256", "--nodata-class", "none")
    code, _, stderr = invoke(*args, "--catalog", str(tmp_path / "drop.parquet"))
    assert code == 0, stderr
    far = _path(tmp_path, "far")
    assert stderr.splitlines()[-2:] == [
        "warning: 1 image has less than 90 % of its pixels in tiles with --edge drop "
        f"(worst 72.8 %: {far}); use --edge shift or --edge pad to cover the edges:",
        f"  {far} (72.8 % in tiles)",
    ]
    code, _, stderr = invoke(*args, "--edge", "shift", "--catalog", str(tmp_path / "s.parquet"))
    assert code == 0 and "less than 90 %" not in stderr


def test_report_lines_and_empty_report() -> None:
    assert TilingReport().warning_lines() == [] and TilingReport().info_lines() == []
    rep = TilingReport(
        patch_size=256,
        low_coverage=[("/d/a.tif", 0.5), ("/d/b.tif", 0.8)],
        padded_tiles=3,
        padded_missing_pixels=3 * 1000,
        padded_window_pixels=3 * 4000,
    )
    assert rep.padded_missing_share == 0.25
    assert rep.warning_lines()[0].startswith(
        "warning: 2 images have less than 90 % of their pixels in tiles with --edge drop "
        "(worst 50.0 %: /d/a.tif)"
    )
    assert rep.info_lines() == [
        "Padded: 3 tiles run past the image edge (--edge pad) and are kept; 25.0 % of their "
        "pixels lie outside the image and count as nodata (nodata_ratio), not as a class"
    ]


# ----------------------------------------------------------------------------- build summary


def _build_config(tiles: Path, out: Path, **exclusion: Any) -> Any:
    data = {
        "balanced_dataset": {
            "mode": "masks_only",
            "sampling_method": "rank_max",
            "input": {"tiles": str(tiles)},
            "clustering": {"k_selection": "fixed", "k": 2},
            "exclusion": {"exclude_border_nodata": True, "exclude_black_border": True, **exclusion},
            "output": {"csv_path": str(out)},
        }
    }
    return validate_mapping(data, BalancedFile, "test.yaml").balanced_dataset


def test_build_keeps_padded_tiles_and_says_so(mixed: Path, tmp_path: Path) -> None:
    tiles = tmp_path / "pad.parquet"
    run_ingest(
        mixed, catalog=str(tiles), patch_size=PATCH, edge="pad", nodata_class=None, workers=1
    )
    small = _path(mixed.parent, "small")
    result = run_balanced(_build_config(tiles, tmp_path / "b.csv"))
    assert result.n_tiles == 13 and result.n_excluded == 0
    note = (
        "padded tiles (windows past the image edge, --edge pad): 1, 1 kept and 0 excluded; their "
        "pixels outside the image count as nodata (nodata_ratio), never as a border"
    )
    assert note in result.warnings
    out = pd.read_csv(tmp_path / "b.csv")
    row = out.loc[out["image_path"] == small]
    assert len(row) == 1 and not bool(row["excluded"].iloc[0])
    assert float(row["sampler_weight"].iloc[0]) > 0
    # the user's own nodata limit still applies (84.7 % missing > 50 %): counted as excluded
    strict = run_balanced(_build_config(tiles, tmp_path / "c.csv", max_nodata_ratio=0.5))
    assert strict.n_excluded == 1
    assert note.replace("1 kept and 0 excluded", "0 kept and 1 excluded") in strict.warnings


def test_padded_note_without_padding_or_rasters(mixed: Path, tmp_path: Path) -> None:
    tiles = tmp_path / "drop.parquet"
    run_ingest(mixed, catalog=str(tiles), patch_size=PATCH, nodata_class=None, workers=1)
    frame = read_tile_table(tiles).frame
    assert padded_tiles_note(frame, np.zeros(len(frame), bool)) == []  # nodata_ratio 0: no read
    ghost = pd.DataFrame(
        {
            "image_path": ["/nowhere/x.tif", "/nowhere/x.tif"],
            "row_off": [0, 0],
            "col_off": [0, 256],
            "height": [256, 256],
            "width": [256, 256],
            "nodata_ratio": [0.0, 0.5],
        }
    )
    padded, unreadable = padded_tiles(ghost)
    assert padded.tolist() == [False, False] and unreadable == ["/nowhere/x.tif"]
    assert padded_tiles_note(ghost, np.zeros(2, bool)) == [
        "padded tiles: none found; 1 source image could not be opened to check for padded "
        "tiles (first: /nowhere/x.tif)"
    ]


# ----------------------------------------------------------------------------- PostGIS


@pytest.mark.db
def test_postgis_small_image_not_a_source_until_pad(mixed: Path, fresh_database_url: str) -> None:
    import psycopg

    assert invoke("catalog", "init", "--catalog", fresh_database_url)[0] == 0
    args = ("catalog", "ingest", str(mixed), "--patch-size", str(PATCH), "--nodata-class", "none")
    code, stdout, stderr = invoke(*args, "--catalog", fresh_database_url)
    assert code == 0, stderr
    assert "now holds 12 tiles of 3 source images" in stdout
    assert "warning: 1 image smaller than the 256 px patch skipped" in stderr
    small = _path(mixed.parent, "small")
    with psycopg.connect(fresh_database_url) as conn:
        paths = {r[0] for r in conn.execute("select image_path from source_image")}
    assert len(paths) == 3 and small not in paths

    code, stdout, stderr = invoke(*args, "--edge", "pad", "--catalog", fresh_database_url)
    assert code == 0, stderr
    assert "4 scanned (1 new, 3 changed)" in stdout
    assert "now holds 13 tiles of 4 source images" in stdout
    assert "Padded: 1 tile runs past the image edge (--edge pad) and is kept" in stdout
    with psycopg.connect(fresh_database_url) as conn:
        got = conn.execute(
            "select t.nodata_ratio, t.valid_pixels, t.has_mask_border_nodata, "
            "t.has_image_black_border, s.edge_policy from tile t join source_image s "
            "on s.id = t.source_image_id where s.image_path = %s",
            (small,),
        ).fetchall()
    assert len(got) == 1
    assert got[0][0] == pytest.approx(SMALL_MISSING, abs=1e-12)
    assert got[0][1:] == (100 * 100, False, False, "pad")


def test_padded_tile_flags_come_from_pixels_inside_the_raster(tmp_path: Path) -> None:
    mask = striped_mask(40, 40)
    mask[:, 39] = 0  # real nodata on the raster's last column (inside window (0, 32))
    image = textured_image(40, 40, 1)
    image[:, 20:32, 39] = 0  # a real black collar run of 12 on the same column
    img, msk = write_pair(tmp_path, "p", mask, image)
    src = inspect_pair(PairSpec(str(img), str(msk)))
    table = scan([src], [tile_windows(40, 40, 32, edge="pad")], nodata_class=0, workers=1)
    f = table.frame
    # windows (0,0), (0,32), (32,0), (32,32): only (0,32) and (32,32) hold column 39
    assert f["has_mask_border_nodata"].tolist() == [False, True, False, True]
    assert f["has_image_black_border"].tolist() == [False, True, False, False]
    # nodata_ratio = (nodata class + outside) / window: (0,32) has 32 nodata px + 768 outside
    assert f["nodata_ratio"].tolist() == pytest.approx(
        [0.0, (32 + 1024 - 256) / 1024, (1024 - 256) / 1024, (8 + 1024 - 64) / 1024]
    )
