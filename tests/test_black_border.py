"""The black-border rule (issue 11 A3): a run of black pixels along one window edge, at least
``max(8 px, 2 % of the edge)`` long, makes a border; a shadow pixel or a few dark pixels do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smt_tools.catalog.parquet_io import read_tile_table
from smt_tools.cli.app import app
from smt_tools.raster import PairSpec, inspect_pair, scan, tile_windows
from smt_tools.raster.stats import (
    BLACK_BORDER_MIN_RUN,
    BLACK_BORDER_MIN_SHARE,
    black_run_threshold,
    image_black_border,
)
from tests.catalog_data import write_pairs_csv
from tests.rasters import write_pair
from tests.tiling_data import scene, striped_mask, textured_image

runner = CliRunner()


def _img(size: int = 256, seed: int = 0) -> np.ndarray:
    return textured_image(size, size, seed)


def test_threshold_values() -> None:
    assert (BLACK_BORDER_MIN_RUN, BLACK_BORDER_MIN_SHARE) == (8, 0.02)
    assert black_run_threshold(256) == 8
    assert black_run_threshold(400) == 8  # 2 % of 400 = 8 exactly
    assert black_run_threshold(401) == 9  # 8.02 -> 9
    assert black_run_threshold(512) == 11
    assert black_run_threshold(1024) == 21
    assert black_run_threshold(4) == 4  # short edges: the whole edge
    assert black_run_threshold(1) == 2  # a 1-px edge is one pixel: never a border alone


def test_shadow_pixel_and_runs_on_a_256_window() -> None:
    clean = _img()
    assert image_black_border(clean) is False
    img = clean.copy()
    img[:, 0, 100] = 0  # one pure-black shadow pixel on the top edge
    assert image_black_border(img) is False
    img = clean.copy()
    img[:, 50:57, 0] = 0  # a run of L - 1 = 7 on the left edge
    assert image_black_border(img) is False
    img[:, 57, 0] = 0  # the run is now L = 8 long
    assert image_black_border(img) is True
    img = clean.copy()
    img[:, 0, ::2] = 0  # every other pixel of the top edge: half the edge, no run of 2
    assert image_black_border(img) is False
    img = clean.copy()
    img[:, 255, 0:4] = 0  # two runs of 4 on the bottom edge, 1 px apart: not one run of 8
    img[:, 255, 5:9] = 0
    assert image_black_border(img) is False


def test_runs_on_a_512_window() -> None:
    clean = _img(512)
    img = clean.copy()
    img[:, 511, 200:210] = 0  # L - 1 = 10 on the bottom edge
    assert image_black_border(img) is False
    img[:, 511, 210] = 0
    assert image_black_border(img) is True
    img = clean.copy()
    img[:, 300:311, 511] = 0  # L = 11 on the right edge
    assert image_black_border(img) is True


def test_collars_full_column_and_corner_triangles() -> None:
    clean = _img()
    img = clean.copy()
    img[:, :, 255] = 0  # a full black column on the right edge (a scene edge along the tile)
    assert image_black_border(img) is True
    img = clean.copy()
    img[:, :, 100] = 0  # a black line crossing the tile touches each edge in one pixel only
    assert image_black_border(img) is False
    img = clean.copy()
    img[:, :, 230:] = 0  # the scene ends 26 px before the tile's right edge
    assert image_black_border(img) is True
    # a rotated scene's corner: the triangle r + c < 13 (legs of 5 % of the edge)
    r, c = np.mgrid[0:256, 0:256]
    img = clean.copy()
    img[:, (r + c) < 13] = 0
    assert image_black_border(img) is True
    img = clean.copy()
    img[:, (r + (255 - c)) < 8] = 0  # top-right corner, legs of 8 px = L
    assert image_black_border(img) is True
    img = clean.copy()
    img[:, ((255 - r) + c) < 7] = 0  # a few dark pixels in a corner (legs 7 < L)
    assert image_black_border(img) is False


def test_declared_nodata_tolerance_and_bands() -> None:
    clean = _img()
    img = clean.copy()
    img[:, 0, 20:40] = 255  # a run of the declared nodata value 255 in every band
    assert image_black_border(img) is False
    assert image_black_border(img, image_nodata=255) is True
    assert image_black_border(img, image_nodata=float("nan")) is False
    img = clean.copy()
    img[:2, 0, 20:40] = 0  # black in bands 1 and 2, band 3 is 30: not black
    img[2, 0, 20:40] = 30
    assert image_black_border(img) is False
    assert image_black_border(img, tolerance=29) is False
    assert image_black_border(img, tolerance=30) is True
    one = textured_image(256, 256, 3, bands=1)
    one[0, 100:108, 255] = 0  # single-band image, run of 8 on the right edge
    assert image_black_border(one) is True
    flt = clean.astype(np.float32)
    flt[:, 10:30, 0] = -9999.0  # float image with a nodata collar
    assert image_black_border(flt) is True  # -9999 <= 0 counts as black too
    assert image_black_border(flt + 10000.0, image_nodata=1.0) is True


def test_non_square_and_tiny_windows() -> None:
    img = textured_image(20, 300, 1)
    img[:, 0, 10:18] = 0  # top edge 300 px long: L = 8
    assert image_black_border(img) is True
    img = textured_image(20, 300, 1)
    img[:, 3:10, 299] = 0  # right edge 20 px long, run 7 < 8
    assert image_black_border(img) is False
    tiny = np.full((3, 4, 4), 90, np.uint8)
    tiny[:, 3, :3] = 0
    assert image_black_border(tiny) is False
    tiny[:, 3, 3] = 0  # the whole 4-px bottom edge
    assert image_black_border(tiny) is True
    with pytest.raises(ValueError, match="bands, h, w"):
        image_black_border(np.zeros((4, 4), np.uint8))


def test_scan_flags_a_shadow_pixel_tile_as_clean(tmp_path: Path) -> None:
    """A 512 px scene in four 256 px tiles: shadow pixel (0,0), run of 7 (0,1), collar (1,0),
    corner triangle (1,1)."""
    image = _img(512, seed=5)
    image[:, 100, 255] = 0  # shadow pixel on the right edge of tile (0, 0)
    image[:, 0, 300:307] = 0  # 7 dark pixels on the top edge of tile (0, 1)
    image[:, 256:, 0:20] = 0  # scene collar: the left 20 columns of tile (1, 0)
    r, c = np.mgrid[0:256, 0:256]
    corner = image[:, 256:, 256:]
    corner[:, (r + c) > 2 * 255 - 13] = 0  # bottom-right corner triangle of tile (1, 1)
    img, msk = write_pair(tmp_path, "s", striped_mask(512, 512), image)
    out = tmp_path / "t.parquet"
    pairs = write_pairs_csv(tmp_path / "pairs.csv", [(img.name, msk.name)])
    res = runner.invoke(
        app,
        ["catalog", "ingest", str(pairs), "--patch-size", "256", "--nodata-class", "none",
         "--catalog", str(out), "--workers", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    f = read_tile_table(out).frame
    assert f[["row_off", "col_off"]].to_numpy().tolist() == [[0, 0], [0, 256], [256, 0], [256, 256]]
    assert f["has_image_black_border"].tolist() == [False, False, True, True]


def test_scan_declared_nodata_and_padded_window(tmp_path: Path) -> None:
    image = textured_image(40, 40, 2)
    image[:, 39, 0:12] = 200  # declared nodata run on the bottom image edge
    img, msk = scene(tmp_path, "nd", 40, 40, image=image)
    img2, msk2 = write_pair(
        tmp_path, "tagged", striped_mask(40, 40), image, nodata=200, origin=(600_000.0, 5e6)
    )
    plain = inspect_pair(PairSpec(str(img), str(msk)))
    tagged = inspect_pair(PairSpec(str(img2), str(msk2)))
    win = tile_windows(40, 40, 32, edge="pad")  # 4 windows, 3 of them past the edge
    table = scan([plain, tagged], [win, win], nodata_class=None, workers=1)
    flags = table.frame["has_image_black_border"].tolist()
    # windows (0,0), (0,32), (32,0), (32,32); the nodata run sits on image row 39, cols 0-11:
    # inside tile (32, 0) only (its inside part's bottom edge); padding itself is never a border
    assert flags[:4] == [False, False, False, False]
    assert flags[4:] == [False, False, True, False]
    assert not table.frame["has_mask_border_nodata"].any()
    assert table.frame["nodata_ratio"].tolist()[:4] == pytest.approx(
        [0.0, 1 - 8 * 32 / 1024, 1 - 8 * 32 / 1024, 1 - 64 / 1024]
    )
