"""docs/faults.md names a test for every case; each named test must exist (the table never drifts)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_fault_row_names_existing_tests() -> None:
    text = (ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| case")]
    count = re.search(r"\*\*(\d+) cases: 0 tracebacks, 0 data lost\.\*\*", text)
    assert count is not None and int(count.group(1)) == len(rows)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4, row
        refs = re.findall(r"`([\w./]*?)::(\w+)`", cells[3])
        assert refs, f"no test named in: {row}"
        current: str | None = None
        for file, name in refs:
            current = file or current
            assert current, row
            path = ROOT / "tests" / current
            assert path.is_file(), f"{current} (in: {row})"
            assert name in _defined_tests(path), f"{current}::{name} does not exist (in: {row})"
