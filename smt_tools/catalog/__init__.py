"""The PostGIS tile catalog: the only package that imports SQLAlchemy, GeoAlchemy2 or psycopg.

Public API: :func:`resolve_url`, :func:`redact`, :func:`connect`,
:func:`require_schema`, :func:`load_tiles`, :func:`record_run`; plus :func:`apply_migrations`
(``catalog init``), :func:`write_ingest` / :func:`source_fingerprints` (``catalog ingest``) and
:func:`catalog_stats` (``catalog stats``).
"""

from __future__ import annotations

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

__all__ = [
    "FINGERPRINT_COLUMNS",
    "MIGRATIONS_DIR",
    "RESULT_COLUMNS",
    "MigrationReport",
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
