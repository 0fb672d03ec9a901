"""The balanced CSV that ``split`` reads (:func:`read_split_csv`; docs/algorithms.md §15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError
from smt_tools.export.csv_out import parse_class_counts_json

__all__ = ["read_split_csv"]

_BOUNDS = ("minx", "miny", "maxx", "maxy", "crs")


def read_split_csv(
    path: str | Path, group_column: str | None, need_counts: bool
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """A balanced CSV: ``(frame, counts (n, C) int64 or None, class_values (C,) or None)``.

    group_column None: no group column is required (strategy ``spatial_blocks``)."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: input CSV not found; run build-balanced-dataset first or fix the path"
        )
    try:
        frame = pd.read_csv(p, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{p}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    required = ["tile_id", *([group_column] if group_column else []), *_BOUNDS]
    if need_counts:
        required.append("class_counts_json")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = (
            "; set split.group_column to an existing column"
            if group_column in missing
            else "; is this a balanced CSV from build-balanced-dataset?"
        )
        raise InputDataError(f"{p}: missing column(s) {', '.join(missing)}{hint}")
    if len(frame) == 0:
        raise InputDataError(f"{p}: the CSV has no rows")
    if frame["tile_id"].duplicated().any():
        dup = frame.loc[frame["tile_id"].duplicated(), "tile_id"].iloc[0]
        raise InputDataError(f"{p}: tile_id {dup} appears twice; one row per tile expected")
    if group_column and frame[group_column].isna().any():
        row = int(np.flatnonzero(frame[group_column].isna().to_numpy())[0]) + 2
        raise InputDataError(f"{p}: column {group_column} is empty in row {row}")
    if need_counts:
        counts, values = parse_class_counts_json(
            frame["class_counts_json"], str(p), empty_is_zero=True
        )
        return frame, counts, values
    return frame, None, None
