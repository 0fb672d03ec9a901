"""One way into the tiles: :func:`open_store` and the :class:`TileStore` protocol.

A store is where tiles come from and where runs go: the PostGIS catalog
(:class:`~smt_tools.catalog.postgis_store.PostgisStore`) or a Parquet tile table written by
``catalog ingest --catalog tiles.parquet``
(:class:`~smt_tools.catalog.parquet_store.ParquetStore`, its runs in ``tiles.parquet.runs/``).
Pipelines receive an open store and call its methods (:mod:`smt_tools.catalog.store_types`);
they never build a connection or pick a backend. :func:`open_store` resolves the reference
(``$SMT_DATABASE_URL`` when nothing is given) once, opens one connection (PostGIS) or takes the
table's lock (Parquet, for writing), and closes it when the ``with`` block ends, whatever
happened inside.

This module imports no database library: a Parquet run never loads SQLAlchemy or psycopg.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from smt_tools.catalog.store_types import (
    ENV_URL,
    RESULT_COLUMNS,
    RunRecord,
    StoreKind,
    StoreRef,
    TileQuery,
    TileStore,
    WriteStats,
    is_parquet_target,
    store_ref,
)

__all__ = [
    "ENV_URL",
    "RESULT_COLUMNS",
    "RunRecord",
    "StoreKind",
    "StoreRef",
    "TileQuery",
    "TileStore",
    "WriteStats",
    "is_parquet_target",
    "open_store",
    "store_ref",
]


@contextlib.contextmanager
def open_store(
    ref: str | os.PathLike[str] | StoreRef | None = None,
    *,
    write: bool = False,
    create: bool = False,
    statement_timeout_s: float = 60.0,
) -> Iterator[TileStore]:
    """Open the store ``ref`` names (see :func:`store_ref`) for one run and close it at the end.

    PostGIS: one connection for the whole run (the schema is checked once, unless ``create``:
    ``catalog init`` migrates an empty database). Parquet: ``write`` takes the table's lock
    (``<table>.lock``) for the whole run, so a read-modify-write never loses another process's
    rows; ``create`` allows a table that does not exist yet (``catalog ingest``).
    """
    resolved = store_ref(ref)
    store: TileStore
    if resolved.path is not None:
        from smt_tools.catalog.parquet_store import ParquetStore

        store = ParquetStore(resolved.path, write=write, create=create)
    else:
        from smt_tools.catalog.postgis_store import PostgisStore

        assert resolved.url is not None
        store = PostgisStore(resolved.url, check_schema=not create)
    try:
        yield store
    finally:
        store.close()
