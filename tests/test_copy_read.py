"""Tile rows read by binary COPY (``smt_tools.catalog.copy_read``): known values, NULL entropy
as NaN, short class-count arrays padded with 0, rows split across COPY chunks, and a count
that does not match is an error, never a silent truncation."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from smt_tools.catalog import copy_read
from smt_tools.errors import CatalogError

pytestmark = pytest.mark.db

ROWS = [  # id, src, row, col, h, w, valid, nodata_ratio, entropy, mask border, black border, counts
    (7, 1, 0, 256, 256, 256, 65536, 0.0, 0.5, False, True, [10, 20, 30]),
    (3, 2, 512, 0, 128, 256, 100, 0.25, None, True, False, [5]),  # NULL entropy, short array
    (9, 1, 256, 256, 256, 256, 0, 1.0, None, False, False, []),
]


def _table(cur: psycopg.Cursor) -> str:
    cur.execute(
        "create temporary table tt (id bigint, source_image_id bigint, row_off integer, "
        "col_off integer, height integer, width integer, valid_pixels bigint, "
        "nodata_ratio double precision, class_entropy double precision, "
        "has_mask_border_nodata boolean, has_image_black_border boolean, class_counts bigint[])"
    )
    for r in ROWS:
        cur.execute("insert into tt values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", r)
    return "select * from tt where valid_pixels %% 2 = 0"  # '%' escaped, as the loader does


@pytest.mark.parametrize("chunk", [1 << 20, 7])  # 7 bytes: every row split across chunks
def test_rows_arrive_as_known_arrays(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(copy_read, "_CHUNK_BYTES", chunk)
    with psycopg.connect(fresh_database_url) as conn, conn.cursor() as cur:
        src = _table(cur)
        cols = copy_read.read_tile_columns(cur, copy_read.copy_sql(src, 3), {}, 3, 3)
    assert cols["id"].tolist() == [3, 7, 9]  # ordered by tile id
    assert cols["id"].dtype == np.int64 and cols["has_image_black_border"].dtype == bool
    assert cols["row_off"].tolist() == [512, 0, 256] and cols["width"].tolist() == [256] * 3
    assert cols["nodata_ratio"].tolist() == [0.25, 0.0, 1.0]
    assert np.isnan(cols["class_entropy"][[0, 2]]).all() and cols["class_entropy"][1] == 0.5
    assert cols["has_mask_border_nodata"].tolist() == [True, False, False]
    assert cols["counts"].tolist() == [[5, 0, 0], [10, 20, 30], [0, 0, 0]]


def test_a_count_that_does_not_match_is_an_error(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn, conn.cursor() as cur:
        src = _table(cur)
        for wrong, got in ((2, "more than 2"), (4, "3")):
            with pytest.raises(CatalogError, match=f"{got} rows arrived where {wrong} were"):
                copy_read.read_tile_columns(cur, copy_read.copy_sql(src, 3), {}, wrong, 3)


def test_no_class_positions_and_bound_parameters(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn, conn.cursor() as cur:
        _table(cur)
        sql = copy_read.copy_sql("select * from tt where id = %(one)s", 0)
        cols = copy_read.read_tile_columns(cur, sql, {"one": 9}, 1, 0)
    assert cols["id"].tolist() == [9] and cols["counts"].shape == (1, 0)
