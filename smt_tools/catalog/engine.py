"""Connections to the PostGIS catalog: URL resolution, password redaction, engine creation.

Every connection goes through :func:`connect`, which uses the psycopg 3 driver and turns an
unreachable server into one :class:`~smt_tools.errors.CatalogConnectionError` line. Passwords
are never printed: every message shows :func:`redact` of the URL, and driver messages pass
through :func:`scrub`, which masks the password (whole, decoded, and its pieces: an unencoded
``@`` makes libpq split a password and echo the rest as a host name).

Forked worker processes never hold the parent's database connection: after a fork, the child
closes its copies of the connection sockets and starts with an empty pool (the parent's
sessions are untouched).
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.store_types import store_ref
from smt_tools.errors import CatalogConnectionError, CatalogError

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)
_ANY_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
#: ``password=`` in a URL query: the value runs to the next ``&`` (or the end).
_QUERY_PASSWORD = re.compile(r"([?&]password\s*=\s*)([^&]*)", re.IGNORECASE)
#: ``password=`` in a keyword DSN: a quoted value (backslash escapes), an unterminated quote
#: (to the end), or the next whitespace-free run.
_KEYWORD_PASSWORD = re.compile(
    r"((?:^|\s)password\s*=\s*)('(?:[^'\\]|\\.)*'|'.*$|\S*)", re.IGNORECASE | re.DOTALL
)
_KEYWORD = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_PIECE_SPLIT = re.compile(r"[@:/?#&=\s]+")
_MASK = "***"

#: label (redacted URL) -> secrets of the URL it came from (to mask later driver messages)
_SECRETS: dict[str, frozenset[str]] = {}
#: engines made by :func:`connect` -> their redacted label
_LABELS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
#: open DB-API connections of this process (closed in forked children)
_CONNECTIONS: weakref.WeakSet[Any] = weakref.WeakSet()


def resolve_url(explicit: str | None = None) -> str:
    """The catalog URL: ``explicit`` if given, else ``$SMT_DATABASE_URL``.

    Raises :class:`CatalogError` when neither is set.
    """
    ref = store_ref(explicit)  # the one resolution of --catalog / $SMT_DATABASE_URL
    if ref.url is None:
        raise CatalogError(
            f"{ref.path} is a Parquet tile table; SQL on the catalog needs a postgresql:// URL"
        )
    return ref.url


def _userinfo_password_span(rest: str) -> tuple[int, int] | None:
    """(start, end) of the password in ``rest`` (the URL after ``scheme://``).

    The password runs from the first ``:`` of the user info to the LAST ``@`` (a host never
    contains ``@``, so an unencoded ``@``, ``/``, ``?`` or ``#`` in a password stays inside it).
    None when there is no ``user:`` part before an ``@``.
    """
    at = rest.rfind("@")
    if at < 0:
        return None
    colon = rest.find(":", 0, at)
    if colon < 0 or any(ch in rest[:colon] for ch in "/?#"):
        return None
    return colon + 1, at


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``: ``user:pw@`` (even with unencoded
    ``@ : / ? #`` in it), ``?password=`` query values and keyword ``password=`` values."""
    m = _ANY_SCHEME.match(url)
    if m is None:  # keyword DSN: host=... password=...
        return _KEYWORD_PASSWORD.sub(lambda k: k.group(1) + _MASK, url)
    head, rest = url[: m.end()], url[m.end() :]
    span = _userinfo_password_span(rest)
    if span is not None:
        rest = rest[: span[0]] + _MASK + rest[span[1] :]
    rest = _QUERY_PASSWORD.sub(lambda q: q.group(1) + _MASK, rest)
    return head + rest


def _unquote_keyword(value: str) -> str:
    if value.startswith("'"):
        inner = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
        return re.sub(r"\\(.)", r"\1", inner)
    return value


def secrets_of(url: str) -> set[str]:
    """Every password in ``url`` as written and decoded (empty strings left out)."""
    found: list[str] = []
    m = _ANY_SCHEME.match(url)
    if m is None:
        found += [k.group(2) for k in _KEYWORD_PASSWORD.finditer(url)]
        found += [_unquote_keyword(k.group(2)) for k in _KEYWORD_PASSWORD.finditer(url)]
    else:
        rest = url[m.end() :]
        span = _userinfo_password_span(rest)
        if span is not None:
            found.append(rest[span[0] : span[1]])
        found += [q.group(2) for q in _QUERY_PASSWORD.finditer(rest)]
    out = set()
    for s in found:
        for v in (s, unquote(s)):
            if v and v != _MASK:
                out.add(v)
    return out


def _fragments(secrets: set[str] | frozenset[str]) -> list[str]:
    """The secrets and their pieces between separators (3+ characters), longest first."""
    parts: set[str] = set()
    for s in secrets:
        parts.add(s)
        parts.update(p for p in _PIECE_SPLIT.split(s) if len(p) >= 3)
    return sorted(parts, key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """``message`` as one line, with the URL's password masked: whole, decoded, and its pieces
    (``url`` may be the original URL or a label made by :func:`connect`)."""
    line = " ".join(str(message).split())
    secrets = secrets_of(url) | set(_SECRETS.get(url, frozenset()))
    for frag in _fragments(secrets):
        line = line.replace(frag, _MASK)
    return line


def _safe_values(url: str) -> set[str]:
    """Host, port, user and database of ``url`` as a driver message may quote them."""
    safe: set[str] = set()
    m = _ANY_SCHEME.match(url)
    if m is None:
        for k in _KEYWORD.finditer(url):
            if k.group(1).lower() in ("host", "hostaddr", "port", "user", "dbname"):
                safe.add(_unquote_keyword(k.group(2)))
        return safe
    try:
        parts = urlsplit(_SCHEME.sub("postgresql://", redact(url), count=1))
        for v in (parts.hostname, parts.username, parts.path.lstrip("/")):
            if v:
                safe.add(unquote(v))
        if parts.port:
            safe.add(str(parts.port))
    except ValueError:
        pass
    return safe


def _password_hint(url: str) -> str:
    m = _ANY_SCHEME.match(url)
    if m is None:
        return ""
    span = _userinfo_password_span(url[m.end() :])
    if span is None:
        return ""
    pw = url[m.end() :][span[0] : span[1]]
    bad = [ch for ch in "@/?#" if ch in pw]
    if not bad:
        return ""
    return (
        f"; the password contains {', '.join(repr(c) for c in bad)}: percent-encode it "
        "(e.g. %40 for @, %2F for /) or leave it out of the URL and use PGPASSWORD or ~/.pgpass"
    )


def connection_failure_text(cause: BaseException | str, url: str) -> str:
    """A driver's connection-failure message, safe to print: one line, quoted values ("..." or
    '...') other than the URL's host, port, user and database replaced by ``"…"``, the
    password masked."""
    first = " ".join(str(cause).split())
    safe = {v for v in _safe_values(url) if not any(s in v for s in secrets_of(url))}
    first = re.sub(
        r"\"([^\"]*)\"|'([^']*)'",
        lambda q: q.group(0) if (q.group(1) or q.group(2) or "") in safe else '"…"',
        first,
    )
    return scrub(first, url)


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


def is_db_error(exc: BaseException) -> bool:
    """A database error: SQLAlchemy's, or the driver's (psycopg) raised on a raw cursor."""
    return isinstance(exc, SQLAlchemyError) or type(exc).__module__.startswith("psycopg")


def db_sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a database error (``""`` when it has none)."""
    return str(getattr(db_cause(exc), "sqlstate", "") or "")


def db_message(exc: BaseException, url: str) -> str:
    """A database error's message, safe to print on one line: the first line of the driver's
    message (the exception type when it has none; DETAIL and CONTEXT lines can quote row
    values and are dropped), with the password of ``url`` masked."""
    cause = db_cause(exc)
    lines = str(cause).strip().splitlines()
    return scrub(lines[0] if lines else type(cause).__name__, url)


def db_failure(exc: BaseException, label: str, doing: str, then: str = "") -> CatalogError:
    """``catalog <label>: <doing> failed: <db_message><then>`` as a :class:`CatalogError`."""
    return CatalogError(f"catalog {label}: {doing} failed: {db_message(exc, label)}{then}")


def engine_label(engine: Engine) -> str:
    """The engine's URL for messages: password hidden, driver suffix removed."""
    label = _LABELS.get(engine)
    if label is not None:
        return label
    shown = engine.url.render_as_string(hide_password=True)
    return redact(_SCHEME.sub("postgresql://", shown, count=1))


def _track_connection(dbapi_connection: Any, _record: Any) -> None:
    with contextlib.suppress(TypeError):
        _CONNECTIONS.add(dbapi_connection)


def _after_fork_in_child() -> None:
    """In a forked child: close the inherited connection sockets (without telling the server:
    the sessions belong to the parent) and give every engine a fresh, empty pool."""
    for conn in list(_CONNECTIONS):
        with contextlib.suppress(Exception):
            pgconn = getattr(conn, "pgconn", None)
            if pgconn is not None and not conn.closed:
                os.close(int(pgconn.socket))
    _CONNECTIONS.clear()
    for engine in list(_LABELS.keys()):
        with contextlib.suppress(Exception):
            engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def connect(url: str, connect_timeout_s: int = 5, *, single: bool = False) -> Engine:
    """An engine for ``url`` (psycopg 3), checked with one round trip.

    ``single``: the engine holds at most one connection, reused by every statement of the run
    (a store's engine); asking for a second while the first is in use is an error, not a wait.

    An unreachable server raises :class:`CatalogConnectionError` naming the redacted URL.
    The caller owns the engine (``engine.dispose()`` when done).
    """
    label = redact(_SCHEME.sub("postgresql://", url, count=1))
    hint = _password_hint(url)
    secrets = secrets_of(url)
    if secrets:
        _SECRETS[label] = frozenset(secrets)
    try:
        engine = create_engine(
            sqlalchemy_url(url),
            connect_args={"connect_timeout": connect_timeout_s, "application_name": "smt-tools"},
            pool_pre_ping=True,
            hide_parameters=True,
            **({"pool_size": 1, "max_overflow": 0, "pool_timeout": 1} if single else {}),
        )
    except CatalogError:
        raise
    except Exception as exc:  # a URL SQLAlchemy cannot parse (e.g. a port that is not a number)
        raise CatalogConnectionError(
            f"catalog URL {label} is not valid: {connection_failure_text(exc, url)}{hint}"
        ) from None
    _LABELS[engine] = label
    event.listen(engine, "connect", _track_connection)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = db_cause(exc)
        raise CatalogConnectionError(
            f"cannot connect to the catalog {label}: {connection_failure_text(cause, url)}"
            f"{hint}; start PostGIS (e.g. `docker compose up -d --wait`) or fix --catalog / "
            "SMT_DATABASE_URL"
        ) from None
    except ValueError:  # the host name cannot be encoded (UnicodeError from idna), e.g. "a..b"
        engine.dispose()
        raise CatalogConnectionError(
            f"cannot connect to the catalog {label}: its host is not a valid host name{hint}; "
            "fix --catalog / SMT_DATABASE_URL"
        ) from None
    return engine
