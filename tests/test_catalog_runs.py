"""``catalog runs list | show | delete`` on both stores: the same runs, the same housekeeping.

A run deleted takes its per-tile results with it (PostGIS: its ``tile_result`` rows, its map
view and the view's QGIS style, in one transaction; Parquet: its file) and its id is never
given again. An unknown id is one line; a declined confirmation deletes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from smt_tools.catalog import connect
from smt_tools.cli.app import app

runner = CliRunner()
INGEST = ["--patch-size", "128", "--workers", "1", "--nodata-class", "0"]


def _cli(*args: object, input: str | None = None) -> tuple[int, str, str]:
    res = runner.invoke(app, [str(a) for a in args], input=input)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(params=["parquet", pytest.param("postgis", marks=pytest.mark.db)])
def catalog(request: pytest.FixtureRequest, demo_pairs: Path, tmp_path: Path) -> Iterator[str]:
    """The demo scenes ingested, with two runs recorded: a balanced run and a split."""
    if request.param == "postgis":
        target = request.getfixturevalue("fresh_database_url")
        assert _cli("catalog", "init", "--catalog", target)[0] == 0
        key = "url"
    else:
        target, key = str(tmp_path / "tiles.parquet"), "path"
    assert _cli("catalog", "ingest", demo_pairs, *INGEST, "--catalog", target)[0] == 0
    b = tmp_path / "b.yaml"
    b.write_text(
        yaml.safe_dump(
            {
                "balanced_dataset": {
                    "input": {"catalog": {key: target}},
                    "clustering": {"k_selection": "fixed", "k": 2},
                    "output": {"csv_path": str(tmp_path / "b.csv")},
                }
            }
        )
    )
    s = tmp_path / "s.yaml"
    s.write_text(yaml.safe_dump({"split": {"catalog": {key: target}, "n_splits": 2}}))
    assert _cli("build-balanced-dataset", b)[0] == 0
    assert _cli("split", s)[0] == 0
    yield target


def _listed(target: str, tmp_path: Path) -> list[dict[str, object]]:
    code, out, err = _cli(
        "catalog", "runs", "list", "--catalog", target, "--json", tmp_path / "l.json"
    )
    assert code == 0, out + err
    runs: list[dict[str, object]] = json.loads((tmp_path / "l.json").read_text())["summary"]["runs"]
    return runs


def test_list_show_delete(catalog: str, tmp_path: Path) -> None:
    runs = _listed(catalog, tmp_path)
    assert [(r["run_id"], r["command"], r["results"]) for r in runs] == [
        (1, "build-balanced-dataset", 64),
        (2, "split", 64),
    ]
    code, out, _ = _cli("catalog", "runs", "show", 1, "--catalog", catalog)
    shown = json.loads(out)
    assert code == 0 and shown["command"] == "build-balanced-dataset"
    assert shown["summary"]["tiles"] == 64 and shown["config"]["balanced_dataset"]["mode"]
    # declined: nothing deleted (exit 1)
    code, _, err = _cli("catalog", "runs", "delete", 2, "--catalog", catalog, input="n\n")
    assert code == 1 and "Nothing deleted." in err
    assert len(_listed(catalog, tmp_path)) == 2
    code, out, _ = _cli("catalog", "runs", "delete", 2, "--catalog", catalog, "--yes")
    assert code == 0 and "Deleted run 2 (split, 64 tile results)" in out
    assert [r["run_id"] for r in _listed(catalog, tmp_path)] == [1]
    code, _, err = _cli("catalog", "runs", "delete", 2, "--catalog", catalog, "--yes")
    assert code == 1 and err.count("\n") == 1 and "no run with id 2" in err
    # the id of a deleted run is never given again
    s = tmp_path / "s2.yaml"
    key = "path" if catalog.endswith(".parquet") else "url"
    s.write_text(yaml.safe_dump({"split": {"catalog": {key: catalog}, "n_splits": 2}}))
    assert _cli("split", s)[0] == 0
    assert [r["run_id"] for r in _listed(catalog, tmp_path)] == [1, 3]


@pytest.mark.db
def test_postgis_delete_takes_results_view_and_style(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    target = fresh_database_url
    assert _cli("catalog", "init", "--catalog", target)[0] == 0
    assert _cli("catalog", "ingest", demo_pairs, *INGEST, "--catalog", target)[0] == 0
    s = tmp_path / "s.yaml"
    s.write_text(yaml.safe_dump({"split": {"catalog": {"url": target}, "n_splits": 2}}))
    assert _cli("split", s)[0] == 0
    engine = connect(target)
    count = (
        "select (select count(*) from tile_result where run_id = 1), "
        "(select count(*) from layer_styles where f_table_name = 'run_1_folds'), "
        "(select count(*) from pg_views where viewname = 'run_1_folds'), "
        "(select count(*) from tile)"
    )
    try:
        with engine.connect() as conn:
            assert tuple(conn.execute(text(count)).one()) == (64, 1, 1, 64)
        assert _cli("catalog", "runs", "delete", 1, "--catalog", target, "-y")[0] == 0
        with engine.connect() as conn:
            assert tuple(conn.execute(text(count)).one()) == (0, 0, 0, 64)  # tiles stay
    finally:
        engine.dispose()
