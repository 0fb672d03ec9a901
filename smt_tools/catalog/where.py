"""The user's ``where_clause``: exactly one boolean expression over the tile table.

The clause is tokenized (quoted strings and identifiers handled as PostgreSQL does, so
``name = 'union'`` is fine) and refused before it runs when it could escape its parentheses or
do more than filter rows: unbalanced parentheses or quotes, ``;``, comments, ``UNION`` /
``INTERSECT`` / ``EXCEPT``, subqueries (``SELECT``, ``VALUES``, ``TABLE``, ``WITH``),
statements, placeholders, dollar quoting, and calls to any function outside a short list of
pure functions (so no ``pg_read_file``, ``pg_ls_dir``, ``lo_import``, ``dblink``,
``current_setting``, ...). The query then runs as ``... WHERE (<clause>)`` in a READ ONLY
transaction with a statement timeout, with the privileges of the connecting user.

Database errors raised by the clause are reported without values from the data or the server:
:func:`safe_db_message` keeps the SQLSTATE and the primary message of compile-time errors
(class 42: ``column "foo" does not exist``) and strips quoted values and everything after the
first ``:`` from the others (``invalid input syntax for type integer: "<file contents>"``).
"""

from __future__ import annotations

import re

from smt_tools.errors import UnsafeQueryError

_EXAMPLE = 'e.g. "nodata_ratio < 0.05 and class_entropy > 0.2"'

#: Words that start a subquery, a set operation or another statement (unquoted only: a
#: column named "table" can still be written as a quoted identifier).
FORBIDDEN_WORDS = frozenset(
    """select union intersect except values table with into insert update delete merge
    returning lateral join copy do execute call grant revoke create drop alter truncate
    set""".split()
)
#: Keywords that may stand right before "(" without being a function call.
_KEYWORDS_BEFORE_PAREN = frozenset(
    """and or not in is like ilike similar to between symmetric when then else case end
    escape from for as at zone collate overlaps both leading trailing null true false
    isnull notnull array distinct""".split()
)

#: Functions a filter may call: pure maths, text, arrays, dates and PostGIS geometry.
ALLOWED_FUNCTIONS = frozenset(
    """abs round trunc floor ceil ceiling sign sqrt cbrt exp ln log log10 power pow mod div
    greatest least coalesce nullif isfinite width_bucket
    lower upper length char_length character_length octet_length substr substring position
    strpos starts_with left right trim btrim ltrim rtrim replace concat concat_ws split_part
    reverse initcap lpad rpad format md5 regexp_like regexp_match regexp_replace translate
    array_length array_position array_positions array_to_string cardinality unnest any all
    some array_lower array_upper array_ndims
    extract date_part date_trunc make_date make_timestamp to_timestamp to_date to_char
    to_number age now current_date
    cast row num_nulls num_nonnulls""".split()
)
#: PostGIS functions (``st_*``) are allowed except those that reach files or GDAL.
_BAD_ST = re.compile(r"gdal|raster|band|outdb|file|mvt|asgdal|fromgdal", re.IGNORECASE)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--|/\*|\*/)
  | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<bitstring>[bBxXnN]'(?:[^']|'')*')
  | (?P<ustring>[uU]&'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<dollar>\$[A-Za-z_0-9]*\$?)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_\u0080-\uffff][A-Za-z_0-9$\u0080-\uffff]*)
  | (?P<semicolon>;)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<punct>::|[,.:\[\]])
  | (?P<op>[-+*/<>=~!@#%^&|`?]+)
    """,
    re.VERBOSE | re.DOTALL,
)


def _refuse(clause: str, why: str) -> UnsafeQueryError:
    return UnsafeQueryError(
        f"where clause {clause!r} {why}; give one boolean expression over the tile table's "
        f"columns, {_EXAMPLE}"
    )


def tokenize(clause: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens of ``clause`` without whitespace; unterminated quotes and
    characters SQL does not allow raise :class:`UnsafeQueryError`."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(clause):
        m = _TOKEN.match(clause, pos)
        if m is None or m.end() == pos:
            ch = clause[pos]
            if ch in "'\"":
                raise _refuse(clause, f"has an unterminated {ch} quote")
            raise _refuse(clause, f"contains the character {ch!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def check_where_clause(clause: str) -> str:
    """Return ``clause`` when it is one boolean-looking expression that cannot escape
    ``WHERE (...)``; otherwise raise :class:`UnsafeQueryError` (one line, before it runs).

    The server still checks that the expression is boolean (``argument of WHERE must be type
    boolean``) and runs it READ ONLY with a statement timeout.
    """
    if not clause or not clause.strip():
        raise UnsafeQueryError("where clause is empty; omit it to load every tile")
    tokens = tokenize(clause)
    depth = 0
    for i, (kind, tok) in enumerate(tokens):
        if kind == "comment":
            raise _refuse(clause, f"contains an SQL comment ({tok!r}); remove it")
        if kind == "semicolon":
            raise _refuse(clause, "contains ';' (only one expression, no further statements)")
        if kind == "dollar":
            raise _refuse(clause, f"contains {tok!r} (placeholders and dollar quoting)")
        if kind == "op" and ("--" in tok or "/*" in tok):
            raise _refuse(clause, "contains an SQL comment; remove it")
        if kind == "lparen":
            depth += 1
        elif kind == "rparen":
            depth -= 1
            if depth < 0:
                raise _refuse(clause, "closes a parenthesis it did not open")
        word = tok.lower() if kind == "ident" else None
        if word in FORBIDDEN_WORDS:
            raise _refuse(
                clause,
                f"uses {tok.upper()} (no subqueries, set operations or statements)",
            )
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        prev = tokens[i - 1][1].lower() if i > 0 else ""
        is_call = nxt == "lparen" and kind in ("ident", "qident")
        if is_call and kind == "ident" and (word in _KEYWORDS_BEFORE_PAREN or prev in ("::", "as")):
            is_call = False  # "and (", "in (", a type modifier as in "::numeric(10, 2)"
        if is_call:
            name = tok[1:-1].replace('""', '"') if kind == "qident" else tok
            low = name.lower()
            allowed = (
                low in ALLOWED_FUNCTIONS or (low.startswith("st_") and not _BAD_ST.search(low))
            ) and prev != "."
            if not allowed:
                shown = f"{tokens[i - 2][1]}.{name}" if prev == "." and i >= 2 else name
                raise _refuse(
                    clause,
                    f"calls the function {shown}() which a filter may not call (allowed: maths, "
                    "text, array and date functions, and PostGIS st_* geometry functions)",
                )
    if depth != 0:
        raise _refuse(clause, "has unbalanced parentheses")
    return clause


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


def safe_db_message(exc: BaseException) -> str:
    """A database error raised while running a user filter, safe to print: the SQLSTATE and
    the server's primary message for compile-time errors (class 42), otherwise the primary
    message with quoted values masked and anything after its first ':' dropped. Never the
    DETAIL / CONTEXT lines or the query text (they can carry query results)."""
    orig = getattr(exc, "orig", None) or exc
    state = str(getattr(orig, "sqlstate", "") or "")
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        lines = str(orig).strip().splitlines()
        primary = lines[0] if lines else type(orig).__name__
    primary = " ".join(str(primary).split())
    if state.startswith("42"):
        text = primary
    elif state.startswith(("P0", "XX", "38", "39")) or not state:
        text = "the query failed"
    else:
        text = _QUOTED.sub('"…"', primary).split(":", 1)[0].strip()
    return f"{text} (SQLSTATE {state})" if state else text
