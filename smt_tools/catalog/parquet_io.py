"""The local tile table: a Parquet file holding a :class:`~smt_tools.tiletable.TileTable`.

Layout: the columns of :data:`~smt_tools.tiletable.TILE_COLUMNS`, ``class_counts``
(``list<int64>``, element j counts ``class_values[j]``), the source fingerprint columns of
:data:`SOURCE_COLUMNS` (file size + mtime of image and mask and the tiling parameters, so a
re-ingest into the same file is incremental), and any extra frame columns. Schema metadata
``smt_tools.tile_table`` (JSON) holds ``version``, ``class_values``, ``nodata_class`` and
``class_names``. Writes are atomic (temporary file + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from smt_tools.atomic import atomic_path, file_lock
from smt_tools.errors import InputDataError
from smt_tools.ingest_params import IngestParams
from smt_tools.raster.scan import SourceRecord
from smt_tools.tiletable import TILE_COLUMNS, TileTable

FORMAT_VERSION = 1
META_KEY = b"smt_tools.tile_table"

#: Per-row source fingerprint columns (incremental re-ingest compares them).
SOURCE_COLUMNS: tuple[str, ...] = (
    "image_size",
    "image_mtime",
    "mask_size",
    "mask_mtime",
    "patch_size",
    "stride",
    "edge_policy",
    "black_tolerance",
    "mask_band",
    "scan_rules",
)
_SOURCE_DTYPES: dict[str, str] = {
    "image_size": "Int64",
    "image_mtime": "Float64",
    "mask_size": "Int64",
    "mask_mtime": "Float64",
    "patch_size": "Int64",
    "stride": "Int64",
    "edge_policy": "string",
    "black_tolerance": "Float64",
    "mask_band": "Int64",
    "scan_rules": "Int64",
}


def attach_sources(
    table: TileTable, sources: Sequence[SourceRecord], params: IngestParams
) -> TileTable:
    """``table`` with the :data:`SOURCE_COLUMNS` filled from ``sources`` and the ingest's
    ``params`` (its fingerprint: patch size, stride, edge policy, black tolerance, scan rules)."""
    frame = table.frame.copy()
    by_id = {int(s.source_image_id): s for s in sources}
    ids = frame["source_image_id"].to_numpy(np.int64)
    missing = sorted(set(ids.tolist()) - set(by_id))
    if missing:
        raise InputDataError(f"tile table: source_image_id {missing[0]} has no source record")
    recs = [by_id[int(i)] for i in ids]
    frame["image_size"] = pd.array([r.image.file_size for r in recs], dtype="Int64")
    frame["image_mtime"] = pd.array([r.image.file_mtime for r in recs], dtype="Float64")
    frame["mask_size"] = pd.array([r.mask.file_size for r in recs], dtype="Int64")
    frame["mask_mtime"] = pd.array([r.mask.file_mtime for r in recs], dtype="Float64")
    n, fp = len(frame), params.fingerprint()
    frame["patch_size"] = pd.array([fp["patch_size"]] * n, dtype="Int64")
    frame["stride"] = pd.array([fp["stride"]] * n, dtype="Int64")
    frame["edge_policy"] = pd.array([fp["edge_policy"]] * n, dtype="string")
    frame["black_tolerance"] = pd.array([fp["black_tolerance"]] * n, dtype="Float64")
    frame["mask_band"] = pd.array([int(r.mask_band) for r in recs], dtype="Int64")
    frame["scan_rules"] = pd.array([fp["scan_rules"]] * n, dtype="Int64")
    return TileTable(frame, table.counts, table.class_values, table.nodata_class)


def write_tile_table(
    table: TileTable,
    path: str | os.PathLike[str],
    sources: list[SourceRecord] | None = None,
    *,
    params: IngestParams | None = None,
    class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
) -> None:
    """Write ``table`` to ``path`` (Parquet, atomic).

    With ``sources`` (and ``params``) the fingerprint columns are filled from them; otherwise
    fingerprint columns already in ``table.frame`` are kept, and missing ones written as null.
    """
    missing = [c for c in TILE_COLUMNS if c not in table.frame.columns]
    if missing:
        raise InputDataError(f"tile table: missing columns {', '.join(missing)}")
    if sources is not None:
        table = attach_sources(
            table,
            sources,
            params or IngestParams(patch_size=0, stride=0, edge_policy=""),
        )
    arrow = tile_table_arrow(table, class_names)
    with atomic_path(path, suffix=".part") as tmp:
        pq.write_table(arrow, tmp, compression="zstd")


def tile_table_arrow(
    table: TileTable, class_names: Mapping[int, tuple[str | None, str | None]] | None = None
) -> pa.Table:
    """``table`` as the Arrow table :func:`write_tile_table` writes (columns, ``class_counts``,
    fingerprint columns (null when absent), the ``smt_tools.tile_table`` metadata)."""
    missing = [c for c in TILE_COLUMNS if c not in table.frame.columns]
    if missing:
        raise InputDataError(f"tile table: missing columns {', '.join(missing)}")
    frame = table.frame.copy()
    for col, dtype in _SOURCE_DTYPES.items():
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), index=frame.index, dtype=dtype)
    extra = [c for c in frame.columns if c not in TILE_COLUMNS and c not in SOURCE_COLUMNS]
    ordered = frame[[*TILE_COLUMNS, *SOURCE_COLUMNS, *extra]]
    arrow = pa.Table.from_pandas(ordered, preserve_index=False)
    n, c = table.counts.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * c, type=pa.int64())
    counts = pa.LargeListArray.from_arrays(offsets, pa.array(table.counts.reshape(-1), pa.int64()))
    arrow = arrow.add_column(len(TILE_COLUMNS), "class_counts", counts.cast(pa.list_(pa.int64())))
    meta = {
        "version": FORMAT_VERSION,
        "class_values": [int(v) for v in table.class_values],
        "nodata_class": None if table.nodata_class is None else int(table.nodata_class),
        "class_names": {str(int(k)): [v[0], v[1]] for k, v in sorted((class_names or {}).items())},
    }
    schema_meta = dict(arrow.schema.metadata or {})
    schema_meta.pop(b"pandas", None)
    schema_meta[META_KEY] = json.dumps(meta).encode("utf-8")
    return arrow.replace_schema_metadata(schema_meta)


@contextlib.contextmanager
def tile_table_writer(
    path: str | os.PathLike[str],
    class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
) -> Iterator[Callable[[TileTable], None]]:
    """Write a tile table chunk by chunk (one row group or more per chunk), atomically: yields
    ``write(table)``; every chunk must have the first chunk's class values, nodata class and
    columns. Millions of tiles are written without holding them all in memory."""
    state: dict[str, Any] = {}

    def write(table: TileTable) -> None:
        arrow = tile_table_arrow(table, class_names)
        if "writer" not in state:
            state["writer"] = pq.ParquetWriter(tmp, arrow.schema, compression="zstd")
            state["schema"] = arrow.schema
        elif not arrow.schema.equals(state["schema"], check_metadata=True):
            raise InputDataError(
                f"{path}: a chunk's columns, class values or nodata class differ from the first "
                "chunk's; write one class list and nodata class per tile table"
            )
        state["writer"].write_table(arrow)

    with atomic_path(path, suffix=".part") as tmp:
        try:
            yield write
        finally:
            if "writer" in state:
                state["writer"].close()
        if "writer" not in state:
            raise InputDataError(f"{path}: no chunk written; a tile table needs one tile")


def tile_table_lock(
    path: str | os.PathLike[str], what: str = "update", timeout_s: float | None = None
) -> contextlib.AbstractContextManager[Path]:
    """Exclusive lock of a tile table (``<path>.lock`` beside it) for a read-modify-write, so
    two processes updating one table take turns instead of the last writer dropping the other's
    rows. Waiting more than a second logs one ``waiting for the lock ... held by pid N`` line."""
    return file_lock(path, what, timeout_s=timeout_s)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``smt_tools.tile_table`` metadata of ``path`` (clear error if not a tile table)."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: tile table not found; create it with `pytorch-smt-tools catalog ingest PAIRS_CSV --catalog {p}`"
        )
    try:
        schema = pq.read_schema(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(
            f"{p}: not a Parquet tile table ({str(exc).splitlines()[0]}); "
            "write one with `pytorch-smt-tools catalog ingest PAIRS_CSV --catalog FILE.parquet`"
        ) from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None or "class_counts" not in schema.names:
        raise InputDataError(
            f"{p}: a Parquet file but not an smt-tools tile table (no {META_KEY.decode()} metadata); "
            "write one with `pytorch-smt-tools catalog ingest PAIRS_CSV --catalog FILE.parquet`"
        )
    meta: dict[str, Any] = json.loads(raw)
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise InputDataError(
            f"{p}: tile table format version {meta.get('version')} is newer than this smt-tools "
            f"supports ({FORMAT_VERSION}); upgrade smt-tools"
        )
    return meta


def read_tile_table(path: str | os.PathLike[str], include_sources: bool = False) -> TileTable:
    """Read a tile table written by :func:`write_tile_table`.

    The frame has :data:`TILE_COLUMNS` plus any extra columns that were written and
    ``mask_band`` (int64; 1 for tables written before it existed); the other fingerprint
    columns of :data:`SOURCE_COLUMNS` only with ``include_sources=True``.
    counts: (n, C) int64 aligned with ``class_values`` from the metadata.
    """
    p = Path(path)
    meta = read_meta(p)
    try:
        arrow = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{p}: unreadable tile table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in TILE_COLUMNS if c not in arrow.column_names]
    if missing:
        raise InputDataError(f"{p}: tile table lacks columns {', '.join(missing)}")
    class_values = np.asarray(meta.get("class_values", []), dtype=np.int64)
    n = arrow.num_rows
    lists = arrow.column("class_counts").combine_chunks()
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False) if n else np.zeros(0)
    if n and (np.any(lengths != len(class_values))):
        raise InputDataError(
            f"{p}: class_counts rows must each have {len(class_values)} entries (one per class value)"
        )
    counts = (
        lists.flatten()
        .to_numpy(zero_copy_only=False)
        .astype(np.int64)
        .reshape(n, len(class_values))
        if n
        else np.zeros((0, len(class_values)), np.int64)
    )
    arrow = arrow.drop_columns(["class_counts"])
    if not include_sources:  # mask_band stays: readers of the tiles need the band
        drop = [c for c in SOURCE_COLUMNS if c in arrow.column_names and c != "mask_band"]
        arrow = arrow.drop_columns(drop)
    frame = arrow.to_pandas()
    if not include_sources:  # right after the tile columns, as a scan or the catalog gives it
        band = frame.pop("mask_band") if "mask_band" in frame.columns else None
        values = (
            np.ones(len(frame), np.int64) if band is None else band.fillna(1).to_numpy(np.int64)
        )
        frame.insert(len(TILE_COLUMNS), "mask_band", values)
    if include_sources:
        for col, dtype in _SOURCE_DTYPES.items():
            if col in frame.columns:
                frame[col] = frame[col].astype(dtype)
    nodata = meta.get("nodata_class")
    return TileTable(
        frame=frame,
        counts=counts,
        class_values=class_values,
        nodata_class=None if nodata is None else int(nodata),
    )


#: string columns the batched reader keeps dictionary-encoded (pandas ``category``)
CATEGORICAL_COLUMNS: tuple[str, ...] = ("group_id", "image_path", "mask_path", "crs")


def read_tile_table_batched(path: str | os.PathLike[str]) -> TileTable:
    """:func:`read_tile_table` (without the fingerprint columns) in bounded memory.

    The file is read one row group at a time: the class counts go straight into one (n, C)
    int64 array, the fingerprint columns are never read, and :data:`CATEGORICAL_COLUMNS` stay
    dictionary-encoded (pandas ``category``, categories sorted), so ten million tiles of a few
    thousand scenes hold a few thousand strings, not ten million. Every other column, the
    counts, the class values and the nodata class are exactly those of :func:`read_tile_table`.
    """
    p = Path(path)
    meta = read_meta(p)
    class_values = np.asarray(meta.get("class_values", []), dtype=np.int64)
    try:
        pf = pq.ParquetFile(p, read_dictionary=list(CATEGORICAL_COLUMNS))
        names = pf.schema_arrow.names
        missing = [c for c in TILE_COLUMNS if c not in names]
        if missing:
            raise InputDataError(f"{p}: tile table lacks columns {', '.join(missing)}")
        columns = [c for c in names if c not in SOURCE_COLUMNS or c == "mask_band"]
        n, n_classes = pf.metadata.num_rows, len(class_values)
        counts = np.zeros((n, n_classes), np.int64)
        chunks: dict[str, list[pa.Array]] = {c: [] for c in columns if c != "class_counts"}
        start = 0
        for rg in range(pf.num_row_groups):
            part = pf.read_row_group(rg, columns=columns)
            start = _fill_counts(part.column("class_counts"), counts, start, p)
            for c in chunks:
                chunks[c].extend(part.column(c).chunks)
            del part
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{p}: unreadable tile table ({str(exc).splitlines()[0]})") from None
    data: dict[str, Any] = {}
    for c in list(chunks):  # one column at a time: its Arrow chunks go as it is converted
        col = pa.chunked_array(chunks.pop(c), type=pf.schema_arrow.field(c).type)
        if c in CATEGORICAL_COLUMNS:
            col = col.cast(pa.dictionary(pa.int32(), pa.large_string()))
        values = col.to_pandas()
        if c in CATEGORICAL_COLUMNS:
            values = values.cat.reorder_categories(sorted(values.cat.categories))
        data[c] = values
        del col
    band = data.pop("mask_band", None)
    data["mask_band"] = np.ones(n, np.int64) if band is None else band.fillna(1).to_numpy(np.int64)
    order = [*TILE_COLUMNS, "mask_band", *[c for c in data if c not in TILE_COLUMNS]]
    frame = pd.DataFrame({c: data.pop(c) for c in dict.fromkeys(order)}, copy=False)
    pa.default_memory_pool().release_unused()  # the Arrow chunks are gone: give them back
    nodata = meta.get("nodata_class")
    return TileTable(frame, counts, class_values, None if nodata is None else int(nodata))


def _fill_counts(lists: pa.ChunkedArray, counts: np.ndarray, start: int, p: Path) -> int:
    """Copy the ``class_counts`` lists of one row group into ``counts[start:]``; the next start."""
    n_classes = counts.shape[1]
    for chunk in lists.chunks:
        m = len(chunk)
        if m and np.any(chunk.value_lengths().to_numpy(zero_copy_only=False) != n_classes):
            raise InputDataError(
                f"{p}: class_counts rows must each have {n_classes} entries (one per class value)"
            )
        if m:
            flat = chunk.flatten().to_numpy(zero_copy_only=False)
            counts[start : start + m] = flat.reshape(m, n_classes)
        start += m
    return start


def read_class_names(path: str | os.PathLike[str]) -> dict[int, tuple[str | None, str | None]]:
    """Class value -> (name, colour) stored in a tile table's metadata."""
    meta = read_meta(path)
    return {int(k): (v[0], v[1]) for k, v in meta.get("class_names", {}).items()}


def source_fingerprints(table: TileTable) -> pd.DataFrame:
    """One row per source image of a table read with ``include_sources=True``: columns
    ``source_image_id, image_path, mask_path`` + :data:`SOURCE_COLUMNS` + ``nodata_class``."""
    cols = ["source_image_id", "image_path", "mask_path", "group_id", *SOURCE_COLUMNS]
    have = [c for c in cols if c in table.frame.columns]
    out = table.frame[have].drop_duplicates("source_image_id").reset_index(drop=True)
    if "mask_band" not in out.columns:  # written before --mask-band existed: band 1
        out["mask_band"] = pd.array([1] * len(out), dtype="Int64")
    if "scan_rules" not in out.columns:  # written before the rules were versioned: rules 1
        out["scan_rules"] = pd.array([1] * len(out), dtype="Int64")
    out["nodata_class"] = table.nodata_class
    return out
