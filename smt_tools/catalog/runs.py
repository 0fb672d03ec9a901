"""Recorded runs: their ``tile_result`` rows as COPY text, read one back (``run`` +
``tile_result``), list them, show one, delete one.

select-coreset and check-leakage start from a run stored in the catalog; ``catalog runs``
lists, shows and deletes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.engine import db_failure, engine_label
from smt_tools.catalog.migrate import require_schema
from smt_tools.catalog.store_types import RUN_LIST_COLUMNS, result_columns
from smt_tools.errors import EmptySelectionError

#: Columns of ``tile_result`` by their COPY text form (the others are double precision).
INT_RESULTS = frozenset({"freq_cluster_id", "fold"})
BOOL_RESULTS = frozenset({"excluded", "coreset_selected", "has_low_entropy", "has_high_nodata"})
TEXT_RESULTS = frozenset({"buffer_excluded_folds", "exclusion_reason", "coreset_step"})
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: rows per COPY chunk (about 15 MB of text for a build-balanced-dataset run)
RESULT_CHUNK_ROWS = 1 << 18


def result_copy_text(
    run_id: int, results: pd.DataFrame, columns: Sequence[str], chunk_rows: int = RESULT_CHUNK_ROWS
) -> Iterator[bytes]:
    """``COPY … (run_id, tile_id, *columns) FROM STDIN`` text of ``results``, ``chunk_rows`` rows
    at a time (memory bounded at millions of rows; the server parses one chunk while the next
    is built). Numeric, bool and categorical columns are formatted by Arrow's string kernels
    (doubles in their shortest round-trip form: the server parses back the very double, as from
    ``repr``); other columns value by value. NULL: ``\\N``; NaN floats are NULL."""
    for start in range(0, len(results), chunk_rows):
        chunk = results.iloc[start : start + chunk_rows]
        fields = [_copy_field(c, chunk[c]).fill_null("\\N") for c in columns]
        ids = pc.cast(pa.array(chunk["tile_id"].to_numpy(np.int64)), pa.string())
        lines = pc.binary_join_element_wise(str(int(run_id)), ids, *fields, "\t")
        lines = pc.binary_join_element_wise(lines, "", "\n")  # each row + its newline
        offsets = np.frombuffer(
            lines.buffers()[1], np.int32, count=len(lines) + 1, offset=4 * lines.offset
        )
        data = lines.buffers()[2]
        yield bytes(memoryview(data)[offsets[0] : offsets[-1]]) if data is not None else b""


def _copy_field(col: str, values: pd.Series) -> pa.Array:
    """One result column of a COPY chunk as text (null where the value is missing)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) and col in TEXT_RESULTS:
        cats = pa.array([str(v).translate(_COPY_ESCAPES) for v in dtype.categories], pa.string())
        codes = values.cat.codes.to_numpy()
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), cats).cast(
            pa.string()
        )
    if isinstance(dtype, np.dtype) and dtype.kind == "b" and col in BOOL_RESULTS:
        return pc.if_else(pa.array(values.to_numpy(bool)), "t", "f")
    if isinstance(dtype, np.dtype) and dtype.kind in "iu" and col in INT_RESULTS:
        return pc.cast(pa.array(values.to_numpy(np.int64)), pa.string())
    if (
        isinstance(dtype, np.dtype)
        and dtype.kind in "fiu"
        and col not in INT_RESULTS | BOOL_RESULTS | TEXT_RESULTS
    ):
        return pc.cast(pa.array(values.to_numpy(np.float64), from_pandas=True), pa.string())
    return pa.array([_copy_value(col, v) for v in values.tolist()], pa.string())


def _copy_value(col: str, v: Any) -> str | None:
    """One value of an object (or other) column as COPY text; None: NULL."""
    if pd.isna(v):
        return None
    if col in BOOL_RESULTS:
        return "t" if bool(v) else "f"
    if col in INT_RESULTS:
        return str(int(v))
    if col in TEXT_RESULTS:
        return str(v).translate(_COPY_ESCAPES)
    return repr(float(v))


def first_duplicate(tile_ids: pd.Series) -> int | None:
    """The first tile id (in row order) that repeats an earlier row, None when all differ;
    ids in ascending order (a run's canonical order) are checked without a hash table."""
    ids = tile_ids.to_numpy(np.int64)
    if ids.size < 2 or bool((ids[1:] > ids[:-1]).all()):
        return None
    dup = tile_ids.duplicated()
    return int(tile_ids[dup].iloc[0]) if dup.any() else None


def load_run_results(
    engine: Engine, run_id: int, columns: Sequence[str] | None = None
) -> tuple[str, pd.DataFrame]:
    """(command, results) of run ``run_id``; results has tile_id + the RESULT_COLUMNS in
    ``columns`` (None: all of them; fewer columns, less memory at 10M rows), sorted by
    tile_id. An unknown run or a run without tile results is an error."""
    label = engine_label(engine)
    require_schema(engine)
    wanted = result_columns(columns)
    cols = ", ".join(wanted)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("set transaction read only")
            command = conn.execute(
                text("select command from run where id = :r"), {"r": int(run_id)}
            ).scalar_one_or_none()
            rows = conn.execute(
                text(f"select tile_id, {cols} from tile_result where run_id = :r order by tile_id"),
                {"r": int(run_id)},
            ).all()
            conn.rollback()
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, f"reading run {run_id}") from None
    if command is None:
        raise EmptySelectionError(
            f"catalog {label}: no run with id {run_id}; list runs with "
            "`select id, command, started_at from run order by id`"
        )
    if not rows:
        raise EmptySelectionError(
            f"catalog {label}: run {run_id} ({command}) has no tile results; use a "
            "build-balanced-dataset run"
        )
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["tile_id", *wanted])
    frame["tile_id"] = frame["tile_id"].astype("int64")
    return str(command), frame


_RUN_SQL = (
    "select r.id, r.command, r.started_at, r.finished_at, r.tool_version, "
    "(select count(*) from tile_result t where t.run_id = r.id) as results, r.map_view "
    "from run r"
)


def list_runs(engine: Engine) -> pd.DataFrame:
    """One row per recorded run (oldest first): :data:`RUN_LIST_COLUMNS`."""
    label = engine_label(engine)
    require_schema(engine)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"{_RUN_SQL} order by r.id")).all()
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, "listing runs") from None
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(RUN_LIST_COLUMNS))
    return frame.astype({"run_id": "int64", "results": "int64"})


def run_info(engine: Engine, run_id: int) -> dict[str, object]:
    """The run row (``RUN_LIST_COLUMNS`` + ``config`` and ``summary``); unknown: an error."""
    label = engine_label(engine)
    require_schema(engine)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(f"{_RUN_SQL} where r.id = :r"), {"r": int(run_id)}
            ).one_or_none()
            extra = conn.execute(
                text("select config, summary from run where id = :r"), {"r": int(run_id)}
            ).one_or_none()
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, f"reading run {run_id}") from None
    if row is None or extra is None:
        raise EmptySelectionError(
            f"catalog {label}: no run with id {run_id}; list them with "
            "`pytorch-smt-tools catalog runs list`"
        )
    return {
        **dict(zip(RUN_LIST_COLUMNS, row, strict=True)),
        "config": extra[0],
        "summary": extra[1],
    }


#: the partition of ``tile_result`` holding run ``:r`` (catalog version 7), NULL when none
_PARTITION_SQL = (
    "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
    "where i.inhparent = 'tile_result'::regclass and c.relname = 'tile_result_run_' || :r"
)


def delete_run(engine: Engine, run_id: int) -> int:
    """Delete run ``run_id``, its ``tile_result`` rows, its map view and the view's QGIS
    styles, in one transaction; return how many tile results went with it.

    The rows go with their partition ``tile_result_run_<id>``, dropped (not deleted row by row)
    before the run row, so a run of millions of tiles goes in seconds; rows of the run in
    ``tile_result_default`` (written with plain SQL) go by the foreign key's cascade."""
    info = run_info(engine, run_id)
    label = engine_label(engine)
    try:
        with engine.begin() as conn:
            view = info["map_view"]
            if view:
                conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{str(view).replace(chr(34), "")}"')
                conn.execute(
                    text("delete from layer_styles where f_table_name = :v"), {"v": str(view)}
                )
            part = conn.execute(text(_PARTITION_SQL), {"r": str(int(run_id))}).scalar()
            if part is not None:
                conn.exec_driver_sql(f'DROP TABLE "{part}"')
            conn.execute(text("delete from run where id = :r"), {"r": int(run_id)})
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, f"deleting run {run_id}", "; nothing was deleted") from None
    return int(info["results"])  # type: ignore[call-overload]
