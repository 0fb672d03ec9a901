"""Tile rows out of PostGIS by binary ``COPY (SELECT …) TO STDOUT``, straight into numpy arrays.

Every column of the query is cast to a fixed width (int8, float8, bool; ``class_entropy``
NULL read as NaN; the class counts as one int8 column per catalog position, absent elements
0), so every row of PostgreSQL's binary COPY format has the same size and a chunk of rows is
one numpy structured array: no Python object per row or value. The rows are counted first in
the same REPEATABLE READ snapshot and the arrays allocated once, so ten million tiles take
their final arrays plus one COPY chunk of memory (a server-side cursor held them as Python
tuples, then as per-batch arrays, then concatenated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smt_tools.errors import CatalogError

#: (field, SQL expression over alias ``t``, binary width in bytes, numpy dtype of the value)
_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("id", "t.id::int8", ">i8", "int64"),
    ("source_image_id", "t.source_image_id::int8", ">i8", "int64"),
    ("row_off", "t.row_off::int8", ">i8", "int64"),
    ("col_off", "t.col_off::int8", ">i8", "int64"),
    ("height", "t.height::int8", ">i8", "int64"),
    ("width", "t.width::int8", ">i8", "int64"),
    ("valid_pixels", "t.valid_pixels::int8", ">i8", "int64"),
    ("nodata_ratio", "t.nodata_ratio::float8", ">f8", "float64"),
    ("class_entropy", "coalesce(t.class_entropy::float8, 'NaN'::float8)", ">f8", "float64"),
    ("has_mask_border_nodata", "coalesce(t.has_mask_border_nodata, false)", "u1", "bool"),
    ("has_image_black_border", "coalesce(t.has_image_black_border, false)", "u1", "bool"),
)
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_SIGNATURE) + 8  # flags and header-extension length, both 0
#: bytes parsed at a time (whole rows; the remainder waits for the next chunk)
_CHUNK_BYTES = 16 << 20


def copy_sql(source_sql: str, n_pos: int) -> str:
    """``COPY (…) TO STDOUT (FORMAT binary)`` of the rows of ``source_sql`` (a SELECT of tile
    rows), fixed-width, ordered by tile id; ``n_pos`` class-count columns."""
    cols = [expr for _, expr, _, _ in _FIELDS]
    cols += [f"coalesce(t.class_counts[{p}], 0)::int8" for p in range(1, n_pos + 1)]
    return (
        f"COPY (select {', '.join(cols)} from ({source_sql}) t order by t.id) "
        "TO STDOUT (FORMAT binary)"
    )


def _row_dtype(n_pos: int) -> np.dtype:
    fields: list[tuple[Any, ...]] = [("n_fields", ">i2")]
    for name, _, wire, _ in _FIELDS:
        fields += [(f"{name}_len", ">i4"), (name, wire)]
    if n_pos:
        fields.append(("counts", [("len", ">i4"), ("value", ">i8")], (n_pos,)))
    return np.dtype(fields)


def read_tile_columns(cur: Any, sql: str, params: Any, n_rows: int, n_pos: int) -> dict[str, Any]:
    """``{field: (n_rows,) array}`` of the tile fields and ``counts`` (n_rows, n_pos) int64 from
    the binary COPY ``sql`` on psycopg cursor ``cur``; ``n_rows`` as counted in the same
    snapshot (a different number of rows is an error, never a silent truncation)."""
    dtype = _row_dtype(n_pos)
    out: dict[str, Any] = {name: np.empty(n_rows, np.dtype(kind)) for name, _, _, kind in _FIELDS}
    out["counts"] = np.empty((n_rows, n_pos), np.int64)
    buf = bytearray()
    filled, header_seen = 0, False
    # psycopg binds COPY parameters only when there are some: without, undo the %% escaping
    statement = sql if params else sql.replace("%%", "%")
    with cur.copy(statement, params or None) as copy:
        for data in copy:
            buf += data
            if not header_seen and len(buf) >= _HEADER:
                if bytes(buf[: len(_SIGNATURE)]) != _SIGNATURE:
                    raise CatalogError("the database sent an unexpected COPY format")
                del buf[:_HEADER]
                header_seen = True
            if header_seen and len(buf) >= _CHUNK_BYTES:
                filled = _take_rows(buf, dtype, out, filled, n_rows)
    filled = _take_rows(buf, dtype, out, filled, n_rows)
    if filled != n_rows or bytes(buf) != b"\xff\xff":
        got = f"{filled}" if filled != n_rows else f"more than {n_rows}"
        raise CatalogError(
            f"reading tiles: {got} rows arrived where {n_rows} were counted (the table changed "
            "while it was read?); run again"
        )
    return out


def _take_rows(buf: bytearray, dtype: np.dtype, out: dict[str, Any], at: int, n: int) -> int:
    """Parse the whole rows at the start of ``buf`` into ``out`` from row ``at``; drop them."""
    m = min(len(buf) // dtype.itemsize, n - at)
    if m <= 0:
        return at
    rows = np.frombuffer(buf, dtype, count=m)
    has_counts = "counts" in (dtype.names or ())
    n_fields = len(_FIELDS) + (dtype["counts"].shape[0] if has_counts else 0)
    if (rows["n_fields"] != n_fields).any():
        raise CatalogError("reading tiles: a row of the COPY has an unexpected field count")
    for name, _, wire, kind in _FIELDS:
        if (rows[f"{name}_len"] != np.dtype(wire).itemsize).any():
            raise CatalogError(f"reading tiles: column {name} arrived NULL or with another type")
        out[name][at : at + m] = rows[name].astype(kind)
    if has_counts:
        out["counts"][at : at + m] = rows["counts"]["value"]
    del rows
    del buf[: m * dtype.itemsize]
    return at + m
