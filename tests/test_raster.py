from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from smt_tools.errors import InputDataError, RasterMismatchError, RasterOpenError
from smt_tools.raster import PairSpec, RasterCache, inspect_pair, scan, tile_windows
from smt_tools.raster.stats import image_black_border, mask_window_stats, ring, window_stats
from smt_tools.tiletable import entropy_from_counts, tile_key
from tests.rasters import write_pair, write_tif


def test_tile_windows_edge_policies() -> None:
    drop = tile_windows(10, 7, 4, 3, "drop")
    assert drop[:, :2].tolist() == [[0, 0], [0, 3], [0, 6], [3, 0], [3, 3], [3, 6]]
    shift = tile_windows(10, 7, 4, 4, "shift")
    assert sorted({int(r) for r in shift[:, 0]}) == [0, 3]
    assert sorted({int(c) for c in shift[:, 1]}) == [0, 4, 6]
    pad = tile_windows(10, 7, 4, 4, "pad")
    assert sorted({int(c) for c in pad[:, 1]}) == [0, 4, 8]
    assert (pad[:, 2:] == 4).all()


def test_tile_windows_patch_larger_than_image() -> None:
    with pytest.raises(InputDataError, match="larger than the image"):
        tile_windows(100, 100, 256, source="a.tif")
    assert tile_windows(100, 100, 256, edge="pad").tolist() == [[0, 0, 256, 256]]


def test_ring_and_flags() -> None:
    m = np.ones((4, 4), np.uint8)
    assert ring(m).size == 12
    m[2, 2] = 0  # interior nodata does not make a border flag
    counts, nd, border = mask_window_stats(m, 0)
    assert (nd, border, int(counts[1])) == (1, False, 15)
    m[0, 3] = 0
    assert mask_window_stats(m, 0)[2] is True
    img = np.full((3, 4, 4), 50, np.uint8)
    assert image_black_border(img) is False
    img[:, 3, 1] = 0  # one ring pixel black in every band: a shadow, not a border
    assert image_black_border(img) is False
    img[:, 3, :] = 0  # the whole (4-px) bottom edge black
    assert image_black_border(img) is True
    img2 = np.full((3, 4, 4), 50, np.uint8)
    img2[0, 0, :] = 0  # black in one band only: not black
    assert image_black_border(img2) is False
    assert image_black_border(img2, tolerance=60) is True


def test_stats_refuse_other_layouts() -> None:
    """Each window function checks ndim and names the expected and the received shape."""
    mask = np.ones((4, 4), np.uint8)
    img = np.full((3, 4, 4), 50, np.uint8)
    cases = [
        (lambda: image_black_border(img[0]), r"image window must be a 3-D array \(bands, h, w\)"
         r"; got shape \(4, 4\) \(2-D\)"),
        (lambda: image_black_border(img[None]), r"got shape \(1, 3, 4, 4\) \(4-D\)"),
        (lambda: mask_window_stats(mask[None], 0), r"mask window must be a 2-D array \(h, w\)"
         r"; got shape \(1, 4, 4\) \(3-D\)"),
        (lambda: mask_window_stats(mask[0], 0), r"got shape \(4,\) \(1-D\)"),
        (lambda: ring(mask[0]), r"ring input must be an array of at least 2 dimensions "
         r"\(\.\.\., h, w\); got shape \(4,\) \(1-D\)"),
        (lambda: window_stats(mask, img[0]), r"image window must be a 3-D array"),
        (lambda: window_stats(mask[None], img), r"mask window must be a 2-D array"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # the accepted layouts still work, including a stack of windows for ring
    assert ring(np.ones((2, 4, 4))).shape == (2, 12)
    stats = window_stats(mask, img)
    assert stats.window_pixels == 16 and stats.nodata_pixels == 0
    assert stats.has_image_black_border is False


def test_entropy_known_values() -> None:
    ent = entropy_from_counts(np.array([[5, 5, 0], [10, 0, 0], [0, 0, 0]]))
    assert ent[0] == pytest.approx(math.log(2))
    assert ent[1] == 0.0
    assert math.isnan(ent[2])


def _hand_pair(tmp_path: Path) -> tuple[Path, Path]:
    # 8x8 raster, 4x4 tiles. Classes 1,2,3; nodata 0 on the left column of the top-left tile.
    mask = np.ones((8, 8), np.uint8)
    mask[0:4, 4:8] = 2
    mask[4:8, 0:2] = 3
    mask[0:4, 0] = 0
    image = np.full((3, 8, 8), 100, np.uint8)
    image[:, 7, 4:8] = 0  # black bottom row of the bottom-right tile
    return write_pair(tmp_path, "hand", mask, image)


def test_scan_hand_built_tiles(tmp_path: Path) -> None:
    img, msk = _hand_pair(tmp_path)
    src = inspect_pair(PairSpec(str(img), str(msk)))
    win = tile_windows(src.image.width, src.image.height, 4)
    table = scan([src], [win], nodata_class=0, workers=1)
    f = table.frame
    assert table.class_values.tolist() == [1, 2, 3]
    assert table.counts.tolist() == [[12, 0, 0], [0, 16, 0], [8, 0, 8], [16, 0, 0]]
    assert f["valid_pixels"].tolist() == [12, 16, 16, 16]
    assert f["nodata_ratio"].tolist() == [0.25, 0.0, 0.0, 0.0]
    assert f["has_mask_border_nodata"].tolist() == [True, False, False, False]
    assert f["has_image_black_border"].tolist() == [False, False, False, True]
    assert f["class_entropy"].tolist() == pytest.approx([0.0, 0.0, math.log(2), 0.0])
    # footprints: origin (500000, 5000000), 1 m pixels, north-up
    assert f.loc[1, ["minx", "miny", "maxx", "maxy"]].tolist() == [500004, 4999996, 500008, 5000000]
    assert f["crs"].unique().tolist() == ["EPSG:32631"]
    assert f.loc[2, "tile_id"] == tile_key(img, 4, 0, 4, 4)


def test_scan_pad_counts_missing_pixels_as_nodata(tmp_path: Path) -> None:
    img, msk = write_pair(tmp_path, "p", np.ones((6, 6), np.uint8))
    src = inspect_pair(PairSpec(str(img), str(msk)))
    table = scan([src], [tile_windows(6, 6, 4, 4, "pad")], workers=1)
    f = table.frame
    assert f["nodata_ratio"].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.75])
    # the missing pixels are nodata but never a border flag (the padded tiles are kept)
    assert f["has_mask_border_nodata"].tolist() == [False, False, False, False]
    assert f["has_image_black_border"].tolist() == [False, False, False, False]


def test_scan_parallel_equals_serial(demo_dir: Path) -> None:
    import pandas as pd

    pairs = pd.read_csv(demo_dir / "pairs.csv")
    sources = [
        inspect_pair(PairSpec(str(demo_dir / r.image), str(demo_dir / r.mask)))
        for r in pairs.itertuples()
    ]
    wins = [tile_windows(s.image.width, s.image.height, 128) for s in sources]
    a = scan(sources, wins, nodata_class=0, workers=1)
    b = scan(sources, wins, nodata_class=0, workers=2, chunk_size=5)
    assert np.array_equal(a.counts, b.counts)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert len(a) == 4 * 16
    assert a.class_values.tolist() == [1, 2, 3, 4, 5, 6]


def test_pair_mismatch_names_both_files(tmp_path: Path) -> None:
    img = write_tif(tmp_path / "a.tif", np.zeros((3, 8, 8), np.uint8))
    msk = write_tif(tmp_path / "b.tif", np.zeros((9, 8), np.uint8))
    with pytest.raises(RasterMismatchError, match=r"a\.tif.*b\.tif.*size 8x8 vs 8x9"):
        inspect_pair(PairSpec(str(img), str(msk)))
    msk2 = write_tif(tmp_path / "c.tif", np.zeros((8, 8), np.uint8), crs="EPSG:32632")
    with pytest.raises(RasterMismatchError, match="CRS EPSG:32631 vs EPSG:32632"):
        inspect_pair(PairSpec(str(img), str(msk2)))


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    cache = RasterCache(2)
    with pytest.raises(RasterOpenError, match=r"nope\.tif: file not found"):
        cache.get(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(RasterOpenError, match=r"bad\.tif: not a readable raster"):
        cache.get(bad)


def test_lru_cache_closes_evicted_handles(tmp_path: Path) -> None:
    paths = [write_tif(tmp_path / f"{i}.tif", np.zeros((4, 4), np.uint8)) for i in range(3)]
    with RasterCache(2) as cache:
        first = cache.get(paths[0])
        cache.get(paths[1])
        assert cache.get(paths[0]) is first  # hit, and now most recent
        cache.get(paths[2])  # evicts paths[1]
        assert len(cache) == 2
        assert str(paths[1]) not in cache
        assert not first.closed
    assert first.closed


# --- the one windowed reader (smt_tools.raster.window) ------------------------------------


def _bands_tif(tmp_path: Path, dtype: str = "uint8") -> tuple[Path, np.ndarray]:
    """A 3-band 12 x 10 raster whose pixel (b, r, c) holds 100*b + 10*r + c (1-based band)."""
    b, r, c = np.meshgrid(np.arange(1, 4), np.arange(12), np.arange(10), indexing="ij")
    data = (100 * (b - 1) + 10 * r + c).astype(dtype)
    return write_tif(tmp_path / f"bands_{dtype}.tif", data), data


def test_read_window_inside_partly_and_fully_outside(tmp_path: Path) -> None:
    from smt_tools.raster.handles import open_raster
    from smt_tools.raster.window import inside_part, read_window

    path, data = _bands_tif(tmp_path)
    with open_raster(path) as ds:
        # wholly inside: the raster's dtype, no mask, every band when bands is None
        out, inside = read_window(ds, 2, 3, 4, 5, None, 0)
        assert inside is None and out.dtype == np.uint8 and out.shape == (3, 4, 5)
        assert np.array_equal(out, data[:, 2:6, 3:8])
        # partly outside (top-left and bottom-right), one band as a list
        out, inside = read_window(ds, -2, 8, 4, 5, [2], 7)
        assert out.shape == (1, 4, 5) and out.dtype == np.uint8 and inside is not None
        assert inside.sum() == 2 * 2 and inside[2:, :2].all()
        assert np.array_equal(out[0, 2:, :2], data[1, 0:2, 8:10])
        assert (out[0][~inside] == 7).all()
        # bands in the order asked, past the bottom edge
        out, inside = read_window(ds, 10, 0, 4, 3, [3, 1], 0)
        assert np.array_equal(out[:, :2], data[[2, 0], 10:12, 0:3]) and (out[:, 2:] == 0).all()
        # wholly outside: all fill, an all-False mask (nothing is read)
        out, inside = read_window(ds, 50, 50, 3, 2, [1], 9)
        assert out.shape == (1, 3, 2) and (out == 9).all()
        assert inside is not None and inside.shape == (3, 2) and not inside.any()
    assert inside_part(-2, 8, 4, 5, 12, 10) == (0, 8, 2, 10)
    assert inside_part(12, 0, 4, 4, 12, 10) is None
    assert inside_part(0, -4, 4, 4, 12, 10) is None


def test_read_window_fill_dtype_rules(tmp_path: Path) -> None:
    """Default: the dtype widens to hold the fill; keep_dtype: the raster's dtype with the fill
    rounded and clamped exactly as a GDAL boundless read stores it."""
    from rasterio.windows import Window

    from smt_tools.raster.handles import open_raster
    from smt_tools.raster.window import read_window

    for dtype in ("uint8", "int16", "float32"):
        path, _ = _bands_tif(tmp_path, dtype)
        with open_raster(path) as ds:
            out, _ = read_window(ds, -3, 5, 6, 8, [1], 255)
            assert out.dtype == np.result_type(np.dtype(dtype), np.uint8)
            out, _ = read_window(ds, -3, 5, 6, 8, [1], -1)
            assert out.dtype == {"uint8": np.int16, "int16": np.int16, "float32": np.float32}[dtype]
            assert out[0, 0, 0] == -1
            for fill in (0.0, 3.0, 2.5, -0.5, -1.5, 300.0, 1e10, float("nan")):
                out, inside = read_window(ds, -3, 5, 6, 8, [1, 2], fill, keep_dtype=True)
                ref = ds.read([1, 2], window=Window(5, -3, 8, 6), boundless=True, fill_value=fill)
                assert out.dtype == np.dtype(dtype) and inside is not None
                assert np.array_equal(out, ref, equal_nan=dtype == "float32"), (dtype, fill)
    with open_raster(path) as ds:  # a window inside is never widened, whatever the fill
        assert read_window(ds, 0, 0, 2, 2, [1], -1)[0].dtype == np.float32


def test_read_pixels_names_the_window_asked_for(tmp_path: Path) -> None:
    from rasterio.windows import Window

    from smt_tools.errors import RasterReadError
    from smt_tools.raster.handles import open_raster
    from smt_tools.raster.window import read_pixels

    path, data = _bands_tif(tmp_path)
    with open_raster(path) as ds:
        assert np.array_equal(read_pixels(ds, str(path), 2, Window(1, 2, 3, 4)), data[1, 2:6, 1:4])
        # a band the file does not have: one line naming the file, the window asked for, the cause
        with pytest.raises(RasterReadError, match=r"row_off=-1 col_off=0 size=5x3 \(GDAL: band"):
            read_pixels(ds, str(path), [9], Window(0, 0, 3, 4), (-1, 0, 5, 3))
