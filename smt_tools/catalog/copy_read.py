"""Tile rows out of PostGIS by binary ``COPY (SELECT …) TO STDOUT``, straight into numpy arrays.

Every column of the query is cast to a fixed width (int8, float8, bool; ``class_entropy``
NULL read as NaN; the class counts as one int8 column per catalog position, absent elements
0), so every row of PostgreSQL's binary COPY format has the same size and a chunk of rows is
one numpy structured array: no Python object per row or value. The rows are counted first in
the same REPEATABLE READ snapshot and the arrays allocated once, so ten million tiles take
their final arrays plus one COPY chunk of memory (a server-side cursor held them as Python
tuples, then as per-batch arrays, then concatenated). :func:`tile_table` then builds the
TileTable around those arrays without copying them, the footprints a batch of rows at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.errors import CatalogError
from smt_tools.tiletable import TILE_COLUMNS, TileTable

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
#: rows per batch when the footprints are computed (bounded temporaries at 10M rows)
_BOUNDS_ROWS = 1 << 19


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


def tile_table(
    cols: dict[str, np.ndarray],
    sources: Sequence[Any],
    classes: Sequence[Any],
    label: str,
    categorical: bool = False,
) -> TileTable:
    """The TileTable of the columns of :func:`read_tile_columns` (consumed: the frame holds
    the very arrays, ``cols`` is emptied so no second reference keeps a replaced one alive),
    the ``source_image`` rows (id, group_id, image_path, mask_path, transform, crs,
    nodata_class, mask_band) and the ``catalog_class`` rows (position, class_value).
    ``categorical``: the per-image text columns as pandas categories (sorted)."""
    src_ids = np.array([int(s[0]) for s in sources], np.int64)
    tile_src = cols["source_image_id"]
    pos = pd.Index(src_ids).get_indexer(pd.Index(tile_src))
    if (pos < 0).any():
        missing = int(tile_src[pos < 0][0])
        raise CatalogError(f"catalog {label}: tile rows reference unknown source_image {missing}")
    used = np.flatnonzero(np.bincount(pos, minlength=len(sources)))
    nodata_values = {sources[int(i)][6] for i in used}
    if len(nodata_values) > 1:
        raise CatalogError(
            f"catalog {label}: the selected tiles were ingested with different nodata classes "
            f"{sorted(nodata_values, key=str)}; re-ingest them with one --nodata-class"
        )
    nodata = next(iter(nodata_values))
    counts, class_values = _kept_classes(cols.pop("counts"), classes)
    src_tr = np.array([list(s[4]) for s in sources], dtype=np.float64).reshape(-1, 6)
    bounds = footprint_bounds(
        src_tr, pos, cols["row_off"], cols["col_off"], cols["height"], cols["width"]
    )

    def src_col(k: int) -> Any:
        values = np.empty(len(sources), dtype=object)
        values[:] = [s[k] for s in sources]
        if not categorical:
            return values[pos].tolist()
        codes, uniq = pd.factorize(pd.Series(values, dtype=object), sort=True)
        small = codes.astype(_code_dtype(len(uniq)))  # pandas' own code width: no second copy
        return pd.Categorical.from_codes(small[pos], categories=uniq)  # None: code -1, NaN

    data = {
        "tile_id": cols.pop("id"),
        "group_id": src_col(1),
        "image_path": src_col(2),
        "mask_path": src_col(3),
        **dict(zip(("minx", "miny", "maxx", "maxy"), bounds, strict=True)),
        "crs": src_col(5),
        "mask_band": np.array([1 if s[7] is None else int(s[7]) for s in sources], np.int64)[pos],
    }
    data.update((c, cols.pop(c)) for c in list(cols))  # the int64 / float64 / bool columns
    # the arrays are this frame's own: no second copy of 10M rows
    frame = pd.DataFrame({c: data.pop(c) for c in (*TILE_COLUMNS, "mask_band")}, copy=False)
    return TileTable(
        frame=frame,
        counts=counts,
        class_values=class_values,
        nodata_class=None if nodata is None else int(nodata),
    )


def _kept_classes(counts_pos: np.ndarray, classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(counts, class values): the class-count columns (catalog positions) ordered by class
    value, classes without a pixel dropped; the array itself when nothing moves."""
    values_by_pos = np.array([int(c[1]) for c in classes], np.int64)
    order = np.argsort(values_by_pos, kind="stable")
    keep = order[counts_pos.sum(axis=0)[order] > 0]  # integer sums: any order is exact
    if np.array_equal(keep, np.arange(counts_pos.shape[1])):
        return counts_pos, values_by_pos
    return counts_pos[:, keep], values_by_pos[keep]


def footprint_bounds(
    src_tr: np.ndarray,
    pos: np.ndarray,
    row_off: np.ndarray,
    col_off: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minx, miny, maxx, maxy) (n,) float64 of each tile's window corners through the affine
    transform ``src_tr[pos]`` (GDAL order a, b, c, d, e, f), :data:`_BOUNDS_ROWS` rows at a
    time: the same arithmetic per row as all rows at once, without (4, n) temporaries."""
    n = len(pos)
    out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n))
    for s in range(0, n, _BOUNDS_ROWS):
        sl = slice(s, s + _BOUNDS_ROWS)
        tr = src_tr[pos[sl]]
        r, c = row_off[sl].astype(np.float64), col_off[sl].astype(np.float64)
        h, w = height[sl].astype(np.float64), width[sl].astype(np.float64)
        corners = ((c, r), (c + w, r), (c, r + h), (c + w, r + h))
        xs = np.stack([tr[:, 0] * x + tr[:, 1] * y + tr[:, 2] for x, y in corners])
        ys = np.stack([tr[:, 3] * x + tr[:, 4] * y + tr[:, 5] for x, y in corners])
        xs.min(axis=0, out=out[0][sl])
        ys.min(axis=0, out=out[1][sl])
        xs.max(axis=0, out=out[2][sl])
        ys.max(axis=0, out=out[3][sl])
    return out


def _code_dtype(n_categories: int) -> type[np.signedinteger[Any]]:
    """The integer width pandas keeps the codes of ``n_categories`` categories in."""
    for kind in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(kind).max:
            return kind
    return np.int64
