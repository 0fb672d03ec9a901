"""Read back a recorded run: its command and per-tile results (``run`` + ``tile_result``).

Used by select-coreset to start from a build-balanced-dataset run stored in the catalog.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.engine import db_failure, engine_label
from smt_tools.catalog.migrate import require_schema
from smt_tools.catalog.queries import RESULT_COLUMNS
from smt_tools.errors import EmptySelectionError


def load_run_results(engine: Engine, run_id: int) -> tuple[str, pd.DataFrame]:
    """(command, results) of run ``run_id``; results has tile_id + every RESULT_COLUMNS column,
    sorted by tile_id. An unknown run or a run without tile results is an error."""
    label = engine_label(engine)
    require_schema(engine)
    cols = ", ".join(RESULT_COLUMNS)
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
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["tile_id", *RESULT_COLUMNS])
    frame["tile_id"] = frame["tile_id"].astype("int64")
    return str(command), frame
