"""``embed-import``: turn an older tool's embedding cache into ours (:mod:`.cache`).

The older cache is a Parquet file whose rows are aligned with windows: the window columns
``image_path``, ``row_off``, ``col_off``, ``patch_size`` (``mask_path`` may be there; it is not
part of the key) and the embedding, either one list column (``embedding`` or ``embeddings``
when several list columns exist) or one numeric column per dimension, named by one prefix and
the dimension's number (``0``, ``1`` … or ``emb_0``, ``emb_1`` …). Each row is keyed by the tile
id ``catalog ingest`` and a scan give the same window
(:func:`smt_tools.tiletable.tile_key` of the absolute image path and the square window), and by
the model and preprocessing ``embed`` would use for the same images, so
``build-balanced-dataset`` and ``embed`` find the imported vectors and compute nothing.
Relative image paths are read against the older file's folder.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smt_tools.errors import EmbeddingCacheError, InputDataError

#: window columns an older cache must have
WINDOW_COLUMNS: tuple[str, ...] = ("image_path", "row_off", "col_off", "patch_size")
#: list columns preferred when an older cache has several
_LIST_NAMES = ("embedding", "embeddings")
_DIM_NAME = re.compile(r"^(.*?)(\d+)$")


@dataclass
class ImportResult:
    """What ``embed-import`` wrote: rows imported, their width, the cache key and file."""

    n_rows: int
    dim: int
    model_id: str
    preprocess_hash: str
    cache_path: Path
    cache_rows: int
    embedding_columns: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "rows_imported": self.n_rows,
            "dim": self.dim,
            "model_id": self.model_id,
            "preprocess_hash": self.preprocess_hash,
            "cache_path": str(self.cache_path),
            "cache_rows": self.cache_rows,
            "embedding_columns": self.embedding_columns,
            "seconds": round(self.seconds, 3),
        }


def default_out(old: Path) -> Path:
    """Where the import goes without ``--out``: ``<old stem>.smt.parquet`` beside it."""
    return old.with_name(old.stem + ".smt.parquet")


def read_old_cache(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """(windows, embeddings, which columns): windows {image_path (n,) str absolute, row_off,
    col_off, patch_size (n,) int64}; embeddings (n, d) float32. Missing columns, ragged or
    empty embeddings and non-finite values are one :class:`InputDataError` line."""
    if not path.is_file():
        raise InputDataError(f"{path}: file not found; give the older embedding cache (.parquet)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InputDataError(f"{path}: not a readable Parquet file ({first})") from None
    missing = [c for c in WINDOW_COLUMNS if c not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: missing window column(s) {', '.join(missing)}; an older embedding cache "
            f"needs {', '.join(WINDOW_COLUMNS)} beside the embedding (columns here: "
            f"{', '.join(table.column_names[:12])})"
        )
    if table.num_rows == 0:
        raise InputDataError(f"{path}: no row; nothing to import")
    windows = _windows(table, path)
    emb, which = _embeddings(table, path)
    return windows, emb, which


def _windows(table: pa.Table, path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    images = table["image_path"].to_pylist()
    if any(v is None or not str(v).strip() for v in images):
        row = next(i for i, v in enumerate(images) if v is None or not str(v).strip())
        raise InputDataError(f"{path}: row {row}: image_path is empty")
    from smt_tools.raster.paths import is_gdal_path
    from smt_tools.tiletable import canonical_path

    base = path.parent
    out["image_path"] = np.array(
        [
            canonical_path(v if os.path.isabs(v) or is_gdal_path(v) else os.path.join(base, v))
            for v in map(str, images)
        ],
        dtype=object,
    )
    for col in ("row_off", "col_off", "patch_size"):
        values = np.array(table[col].to_pylist(), dtype=object)
        ok = np.array(
            [isinstance(v, int | float | np.integer | np.floating) and v == v for v in values]
        )
        lowest = 1 if col == "patch_size" else 0
        if ok.all():
            num = values.astype(np.float64)
            ok = (num == np.round(num)) & (num >= lowest)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            want = "a positive integer" if col == "patch_size" else "an integer >= 0"
            raise InputDataError(f"{path}: row {row}: {col} must be {want}; got {values[row]!r}")
        out[col] = values.astype(np.float64).astype(np.int64)
    return out


def _embeddings(table: pa.Table, path: Path) -> tuple[np.ndarray, str]:
    """(n, d) float32 from one list column or from one column per dimension."""
    lists = [
        f.name
        for f in table.schema
        if (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
        or pa.types.is_fixed_size_list(f.type)
    ]
    if len(lists) > 1:
        named = [n for n in _LIST_NAMES if n in lists]
        if not named:
            raise InputDataError(
                f"{path}: several list columns ({', '.join(lists)}) and none named embedding; "
                "keep one embedding column"
            )
        lists = named[:1]
    if lists:
        return _from_list(table[lists[0]], lists[0], path), lists[0]
    return _from_dims(table, path)


def _from_list(col: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    arr = col.combine_chunks()
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputDataError(f"{path}: row {row}: {name} is null; every row needs an embedding")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    d = int(lengths[0])
    if (lengths != d).any():
        row = int(np.flatnonzero(lengths != d)[0])
        raise InputDataError(
            f"{path}: ragged embeddings: row {row} of {name} has {int(lengths[row])} values but "
            f"row 0 has {d}; every embedding must have the same length"
        )
    if d == 0:
        raise InputDataError(f"{path}: column {name} holds empty embeddings")
    flat = pc.list_flatten(arr)
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
        raise InputDataError(f"{path}: column {name} holds {flat.type}, expected numbers")
    if flat.null_count:
        pos = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputDataError(f"{path}: row {pos // d}: {name} has a null value")
    emb = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    return _finite(emb, name, path)


def _from_dims(table: pa.Table, path: Path) -> tuple[np.ndarray, str]:
    groups: dict[str, dict[int, str]] = {}
    for f in table.schema:
        m = _DIM_NAME.match(f.name)
        numeric = pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
        if m and numeric and f.name not in WINDOW_COLUMNS:
            groups.setdefault(m.group(1), {})[int(m.group(2))] = f.name
    if not groups:
        raise InputDataError(
            f"{path}: no embedding column: expected one list column (embedding) or one numeric "
            "column per dimension (0, 1, … or emb_0, emb_1, …)"
        )
    prefix, cols = max(groups.items(), key=lambda kv: len(kv[1]))
    start = min(cols)
    want = list(range(start, start + len(cols)))
    if start not in (0, 1) or sorted(cols) != want:
        gap = next((i for i in want if i not in cols), start)
        raise InputDataError(
            f"{path}: dimension columns {prefix}{start}… are not numbered 0..d-1 without gaps "
            f"(no {prefix}{gap}); rename them"
        )
    names = [cols[i] for i in want]
    data = []
    for name in names:
        col = table[name].combine_chunks()
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputDataError(f"{path}: row {row}: {name} is null; every row needs a value")
        data.append(col.to_numpy(zero_copy_only=False).astype(np.float32))
    emb = np.stack(data, axis=1)
    which = f"{names[0]}..{names[-1]}"
    return _finite(emb, which, path), which


def _finite(emb: np.ndarray, name: str, path: Path) -> np.ndarray:
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputDataError(
            f"{path}: row {int(np.flatnonzero(bad)[0])}: {name} holds NaN or infinity"
        )
    return np.ascontiguousarray(emb)


def tile_ids_of(windows: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) int64: the tile id of each window, as ingest and a scan compute it."""
    from smt_tools.tiletable import tile_key

    return np.fromiter(
        (
            tile_key(p, r, c, s, s)
            for p, r, c, s in zip(
                windows["image_path"],
                windows["row_off"],
                windows["col_off"],
                windows["patch_size"],
                strict=True,
            )
        ),
        dtype=np.int64,
        count=len(windows["image_path"]),
    )


def import_old_cache(
    old: Path,
    out: Path,
    *,
    dino_model: str = "facebook/dinov2-base",
    bands: list[int] | tuple[int, ...] = (1, 2, 3),
    scale: tuple[float, float] | None = None,
) -> ImportResult:
    """Import ``old`` into the cache ``out`` under the key ``embed`` gives ``dino_model`` with
    ``bands`` / ``scale`` on the imported images (their headers are read). An existing ``out``
    of the same key keeps its other rows (imported rows win); one of another key is refused.
    Written as a chunk, then compacted: both steps atomic."""
    from smt_tools.embeddings.cache import cache_keys, compact, row_count, write_chunk
    from smt_tools.embeddings.dataset import resolve_scale
    from smt_tools.embeddings.model import describe_model, make_preprocess

    t0 = time.perf_counter()
    if out.resolve() == old.resolve():
        raise InputDataError(f"--out {out} is the older cache itself; give another file")
    if out.is_dir():
        raise InputDataError(f"--out {out} is a folder; give a .parquet file")
    windows, emb, which = read_old_cache(old)
    ids = tile_ids_of(windows)
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        j = int(np.sort(first[counts > 1])[0])
        rows = np.flatnonzero(ids == ids[j])
        raise InputDataError(
            f"{old}: rows {int(rows[0])} and {int(rows[1])} are the same window "
            f"({windows['image_path'][j]} row_off {windows['row_off'][j]} col_off "
            f"{windows['col_off'][j]} patch_size {windows['patch_size'][j]}); keep one"
        )
    model_id, geometry = describe_model(dino_model)
    images = sorted(set(windows["image_path"].tolist()))
    phash = make_preprocess(geometry, list(bands), resolve_scale(images, list(bands), scale)).hash
    foreign = [(m, h, n) for m, h, n in cache_keys(out) if (m, h) != (model_id, phash)]
    if foreign:
        m, h, n = foreign[0]
        raise EmbeddingCacheError(
            f"--out {out} holds {n} embeddings of model {m} with preprocessing {h}, not "
            f"{model_id} with {phash}; give another --out, or delete that cache to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(ids, kind="stable")
    write_chunk(out, ids[order], emb[order], model_id, phash)
    compact(out)
    return ImportResult(
        n_rows=len(ids),
        dim=int(emb.shape[1]),
        model_id=model_id,
        preprocess_hash=phash,
        cache_path=out,
        cache_rows=row_count(out),
        embedding_columns=which,
        seconds=time.perf_counter() - t0,
    )
