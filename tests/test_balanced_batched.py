"""build-balanced-dataset in bounded memory gives exactly the numbers of the whole-table path.

The tile table is read row group by row group, canonical-order numbers are gathered in
batches, distinct CLR rows come from a partial sort and the output is written batch by batch;
each piece is compared here with what it replaces, to the bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from smt_tools.catalog.parquet_io import (
    read_tile_table,
    read_tile_table_batched,
    tile_table_writer,
    write_tile_table,
)
from smt_tools.config import load_config
from smt_tools.config.balanced import BalancedFile
from smt_tools.curation.composition import clr, cluster_weights, unique_rows
from smt_tools.export.csv_out import (
    write_balanced_csv,
    write_balanced_parquet,
    write_balanced_tables,
)
from smt_tools.pipelines import _balanced_canon
from smt_tools.pipelines._tiling_report import padded_tiles_note
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.tiletable import TileTable, entropy_from_counts, tile_keys

PATHS = ("group_id", "image_path", "mask_path", "crs")


def _tiles(n_images: int, per_image: int, seed: int, root: str = "/nowhere") -> TileTable:
    """Tiles of 64 px on ``n_images`` images, counts of classes 1..4 with ties (pure tiles,
    repeated compositions), some nodata; rows shuffled so input order != tile_id order."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_images):
        img = f"{root}/img_{i}.tif"
        k = np.arange(per_image)
        row, col, h = (k // 4) * 64, (k % 4) * 64, np.full(per_image, 64, np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": tile_keys(img, row, col, h, h),
                    "source_image_id": i + 1,
                    "group_id": f"g{i % 3}",
                    "image_path": img,
                    "mask_path": f"{root}/mask_{i}.tif",
                    "row_off": row,
                    "col_off": col,
                    "height": h,
                    "width": h,
                    "minx": col * 1.0,
                    "miny": -(row + 64.0),
                    "maxx": col + 64.0,
                    "maxy": -row * 1.0,
                    "crs": "EPSG:32631" if i % 2 else "",
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    n = len(frame)
    counts = rng.integers(0, 4, (n, 4)) * rng.integers(1, 256, (n, 1))  # <= 3060 px
    full = rng.random(n) < 0.7  # the others: the rest of the window is nodata
    counts[full, 0] += 4096 - counts[full].sum(axis=1)
    counts[rng.random(n) < 0.2] = [4096, 0, 0, 0]  # pure tiles: many equal rows
    nodata = 4096 - counts.sum(axis=1)
    frame["valid_pixels"] = counts.sum(axis=1)
    frame["nodata_ratio"] = nodata / 4096
    frame["class_entropy"] = entropy_from_counts(counts)
    frame["has_mask_border_nodata"] = rng.random(n) < 0.05
    frame["has_image_black_border"] = rng.random(n) < 0.05
    order = rng.permutation(n)
    table = TileTable(frame, counts, np.arange(1, 5), 0)
    return table.take(order)


def _chunked(table: TileTable, path: Path, chunk: int) -> None:
    with tile_table_writer(path) as write:
        for s in range(0, len(table), chunk):
            write(table.take(np.arange(s, min(s + chunk, len(table)))))


def test_batched_reader_equals_whole_reader(tmp_path: Path) -> None:
    table = _tiles(7, 16, seed=1)
    path = tmp_path / "t.parquet"
    _chunked(table, path, 30)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    whole, batched = read_tile_table(path), read_tile_table_batched(path)
    assert list(batched.frame.columns) == list(whole.frame.columns)
    for c in PATHS:
        assert isinstance(batched.frame[c].dtype, pd.CategoricalDtype)
        cats = list(batched.frame[c].cat.categories)
        assert cats == sorted(cats)
    frame = batched.frame.astype({c: whole.frame[c].dtype for c in PATHS})
    pd.testing.assert_frame_equal(frame, whole.frame, check_exact=True)
    assert np.array_equal(batched.counts, whole.counts) and batched.counts.dtype == np.int64
    assert np.array_equal(batched.class_values, [1, 2, 3, 4]) and batched.nodata_class == 0


def test_chunked_writer_equals_one_write(tmp_path: Path) -> None:
    table = _tiles(3, 16, seed=2)
    _chunked(table, tmp_path / "a.parquet", 20)
    write_tile_table(table, tmp_path / "b.parquet")
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.equals(b) and a.schema.metadata == b.schema.metadata


@pytest.mark.parametrize("seed", range(6))
def test_unique_rows_is_np_unique(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 4000)), int(rng.integers(1, 7))
    counts = rng.integers(0, 3, (n, c)) * rng.integers(1, 3, (n, 1))  # proportional rows tie
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    x = clr(p)
    distinct, inverse, mult = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    d2, i2, m2 = unique_rows(x)
    assert d2.tobytes() == distinct.tobytes()
    assert np.array_equal(i2, inverse.reshape(-1)) and np.array_equal(m2, mult)
    assert i2.dtype == np.int64 and m2.dtype == np.int64


def test_clr_in_place_keeps_the_numbers() -> None:
    p = np.array([[0.9, 0.1], [0.25, 0.75]])
    logp = np.log(p + 1e-6)
    assert clr(p).tobytes() == (logp - logp.mean(axis=1, keepdims=True)).tobytes()
    assert np.allclose(clr(p)[0], [1.0986, -1.0986], atol=1e-4)
    assert p[0, 0] == 0.9  # the input is untouched


def test_cluster_weights_fast_path() -> None:
    sizes, w = cluster_weights(np.array([0, 0, 1, 1, 1, 2]))
    assert sizes.tolist() == [2, 2, 3, 3, 3, 1] and sizes.dtype == np.int64
    assert w.tolist() == [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0]
    sizes, w = cluster_weights(np.array([-5, 7, 7]))  # any ids: the sorting path
    assert sizes.tolist() == [1, 2, 2] and w.tolist() == [1.0, 0.5, 0.5]


def test_gathered_numbers_equal_the_sorted_copy() -> None:
    table = _tiles(4, 16, seed=3)
    perm = np.argsort(table.frame["tile_id"].to_numpy(), kind="stable")
    canon = table.take(perm)
    rows = perm[::3]
    got = _balanced_canon.proportions_of(table, rows, batch=5)
    assert got.tobytes() == table.take(rows).proportions().tobytes()
    assert np.array_equal(
        _balanced_canon.counts_float(table, perm, batch=7), canon.counts.astype(np.float64)
    )
    keep = np.zeros(len(table), bool)
    keep[rows] = True
    sums = _balanced_canon.column_sums(table, keep, batch=6)
    assert np.array_equal(sums, table.counts[keep].sum(axis=0))


def _raster(path: Path, size: int) -> None:
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
        crs="EPSG:32631", transform=from_origin(500_000, 0, 1, 1),
    ) as ds:  # fmt: skip
        ds.write(np.ones((1, size, size), np.uint8))


def test_padded_note_equals_the_whole_table_note(tmp_path: Path) -> None:
    table = _tiles(5, 16, seed=4, root=str(tmp_path))
    for i in (0, 2, 3):  # 224 px: the last column and row of 64-px windows run past the edge
        _raster(tmp_path / f"img_{i}.tif", 224)  # images 1 and 4 cannot be opened
    perm = np.argsort(table.frame["tile_id"].to_numpy(), kind="stable")
    canon = table.take(perm)
    back = np.empty(len(table), np.int64)
    back[perm] = np.arange(len(table))
    excluded = canon.frame["has_image_black_border"].to_numpy(bool) | (
        np.arange(len(table)) % 4 == 0
    )
    want = padded_tiles_note(canon.frame, excluded)
    assert want and "could not be opened" in want[0] and "kept and" in want[0]
    assert _balanced_canon.padded_note(table.frame, back, excluded[back]) == want


def test_batched_tables_equal_one_write(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {c: np.arange(10) for c in ("tile_id", "row_off")}
        | {"image_path": [f"/a/{i % 3}, x.tif" for i in range(10)], "w": np.linspace(0, 1, 10)}
    )
    cols = ["tile_id", "row_off", "image_path", "w"]
    write_balanced_csv(frame, tmp_path / "one.csv", cols)
    write_balanced_parquet(frame, tmp_path / "one.parquet", cols)
    parts = [frame.iloc[:4], frame.iloc[4:4], frame.iloc[4:]]
    rows = write_balanced_tables(parts, tmp_path / "b.csv", tmp_path / "b.parquet", cols)
    assert rows == 10
    assert (tmp_path / "b.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert pq.read_table(tmp_path / "b.parquet").equals(pq.read_table(tmp_path / "one.parquet"))
    assert pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 2
    write_balanced_tables([frame], tmp_path / "c.csv", tmp_path / "c.parquet", cols)
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()


def _run(tiles: Path, out: Path, include_excluded: bool) -> dict[str, object]:
    body = {
        "input": {"tiles": str(tiles)},
        "clustering": {"k_min": 2, "k_max": 6, "selection_sample_size": 100},
        "weights": {"rare_class_boost": 3.0},
        "output": {
            "csv_path": str(out / "b.csv"),
            "parquet_path": str(out / "b.parquet"),
            "include_excluded": include_excluded,
            "write_catalog_run": False,
        },
    }
    (out / "b.yaml").write_text(yaml.safe_dump({"balanced_dataset": body}))
    cfg = load_config(out / "b.yaml", BalancedFile).balanced_dataset
    summary = run_balanced(cfg).summary()
    summary.pop("timings_s")
    return summary


@pytest.mark.parametrize("include_excluded", [True, False])
def test_pipeline_batches_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, include_excluded: bool
) -> None:
    tiles = tmp_path / "t.parquet"
    _chunked(_tiles(9, 16, seed=5), tiles, 40)
    (tmp_path / "whole").mkdir()
    (tmp_path / "small").mkdir()
    whole = _run(tiles, tmp_path / "whole", include_excluded)
    monkeypatch.setattr(_balanced_canon, "BATCH_ROWS", 17)
    small = _run(tiles, tmp_path / "small", include_excluded)
    assert small == whole and whole["k"] is not None
    a, b = tmp_path / "whole", tmp_path / "small"
    assert (a / "b.csv").read_bytes() == (b / "b.csv").read_bytes()
    pa_, pb = pq.read_table(a / "b.parquet"), pq.read_table(b / "b.parquet")
    assert pa_.equals(pb)
    assert pq.ParquetFile(b / "b.parquet").metadata.num_row_groups > 1
    n = pd.read_csv(a / "b.csv")
    assert len(n) == (144 if include_excluded else whole["included"])
