"""Forward-only SQL migrations (``smt_tools/migrations/NNNN_*.sql``) and the schema check.

The SQL files are package data, read with :mod:`importlib.resources`, so a wheel install
carries them (see :mod:`smt_tools.resources`).

``apply_migrations`` is idempotent: files already listed in ``schema_migrations`` are skipped,
the rest run in one transaction under an advisory lock (two concurrent ``catalog init`` calls
are safe). ``require_schema`` tells the user to run ``catalog init`` when anything is missing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.engine import db_message, engine_label, redact
from smt_tools.errors import CatalogError, CatalogSchemaError
from smt_tools.resources import migrations_dir

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: Folder of the numbered SQL files inside the installed package (``smt_tools/migrations``).
MIGRATIONS_DIR: Traversable = migrations_dir()

_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x5A7_7001  # advisory lock id for migrations

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename    text PRIMARY KEY,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'SQL files of smt_tools/migrations/ applied by `pytorch-smt-tools catalog init`.';
COMMENT ON COLUMN schema_migrations.filename IS 'Migration file name, e.g. 0001_catalog.sql.';
COMMENT ON COLUMN schema_migrations.sha256 IS 'SHA-256 of the file content when it was applied.';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When the migration was applied.';
"""


@dataclass(frozen=True)
class Migration:
    filename: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass
class MigrationReport:
    """What ``catalog init`` did: file names newly applied and already present."""

    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)


def migration_files(folder: Path | Traversable | None = None) -> list[Migration]:
    """The migrations in ``folder`` (default :data:`MIGRATIONS_DIR`), in file-name order."""
    folder = folder if folder is not None else MIGRATIONS_DIR
    if not folder.is_dir():
        raise CatalogError(
            f"migrations folder {folder} not found: this smt-tools install is incomplete; "
            "reinstall it (pip install --force-reinstall smt-tools)"
        )
    out = [
        Migration(p.name, p.read_text(encoding="utf-8"))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if _NAME.match(p.name)
    ]
    if not out:
        raise CatalogError(f"no migrations (NNNN_name.sql) found in {folder}")
    return out


def _applied(conn: Connection) -> dict[str, str]:
    exists = conn.execute(text("select to_regclass('schema_migrations') is not null")).scalar()
    if not exists:
        return {}
    rows = conn.execute(text("select filename, sha256 from schema_migrations")).all()
    return {str(r[0]): str(r[1]) for r in rows}


def apply_migrations(engine: Engine, folder: Path | Traversable | None = None) -> MigrationReport:
    """Apply every migration not yet recorded, in one transaction; return what happened."""
    migrations = migration_files(folder)
    report = MigrationReport()
    url = engine_label(engine)
    try:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            conn.exec_driver_sql(_BOOTSTRAP)
            done = _applied(conn)
            for m in migrations:
                if m.filename in done:
                    if done[m.filename] != m.sha256:
                        raise CatalogSchemaError(
                            f"migration {m.filename} was changed after it was applied to {redact(url)}; "
                            "migrations are forward-only: restore the file and add a new numbered one"
                        )
                    report.already_applied.append(m.filename)
                    continue
                conn.exec_driver_sql(m.sql)
                conn.execute(
                    text("insert into schema_migrations (filename, sha256) values (:f, :h)"),
                    {"f": m.filename, "h": m.sha256},
                )
                report.applied.append(m.filename)
    except SQLAlchemyError as exc:
        raise CatalogError(
            f"catalog init failed on {redact(url)}: {db_message(exc, url)}; nothing was changed "
            "(the role needs CREATE rights and the PostGIS extension must be installable)"
        ) from None
    return report


def require_schema(engine: Engine) -> None:
    """Raise :class:`CatalogSchemaError` unless every migration file is applied."""
    url = engine_label(engine)
    wanted = [m.filename for m in migration_files()]
    try:
        with engine.connect() as conn:
            done = _applied(conn)
    except SQLAlchemyError as exc:
        raise CatalogError(f"catalog {redact(url)}: {db_message(exc, url)}") from None
    missing = [f for f in wanted if f not in done]
    if not done:
        raise CatalogSchemaError(
            f"Catalog schema missing in {redact(url)}; run `pytorch-smt-tools catalog init`"
        )
    if missing:
        raise CatalogSchemaError(
            f"Catalog schema in {redact(url)} is outdated (missing {', '.join(missing)}); "
            "run `pytorch-smt-tools catalog init`"
        )
