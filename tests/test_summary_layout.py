"""Summary tables in an 80-column, non-terminal log keep every value whole (issue 11, B17), and
the report's class plot is labelled with class names.

Each CLI run sets ``COLUMNS=80``; the assertions check that every table line fits, that no
cell was cut (no ``…``), and that the long class name and every number of the result appear
unbroken in the output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli import _common
from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.config.split import SplitFile
from smt_tools.export import report
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.pipelines.catalog_stats import run_catalog_stats
from smt_tools.pipelines.ingest import run_ingest
from smt_tools.pipelines.split import run_split
from tests.split_data import grid_frame

runner = CliRunner()
LONG = "impervious surfaces including roads and parking lots"
NAMES = {1: "background", 2: "field", 3: "forest", 4: "water", 5: LONG, 6: "building"}
BOX = set("│┃┏┗┡└┌├┼╇━─")


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The consoles measure 80 columns whatever the terminal running the tests."""
    monkeypatch.setenv("COLUMNS", "80")
    for con in (_common.console, _common.err_console):
        monkeypatch.setattr(con, "_width", 80)


def _invoke(*args: str) -> Any:
    res = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    assert "Traceback" not in res.output
    return res


def _assert_tables_fit(text: str) -> None:
    assert "…" not in text
    for line in text.splitlines():
        if BOX & set(line):
            assert len(line) <= 80, line


@pytest.fixture(scope="module")
def long_named_tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("layout")
    names = folder / "classes.csv"
    names.write_text(
        "class_value,name\n" + "".join(f"{v},{n}\n" for v, n in NAMES.items()), encoding="utf-8"
    )
    tiles = folder / "tiles.parquet"
    run_ingest(
        demo_pairs,
        catalog=str(tiles),
        patch_size=128,
        nodata_class=0,
        workers=1,
        class_names_csv=names,
    )
    return tiles


def _balanced(tmp: Path, tiles: Path) -> dict[str, Any]:
    return {
        "balanced_dataset": {
            "input": {"tiles": str(tiles)},
            "clustering": {"k_min": 2, "k_max": 6},
            "output": {"csv_path": str(tmp / "b.csv"), "report_dir": str(tmp / "report")},
        }
    }


def test_balanced_summary_keeps_long_names_and_numbers_whole(
    long_named_tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _balanced(tmp_path / "lib", long_named_tiles)
    result = run_balanced(validate_mapping(data, BalancedFile, "t.yaml").balanced_dataset)
    assert result.class_names[5] == LONG
    # the report's class plot gets the names (spy on the function that builds the figure)
    seen: list[list[str]] = []
    build = report.class_share_figure

    def spy(d: report.ReportData) -> Any:
        fig = build(d)
        seen.append([t.get_text() for t in fig.axes[0].get_xticklabels()])
        return fig

    monkeypatch.setattr(report, "class_share_figure", spy)
    conf = tmp_path / "b.yaml"
    data = _balanced(tmp_path / "cli", long_named_tiles)
    conf.write_text(yaml.safe_dump(data))
    res = _invoke("build-balanced-dataset", str(conf))
    assert res.exit_code == 0, res.output
    out = res.stdout
    _assert_tables_fit(out)
    assert f"  class 5 = {LONG}" in out.splitlines()  # the legend: one unbroken line
    for u, w in zip(result.uniform_share, result.weighted_share, strict=True):
        assert f"{u:.2%}" in out and f"{w:.2%}" in out
    assert "nodata (0)" in out and f"{result.nodata_share_uniform:.2%}" in out
    assert seen == [[f"{v} {NAMES[v]}" for v in result.class_values]]
    assert (tmp_path / "cli" / "report" / "class_share.png").stat().st_size > 0


def test_catalog_stats_keeps_long_names_and_numbers_whole(long_named_tiles: Path) -> None:
    stats = run_catalog_stats(str(long_named_tiles))
    res = _invoke("catalog", "stats", "--catalog", str(long_named_tiles))
    assert res.exit_code == 0, res.output
    _assert_tables_fit(res.stdout)
    # two number columns leave room: the long name stays in the table, on one line
    assert any(f"5 {LONG} │" in ln for ln in res.stdout.splitlines())
    for c in stats.classes:
        assert f"{c.pixels:,}" in res.stdout and f"{100 * c.share:.2f} %" in res.stdout


def test_short_names_stay_in_the_table() -> None:
    import io

    from rich.console import Console

    from smt_tools.cli._tables import print_class_table

    buf = io.StringIO()
    con = Console(width=80, file=buf)
    print_class_table(con, "t", [1, 2], {1: "background"}, ["share"], [["10.00%"], ["90.00%"]])
    text = buf.getvalue()
    assert "│ 1 background │ 10.00% │" in text and "class 1 =" not in text
    assert "│            2 │ 90.00% │" in text


def test_coreset_table_fits(long_named_tiles: Path, tmp_path: Path) -> None:
    data = _balanced(tmp_path, long_named_tiles)
    run_balanced(validate_mapping(data, BalancedFile, "t.yaml").balanced_dataset)
    conf = tmp_path / "c.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "coreset": {
                    "method": "cb",
                    "budget": 0.5,
                    "input_csv_path": str(tmp_path / "b.csv"),
                    "output": {"csv_path": str(tmp_path / "c.csv")},
                }
            }
        )
    )
    res = _invoke("select-coreset", str(conf))
    assert res.exit_code == 0, res.output
    _assert_tables_fit(res.stdout)
    rows = [ln for ln in res.stdout.splitlines() if re.match(r"^│\s+\d+ │", ln)]
    assert len(rows) == 6
    assert all(len(re.findall(r"\d+\.\d\d%", ln)) == 3 for ln in rows)


def _many_folds_csv(path: Path) -> pd.DataFrame:
    """12 source images of 2x2 tiles, 12 classes, 19-digit tile ids."""
    frame, _ = grid_frame(n_images=12, per_side=2, gap_m=1000.0)
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 1000, size=(len(frame), 12))
    frame["tile_id"] = 4_000_000_000_000_000_000 + np.arange(len(frame))
    frame["class_counts_json"] = [
        json.dumps({str(v + 1): int(c) for v, c in enumerate(row)}) for row in counts
    ]
    frame["excluded"] = False
    frame["sampler_weight"] = 1.0
    frame.to_csv(path, index=False)
    return frame


def test_split_and_leakage_tables_fit(tmp_path: Path) -> None:
    frame = _many_folds_csv(tmp_path / "in.csv")
    data = {
        "split": {
            "input_csv_path": str(tmp_path / "in.csv"),
            "n_splits": 10,
            "random_state": 0,
            "output": {"csv_path": str(tmp_path / "folds.csv")},
        }
    }
    result = run_split(validate_mapping(data, SplitFile, "t.yaml").split)
    conf = tmp_path / "s.yaml"
    conf.write_text(yaml.safe_dump(data))
    res = _invoke("split", str(conf))
    assert res.exit_code == 0, res.output
    out = res.stdout
    _assert_tables_fit(out)
    assert "Class pixel share per fold (1/2)" in out and "(2/2)" in out
    for i, v in enumerate(result.class_values):
        row = [f"{f.shares[i]:.3f}" for f in result.folds] + [f"{result.global_share[i]:.3f}"]
        # the class's shares, split over the two parts, in order
        found = [c for ln in out.splitlines() if ln.startswith(f"│ {v} ") for c in ln.split("│")]
        assert [c.strip() for c in found if re.fullmatch(r"\s*\d\.\d{3}\s*", c)] == row
    # the audit with a buffer larger than the gaps: a leak, example ids whole on their lines
    res = _invoke("check-leakage", "--folds", str(tmp_path / "folds.csv"), "--buffer-m", "5000")
    assert res.exit_code == 3, res.output
    _assert_tables_fit(res.stdout)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("LEAK spatial:"))
    ids = re.findall(r"\b\d{19}\b", line)
    assert ids and set(map(int, ids)) <= set(frame["tile_id"].tolist())
