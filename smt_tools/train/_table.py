"""The CSV side of the datasets: reading the tile CSV, resolving paths, mask bands, boolean
columns and fold selection (with `split`'s buffer column). See :mod:`smt_tools.train.datasets`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.errors import ConfigError, InputDataError

_TRUE = {"true", "1", "yes", "t", "y"}


def _read_csv(path: str | os.PathLike[str], n_rows: int | None, name: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"{name}: input_csv_path {p} not found; check the path")
    parquet = p.suffix.lower() == ".parquet"  # output.parquet_path: the same table, typed
    try:
        if parquet:
            frame = pd.read_parquet(p)
            frame = frame.head(n_rows) if n_rows is not None else frame
        else:
            frame = pd.read_csv(p, nrows=n_rows)
    except Exception as exc:
        kind = "Parquet file" if parquet else "CSV"
        raise InputDataError(f"{p}: not a readable {kind} ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise InputDataError(f"{p}: the table has no rows")
    return frame


def _resolve_paths(series: pd.Series, base: Path) -> list[str]:
    """Local paths resolved against ``base``; GDAL paths (``s3://``, ``/vsicurl/`` …) as written."""
    from smt_tools.raster.paths import is_gdal_path, normalize_path

    out = []
    for v in series.astype(str):
        if is_gdal_path(v):
            out.append(normalize_path(v))
            continue
        q = Path(v).expanduser()
        out.append(str(q if q.is_absolute() else base / q))
    return out


def _mask_bands(
    frame: pd.DataFrame, column: str, default: int | None, src: str, name: str
) -> np.ndarray:
    """The 1-based mask band of each row (int64; 0 = not given: the mask must have one band).

    The ``column`` (the balanced CSV's ``mask_band``, written from ``catalog ingest
    --mask-band``) wins over the dataset's ``mask_band`` key ``default``.
    """
    if default is not None and default < 1:
        raise ConfigError(f"{name}: mask_band must be >= 1 (1-based band number); got {default}")
    if column not in frame.columns:
        return np.full(len(frame), 0 if default is None else int(default), np.int64)
    values = pd.to_numeric(frame[column], errors="coerce")
    if default is not None:
        values = values.fillna(default)
    bad = values.isna() | (values != values.round()) | (values < 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            f"{src}: row {row + 2}: {column} must be a band number >= 1; got "
            f"{frame[column].iloc[row]!r}"
        )
    return values.to_numpy(np.int64)


def _as_bool(series: pd.Series) -> np.ndarray:
    if series.dtype == bool:
        return series.to_numpy()
    return series.astype(str).str.strip().str.lower().isin(_TRUE).to_numpy()


#: column written by `split`: ';'-separated folds whose training set must not use the tile
BUFFER_COLUMN = "buffer_excluded_folds"


def _fold_label(value: Any) -> str:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # a fold column with empty cells is read as float: 1.0 -> "1"
    return str(value).strip()


def _fold_text(series: pd.Series) -> pd.Series:
    """Fold labels as text, whatever dtype pandas gave the CSV column: 1, 1.0 and "1" are all
    "1", an empty cell is "" (a column of single folds with gaps is read as float64)."""
    return series.map(_fold_label).astype(str)


def _select_folds(
    frame: pd.DataFrame,
    folds: Sequence[int | str] | None,
    exclude_folds: Sequence[int | str] | None,
    fold_column: str,
    source: str,
) -> pd.DataFrame:
    """Rows whose ``fold_column`` value is in ``folds`` and not in ``exclude_folds`` (compared
    as text, so integer folds and group names both work)."""
    if folds is None and exclude_folds is None:
        return frame
    if fold_column not in frame.columns:
        raise InputDataError(
            f"{source}: selecting rows by '{fold_column}' needs that column; run "
            "`pytorch-smt-tools split` first (fold) or remove val_fold / val_groups / folds"
        )
    f = _fold_text(frame[fold_column])
    keep = np.ones(len(frame), dtype=bool)
    if folds is not None:
        keep &= f.isin([str(x) for x in folds]).to_numpy()
    if exclude_folds is not None:
        excluded = {str(x) for x in exclude_folds}
        keep &= ~f.isin(excluded).to_numpy()
        if fold_column == "fold" and BUFFER_COLUMN in frame.columns:
            # `split` lists, per tile, the folds whose training set must not use it (the tile
            # lies within buffer_m of one of their validation tiles); "-1" is the holdout test
            # set, which counts only when it is the held-out set (final training, no val fold).
            held_out = excluded - {"-1"} or excluded
            listed = _fold_text(frame[BUFFER_COLUMN]).str.split(";")
            near = listed.map(lambda items: any(i.strip() in held_out for i in items))
            keep &= ~near.to_numpy(bool)
    out = frame.loc[keep].reset_index(drop=True)
    if out.empty:
        raise InputDataError(
            f"{source}: no rows left after selecting {fold_column} in {list(folds or [])} "
            f"and not in {list(exclude_folds or [])}; check val_fold / val_groups"
        )
    return out
