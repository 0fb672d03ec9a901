"""Every reference from the code to docs/algorithms.md resolves (issue 13 part 7).

The code cites the contract as ``docs/algorithms.md §N`` (lists and ranges: ``§5, §6``,
``§5-§9``, ``§1-4``; an item of a numbered list: ``§9.5``). A file that cites the page may also
say just ``§N`` further down. Every such number must be a ``## N. ...`` heading of
docs/algorithms.md (and ``N.M`` item M of that section's numbered list), and no file may cite
the design notes that are not in the repository (ALGORITHMS.md, CONTRACTS.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smt_tools.export.csv_out import BALANCED_COLUMNS, UNIQUENESS_COLUMN

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "algorithms.md"
TREES = ("smt_tools", "tests", "benchmarks")
SUFFIXES = {".py", ".sql", ".yaml", ".yml", ".md", ".qml", ".html", ".j2", ".txt"}

#: Applied migrations are frozen: ``catalog init`` refuses a catalog whose applied migration
#: file changed (SHA-256 in schema_migrations), so their two old comments stay as written;
#: migration 0006 replaces them in the database (test_migrated_comments_cite_the_contract).
FROZEN = {
    "smt_tools/migrations/0001_catalog.sql": 2,
}

#: ``§5``, ``§9.5``, ``§5-§9``, ``§1-4``
SECTION_REF = re.compile(r"§(\d+)(?:\.(\d+))?(?:\s*[-–]\s*§?(\d+))?")
HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
MISSING_DOCS = re.compile(r"ALGORITHMS\.md|CONTRACTS\.md")


def _sources() -> list[Path]:
    files = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def _sections() -> dict[int, str]:
    """Section number -> its text (up to the next ``## `` heading)."""
    text = DOC.read_text(encoding="utf-8")
    out: dict[int, str] = {}
    for m in HEADING.finditer(text):
        rest = text[m.end() :]
        nxt = re.search(r"^## ", rest, re.MULTILINE)
        out[int(m.group(1))] = rest[: nxt.start()] if nxt else rest
    return out


def _refs(path: Path) -> list[tuple[int, int | None, int | None]]:
    return [
        (int(m.group(1)), int(m.group(2)) if m.group(2) else None, int(m.group(3) or 0) or None)
        for m in SECTION_REF.finditer(path.read_text(encoding="utf-8"))
    ]


def test_the_sections_are_numbered_in_order() -> None:
    numbers = list(_sections())
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) >= 15


def test_every_section_reference_resolves() -> None:
    sections = _sections()
    bad: list[str] = []
    cited = 0
    for path in _sources():
        refs = _refs(path)
        if not refs:
            continue
        rel = path.relative_to(ROOT).as_posix()
        if "docs/algorithms.md" not in path.read_text(encoding="utf-8"):
            bad.append(f"{rel}: cites § without naming docs/algorithms.md")
        for major, item, upto in refs:
            cited += 1
            for n in (major, upto):
                if n is not None and n not in sections:
                    bad.append(f"{rel}: §{n} is not a section of docs/algorithms.md")
            if item is not None and major in sections:
                if not re.search(rf"^{item}\. ", sections[major], re.MULTILINE):
                    bad.append(f"{rel}: §{major}.{item}: section {major} has no item {item}")
            if upto is not None and upto <= major:
                bad.append(f"{rel}: §{major}-{upto} is not a range")
    assert not bad, "\n".join(bad)
    assert cited >= 40  # the code does cite the contract (guards against a broken scan)


def test_no_reference_to_documents_outside_the_repository() -> None:
    found: dict[str, int] = {}
    for path in _sources():
        hits = len(MISSING_DOCS.findall(path.read_text(encoding="utf-8")))
        if hits:
            found[path.relative_to(ROOT).as_posix()] = hits
    found.pop("tests/test_docs_references.py", None)  # this file names them to forbid them
    assert found == FROZEN


@pytest.mark.parametrize(
    ("needle", "section"),
    [
        ("class_entropy / ln(C)", 10),  # label complexity ÷ ln C
        ("`multiplicative` is the one method", 8),  # min-max before the product
        ("selected or not", 10),  # scores of unselected tiles
        ("| `method` | `cb` |", 10),
        ("| `budget`, `budget_mode` | 0.3, `fraction` |", 10),
        ("| `fd.k_min`, `fd.k_max`, `fd.k` | 2, 10, none (elbow) |", 10),
        ("| `lc_fd_cutoff_m` | 0.5 (half of the budget) |", 10),
        ("an id that no tile holds", 9),  # rare_class_ids absent from the tiles
    ],
)
def test_the_documented_contracts_are_in_their_sections(needle: str, section: int) -> None:
    assert needle in " ".join(_sections()[section].split())


def test_coreset_defaults_in_the_doc_match_the_config() -> None:
    from smt_tools.config.coreset import CoresetConfig

    cfg = CoresetConfig.model_validate({"input_csv_path": "b.csv", "output": {"csv_path": "c.csv"}})
    text = " ".join(_sections()[10].split())
    assert f"| `method` | `{cfg.method}` |" in text
    assert f"| `budget`, `budget_mode` | {cfg.budget:g}, `{cfg.budget_mode}` |" in text
    assert f"| `fd.k_min`, `fd.k_max`, `fd.k` | {cfg.fd.k_min}, {cfg.fd.k_max}, none" in text
    assert f"| `lc_fd_cutoff_m` | {cfg.lc_fd_cutoff_m:g} " in text
    assert f"| `fa_cb_lambda` | {cfg.fa_cb_lambda:g} |" in text
    assert f"| `pca_dim` | {cfg.pca_dim} |" in text
    assert f"| `cb_growth` | {cfg.cb_growth:g} |" in text
    assert f"| `random_state` | {cfg.random_state} |" in text
    assert f"| `device` | `{cfg.device}` |" in text
    assert f"| `fd.sample_size` | {cfg.fd.sample_size:,} |" in text
    assert f"| `kcenter_candidates` | {cfg.kcenter_candidates:,} " in text


def test_balanced_csv_columns_in_the_doc_match_the_writer() -> None:
    """§15's table lists the balanced CSV's columns in the order the writer writes them."""
    rows = re.findall(r"^\| (`[^|]+`) \|", _sections()[15], re.MULTILINE)
    listed = [name for row in rows for name in re.findall(r"`([a-z_]+)`", row)]
    csv_part = listed[: listed.index(UNIQUENESS_COLUMN) + 1]
    assert csv_part == [*BALANCED_COLUMNS, UNIQUENESS_COLUMN]


@pytest.mark.db
def test_migrated_comments_cite_the_contract(fresh_database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from smt_tools import catalog

    engine = create_engine(fresh_database_url)
    try:
        catalog.apply_migrations(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "select obj_description('tile'::regclass, 'pg_class'), "
                    "col_description('tile_result'::regclass, "
                    "(select attnum from pg_attribute where attrelid = 'tile_result'::regclass "
                    "and attname = 'excluded'))"
                )
            ).one()
    finally:
        engine.dispose()
    sections = _sections()
    for comment in rows:
        assert "ALGORITHMS.md" not in comment and "docs/algorithms.md §" in comment
        majors = [int(m.group(1)) for m in SECTION_REF.finditer(comment)]
        assert majors and all(n in sections for n in majors)
    assert rows[0].endswith("(docs/algorithms.md §3).") and rows[1].endswith("§5).")
