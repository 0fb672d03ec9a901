"""Repeat-factor sampling and the weight temperature (docs/algorithms.md §8, §9): hand-computed
r_c and weights, the square root at alpha = 0.5, the batched path equal to the in-memory one,
and bad settings as one config error line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config import load_config
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.curation.repeat_factor import (
    repeat_factor_scores,
    repeat_factors,
    tile_repeat_factor,
    tiles_with_class,
)
from smt_tools.curation.weights import final_weights
from smt_tools.errors import ConfigError
from smt_tools.pipelines import _balanced_canon
from smt_tools.pipelines._balanced_score import UNUSED_UNIQUENESS, sampler_weights
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.tiletable import TileTable
from tests.test_balanced_batched import _chunked, _tiles
from tests.test_balanced_pipeline import GROUPS, config, hand_scene, records

runner = CliRunner()

#: five tiles, classes 1, 2, 3 (the nodata value is never a column)
COUNTS = np.array(
    [
        [10, 0, 0],  # A: class 1
        [10, 0, 0],  # B: class 1
        [5, 5, 0],  # C: classes 1, 2
        [8, 0, 2],  # D: class 1, and 2 px of class 3
        [0, 3, 0],  # E: 3 px of class 2
    ],
    np.int64,
)


def test_five_tiles_by_hand() -> None:
    # t = 0.5: f = (4/5, 2/5, 1/5) -> t/f = (0.625, 1.25, 2.5) -> r = (1, sqrt 1.25, sqrt 2.5)
    assert tiles_with_class(COUNTS).tolist() == [4, 2, 1]
    r, score = repeat_factor_scores(COUNTS, threshold=0.5)
    assert r == pytest.approx([1.0, np.sqrt(1.25), np.sqrt(2.5)], rel=1e-15)
    assert score == pytest.approx([1, 1, np.sqrt(1.25), np.sqrt(2.5), np.sqrt(1.25)], rel=1e-15)
    w = final_weights(score, np.ones(5, bool), weight_floor=0.05)
    # divided by r_3: A, B sqrt(1 / 2.5) = sqrt 0.4; C, E sqrt(1.25 / 2.5) = sqrt 0.5; D 1
    root = [np.sqrt(0.4), np.sqrt(0.4), np.sqrt(0.5), 1.0, np.sqrt(0.5)]
    assert w == pytest.approx(root, rel=1e-15)
    # present means count >= min_pixels: with 3, D's 2 px of class 3 no longer count
    r3, score3 = repeat_factor_scores(COUNTS, threshold=0.5, min_pixels=3)
    assert tiles_with_class(COUNTS, 3).tolist() == [4, 2, 0]
    assert r3 == pytest.approx([1.0, np.sqrt(1.25), 1.0], rel=1e-15)  # a class in no tile: 1
    assert score3 == pytest.approx([1, 1, np.sqrt(1.25), 1, np.sqrt(1.25)], rel=1e-15)
    # the default t = 0.01 is below every share here: nothing is repeated
    assert repeat_factor_scores(COUNTS)[1].tolist() == [1.0] * 5


def test_a_tile_with_no_counted_class_gets_one() -> None:
    r = np.array([3.0, 2.0])
    counts = np.array([[0, 0], [0, 4], [1, 4]])
    assert tile_repeat_factor(counts, r).tolist() == [1.0, 2.0, 3.0]
    assert tile_repeat_factor(counts, r, min_pixels=2).tolist() == [1.0, 2.0, 2.0]
    assert repeat_factors(np.array([0, 3]), 3, 1.0).tolist() == [1.0, 1.0]


def test_temperature_half_is_the_square_root_before_the_floor() -> None:
    score = np.array([4.0, 1.0, 0.16, 0.0, 2.0])
    inc = np.array([True, True, True, False, True, True])
    one = final_weights(score, inc, weight_floor=0.0)
    half = final_weights(score, inc, weight_floor=0.0, temperature=0.5)
    assert one.tolist() == [1.0, 0.25, 0.04, 0.0, 0.0, 0.5]
    assert half.tolist() == [1.0, 0.5, 0.2, 0.0, 0.0, np.sqrt(0.5)]
    assert np.array_equal(half, np.sqrt(one))
    floored = final_weights(score, inc, weight_floor=0.3, temperature=0.5)
    assert floored.tolist() == [1.0, 0.5, 0.3, 0.0, 0.3, np.sqrt(0.5)]  # floor after alpha
    assert (
        final_weights(score, inc, temperature=1.0).tobytes() == final_weights(score, inc).tobytes()
    )
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"temperature must be in \(0, 1\]"):
            final_weights(score, inc, temperature=bad)


def test_bad_library_arguments() -> None:
    with pytest.raises(ValueError, match=r"repeat_threshold must be in \(0, 1\]"):
        repeat_factors(np.array([1]), 2, 0.0)
    with pytest.raises(ValueError, match="repeat_min_pixels must be >= 1"):
        tiles_with_class(COUNTS, 0)


# ----------------------------------------------------------------------------- the pipeline


def _cfg(tmp: Path, scene: tuple[Path, Path], **weights: Any) -> dict[str, Any]:
    data = config(tmp, records(*scene), sampling_method="repeat_factor")
    data["balanced_dataset"]["weights"] = {"repeat_threshold": 0.8, **weights}
    return data


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return hand_scene(tmp_path_factory.mktemp("hand"))


def _weights(tmp: Path) -> dict[str, float]:
    out = pd.read_csv(tmp / "out" / "b.csv")
    got = {}
    for g in "ABCD":
        values = out.loc[[k == g for k in GROUPS], "sampler_weight"].unique()
        assert values.size == 1
        got[g] = float(values[0])
    return got


def test_hand_scene_repeat_factors(scene: tuple[Path, Path], tmp_path: Path) -> None:
    """14 included tiles: A (6) class 1; B (5) 128 px of classes 1 and 2; C (3) 64 px of class
    2 and 192 of class 3; D (2, class 4) excluded. With t = 0.8, t / f_c = 11.2 / tiles."""
    run = validate_mapping(_cfg(tmp_path, scene), BalancedFile, "t.yaml").balanced_dataset
    result = run_balanced(run)
    want_r = {1: np.sqrt(11.2 / 11), 2: np.sqrt(11.2 / 8), 3: np.sqrt(11.2 / 3), 4: 1.0}
    assert result.repeat_factors == pytest.approx(want_r, rel=1e-12)
    assert 0 not in result.repeat_factors  # the nodata value is not a class
    assert result.effective_method == "repeat_factor" and result.warnings == []
    assert result.summary()["repeat_factors"]["3"] == pytest.approx(np.sqrt(11.2 / 3))
    # A: r_1; B: max(r_1, r_2) = r_2; C: max(r_2, r_3) = r_3; scaled by r_3
    want = {"A": np.sqrt(3 / 11), "B": np.sqrt(3 / 8), "C": 1.0, "D": 0.0}
    assert _weights(tmp_path) == pytest.approx(want, rel=1e-12)
    # count >= min_pixels: C's 64 px of class 2 count at 64, not at 65 (then r_2 over B alone)
    cfg64 = _cfg(tmp_path, scene, repeat_min_pixels=64)
    run_balanced(validate_mapping(cfg64, BalancedFile, "t").balanced_dataset)
    assert _weights(tmp_path) == pytest.approx(want, rel=1e-12)
    cfg65 = _cfg(tmp_path, scene, repeat_min_pixels=65, temperature=0.5)
    run_balanced(validate_mapping(cfg65, BalancedFile, "t").balanced_dataset)
    want65 = {"A": (3 / 11) ** 0.25, "B": (3 / 5) ** 0.25, "C": 1.0, "D": 0.0}
    assert _weights(tmp_path) == pytest.approx(want65, rel=1e-12)


def test_the_summary_names_the_method_and_the_factors(
    scene: tuple[Path, Path], tmp_path: Path
) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(_cfg(tmp_path, scene)))
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    assert "Weights (repeat_factor): min 0.522, max 1.000" in res.stdout
    assert (
        "Repeat factors r_c (highest first): 3 x1.93, 2 x1.18, 1 x1.01, 4 x1.00; 3 of 4 "
        "classes above 1" in res.stdout
    )


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("weights.temperature", "0", "must be > 0; got 0"),
        ("weights.temperature", "1.5", "must be <= 1; got 1.5"),
        ("weights.repeat_threshold", "0", "must be > 0; got 0"),
        ("weights.repeat_threshold", "2", "must be <= 1; got 2"),
        ("weights.repeat_min_pixels", "0", "must be >= 1; got 0"),
    ],
)
def test_a_bad_setting_is_one_config_line(
    scene: tuple[Path, Path], tmp_path: Path, key: str, value: str, needle: str
) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(_cfg(tmp_path, scene)))
    res = runner.invoke(app, ["build-balanced-dataset", str(conf), "--set", f"{key}={value}"])
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert lines[0].endswith(f"(--set {key}): balanced_dataset.{key}: {needle}"), lines[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        load_config(conf, BalancedFile, [f"{key}={value}"])


def test_uniqueness_is_computed_but_unused_says_so() -> None:
    table = TileTable(pd.DataFrame({"tile_id": np.arange(5)}), COUNTS, np.arange(1, 4), 0)
    ex = SimpleNamespace(
        excluded=np.zeros(5, bool),
        included_idx=np.arange(5),
        included_rows=np.arange(5),
        rare=np.zeros(0, np.int64),
    )
    raw = {
        "mode": "embeddings",
        "sampling_method": "repeat_factor",
        "input": {"tiles": "t.parquet"},
        "weights": {"repeat_threshold": 0.5, "weight_floor": 0.0},
        "output": {"csv_path": "o.csv"},
    }
    cfg = validate_mapping({"balanced_dataset": raw}, BalancedFile, "c").balanced_dataset
    scored = sampler_weights(cfg, table, ex, None, np.linspace(0, 1, 5))
    assert scored.warnings == [UNUSED_UNIQUENESS] and scored.effective_method == "repeat_factor"
    want = [np.sqrt(0.4), np.sqrt(0.4), np.sqrt(0.5), 1.0, np.sqrt(0.5)]
    assert scored.weights == pytest.approx(want, rel=1e-15)
    assert scored.repeat_factors == pytest.approx({1: 1.0, 2: np.sqrt(1.25), 3: np.sqrt(2.5)})


# ----------------------------------------------------------------------------- batched


def test_gathered_repeat_factors_equal_the_whole_table() -> None:
    table = _tiles(4, 16, seed=7)
    rows = np.argsort(table.frame["tile_id"].to_numpy(), kind="stable")[::2]
    whole = table.counts[rows]
    k = _balanced_canon.tiles_with_class(table, rows, 300, batch=5)
    assert np.array_equal(k, tiles_with_class(whole, 300))
    r = repeat_factors(k, rows.size, 0.4)
    got = _balanced_canon.tile_repeat_factor(table, rows, r, 300, batch=7)
    assert got.tobytes() == tile_repeat_factor(whole, r, 300).tobytes()
    assert (got > 1).any() and (got == 1).any()


def _run(tiles: Path, out: Path, boost: float) -> dict[str, Any]:
    weights = {"repeat_threshold": 0.6, "repeat_min_pixels": 200, "temperature": 0.5}
    body = {
        "sampling_method": "repeat_factor",
        "input": {"tiles": str(tiles)},
        "clustering": {"k_min": 2, "k_max": 4, "selection_sample_size": 100},
        "weights": weights | {"rare_class_boost": boost},
        "output": {"parquet_path": str(out / "b.parquet"), "write_catalog_run": False},
    }
    (out / "b.yaml").write_text(yaml.safe_dump({"balanced_dataset": body}))
    summary = run_balanced(load_config(out / "b.yaml", BalancedFile).balanced_dataset).summary()
    summary.pop("timings_s")
    return summary


@pytest.mark.parametrize("boost", [1.0, 3.0])
def test_batched_path_gives_the_in_memory_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boost: float
) -> None:
    table = _tiles(9, 16, seed=11)
    tiles = tmp_path / "t.parquet"
    _chunked(table, tiles, 40)
    (tmp_path / "whole").mkdir()
    (tmp_path / "small").mkdir()
    whole = _run(tiles, tmp_path / "whole", boost)
    monkeypatch.setattr(_balanced_canon, "BATCH_ROWS", 17)
    small = _run(tiles, tmp_path / "small", boost)
    assert small == whole and whole["effective_method"] == "repeat_factor"
    a = pq.read_table(tmp_path / "whole" / "b.parquet")
    assert a.equals(pq.read_table(tmp_path / "small" / "b.parquet"))
    if boost > 1:
        return
    # the in-memory formula on the included tiles' counts, in any order
    out = a.to_pandas().set_index("tile_id")
    ids = table.frame["tile_id"].to_numpy()
    included = ~out.loc[ids, "excluded"].to_numpy(bool)
    r, score = repeat_factor_scores(table.counts[included], threshold=0.6, min_pixels=200)
    want = final_weights(score, included, weight_floor=0.05, temperature=0.5)
    assert out.loc[ids, "sampler_weight"].to_numpy().tobytes() == want.tobytes()
    assert whole["repeat_factors"] == {
        str(c): v for c, v in zip(range(1, 5), r.tolist(), strict=True)
    }
    assert len(set(want[included].tolist())) > 2  # the factors do differ between tiles
