"""Size limits of smt_tools/: no module over 500 lines, no function over 80 lines.

A function's size is its ``def`` line to its last line (decorators not counted; nested
functions count towards the function that holds them, as they are read with it). Past these
sizes a module is split along its seams, a function into named steps (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import smt_tools

PACKAGE = Path(smt_tools.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

#: Known violations, each to be cleared (an entry that no longer violates fails the test, so the
#: list only shrinks). Keys: "path/under/smt_tools.py" for a module, "path.py::qualname" for a
#: function.
ALLOWED: dict[str, str] = {}


def _violations() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE_LINES:
            found[rel] = n_lines
        for name, span in _function_spans(ast.parse(text)):
            if span > MAX_FUNCTION_LINES:
                found[f"{rel}::{name}"] = span
    return found


def _function_spans(tree: ast.Module) -> list[tuple[str, int]]:
    """(qualified name, def line to last line) of every function and method, nested included."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                out.append((name, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def test_spans_are_measured_from_def_to_last_line() -> None:
    tree = ast.parse(
        "@decorator\ndef f(x):\n    def g():\n        return 1\n    return g\n\n"
        "class C:\n    def m(self):\n        pass\n"
    )
    assert _function_spans(tree) == [("f", 4), ("f.g", 2), ("C.m", 2)]


def test_no_module_over_500_lines_and_no_function_over_80() -> None:
    found = _violations()
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    assert new == {}, (
        "over the size limits (module > 500 lines or function > 80 lines; split it along its "
        "seams or into named steps): "
        + ", ".join(f"{k} ({v} lines)" for k, v in sorted(new.items()))
    )


def test_allowed_list_holds_only_current_violations() -> None:
    found = _violations()
    stale = sorted(k for k in ALLOWED if k not in found)
    assert stale == [], f"no longer over the limits; remove from ALLOWED: {', '.join(stale)}"
