"""The embedding cache: Parquet keyed by (tile_id, model_id, preprocess_hash).

Layout for ``parquet_path = x/embeddings.parquet``:

- ``x/embeddings.parquet``: the compacted cache (one file, rows sorted by tile_id);
- ``x/embeddings.parquet.parts/part-*.parquet``: chunks written during an extraction, each
  atomically (temporary file + ``os.replace``). An interrupted run leaves its finished chunks
  there; the next run reads them as cache and computes only the rest. A finished run folds
  them into the main file (atomically) and removes the folder.

Columns: ``tile_id`` int64, ``model_id`` string, ``preprocess_hash`` string, ``embedding``
fixed_size_list<float32>[d]. Rows are always JOINED by tile_id, never taken in file order. A
cache that holds another (model_id, preprocess_hash) is refused unless the caller rebuilds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smt_tools.atomic import atomic_path, clean_stale
from smt_tools.errors import EmbeddingCacheError

COLUMNS = ("tile_id", "model_id", "preprocess_hash", "embedding")


def parts_dir(path: str | os.PathLike[str]) -> Path:
    """Folder of chunk files next to ``path`` (``<name>.parts``)."""
    p = Path(path)
    return p.with_name(p.name + ".parts")


def cache_files(path: str | os.PathLike[str]) -> list[Path]:
    """Existing cache files: the main file first, then chunks in write order."""
    p = Path(path)
    files = [p] if p.is_file() else []
    pd_ = parts_dir(p)
    if pd_.is_dir():
        files += sorted(pd_.glob("part-*.parquet"))
    return files


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("tile_id", pa.int64()),
            ("model_id", pa.string()),
            ("preprocess_hash", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


#: rows per Parquet row group of the cache (reads stream one group at a time: ~50 MiB at 768-d)
ROW_GROUP_ROWS = 16_384


def _check_file(f: Path) -> None:
    try:
        schema = pq.read_schema(f)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EmbeddingCacheError(
            f"{f}: not a readable Parquet file ({exc}); delete it or rebuild the cache (--rebuild)"
        ) from None
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise EmbeddingCacheError(
            f"{f}: not an embedding cache (missing columns {', '.join(missing)}); point "
            "embeddings.parquet_path at another file or rebuild it (--rebuild)"
        )
    emb_type = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(emb_type):
        raise EmbeddingCacheError(
            f"{f}: column embedding is {emb_type}, expected fixed_size_list<float32>; rebuild it"
        )


def _read_file(f: Path, columns: list[str]) -> pa.Table:
    _check_file(f)
    return pq.read_table(f, columns=columns)


def _iter_file(f: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The rows of ``f`` one row group at a time (bounded memory for large caches)."""
    _check_file(f)
    pf = pq.ParquetFile(f)
    for i in range(pf.num_row_groups):
        yield from pf.read_row_group(i, columns=columns).to_batches()


def cache_keys(path: str | os.PathLike[str]) -> list[tuple[str, str, int]]:
    """Distinct ``(model_id, preprocess_hash, rows)`` held by the cache (empty if none)."""
    counts: dict[tuple[str, str], int] = {}
    for f in cache_files(path):
        t = _read_file(f, ["model_id", "preprocess_hash"]).to_pandas()
        for (m, h), n in t.groupby(["model_id", "preprocess_hash"]).size().items():
            counts[(str(m), str(h))] = counts.get((str(m), str(h)), 0) + int(n)
    return [(m, h, n) for (m, h), n in sorted(counts.items())]


def check_cache(
    path: str | os.PathLike[str], model_id: str, preprocess_hash: str, rebuild: bool = False
) -> None:
    """Refuse a cache built by another model or preprocessing; with ``rebuild`` delete it."""
    if rebuild:
        clear_cache(path)
        return
    foreign = [(m, h, n) for m, h, n in cache_keys(path) if (m, h) != (model_id, preprocess_hash)]
    if foreign:
        m, h, n = foreign[0]
        raise EmbeddingCacheError(
            f"{path} holds {n} embeddings of model {m} with preprocessing {h}, not model "
            f"{model_id} with preprocessing {preprocess_hash} (dino_model, bands or scale "
            "changed); replace it with `pytorch-smt-tools embed CONFIG --rebuild`, or set "
            "embeddings.parquet_path to another file"
        )


def clear_cache(path: str | os.PathLike[str]) -> None:
    """Delete the cache file and any chunk folder."""
    p = Path(path)
    if p.is_file():
        p.unlink()
    shutil.rmtree(parts_dir(p), ignore_errors=True)


def _load(
    path: str | os.PathLike[str],
    tile_ids: np.ndarray,
    model_id: str | None,
    preprocess_hash: str | None,
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Join cache rows to ``tile_ids`` by key: (emb (n,d) NaN-filled, found (n,), dim)."""
    want = np.asarray(tile_ids, dtype=np.int64)
    n = len(want)
    files = cache_files(path)
    if files and model_id is None:
        keys = cache_keys(path)
        if len(keys) != 1:
            listed = "; ".join(f"{m} / {h} ({c} rows)" for m, h, c in keys)
            raise EmbeddingCacheError(
                f"{path} holds embeddings of several models or preprocessings ({listed}); "
                "name the model to read, or rebuild the cache"
            )
        model_id, preprocess_hash = keys[0][0], keys[0][1]
    elif files:
        check_cache(path, model_id or "", preprocess_hash or "")
    # each distinct id is written once, at its first position in ``want`` (repeats copied last)
    uniq, first = np.unique(want, return_index=True)
    value_set = pa.array(uniq, type=pa.int64())
    out: np.ndarray | None = None
    found = np.zeros(n, dtype=bool)
    dim: int | None = None
    parts = (
        batch
        for f in files  # in order, straight into ``out``: later rows overwrite (newer chunks)
        for batch in _iter_file(f, ["tile_id", "model_id", "preprocess_hash", "embedding"])
    )
    for t in parts:
        mask = pc.and_(
            pc.and_(
                pc.equal(t["model_id"], model_id), pc.equal(t["preprocess_hash"], preprocess_hash)
            ),
            pc.is_in(t["tile_id"], value_set=value_set),
        )
        if not pc.all(mask).as_py():
            t = t.filter(mask)
        d = t.schema.field("embedding").type.list_size
        if dim is not None and d != dim:
            raise EmbeddingCacheError(
                f"{path}: embeddings have {d} dimensions in one file but {dim} in another; "
                "rebuild the cache (--rebuild)"
            )
        dim = d
        if t.num_rows == 0:
            continue
        if out is None:
            out = np.full((n, d), np.nan, dtype=np.float32)
        ids = t["tile_id"].to_numpy().astype(np.int64, copy=False)
        rows = (
            t.column("embedding")
            .flatten()
            .to_numpy(zero_copy_only=False)
            .astype(np.float32, copy=False)
            .reshape(-1, d)
        )
        del t
        src = np.arange(len(ids))
        if len(np.unique(ids)) < len(ids):  # the same tile twice in a batch: its last row wins
            _, last_rev = np.unique(ids[::-1], return_index=True)
            src = len(ids) - 1 - last_rev
        dst = first[np.searchsorted(uniq, ids[src])]
        out[dst] = rows if len(src) == len(rows) else rows[src]
        found[dst] = True
        del rows
    if out is None:
        return np.full((n, dim or 0), np.nan, dtype=np.float32), found, dim
    rep = first[np.searchsorted(uniq, want)]
    dups = rep != np.arange(n)
    if dups.any():
        out[dups] = out[rep[dups]]
        found[dups] = found[rep[dups]]
    return out, found, dim


def read_embeddings(
    parquet_path: str | os.PathLike[str],
    tile_ids: np.ndarray,
    model_id: str | None = None,
    preprocess_hash: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ``tile_ids`` joined by key from the cache.

    tile_ids: (n,) int64. Returns (n, d) float32 (NaN rows where missing) and (n,) bool found.
    With ``model_id`` None the cache must hold exactly one (model_id, preprocess_hash) pair;
    with it given, rows of any other pair make the cache foreign (:class:`EmbeddingCacheError`).
    No cache at all is an :class:`EmbeddingCacheError` naming the command that fills it.
    """
    if not cache_files(parquet_path):
        raise EmbeddingCacheError(
            f"no embedding cache at {parquet_path}; fill it with `pytorch-smt-tools embed CONFIG`"
        )
    emb, found, _ = _load(parquet_path, tile_ids, model_id, preprocess_hash)
    return emb, found


def lookup(
    parquet_path: str | os.PathLike[str],
    tile_ids: np.ndarray,
    model_id: str,
    preprocess_hash: str,
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Like :func:`read_embeddings` for one known key; an absent cache finds nothing."""
    return _load(parquet_path, tile_ids, model_id, preprocess_hash)


def _write_atomic(table: pa.Table, target: Path) -> None:
    with atomic_path(target, suffix=".tmp") as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def make_table(
    tile_ids: np.ndarray, embeddings: np.ndarray, model_id: str, preprocess_hash: str
) -> pa.Table:
    """Arrow table in the cache schema. embeddings: (n, d) float32."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = emb.shape
    values = pa.array(emb.reshape(-1), type=pa.float32())
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(tile_ids, dtype=np.int64), type=pa.int64()),
            pa.array([model_id] * n, type=pa.string()),
            pa.array([preprocess_hash] * n, type=pa.string()),
            pa.FixedSizeListArray.from_arrays(values, d),
        ],
        schema=_schema(d),
    )


def write_chunk(
    parquet_path: str | os.PathLike[str],
    tile_ids: np.ndarray,
    embeddings: np.ndarray,
    model_id: str,
    preprocess_hash: str,
) -> Path:
    """Append one chunk as a new part file (atomic); returns its path."""
    folder = parts_dir(parquet_path)
    existing = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    index = len(existing)
    target = folder / f"part-{index:06d}-{uuid.uuid4().hex[:8]}.parquet"
    clean_stale(target, any_target=True)  # temp files of chunks a killed run left behind
    _write_atomic(make_table(tile_ids, embeddings, model_id, preprocess_hash), target)
    return target


def row_count(parquet_path: str | os.PathLike[str]) -> int:
    """Rows in the cache (main file and chunks; a tile may count twice before compaction)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in cache_files(parquet_path))


def compact(parquet_path: str | os.PathLike[str]) -> int:
    """Fold chunk files into the main file (atomic, sorted by tile_id, later rows win).

    Returns the number of rows in the compacted file (0 when there is nothing to do).
    Runs under an exclusive lock (``<cache>.lock``) and removes only the chunk files it folded
    in, so chunks written meanwhile by a concurrent run are kept for the next compaction.
    """
    from smt_tools.atomic import file_lock

    p = Path(parquet_path)
    if not [f for f in cache_files(p) if f != p]:
        return 0
    with file_lock(p, "compact the embedding cache"):
        files = cache_files(p)
        if not files or files == [p]:
            return 0
        tables = [_read_file(f, list(COLUMNS)) for f in files]
        table = pa.concat_tables(tables).combine_chunks()
        ids = table["tile_id"].to_numpy()
        rev = np.arange(len(ids))[::-1]
        _, first_rev = np.unique(ids[rev], return_index=True)
        keep = np.sort(rev[first_rev])
        table = table.take(pa.array(keep))
        table = table.sort_by("tile_id")
        _write_atomic(table, p)
        for f in files:
            if f != p:
                f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            parts_dir(p).rmdir()  # only when empty: a concurrent run's new chunks stay
    return table.num_rows
