"""Load the tiles a balanced-dataset run works on, from any of the documented sources.

- ``input.patch_records`` / ``input.patch_records_csv``: windows of image/mask pairs, scanned
  through :mod:`smt_tools.raster` (one read per window, cached handles, parallel processes);
- ``input.tiles``: a Parquet tile table written by ``catalog ingest --catalog x.parquet``;
- the PostgreSQL block: tiles of the catalog (they carry their statistics; no raster is read);
- ``input.catalog``: the block every command takes (PostGIS ``url`` or Parquet ``path``).

Tile tables and the catalog are read through the run's store (:func:`input_ref`).

All four give a :class:`~smt_tools.tiletable.TileTable` whose rows follow the input order
(patch records) or the source's order (tile tables, catalog); ``patch_size`` is added as a
frame column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smt_tools.config.balanced import ExclusionConfig, InputConfig
from smt_tools.errors import ConfigError
from smt_tools.pipelines._patch_records import (  # noqa: F401 (re-exported)
    PATCH_COLUMNS,
    ScanPlan,
    _records_frame,
    catalog_url,
    plan_patch_records,
    read_patch_records_csv,
    run_scan_plan,
    scan_patch_records,
)
from smt_tools.pipelines._sources import open_ref, source_ref, tile_query
from smt_tools.tiletable import TileTable

if TYPE_CHECKING:
    from smt_tools.catalog.store import StoreRef, TileQuery, TileStore


def load_input_tiles(
    cfg: InputConfig,
    exclusion: ExclusionConfig,
    store: TileStore | None,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """The tiles of ``cfg`` as a TileTable (frame has TILE_COLUMNS + ``patch_size``).

    Patch records are scanned (``progress(n)`` is called with the number of windows scanned);
    the other sources are read from ``store``, the open store of :func:`input_ref`.
    Errors (missing file, window outside the raster, bad CSV, unreachable catalog, unsafe
    ``where_clause``) are one-line :class:`~smt_tools.errors.SmtError` s.
    """
    if cfg.patch_records is not None:
        records = _records_frame(cfg.patch_records)
        return scan_patch_records(records, "input.patch_records", exclusion, cfg, progress)
    if cfg.patch_records_csv is not None:
        records = read_patch_records_csv(cfg.patch_records_csv)
        return scan_patch_records(records, str(cfg.patch_records_csv), exclusion, cfg, progress)
    from smt_tools.pipelines._user_table import load_user_table, user_table_of

    user_table = user_table_of(cfg)  # a table of the user's own: its own connection, read only
    if user_table is not None:
        return load_user_table(user_table, exclusion, cfg, progress)
    assert store is not None, "tiles and the catalog are read from the input's store"
    # a Parquet tile table is read row group by row group, its paths kept as categories
    read = getattr(store, "read_tiles_batched", store.read_tiles)
    return _with_patch_size(read(input_query(cfg)))


def input_ref(cfg: InputConfig) -> StoreRef | None:
    """Where the input's tiles live: the ``catalog`` block, the ``tiles`` Parquet table or
    the PostgreSQL block; None for patch records (they are scanned, no store) and for a
    table of the user's own (``*_column`` keys: read, never written, no catalog schema)."""
    from smt_tools.catalog.store import StoreRef, store_ref
    from smt_tools.pipelines._user_table import user_table_of

    if user_table_of(cfg) is not None:
        return None
    if cfg.catalog is not None:
        return source_ref(cfg.catalog, "input.catalog")
    if cfg.tiles is not None:
        if not Path(cfg.tiles).is_file():
            raise ConfigError(
                f"input.tiles: file not found: {cfg.tiles}; create it with `pytorch-smt-tools "
                f"catalog ingest pairs.csv --catalog {cfg.tiles}`"
            )
        return StoreRef(path=Path(cfg.tiles))
    if cfg.uses_postgres:
        return store_ref(url=catalog_url(cfg), key="input.dsn")
    return None


def open_input(cfg: InputConfig) -> contextlib.AbstractContextManager[TileStore | None]:
    """The input's store, open for a ``with`` block (None for patch records)."""
    return open_ref(input_ref(cfg))


def input_query(cfg: InputConfig) -> TileQuery:
    """The tiles of the input's store to read (the ``catalog`` block's filter and run, or the
    PostgreSQL block's ``table`` / ``where_clause``)."""
    from smt_tools.catalog.store import TileQuery

    if cfg.catalog is not None:
        return tile_query(cfg.catalog)
    return TileQuery(
        table=cfg.table,
        where_clause=cfg.where_clause,
        statement_timeout_s=cfg.statement_timeout_s,
    )


# --- patch records -------------------------------------------------------------------------


# --- tile tables and the catalog -----------------------------------------------------------


def _with_patch_size(table: TileTable) -> TileTable:
    if "patch_size" not in table.frame.columns:
        frame = table.frame.copy(deep=False)  # copy-on-write: the columns are not copied
        frame["patch_size"] = np.maximum(
            frame["height"].to_numpy(np.int64), frame["width"].to_numpy(np.int64)
        )
        table = TileTable(frame, table.counts, table.class_values, table.nodata_class)
    return table


def input_class_names(store: TileStore | None) -> dict[int, str]:
    """Class value -> name known to the input's store (as written by ``catalog ingest
    --class-names``); empty for patch records."""
    if store is None:
        return {}
    return {v: n for v, (n, _) in store.class_names().items() if n}


def input_class_colours(store: TileStore | None) -> dict[int, str]:
    """Class value -> colour text known to the input's store (the ``colour`` column of the
    ``--class-names`` CSV); empty for patch records."""
    if store is None:
        return {}
    return {v: c for v, (_, c) in store.class_names().items() if c}
