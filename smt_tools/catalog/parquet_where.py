"""``where_clause`` on a Parquet tile table: the common SQL filters, evaluated in pandas.

The clause first passes :func:`~smt_tools.catalog.where.check_where_clause` (the same rules as
on PostGIS), then a small parser evaluates the part of SQL that filters tiles: comparisons
(``= <> != < <= > >=``), ``and`` / ``or`` / ``not``, parentheses, ``+ - * /``, ``[not] in (…)``,
``[not] between … and …``, ``[not] like`` / ``ilike`` with ``%`` and ``_``, ``is [not] null``,
``true`` / ``false`` / ``null`` and the functions ``abs``, ``round``, ``lower``, ``upper``,
``length`` and ``coalesce``. Logic is SQL's three-valued one (pandas' nullable booleans): a
row whose condition is unknown (a null column) is left out, also under ``not``. Anything else
is one line saying what is supported and that the PostGIS catalog runs full SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.catalog.where import check_where_clause, tokenize
from smt_tools.errors import UnsafeQueryError

_SUPPORTED = (
    "comparisons, and/or/not, in, between, like/ilike, is [not] null, + - * /, "
    "abs/round/lower/upper/length/coalesce"
)
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


class _Parser:
    """Recursive descent over the tokens of one clause; values are Series or scalars."""

    def __init__(self, frame: pd.DataFrame, clause: str, label: str) -> None:
        self.frame = frame
        self.clause = clause
        self.label = label
        self.tokens = tokenize(clause)
        self.i = 0

    # --- token helpers -------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("", "")

    def _word(self, offset: int = 0) -> str:
        kind, tok = self._peek(offset)
        return tok.lower() if kind == "ident" else ""

    def _take(self, kind: str | None = None, text: str | None = None) -> str:
        k, tok = self._peek()
        if (kind and k != kind) or (text and tok.lower() != text):
            self._unsupported(tok or "the end of the clause")
        self.i += 1
        return tok

    def _unsupported(self, near: str) -> None:
        raise UnsafeQueryError(
            f"{self.label}: catalog.where_clause near {near!r}: a Parquet tile table supports "
            f"{_SUPPORTED}; for other SQL use the PostGIS catalog"
        )

    # --- grammar -------------------------------------------------------------------------

    def parse(self) -> Any:
        value = self._or()
        if self.i != len(self.tokens):
            self._unsupported(self._peek()[1])
        return value

    def _or(self) -> Any:
        value = self._and()
        while self._word() == "or":
            self.i += 1
            value = _bool(value) | _bool(self._and())
        return value

    def _and(self) -> Any:
        value = self._not()
        while self._word() == "and":
            self.i += 1
            value = _bool(value) & _bool(self._not())
        return value

    def _not(self) -> Any:
        if self._word() == "not":
            self.i += 1
            return ~_bool(self._not())
        return self._predicate()

    def _predicate(self) -> Any:
        left = self._sum()
        kind, tok = self._peek()
        if kind == "op" and tok in _CMP:
            self.i += 1
            return _CMP[tok](left, self._sum())
        negate = self._word() == "not" and self._word(1) in ("in", "between", "like", "ilike")
        if negate:
            self.i += 1
        word = self._word()
        if word == "is":
            self.i += 1
            is_not = self._word() == "not"
            self.i += int(is_not)
            self._take("ident", "null")
            null = _series(left, self.frame).isna()
            return _bool(~null if is_not else null)
        if word == "in":
            self.i += 1
            result = self._in(left)
        elif word == "between":
            self.i += 1
            low = self._sum()
            self._take("ident", "and")
            result = _bool(left >= low) & _bool(left <= self._sum())
        elif word in ("like", "ilike"):
            self.i += 1
            result = self._like(left, self._sum(), word == "ilike")
        else:
            return left
        return ~_bool(result) if negate else result

    def _in(self, left: Any) -> Any:
        self._take("lparen")
        items = [self._sum()]
        while self._peek()[0] == "punct" and self._peek()[1] == ",":
            self.i += 1
            items.append(self._sum())
        self._take("rparen")
        result = _bool(left == items[0])
        for item in items[1:]:
            result = result | _bool(left == item)
        return result

    def _like(self, left: Any, pattern: Any, ignore_case: bool) -> Any:
        if not isinstance(pattern, str):
            self._unsupported("like")
        regex = "".join(
            ".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(pattern)
        )
        text = _series(left, self.frame).astype("string")
        return text.str.fullmatch(regex, case=not ignore_case)

    def _sum(self) -> Any:
        value = self._product()
        while self._peek()[0] == "op" and self._peek()[1] in ("+", "-"):
            op = self._take()
            value = _ARITH[op](value, self._product())
        return value

    def _product(self) -> Any:
        value = self._unary()
        while self._peek()[0] == "op" and self._peek()[1] in ("*", "/"):
            op = self._take()
            value = _ARITH[op](value, self._unary())
        return value

    def _unary(self) -> Any:
        if self._peek() == ("op", "-"):
            self.i += 1
            return -self._unary()
        return self._primary()

    def _primary(self) -> Any:
        kind, tok = self._peek()
        if kind == "number":
            self.i += 1
            return float(tok) if any(c in tok for c in ".eE") else int(tok)
        if kind == "string":
            self.i += 1
            return tok[1:-1].replace("''", "'")
        if kind == "lparen":
            self.i += 1
            value = self._or()
            self._take("rparen")
            return value
        if kind == "qident":
            self.i += 1
            return self._column(tok[1:-1].replace('""', '"'))
        if kind == "ident":
            word = tok.lower()
            if word in ("true", "false"):
                self.i += 1
                return word == "true"
            if word == "null":
                self.i += 1
                return pd.Series(pd.NA, index=self.frame.index, dtype="Float64")
            if self._peek(1)[0] == "lparen":
                return self._call(word)
            self.i += 1
            return self._column(word)
        self._unsupported(tok or "the end of the clause")
        return None  # unreachable

    def _call(self, name: str) -> Any:
        self.i += 2  # name (
        args = [self._or()]
        while self._peek()[0] == "punct" and self._peek()[1] == ",":
            self.i += 1
            args.append(self._or())
        self._take("rparen")
        one = {
            "abs": lambda a: abs(a),
            "round": lambda a: _series(a, self.frame).round(),
            "lower": lambda a: _series(a, self.frame).astype("string").str.lower(),
            "upper": lambda a: _series(a, self.frame).astype("string").str.upper(),
            "length": lambda a: _series(a, self.frame).astype("string").str.len(),
        }
        if name in one and len(args) == 1:
            return one[name](args[0])
        if name == "round" and len(args) == 2 and isinstance(args[1], int):
            return _series(args[0], self.frame).round(args[1])
        if name == "coalesce":
            out = _series(args[0], self.frame)
            for a in args[1:]:
                out = out.fillna(a)
            return out
        self._unsupported(f"{name}(")
        return None  # unreachable

    def _column(self, name: str) -> pd.Series:
        if name not in self.frame.columns:
            raise UnsafeQueryError(
                f"{self.label}: catalog.where_clause: column {name!r} does not exist; a filter "
                f"sees the catalog's tile columns: {', '.join(map(str, self.frame.columns))}"
            )
        return self.frame[name].convert_dtypes()


def _series(value: Any, frame: pd.DataFrame) -> pd.Series:
    if isinstance(value, pd.Series):
        return value
    return pd.Series([value] * len(frame), index=frame.index).convert_dtypes()


def _bool(value: Any) -> Any:
    """A condition as pandas' nullable boolean (Kleene logic: unknown stays unknown)."""
    if isinstance(value, pd.Series):
        if value.dtype == "boolean":
            return value
        if value.dtype == bool or str(value.dtype) == "bool":
            return value.astype("boolean")
        raise UnsafeQueryError(
            "catalog.where_clause: argument of WHERE must be a condition (true/false); "
            f"got a value of type {value.dtype}"
        )
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise UnsafeQueryError(
        f"catalog.where_clause: argument of WHERE must be a condition (true/false); got {value!r}"
    )


def filter_rows(frame: pd.DataFrame, clause: str, label: str) -> np.ndarray:
    """(n,) bool: the rows of ``frame`` for which ``clause`` is true (unknown counts as false)."""
    check_where_clause(clause)
    value = _Parser(frame.reset_index(drop=True), clause, label).parse()
    result = _bool(value)
    if isinstance(result, bool):
        return np.full(len(frame), result)
    return np.asarray(result.fillna(False).to_numpy(dtype=bool))
