"""The Parquet tile table: exact round trip, fingerprints, clear errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smt_tools.catalog import parquet_io as tio
from smt_tools.errors import InputDataError
from smt_tools.ingest_params import IngestParams
from smt_tools.raster import PairSpec, inspect_pair, scan, tile_windows
from smt_tools.tiletable import TILE_COLUMNS, TileTable
from tests.catalog_data import HAND_COUNTS, hand_pair


def _scanned(folder: Path) -> tuple[TileTable, list]:
    img, msk = hand_pair(folder)
    rec = inspect_pair(PairSpec(str(img), str(msk), "g1"))
    return scan([rec], [tile_windows(8, 8, 4)], nodata_class=0, workers=1), [rec]


PARAMS = IngestParams(patch_size=4, stride=4, edge_policy="drop", black_tolerance=0.0)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    table, recs = _scanned(tmp_path)
    table.frame["extra_note"] = ["a", "b", "c", "d"]
    path = tmp_path / "tiles.parquet"
    tio.write_tile_table(table, path, recs, params=PARAMS, class_names={1: ("field", "#00ff00")})
    back = tio.read_tile_table(path)
    pd.testing.assert_frame_equal(back.frame, table.frame)
    assert back.counts.dtype == np.int64 and back.counts.tolist() == HAND_COUNTS
    assert back.class_values.tolist() == [1, 2, 3] and back.nodata_class == 0
    assert np.isnan(back.frame["class_entropy"].iloc[3])
    assert tio.read_class_names(path) == {1: ("field", "#00ff00")}
    # storage: list<int64> counts and the metadata documented in the module
    schema = pq.read_schema(path)
    assert schema.field("class_counts").type == pa.list_(pa.int64())
    assert list(schema.names[: len(TILE_COLUMNS)]) == list(TILE_COLUMNS)
    meta = tio.read_meta(path)
    assert (meta["version"], meta["class_values"], meta["nodata_class"]) == (1, [1, 2, 3], 0)
    # fingerprints per row
    full = tio.read_tile_table(path, include_sources=True)
    fp = tio.source_fingerprints(full)
    assert len(fp) == 1
    row = fp.iloc[0]
    assert int(row["image_size"]) == recs[0].image.file_size
    assert float(row["mask_mtime"]) == recs[0].mask.file_mtime
    assert (int(row["patch_size"]), row["edge_policy"], row["group_id"]) == (4, "drop", "g1")
    # and writing the full read back keeps the fingerprints
    tio.write_tile_table(full, tmp_path / "again.parquet")
    again = tio.read_tile_table(tmp_path / "again.parquet", include_sources=True)
    pd.testing.assert_frame_equal(again.frame, full.frame)


def test_without_sources_and_no_nodata(tmp_path: Path) -> None:
    table, _ = _scanned(tmp_path)
    table = TileTable(table.frame, table.counts, table.class_values, None)
    path = tmp_path / "t.parquet"
    tio.write_tile_table(table, path)
    back = tio.read_tile_table(path, include_sources=True)
    assert back.nodata_class is None
    assert back.frame["image_size"].isna().all()


def test_not_a_tile_table(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"nope\.parquet: tile table not found"):
        tio.read_tile_table(tmp_path / "nope.parquet")
    text = tmp_path / "text.parquet"
    text.write_text("hello")
    with pytest.raises(InputDataError, match=r"text\.parquet: not a Parquet tile table"):
        tio.read_tile_table(text)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), plain)
    with pytest.raises(
        InputDataError, match=r"plain\.parquet: a Parquet file but not an smt-tools tile table"
    ):
        tio.read_tile_table(plain)


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table, recs = _scanned(tmp_path)
    path = tmp_path / "tiles.parquet"
    tio.write_tile_table(table, path, recs, params=PARAMS)
    before = path.read_bytes()

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tio.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        tio.write_tile_table(table.take(np.array([0])), path, recs, params=PARAMS)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "parquet" in p.name) == ["tiles.parquet"]
