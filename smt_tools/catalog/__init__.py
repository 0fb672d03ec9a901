"""The tile catalog: one way in (:func:`open_store`), PostGIS or a Parquet tile table.

Pipelines open a :class:`TileStore` with :func:`open_store` and use only its methods: read
tiles (with a filter), write an ingest, record a run and its per-tile results, read a run back.
The PostGIS backend is the only code that imports SQLAlchemy, GeoAlchemy2 or psycopg; the
Parquet backend (``parquet_io``) imports none of them, and neither does this package until a
PostGIS name is used: every name below is imported on first use.

Also here: the migrations runner (``catalog init``), the ORM models of the tables for queries
from Python (:class:`SourceImage`, :class:`Tile`, :class:`CatalogClass`, :class:`Run`,
:class:`TileResult`, GeoAlchemy2 geometry columns) and URL helpers (:func:`resolve_url`,
:func:`redact`, :func:`connect`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smt_tools.catalog.bulk import (
        FINGERPRINT_COLUMNS,
        source_fingerprints,
        write_ingest,
    )
    from smt_tools.catalog.engine import connect, engine_label, redact, resolve_url
    from smt_tools.catalog.migrate import (
        MIGRATIONS_DIR,
        MigrationReport,
        apply_migrations,
        migration_files,
        require_schema,
    )
    from smt_tools.catalog.models import CatalogClass, Run, SourceImage, Tile, TileResult
    from smt_tools.catalog.queries import (
        RESULT_COLUMNS,
        catalog_stats,
        check_where_clause,
        class_colours,
        class_names,
        count_rows,
        load_tiles,
        record_run,
        server_versions,
    )
    from smt_tools.catalog.store import (
        RunRecord,
        StoreRef,
        TileQuery,
        TileStore,
        WriteStats,
        open_store,
        store_ref,
    )

#: public name -> the module that defines it (imported on first use: SQLAlchemy costs ~0.2 s,
#: GeoAlchemy2 ~0.3 s, and the Parquet path needs neither)
_HOME: dict[str, str] = {
    **dict.fromkeys(("FINGERPRINT_COLUMNS", "source_fingerprints", "write_ingest"), "bulk"),
    **dict.fromkeys(("connect", "engine_label", "redact", "resolve_url"), "engine"),
    **dict.fromkeys(
        (
            "MIGRATIONS_DIR",
            "MigrationReport",
            "apply_migrations",
            "migration_files",
            "require_schema",
        ),
        "migrate",
    ),
    **dict.fromkeys(("CatalogClass", "Run", "SourceImage", "Tile", "TileResult"), "models"),
    **dict.fromkeys(
        (
            "RESULT_COLUMNS",
            "catalog_stats",
            "check_where_clause",
            "class_colours",
            "class_names",
            "count_rows",
            "load_tiles",
            "record_run",
            "server_versions",
        ),
        "queries",
    ),
    **dict.fromkeys(
        (
            "RunRecord",
            "StoreRef",
            "TileQuery",
            "TileStore",
            "WriteStats",
            "open_store",
            "store_ref",
        ),
        "store",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FINGERPRINT_COLUMNS",
    "MIGRATIONS_DIR",
    "RESULT_COLUMNS",
    "CatalogClass",
    "MigrationReport",
    "Run",
    "RunRecord",
    "SourceImage",
    "StoreRef",
    "Tile",
    "TileQuery",
    "TileResult",
    "TileStore",
    "WriteStats",
    "apply_migrations",
    "catalog_stats",
    "check_where_clause",
    "class_colours",
    "class_names",
    "connect",
    "count_rows",
    "engine_label",
    "load_tiles",
    "migration_files",
    "open_store",
    "record_run",
    "redact",
    "require_schema",
    "resolve_url",
    "server_versions",
    "source_fingerprints",
    "store_ref",
    "write_ingest",
]
