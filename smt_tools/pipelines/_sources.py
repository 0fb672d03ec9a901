"""Open the store a config's ``catalog:`` block names, for the whole run.

Every command that reads tiles from the catalog goes through :func:`open_source`: the block's
``url`` / ``path`` (``${VAR}`` expanded here, once) become a store reference, and
:func:`~smt_tools.catalog.store.open_store` owns the connection until the run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from smt_tools.config._source import CatalogSource
from smt_tools.errors import ConfigError

if TYPE_CHECKING:
    from smt_tools.catalog.store import StoreRef, TileQuery, TileStore


def source_ref(src: CatalogSource, key: str) -> StoreRef:
    """The store reference of ``src`` (``key`` names the block in errors, e.g.
    ``split.catalog``); no url and no path: ``$SMT_DATABASE_URL``."""
    from smt_tools.catalog.store import store_ref

    mapping = src.column_mapping()
    if mapping is not None and key != "input.catalog":
        given = next(k for k, v in mapping.items() if v is not None)
        raise ConfigError(
            f"{key}.{given}: a table of your own is read by build-balanced-dataset and embed "
            f"(balanced_dataset.input.catalog); here {key} reads the catalog: remove the "
            "*_column keys"
        )
    return store_ref(url=src.resolved_url(key), path=src.resolved_path(key), key=key)


def tile_query(src: CatalogSource, *, included_only: bool = True) -> TileQuery:
    """The tiles ``src`` selects: its table, filter and run (``included_only``: tiles the run
    did not exclude)."""
    from smt_tools.catalog.store import TileQuery

    return TileQuery(
        table=src.table,
        where_clause=src.where_clause,
        run_id=src.run_id,
        included_only=included_only,
        statement_timeout_s=src.statement_timeout_s,
    )


@contextlib.contextmanager
def open_ref(ref: StoreRef | None) -> Iterator[TileStore | None]:
    """The open store of ``ref`` for the ``with`` block (None when the input is not the
    catalog: patch records, a CSV)."""
    if ref is None:
        yield None
        return
    from smt_tools.catalog.store import open_store

    with open_store(ref) as store:
        yield store


def open_source(
    src: CatalogSource | None, key: str
) -> contextlib.AbstractContextManager[TileStore | None]:
    """:func:`open_ref` of a config's ``catalog:`` block (``key`` names it in errors)."""
    return open_ref(None if src is None else source_ref(src, key))
