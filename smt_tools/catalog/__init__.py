"""The PostGIS tile catalog: the only package that imports SQLAlchemy, GeoAlchemy2 or psycopg.

Public API: :func:`resolve_url`, :func:`redact`, :func:`connect`,
:func:`require_schema`, :func:`load_tiles`, :func:`record_run`; plus :func:`apply_migrations`
(``catalog init``), :func:`write_ingest` / :func:`source_fingerprints` (``catalog ingest``) and
:func:`catalog_stats` (``catalog stats``). The ORM models of the tables (GeoAlchemy2 geometry
columns, for queries from Python) are :class:`SourceImage`, :class:`Tile`, :class:`CatalogClass`,
:class:`Run` and :class:`TileResult` (``catalog.models``, imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smt_tools.catalog.bulk import (
    FINGERPRINT_COLUMNS,
    WriteStats,
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

if TYPE_CHECKING:
    from smt_tools.catalog.models import CatalogClass, Run, SourceImage, Tile, TileResult

#: the ORM models, imported on first use (GeoAlchemy2 costs ~0.3 s at import)
_MODELS = frozenset({"CatalogClass", "Run", "SourceImage", "Tile", "TileResult"})


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        from smt_tools.catalog import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FINGERPRINT_COLUMNS",
    "MIGRATIONS_DIR",
    "RESULT_COLUMNS",
    "CatalogClass",
    "MigrationReport",
    "Run",
    "SourceImage",
    "Tile",
    "TileResult",
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
    "record_run",
    "redact",
    "require_schema",
    "resolve_url",
    "server_versions",
    "source_fingerprints",
    "write_ingest",
]
