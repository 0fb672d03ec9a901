"""Tiles from a PostgreSQL table of the user's own, read through the ``*_column`` keys
(docs/algorithms.md §3, "Tiles from a table of your own").

Each row is one window (image_path, mask_path, row_off, col_off, patch_size). Without a
class_dist column the windows are scanned like patch records (one read per window); with one,
the composition comes from that column and only the rasters' headers are read (for the
footprint and CRS). A ``uniqueness_score`` column rides along as a frame column and replaces
the embeddings (:func:`smt_tools.pipelines.embed.uniqueness_for_tiles`); a ``tile_id`` column
replaces the computed ids. The table is only read: nothing is written to that database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError
from smt_tools.tiletable import TileTable, entropy_from_counts

if TYPE_CHECKING:
    from smt_tools.config.balanced import ExclusionConfig, InputConfig
    from smt_tools.pipelines._patch_records import ScanPlan

#: a class_dist table whose every row sums to at most this is read as fractions
FRACTION_SUM_TOL = 1e-6


@dataclass(frozen=True)
class UserTable:
    """Where a user's table is and how to read it: ``key`` names the config block."""

    url: str
    key: str
    table: str
    mapping: Mapping[str, str | None]
    where_clause: str | None
    statement_timeout_s: float


def user_table_of(cfg: InputConfig) -> UserTable | None:
    """The user's table the input maps (a ``*_column`` key given), else None."""
    if cfg.catalog is not None:
        mapping = cfg.catalog.column_mapping()
        if mapping is None:
            return None
        from smt_tools.pipelines._sources import source_ref

        ref = source_ref(cfg.catalog, "input.catalog")
        assert ref.url is not None  # the config refuses the keys with path
        c = cfg.catalog
        return UserTable(
            ref.url, "input.catalog", c.table, mapping, c.where_clause, c.statement_timeout_s
        )
    mapping = cfg.column_mapping()
    if mapping is None:
        return None
    from smt_tools.pipelines._patch_records import catalog_url

    return UserTable(
        catalog_url(cfg), "input", cfg.table, mapping, cfg.where_clause, cfg.statement_timeout_s
    )


def load_user_table(
    ut: UserTable,
    exclusion: ExclusionConfig,
    cfg: InputConfig,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """The tiles of the user's table (frame: TILE_COLUMNS + ``patch_size``, plus
    ``uniqueness_score`` when the table has one); rows in the table's order by window."""
    from smt_tools.catalog.user_table import opened, read_user_table
    from smt_tools.pipelines._patch_records import plan_patch_records, run_scan_plan

    with opened(ut.url) as engine:
        rows = read_user_table(
            engine,
            ut.table,
            ut.mapping,
            key=ut.key,
            where_clause=ut.where_clause,
            statement_timeout_s=ut.statement_timeout_s,
        )
    source = f"table {ut.table}"
    records = _records(rows, source)
    plan = plan_patch_records(records, source, None)
    if "class_dist" in rows.columns:
        table = table_from_class_dist(plan, rows["class_dist"].tolist(), exclusion, source)
    else:
        table = run_scan_plan(plan, exclusion, cfg, progress)
    if "tile_id" in rows.columns:
        table.frame["tile_id"] = _tile_ids(rows["tile_id"], source)
    if "uniqueness_score" in rows.columns:
        table.frame["uniqueness_score"] = pd.to_numeric(
            rows["uniqueness_score"], errors="coerce"
        ).to_numpy(np.float64)
    return table


def describe_user_table(ut: UserTable) -> tuple[str, str]:
    """(database label, what is read) for the dry run: the mapping and the filter checked,
    the rows counted, nothing read and no raster opened."""
    from smt_tools.catalog.user_table import count_user_table, database_label, opened

    with opened(ut.url) as engine:
        label = database_label(engine)
        n, cols = count_user_table(
            engine,
            ut.table,
            ut.mapping,
            key=ut.key,
            where_clause=ut.where_clause,
            statement_timeout_s=ut.statement_timeout_s,
        )
    where = f" where {ut.where_clause}" if ut.where_clause else ""
    used = ", ".join(f"{c} as {std}" if c != std else c for std, c in cols.items())
    how = "class_dist read" if "class_dist" in cols else "windows scanned when the run starts"
    return label, f"{label} table {ut.table}{where}: {n:,} rows ({used}; {how})"


def _records(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The window columns, checked: paths given, offsets integers >= 0, sizes > 0."""
    out = pd.DataFrame(index=rows.index)
    for col in ("image_path", "mask_path"):
        bad = rows[col].isna()
        if bad.any():
            raise InputDataError(f"{source}[{int(np.flatnonzero(bad)[0])}]: {col} is NULL")
        out[col] = rows[col].astype(str)
    for col in ("row_off", "col_off", "patch_size"):
        values = pd.to_numeric(rows[col], errors="coerce")
        lowest = 1 if col == "patch_size" else 0
        bad = values.isna() | (values != values.round()) | (values < lowest)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            want = "a positive integer" if col == "patch_size" else "an integer >= 0"
            raise InputDataError(f"{source}[{i}]: {col} must be {want}; got {rows[col].iloc[i]!r}")
        out[col] = values.astype(np.int64)
    return out.reset_index(drop=True)


def _tile_ids(values: pd.Series, source: str) -> np.ndarray:
    ids = pd.to_numeric(values, errors="coerce")
    bad = ids.isna() | (ids != ids.round()) | (ids < 1) | (ids >= 2**63)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            f"{source}[{i}]: tile_id must be a positive 64-bit integer; got {values.iloc[i]!r}"
        )
    return ids.astype(np.int64).to_numpy()


def parse_class_dist(value: Any, row: int, source: str) -> dict[int, float]:
    """One class_dist value as {class value: share or count}: a JSON object keyed by class value
    (the balanced CSV's ``class_dist_json``), or a JSON / SQL array whose position i is class
    value i; text holding JSON is parsed. Values must be finite and >= 0."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = _bad(row, source, "is not JSON", value)
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple | np.ndarray):
        items = list(enumerate(value))
    else:
        items = _bad(row, source, "must be a JSON object, a JSON array or an array", value)
    out: dict[int, float] = {}
    for k, v in items:
        try:
            cls, share = int(str(k)), float(v) if isinstance(v, int | float | Decimal) else None
        except ValueError:
            cls, share = -1, None
        if cls < 0 or share is None or not math.isfinite(share) or share < 0:
            _bad(row, source, "needs class values >= 0 with finite numbers >= 0", value)
        out[cls] = out.get(cls, 0.0) + float(share)  # type: ignore[arg-type]
    return out


def _bad(row: int, source: str, what: str, value: Any) -> Any:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise InputDataError(
        f"{source}[{row}]: class_dist {what}; got {shown} (expected e.g. "
        '{"1": 0.25, "2": 0.75} or [0, 0.25, 0.75])'
    )


def table_from_class_dist(
    plan: ScanPlan, values: list[Any], exclusion: ExclusionConfig, source: str
) -> TileTable:
    """The TileTable of ``plan``'s windows with counts from class_dist (docs/algorithms.md §3):
    fractions of the window (every row sums to <= 1) become round(fraction x window pixels);
    otherwise the values are pixel counts. The nodata class and any share not covered are
    nodata; no border flag is set (class_dist says how much, not where)."""
    from smt_tools.raster.scan import _frame_for

    frame = pd.concat(
        [_frame_for(s, w) for s, w in zip(plan.sources, plan.windows, strict=True)],
        ignore_index=True,
    )
    back = np.empty(plan.order.size, np.int64)
    back[plan.order] = np.arange(plan.order.size)
    frame = frame.take(back).reset_index(drop=True)
    frame["patch_size"] = plan.records["patch_size"].to_numpy(np.int64)
    dists = [parse_class_dist(v, i, source) for i, v in enumerate(values)]
    window_px = (frame["height"] * frame["width"]).to_numpy(np.int64)
    fractions = all(sum(d.values()) <= 1 + FRACTION_SUM_TOL for d in dists)
    nodata = exclusion.nodata_class
    class_values = np.array(sorted({c for d in dists for c in d} - {nodata}), np.int64)
    col = {int(v): j for j, v in enumerate(class_values)}
    counts = np.zeros((len(dists), class_values.size), np.int64)
    for i, d in enumerate(dists):
        for c, x in d.items():
            if c == nodata:
                continue
            if not fractions and x != round(x):
                _bad(i, source, "mixes fractions and counts (some row sums to more than 1)", d)
            counts[i, col[c]] = round(x * window_px[i]) if fractions else round(x)
    valid = counts.sum(axis=1)
    over = valid > window_px
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise InputDataError(
            f"{source}[{i}]: class_dist counts {int(valid[i])} pixels but the window holds "
            f"{int(window_px[i])} (patch_size {int(frame['patch_size'].iloc[i])}); fix the counts"
        )
    keep = counts.sum(axis=0) > 0  # as the catalog drops classes absent from the selection
    counts, class_values = counts[:, keep], class_values[keep]
    frame["valid_pixels"] = valid
    frame["nodata_ratio"] = (window_px - valid) / np.maximum(window_px, 1)
    frame["class_entropy"] = entropy_from_counts(counts)
    frame["has_mask_border_nodata"] = False
    frame["has_image_black_border"] = False
    frame["mask_band"] = frame.pop("mask_band")
    return TileTable(frame, counts, class_values, nodata)


def precomputed_uniqueness(table: TileTable) -> np.ndarray:
    """(n,) float64: the ``uniqueness_score`` column a user's table brought, used as the
    uniqueness of docs/algorithms.md §7 as it is (no embeddings); every included tile needs a
    finite score."""
    u = table.frame["uniqueness_score"].to_numpy(np.float64)
    bad = ~np.isfinite(u)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        tid = int(table.frame["tile_id"].iloc[i])
        raise InputDataError(
            f"uniqueness_score is NULL or not a finite number for tile_id {tid} "
            f"({table.frame['image_path'].iloc[i]} row_off {table.frame['row_off'].iloc[i]} "
            f"col_off {table.frame['col_off'].iloc[i]}) and {int(bad.sum())} included tile(s) "
            "in all; fill the column, or exclude those rows with where_clause"
        )
    return u
