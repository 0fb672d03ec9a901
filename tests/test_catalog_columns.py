"""The catalog's column work at 10M rows, in bounded memory and with unchanged numbers.

Reading: :func:`smt_tools.catalog.copy_read.tile_table` builds the TileTable around the COPY
arrays (no copy when every class has pixels; classes without pixels dropped, the rest in class
value order) and computes footprints a batch of rows at a time, exactly as all rows at once.
Writing: a run's ``tile_result`` rows are COPY text made by Arrow's string kernels
(:func:`smt_tools.catalog.runs.result_copy_text`): known text, and every double read back from
PostGIS is the very double written.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smt_tools import catalog as cat
from smt_tools.catalog import copy_read
from smt_tools.catalog.runs import first_duplicate, load_run_results, result_copy_text
from smt_tools.tiletable import TILE_COLUMNS

#: source_image rows: id, group_id, image_path, mask_path, transform, crs, nodata, mask_band
SOURCES = [
    (11, "g1", "/a.tif", "/a_m.tif", [0.5, 0.0, 100.0, 0.0, -0.5, 200.0], "EPSG:32631", 0, None),
    (22, "g2", "/b.tif", "/b_m.tif", [0.0, 2.0, 10.0, 2.0, 0.0, 20.0], "EPSG:32632", 0, 2),
]


def _cols(counts: list[list[int]]) -> dict[str, np.ndarray]:
    """COPY columns of 3 tiles: two of source 11, one of source 22 (rows by tile id)."""
    i8 = np.int64
    return {
        "id": np.array([1, 2, 3], i8),
        "source_image_id": np.array([11, 22, 11], i8),
        "row_off": np.array([2, 0, 4], i8),
        "col_off": np.array([4, 1, 0], i8),
        "height": np.array([2, 3, 4], i8),
        "width": np.array([3, 5, 4], i8),
        "valid_pixels": np.array([6, 15, 16], i8),
        "nodata_ratio": np.array([0.0, 0.0, 0.0]),
        "class_entropy": np.array([0.0, np.nan, 0.5]),
        "has_mask_border_nodata": np.array([False, True, False]),
        "has_image_black_border": np.array([True, False, False]),
        "counts": np.array(counts, i8),
    }


@pytest.mark.parametrize("batch", [1, 2, 1 << 19])
def test_footprints_known_values_in_any_batching(
    monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(copy_read, "_BOUNDS_ROWS", batch)
    classes = [(1, 1), (2, 2)]  # (position, class value)
    table = copy_read.tile_table(_cols([[6, 0], [5, 10], [8, 8]]), SOURCES, classes, "t")
    f = table.frame
    # tile 1: x = 100 + 0.5 col over cols 4..7, y = 200 - 0.5 row over rows 2..4
    assert f.loc[0, ["minx", "miny", "maxx", "maxy"]].tolist() == [102.0, 198.0, 103.5, 199.0]
    # tile 2 (swapped axes): x = 10 + 2 row over rows 0..3, y = 20 + 2 col over cols 1..6
    assert f.loc[1, ["minx", "miny", "maxx", "maxy"]].tolist() == [10.0, 22.0, 16.0, 32.0]
    assert f.loc[2, ["minx", "miny", "maxx", "maxy"]].tolist() == [100.0, 196.0, 102.0, 198.0]
    assert list(f.columns) == [*TILE_COLUMNS, "mask_band"]
    assert f["crs"].tolist() == ["EPSG:32631", "EPSG:32632", "EPSG:32631"]
    assert f["mask_band"].tolist() == [1, 2, 1] and table.nodata_class == 0


def test_counts_kept_as_read_or_reordered_without_empty_classes() -> None:
    cols = _cols([[6, 0], [5, 10], [8, 8]])
    counts = cols["counts"]
    table = copy_read.tile_table(cols, SOURCES, [(1, 1), (2, 2)], "t", categorical=True)
    assert table.counts is counts and cols == {}  # the COPY's array, no second one
    assert table.frame["image_path"].dtype == "category"
    assert table.frame["image_path"].tolist() == ["/a.tif", "/b.tif", "/a.tif"]
    # catalog positions 1..3 hold classes 5, 0 (no pixel) and 2: kept in class value order
    cols = _cols([[1, 0, 7], [2, 0, 0], [3, 0, 9]])
    table = copy_read.tile_table(cols, SOURCES, [(1, 5), (2, 0), (3, 2)], "t")
    assert table.class_values.tolist() == [2, 5]
    assert table.counts.tolist() == [[7, 1], [0, 2], [9, 3]]


def test_result_copy_text_known_text() -> None:
    results = pd.DataFrame(
        {
            "tile_id": [5, 3, 9],
            "sampler_weight": [0.1, np.nan, 1e-05],
            "freq_cluster_id": [2, -1, 0],
            "excluded": [False, True, False],
            "exclusion_reason": pd.Categorical(["", "a\tb", None]),
            "fold": [1.0, np.nan, 3.0],  # float with NaN: value by value
        }
    )
    cols = ["sampler_weight", "freq_cluster_id", "excluded", "exclusion_reason", "fold"]
    text = b"".join(result_copy_text(7, results, cols, chunk_rows=2)).decode()
    assert text == (
        "7\t5\t0.1\t2\tf\t\t1\n7\t3\t\\N\t-1\tt\ta\\tb\t\\N\n7\t9\t0.00001\t0\tf\t\\N\t3\n"
    )


def test_first_duplicate() -> None:
    assert first_duplicate(pd.Series([1, 5, 9])) is None  # ascending: no hash table
    assert first_duplicate(pd.Series([9, 1, 5])) is None
    assert first_duplicate(pd.Series([4, 7, 7, 4])) == 7  # the first row repeating another


@pytest.mark.db
def test_recorded_doubles_read_back_exactly(fresh_database_url: str, tmp_path: Path) -> None:
    from tests.catalog_data import two_scenes
    from tests.test_catalog import ND0, invoke

    # doubles whose shortest text differs from repr (0.00001, 5e-324, ...) or is extreme
    weights = [1 / 3, 0.1, 1e-05, 5e-324, 1.7976931348623157e308, -0.0, 2.5e-300, 123456.789]
    engine = cat.connect(fresh_database_url)
    try:
        cat.apply_migrations(engine)
        pairs = two_scenes(tmp_path)
        ingest = ["catalog", "ingest", str(pairs), "--patch-size", "4", *ND0]
        assert invoke(*ingest, "--catalog", fresh_database_url)[0] == 0
        ids = np.sort(cat.load_tiles(engine).frame["tile_id"].to_numpy())
        assert len(ids) == len(weights)
        results = pd.DataFrame({"tile_id": ids, "sampler_weight": weights})
        results["uniqueness_score"] = np.where(np.arange(len(ids)) % 2, np.nan, 0.7)
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        run_id = cat.record_run(engine, "x", {}, {}, results, t0, t0)
        _, back = load_run_results(engine, run_id, ["sampler_weight", "uniqueness_score"])
    finally:
        engine.dispose()
    assert back["tile_id"].tolist() == ids.tolist()
    got = back["sampler_weight"].to_numpy(np.float64)
    assert got.tobytes() == np.asarray(weights, np.float64).tobytes()  # bit for bit
    u = back["uniqueness_score"].to_numpy(np.float64)
    assert np.isnan(u[1::2]).all() and (u[::2] == 0.7).all()
