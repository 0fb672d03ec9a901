"""A recorded run as a QGIS layer: its view ``run_<id>_<kind>`` and default style.

The view holds the run's rows of ``tile_result_map`` with ``tile_id`` as its FIRST column: the
single unique integer key QGIS's browser takes for a view, so the layer opens without a key
typed. Its default style goes into QGIS's own ``layer_styles`` table (catalog version 5), which
QGIS reads when the layer is added. Both are written inside the transaction that records the
run; deleting the run drops them (trigger ``run_drop_view``).
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

from smt_tools.catalog.store_types import RESULT_COLUMNS

#: columns of a run view, key first (the rest in ``tile_result_map`` order)
VIEW_COLUMNS: tuple[str, ...] = (
    "tile_id",
    "run_id",
    "command",
    "source_image_id",
    "group_id",
    "image_path",
    "row_off",
    "col_off",
    "height",
    "width",
    "valid_pixels",
    "nodata_ratio",
    "class_entropy",
    "has_mask_border_nodata",
    "has_image_black_border",
    *RESULT_COLUMNS,
    "footprint",
)
GEOMETRY_COLUMN = "footprint"
_KINDS = {"build-balanced-dataset": "balanced", "select-coreset": "coreset", "split": "folds"}


def run_view_name(run_id: int, command: str) -> str:
    """``run_<id>_<kind>``: balanced, coreset, folds, or the command in lower-case words."""
    kind = _KINDS.get(command) or re.sub(r"[^a-z0-9]+", "_", command.lower()).strip("_") or "run"
    return f"run_{int(run_id)}_{kind}"[:63]


def create_run_layer(
    conn: Connection, run_id: int, command: str, style_qml: str | None, style_name: str
) -> str:
    """Create the view of run ``run_id``, record it in ``run.map_view`` and, with
    ``style_qml``, store it as the view's default QGIS style; return the view name. Runs in the
    caller's transaction."""
    name = run_view_name(run_id, command)
    ident = '"' + name + '"'
    conn.exec_driver_sql(f"DROP VIEW IF EXISTS {ident}")
    conn.exec_driver_sql(
        f"CREATE VIEW {ident} AS SELECT {', '.join(VIEW_COLUMNS)} FROM tile_result_map "
        f"WHERE run_id = {int(run_id)}"
    )
    conn.exec_driver_sql(
        f"COMMENT ON VIEW {ident} IS 'Tiles of run {int(run_id)} ({command}) on a map: key "
        "tile_id, default QGIS style in layer_styles.'"
    )
    conn.execute(text("update run set map_view = :v where id = :r"), {"v": name, "r": run_id})
    if style_qml is None:
        return name
    where = (
        "f_table_catalog = current_database() and f_table_schema = current_schema() "
        "and f_table_name = :t and f_geometry_column = :g"
    )
    args = {"t": name, "g": GEOMETRY_COLUMN}
    conn.execute(text(f"update layer_styles set useasdefault = false where {where}"), args)
    conn.execute(
        text(
            "insert into layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, stylename, styleqml, stylesld, useasdefault, description, type) "
            "values (current_database(), current_schema(), :t, :g, :n, "
            "xmlparse(document :q), null, true, :d, null)"
        ),
        {**args, "n": style_name, "q": style_qml, "d": f"smt-tools: {command} run {run_id}"},
    )
    return name
