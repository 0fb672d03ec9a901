"""Connections to the PostGIS catalog: URL resolution, password redaction, engine creation.

Every connection goes through :func:`connect`, which uses the psycopg 3 driver and turns an
unreachable server into one :class:`~smt_tools.errors.CatalogConnectionError` line. Passwords
are never printed: every message shows :func:`redact` of the URL.
"""

from __future__ import annotations

import os
import re

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.errors import CatalogConnectionError, CatalogError

#: Environment variable holding the default catalog URL.
ENV_URL = "SMT_DATABASE_URL"

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)
_USERINFO_PASSWORD = re.compile(r"^([a-z0-9+.\-]+://[^:/@?#]*):([^@/?#]*)@", re.IGNORECASE)
_PARAM_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


def resolve_url(explicit: str | None = None) -> str:
    """The catalog URL: ``explicit`` if given, else ``$SMT_DATABASE_URL``.

    Raises :class:`CatalogError` when neither is set.
    """
    url = explicit if explicit else os.environ.get(ENV_URL, "").strip()
    if not url:
        raise CatalogError("no catalog: pass --catalog postgresql://... or set SMT_DATABASE_URL")
    return url


def redact(url: str) -> str:
    """``url`` with any password (``user:pw@`` or ``password=pw``) replaced by ``***``."""
    out = _USERINFO_PASSWORD.sub(r"\1:***@", url)
    return _PARAM_PASSWORD.sub(r"\1***", out)


def _password(url: str) -> str | None:
    m = _USERINFO_PASSWORD.match(url)
    if m and m.group(2):
        return m.group(2)
    m2 = _PARAM_PASSWORD.search(url)
    return m2.group(2).strip("'") if m2 and m2.group(2) else None


def scrub(message: str, url: str) -> str:
    """``message`` as one line, with the URL's password (if any) masked."""
    line = " ".join(str(message).split())
    pw = _password(url)
    if pw:
        line = line.replace(pw, "***")
    return line


def sqlalchemy_url(url: str) -> str:
    """Map ``postgresql://`` / ``postgres://`` / ``postgresql+driver://`` to the psycopg 3 driver."""
    if not _SCHEME.match(url):
        raise CatalogError(
            f"catalog URL {redact(url)!r} is not a PostgreSQL URL; expected "
            "postgresql://user@host:5432/dbname (or a .parquet path where a local tile table is allowed)"
        )
    return _SCHEME.sub("postgresql+psycopg://", url, count=1)


def db_cause(exc: BaseException) -> BaseException:
    """The DB-API error wrapped by a SQLAlchemy error (or ``exc`` itself)."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def engine_label(engine: Engine) -> str:
    """The engine's URL for messages: password hidden, driver suffix removed."""
    shown = engine.url.render_as_string(hide_password=True)
    return redact(_SCHEME.sub("postgresql://", shown, count=1))


def connect(url: str, connect_timeout_s: int = 5) -> Engine:
    """An engine for ``url`` (psycopg 3), checked with one round trip.

    An unreachable server raises :class:`CatalogConnectionError` naming the redacted URL.
    The caller owns the engine (``engine.dispose()`` when done).
    """
    engine = create_engine(
        sqlalchemy_url(url),
        connect_args={"connect_timeout": connect_timeout_s, "application_name": "smt-tools"},
        pool_pre_ping=True,
        hide_parameters=True,
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = db_cause(exc)
        raise CatalogConnectionError(
            f"cannot connect to the catalog {redact(url)}: {scrub(str(cause), url)}; "
            "start PostGIS (e.g. `docker compose up -d`) or fix --catalog / SMT_DATABASE_URL"
        ) from None
    return engine
