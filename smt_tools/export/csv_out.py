"""The balanced CSV written by build-balanced-dataset (read by coreset, split and train).

One row per tile; the columns are :data:`BALANCED_COLUMNS` (+ ``uniqueness_score`` when the
mode has uniqueness), named so the training module reads it without extra keys.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.atomic import atomic_path
from smt_tools.errors import InputDataError
from smt_tools.tiletable import TileTable

#: Columns of the balanced CSV, in order (docs/algorithms.md §15).
BALANCED_COLUMNS: tuple[str, ...] = (
    "image_path",
    "mask_path",
    "row_off",
    "col_off",
    "patch_size",
    "mask_band",
    "tile_id",
    "source_image_id",
    "group_id",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "crs",
    "valid_pixels",
    "class_entropy",
    "nodata_ratio",
    "class_dist_json",
    "class_counts_json",
    "has_mask_border_nodata",
    "has_image_black_border",
    "excluded",
    "exclusion_reason",
    "has_low_entropy",
    "has_high_nodata",
    "freq_cluster_id",
    "freq_cluster_size",
    "freq_cluster_weight",
    "sampler_weight",
)
UNIQUENESS_COLUMN = "uniqueness_score"


def _json_objects(class_values: np.ndarray, values: np.ndarray) -> pd.Series:
    """One JSON object per row of ``values`` (n, C): ``{"<class>": value, ...}``, built with
    Arrow's vectorised string kernels (a Python loop costs seconds at 155k rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n, c = values.shape
    if c == 0:
        return pd.Series(["{}"] * n, dtype="string[pyarrow]")
    with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow casts run without the GIL
        texts = list(pool.map(lambda j: pc.cast(pa.array(values[:, j]), pa.string()), range(c)))
    parts: list[Any] = []
    for j, v in enumerate(class_values):
        parts.append(pa.scalar(("{" if j == 0 else ", ") + f'"{int(v)}": '))
        parts.append(texts[j])
    parts.append(pa.scalar("}"))
    joined = pc.binary_join_element_wise(*parts, "")
    return pd.Series(pd.arrays.ArrowExtensionArray(joined))


def class_dist_json(counts: np.ndarray, class_values: np.ndarray) -> pd.Series:
    """JSON object class value -> proportion over valid pixels, per row of counts (n, C) int64
    (all zeros when a tile has no valid pixel). Returns (n,) strings."""
    counts = np.asarray(counts, dtype=np.int64)
    valid = counts.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(valid > 0, counts / np.where(valid > 0, valid, 1.0), 0.0)
    return _json_objects(class_values, p)


def class_counts_json(counts: np.ndarray, class_values: np.ndarray) -> pd.Series:
    """JSON object class value -> pixel count, per row of counts (n, C) int64: (n,) strings."""
    return _json_objects(class_values, np.asarray(counts, dtype=np.int64))


def parse_class_counts_json(
    values: pd.Series, source: str, *, empty_is_zero: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read back :func:`class_counts_json`: (counts (n, C) int64, class_values (C,) int64).

    values: (n,) the column as read from a balanced CSV (row k is on line k + 2). Class values
    are the sorted union of the keys. An empty cell is a tile without counts when
    ``empty_is_zero`` (split), else an error (coreset). A cell that is not a JSON object of
    integer class -> integer count raises :class:`InputDataError` naming the line.
    """
    parsed: list[dict[int, int]] = []
    for k, text in enumerate(values.tolist()):
        obj: Any = {} if empty_is_zero else None
        if isinstance(text, str):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = None
        if isinstance(obj, dict):
            try:
                parsed.append({int(key): int(count) for key, count in obj.items()})
                continue
            except (TypeError, ValueError):
                pass
        raise InputDataError(
            f"{source}: line {k + 2}: class_counts_json must be a JSON object of class -> "
            f'pixel count like {{"1": 120, "2": 4}}; got {str(text)[:60]!r}'
        )
    keys = sorted({key for obj in parsed for key in obj})
    pos = {key: j for j, key in enumerate(keys)}
    counts = np.zeros((len(parsed), len(keys)), dtype=np.int64)
    for r, obj in enumerate(parsed):
        for key, count in obj.items():
            counts[r, pos[key]] = count
    return counts, np.asarray(keys, dtype=np.int64)


def write_balanced_csv(
    frame: pd.DataFrame, path: str | os.PathLike[str], columns: Sequence[str] = BALANCED_COLUMNS
) -> None:
    """Write ``frame[columns]`` (plus ``uniqueness_score`` if present) to ``path`` atomically.

    Floats are written in their shortest round-trip form, booleans as ``true``/``false``,
    missing values as empty fields (pandas.read_csv reads all of them back exactly).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = list(columns)
    if UNIQUENESS_COLUMN in frame.columns and UNIQUENESS_COLUMN not in cols:
        cols.append(UNIQUENESS_COLUMN)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"balanced CSV: frame lacks column(s) {', '.join(missing)}")
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    with atomic_path(path, suffix=".csv") as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(quoting_style="needed"))


def write_balanced_parquet(
    frame: pd.DataFrame, path: str | os.PathLike[str], columns: Sequence[str] = BALANCED_COLUMNS
) -> None:
    """The balanced table as Parquet (zstd, typed columns), atomically: the same columns as
    :func:`write_balanced_csv`, so every reader of the CSV reads it too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(columns)
    if UNIQUENESS_COLUMN in frame.columns and UNIQUENESS_COLUMN not in cols:
        cols.append(UNIQUENESS_COLUMN)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"balanced table: frame lacks column(s) {', '.join(missing)}")
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_balanced_tables(
    batches: Iterable[pd.DataFrame],
    csv_path: str | os.PathLike[str] | None,
    parquet_path: str | os.PathLike[str] | None,
    columns: Sequence[str] = BALANCED_COLUMNS,
) -> int:
    """Write the balanced table, given as consecutive ``batches`` of rows, to ``csv_path`` and /
    or ``parquet_path`` (atomically; None: not written) without ever holding it whole; returns
    the rows written. Each file is the one :func:`write_balanced_csv` /
    :func:`write_balanced_parquet` write for the concatenated frame (Parquet: the same rows
    and schema, one row group per non-empty batch)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    with contextlib.ExitStack() as stack:
        csv_tmp = stack.enter_context(atomic_path(csv_path, suffix=".csv")) if csv_path else None
        pq_tmp = (
            stack.enter_context(atomic_path(parquet_path, suffix=".parquet"))
            if parquet_path
            else None
        )
        writers: list[Any] = []
        schema: Any = None
        first: Any = None
        # one thread writes (encodes, compresses) a batch while the next one is built
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        pending: list[Future[None]] = []  # the write in flight (at most one)
        for frame in batches:
            table = _arrow_batch(frame, columns)
            del frame
            if table.num_rows == 0:
                first = table if first is None else first
                continue
            if schema is None:
                schema = table.schema
                if csv_tmp is not None:
                    options = pacsv.WriteOptions(quoting_style="needed")
                    writers.append(pacsv.CSVWriter(csv_tmp, schema, write_options=options))
                if pq_tmp is not None:
                    writers.append(pq.ParquetWriter(pq_tmp, schema, compression="zstd"))
                for w in writers:
                    stack.callback(w.close)
                stack.callback(wait, pending)  # on an error: ends before the writers close
            elif not table.schema.equals(schema, check_metadata=False):
                table = table.cast(schema)
            if pending:
                pending.pop().result()
                pa.default_memory_pool().release_unused()  # the written batch's buffers
            pending.append(pool.submit(_write_all, writers, table))
            rows += table.num_rows
        if pending:
            pending.pop().result()
        if schema is None:  # no row at all: the header / schema of the (empty) table
            assert first is not None, "write_balanced_tables needs at least one batch"
            if csv_tmp is not None:
                write_options = pacsv.WriteOptions(quoting_style="needed")
                pacsv.write_csv(first, csv_tmp, write_options=write_options)
            if pq_tmp is not None:
                pq.write_table(first, pq_tmp, compression="zstd")
    return rows


def _write_all(writers: list[Any], table: Any) -> None:
    for w in writers:
        w.write_table(table)


def _arrow_batch(frame: pd.DataFrame, columns: Sequence[str]) -> Any:
    """``frame[columns]`` (+ ``uniqueness_score`` if present) as an Arrow table."""
    import pyarrow as pa

    cols = list(columns)
    if UNIQUENESS_COLUMN in frame.columns and UNIQUENESS_COLUMN not in cols:
        cols.append(UNIQUENESS_COLUMN)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"balanced table: frame lacks column(s) {', '.join(missing)}")
    return pa.Table.from_pandas(frame[cols], preserve_index=False)


def _plain(col: pd.Series) -> np.ndarray:
    """``col.to_numpy()``; for a ``category`` column (a tile table read in batches) built from
    the few categories by code, not converted row by row (the same object array)."""
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return col.to_numpy()
    codes = col.cat.codes.to_numpy()
    out = np.asarray(col.cat.categories.to_numpy(), dtype=object).take(codes)
    if codes.size and codes.min() < 0:
        out[codes < 0] = np.nan
    return np.asarray(out)


def balanced_frame(
    table: TileTable,
    excluded: np.ndarray,
    labels: np.ndarray,
    sizes: np.ndarray,
    freq_cluster_weight: np.ndarray,
    weights: np.ndarray,
    uniq: np.ndarray | None,
    *,
    flags: Mapping[str, Any],
) -> pd.DataFrame:
    """The balanced CSV's rows: one per tile of ``table`` (frame with TILE_COLUMNS and
    ``patch_size``; ``mask_band`` when the frame has it, else band 1), in table order. All arrays are (n,): excluded bool, labels int64
    (freq_cluster_id, -1 = none), sizes int64, freq_cluster_weight float64 (1 / size, 0 = none),
    weights float64 (sampler_weight), uniq float64 or None (adds ``uniqueness_score``); flags:
    ``exclusion_reason`` (categorical), ``has_low_entropy``, ``has_high_nodata`` (bool), from
    :func:`smt_tools.curation.exclusion.exclusion_flags`."""
    f = table.frame
    out = pd.DataFrame(
        {
            "image_path": _plain(f["image_path"]),
            "mask_path": _plain(f["mask_path"]),
            "row_off": f["row_off"].to_numpy(np.int64),
            "col_off": f["col_off"].to_numpy(np.int64),
            "patch_size": f["patch_size"].to_numpy(np.int64),
            "mask_band": (
                f["mask_band"].to_numpy(np.int64)
                if "mask_band" in f.columns
                else np.ones(len(f), np.int64)
            ),
            "tile_id": f["tile_id"].to_numpy(np.int64),
            "source_image_id": f["source_image_id"].to_numpy(np.int64),
            "group_id": _plain(f["group_id"]),
            "minx": f["minx"].to_numpy(np.float64),
            "miny": f["miny"].to_numpy(np.float64),
            "maxx": f["maxx"].to_numpy(np.float64),
            "maxy": f["maxy"].to_numpy(np.float64),
            "crs": _plain(f["crs"]),
            "valid_pixels": f["valid_pixels"].to_numpy(np.int64),
            "class_entropy": f["class_entropy"].to_numpy(np.float64),
            "nodata_ratio": f["nodata_ratio"].to_numpy(np.float64),
            "class_dist_json": class_dist_json(table.counts, table.class_values),
            "class_counts_json": class_counts_json(table.counts, table.class_values),
            "has_mask_border_nodata": f["has_mask_border_nodata"].to_numpy(bool),
            "has_image_black_border": f["has_image_black_border"].to_numpy(bool),
            "excluded": excluded,
            "exclusion_reason": flags["exclusion_reason"],
            "has_low_entropy": flags["has_low_entropy"],
            "has_high_nodata": flags["has_high_nodata"],
            "freq_cluster_id": labels,
            "freq_cluster_size": sizes,
            "freq_cluster_weight": freq_cluster_weight,
            "sampler_weight": weights,
        }
    )
    if uniq is not None:
        out["uniqueness_score"] = uniq
    return out
