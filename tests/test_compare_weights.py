"""``compare-weights``: hand-computed exposure numbers (docs/algorithms.md §9.6), the PNG and
the one-line errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.curation.diagnostics import class_tile_share, epochs_to_see_tiles
from smt_tools.pipelines.compare_weights import PNG_SIZE, run_compare_weights

# four tiles of 100 pixels; classes 1, 2, 3
COUNTS = [{"1": 90, "2": 10, "3": 0}, {"1": 100, "2": 0, "3": 0}, {"1": 50, "2": 50, "3": 0},
          {"1": 80, "2": 0, "3": 20}]  # fmt: skip


def _table(path: Path, weights: list[float], counts: list[dict[str, int]]) -> Path:
    frame = pd.DataFrame(
        {
            "tile_id": np.arange(len(weights)),
            "sampler_weight": weights,
            "class_counts_json": [json.dumps(c) for c in counts],
        }
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    uniform = _table(tmp_path / "uniform.csv", [1.0] * 4, COUNTS)
    # weights 1, 0.5, 0.5, 2 and a fifth tile with weight 0 (excluded: never drawn)
    weighted = _table(
        tmp_path / "weighted.parquet", [1.0, 0.5, 0.5, 2.0, 0.0], [*COUNTS, {"1": 100}]
    )
    return uniform, weighted


def test_hand_computed_numbers(tables: tuple[Path, Path]) -> None:
    a, b = run_compare_weights(list(tables)).tables
    np.testing.assert_array_equal(a.class_values, [1, 2, 3])
    # uniform: every tile drawn once per epoch of 4 draws
    assert (a.rows, a.drawable, a.draws, a.ess) == (4, 4, 4, 4.0)
    np.testing.assert_allclose(a.pixel_share_weighted, [0.80, 0.15, 0.05])
    np.testing.assert_allclose(a.pixel_share_uniform, [0.80, 0.15, 0.05])
    np.testing.assert_allclose(a.tile_share_weighted, [1.0, 0.5, 0.25])
    np.testing.assert_allclose(a.epochs_to_see, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(a.tiles_with_class, [4, 2, 1])
    # weighted: sum w = 4; pixels 325, 35, 40 of 400; ESS 16 / 5.5; p = 1/4, 1/8, 1/8, 1/2
    assert (b.rows, b.drawable, b.draws) == (5, 4, 4)
    assert b.ess == pytest.approx(16 / 5.5)
    np.testing.assert_allclose(b.pixel_share_weighted, [0.8125, 0.0875, 0.10])
    np.testing.assert_allclose(b.pixel_share_uniform, [0.80, 0.15, 0.05])  # the 4 drawable
    np.testing.assert_allclose(b.tile_share_uniform, [1.0, 0.5, 0.25])
    np.testing.assert_allclose(b.tile_share_weighted, [1.0, 0.375, 0.5])
    # 1 / (4 p_i) = 1, 2, 2, 0.5: class 1 mean of all four, class 2 of tiles 0 and 2, class 3
    np.testing.assert_allclose(b.epochs_to_see, [1.375, 1.5, 0.5])
    # a longer epoch sees every tile sooner
    (b8,) = run_compare_weights([tables[1]], epoch_size=8).tables
    np.testing.assert_allclose(b8.epochs_to_see, [0.6875, 0.75, 0.25])


def test_diagnostics_edge_cases() -> None:
    counts = np.array([[5, 0], [5, 0], [0, 3]])
    w = np.array([1.0, 3.0, 0.0])  # class 2 only in a tile never drawn
    np.testing.assert_allclose(class_tile_share(counts, w), [1.0, 0.0])
    np.testing.assert_allclose(epochs_to_see_tiles(counts, w, 2), [(2.0 + 2 / 3) / 2, np.inf])
    np.testing.assert_allclose(class_tile_share(counts, np.zeros(3)), [0.0, 0.0])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_cli_table_and_png(tables: tuple[Path, Path], tmp_path: Path) -> None:
    png = tmp_path / "plots" / "weights.png"
    result = CliRunner().invoke(
        app, ["compare-weights", str(tables[0]), str(tables[1]), "--png", str(png)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        "uniform.csv: 4 rows, 4 with weight > 0; epoch = 4 draws; effective sample size 4.0" in out
    )
    assert (
        "weighted.parquet: 5 rows, 4 with weight > 0; epoch = 4 draws; effective sample size 2.9"
        in out
    )
    assert "81.25%" in out and "37.50%" in out and "1.38" in out
    assert _png_size(png) == PNG_SIZE == (1200, 420)
    assert [p.name for p in png.parent.iterdir()] == ["weights.png"]  # no temporary left


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"sampler_weight": [1.0]}), "missing column(s) class_counts_json"),
        (
            pd.DataFrame({"sampler_weight": [0.0, 0.0], "class_counts_json": ['{"1": 3}'] * 2}),
            "no row has sampler_weight > 0",
        ),
        (
            pd.DataFrame({"sampler_weight": [1.0, -2.0], "class_counts_json": ['{"1": 3}'] * 2}),
            "row 2: sampler_weight must be a finite number >= 0; got '-2.0'",
        ),
        (
            pd.DataFrame({"sampler_weight": [1.0], "class_counts_json": ["not json"]}),
            "line 2: class_counts_json must be a JSON object",
        ),
    ],
)
def test_bad_table_is_one_line(frame: pd.DataFrame, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["compare-weights", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0]


def test_other_errors(tables: tuple[Path, Path], tmp_path: Path) -> None:
    other = _table(tmp_path / "other.csv", [1.0, 1.0], [{"1": 5, "4": 1}, {"1": 2, "4": 0}])
    runner = CliRunner()
    result = runner.invoke(app, ["compare-weights", str(tables[0]), str(other)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {other}: classes 1, 4 differ from {tables[0]}'s 1, 2, 3; compare tables "
        "built from the same tiles"
    )
    result = runner.invoke(app, ["compare-weights", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1 and "nope.csv: file not found" in result.stderr
    result = runner.invoke(app, ["compare-weights", str(tables[0]), "--png", str(tmp_path)])
    assert result.exit_code == 1 and "is a folder; give a file name for --png" in result.stderr
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_text("not parquet")
    result = runner.invoke(app, ["compare-weights", str(bad_parquet)])
    assert result.exit_code == 1 and "bad.parquet: not a readable Parquet" in result.stderr
    result = runner.invoke(app, ["compare-weights", str(tables[0]), "--epoch-size", "0"])
    assert result.exit_code == 2  # click's range check
