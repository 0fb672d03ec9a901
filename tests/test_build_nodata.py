"""The nodata rule on the build side (issue 11, A1): a class table never silently drops a class.

0/1 masks whose GeoTIFFs tag 0 as nodata, where 0 is really background (tests/nodata_scene_data.py):
ingested with every value a class (the default) the table is the truth; ingested with
``--nodata-class 0`` the run says loudly how much was left out (nodata row, share, warnings),
and the "all tiles excluded" error's FIRST fix is the one that gives the right table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile, ExclusionConfig
from smt_tools.errors import EmptySelectionError
from smt_tools.pipelines.balanced import BalancedResult, run_balanced
from smt_tools.pipelines.ingest import run_ingest
from tests.nodata_scene_data import N_TILES, ONES, WINDOW_PIXELS, patch_records, write_binary_scene

runner = CliRunner()
ZERO_SHARE = (WINDOW_PIXELS - ONES["bin"]) / WINDOW_PIXELS  # 3712 / 4096 = 0.90625


def _config(tmp: Path, inp: dict[str, Any], **exclusion: Any) -> dict[str, Any]:
    return {
        "balanced_dataset": {
            "input": inp,
            "clustering": {"k_min": 1, "k_max": 2},
            "exclusion": exclusion,
            "output": {"csv_path": str(tmp / "out" / "b.csv")},
        }
    }


def _run(data: dict[str, Any]) -> BalancedResult:
    return run_balanced(validate_mapping(data, BalancedFile, "t.yaml").balanced_dataset)


def _cli(tmp: Path, data: dict[str, Any]) -> Any:
    conf = tmp / "conf.yaml"
    conf.write_text(yaml.safe_dump(data))
    return runner.invoke(app, ["build-balanced-dataset", str(conf)], env={"COLUMNS": "80"})


def _ingest(folder: Path, kind: str, nodata: int | None) -> Path:
    _, _, pairs = write_binary_scene(folder, kind)
    name = "none" if nodata is None else str(nodata)
    tiles = folder / f"{kind}_{name}.parquet"
    run_ingest(pairs, catalog=str(tiles), patch_size=16, nodata_class=nodata, workers=1)
    return tiles


def test_every_value_a_class_gives_the_true_table(tmp_path: Path) -> None:
    tiles = _ingest(tmp_path, "bin", None)
    result = _run(_config(tmp_path, {"tiles": str(tiles)}))
    assert result.class_values == [0, 1]
    assert result.uniform_share == pytest.approx([ZERO_SHARE, ONES["bin"] / WINDOW_PIXELS])
    assert result.n_excluded == 0 and result.nodata_class is None
    assert result.nodata_share == result.nodata_share_uniform == 0.0
    assert not [w for w in result.warnings if "nodata" in w]
    res = _cli(tmp_path, _config(tmp_path, {"tiles": str(tiles)}))
    assert res.exit_code == 0, res.output
    assert "90.62%" in res.stdout and "9.38%" in res.stdout and "nodata (" not in res.stdout


def test_nodata_zero_reports_the_share_row_and_warns(tmp_path: Path) -> None:
    tiles = _ingest(tmp_path, "bin", 0)
    result = _run(_config(tmp_path, {"tiles": str(tiles)}))
    # the table alone would say class 1 = 100 %: the run reports what it left out
    assert result.class_values == [1] and result.uniform_share == [1.0]
    assert result.nodata_class == 0
    assert result.nodata_share == pytest.approx(ZERO_SHARE)
    assert result.exclusion_counts["mask_border_nodata"] == N_TILES - 1
    summary = result.summary()
    assert summary["nodata_class"] == 0 and summary["nodata_share"] == pytest.approx(0.90625)
    share, border = [w for w in result.warnings if "nodata" in w]
    assert share.startswith("90.6% of window pixels are mask value 0, treated as nodata")
    assert "`pytorch-smt-tools catalog ingest PAIRS.csv --nodata-class none`" in share
    assert border.startswith("mask_border_nodata excludes 15 of 16 tiles (94%)")
    assert "the fix above applies" in border and "exclude_border_nodata: false" in border

    # the nodata row: share of window pixels of the weighted tiles (2 tiles: 128 of 512 px)
    data = _config(tmp_path, {"tiles": str(tiles)}, exclude_border_nodata=False)
    result = _run(data)
    assert result.n_included == 2
    assert result.nodata_share_uniform == result.nodata_share_weighted == 0.25
    res = _cli(tmp_path, data)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "nodata (0)" in line)
    assert [c.strip() for c in row.split("│")[1:5]] == ["nodata (0)", "25.00%", "25.00%", "x1.00"]
    assert "90.62% of all input window pixels" in " ".join(res.stdout.split())
    assert "warning: 90.6% of window pixels are mask value 0" in res.stderr


def _assert_one_line(res: Any) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "━" not in ln]  # no bars
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_all_excluded_tile_table_advice_leads_to_the_right_table(tmp_path: Path) -> None:
    tiles = _ingest(tmp_path, "edge", 0)
    res = _cli(tmp_path, _config(tmp_path, {"tiles": str(tiles)}))
    msg = _assert_one_line(res)
    assert msg.startswith(
        "error: all 16 tiles are excluded (mask_border_nodata: 16, no_valid_pixel: 14). "
        "mask value 0 is the nodata class, 91.0% of window pixels: if 0 is a real class "
        "(e.g. background), re-ingest into a new tile table (--catalog NEW.parquet) with "
        "`pytorch-smt-tools catalog ingest PAIRS.csv --nodata-class none`"
    )
    # turning the rule off is offered second, and only for real missing data
    assert msg.index("--nodata-class none") < msg.index("only if 0 really is missing data")
    assert msg.index("only if 0 really is missing data") < msg.index("exclude_border_nodata")
    assert not (tmp_path / "out").exists()
    # following the first fix gives the true class table (background row included)
    fixed = _ingest(tmp_path / "fixed", "edge", None)
    result = _run(_config(tmp_path, {"tiles": str(fixed)}))
    truth = ONES["edge"] / WINDOW_PIXELS  # 368 / 4096
    assert result.class_values == [0, 1]
    assert result.uniform_share == pytest.approx([1 - truth, truth])


def test_all_excluded_patch_records_advice_and_minus_one_is_null(tmp_path: Path) -> None:
    img, msk, _ = write_binary_scene(tmp_path, "edge")
    recs = {"patch_records": patch_records(img, msk), "scan_workers": 1}
    msg = _assert_one_line(_cli(tmp_path, _config(tmp_path, recs, nodata_class=0)))
    assert "all 16 tiles are excluded (mask_border_nodata: 16, no_valid_pixel: 14)" in msg
    assert (
        "if 0 is a real class (e.g. background), set `exclusion.nodata_class: null` (or -1) "
        "so every mask value is a class; only if 0 really is missing data" in msg
    )
    # null, -1 and not given are the same for patch records: every mask value a class
    outputs = []
    for extra in ({"nodata_class": None}, {"nodata_class": -1}, {}):
        result = _run(_config(tmp_path, recs, **extra))
        truth = ONES["edge"] / WINDOW_PIXELS
        assert result.class_values == [0, 1] and result.nodata_class is None
        assert result.uniform_share == pytest.approx([1 - truth, truth])
        outputs.append((tmp_path / "out" / "b.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_yaml_nodata_class_convention(tmp_path: Path) -> None:
    assert ExclusionConfig.model_validate({"nodata_class": -1}).nodata_class is None
    assert ExclusionConfig.model_validate({"nodata_class": -1}).nodata_given
    assert not ExclusionConfig().nodata_given and ExclusionConfig().nodata_class is None
    with pytest.raises(ValueError, match="greater than or equal to -1"):
        ExclusionConfig.model_validate({"nodata_class": -2})
    tiles = _ingest(tmp_path, "bin", 0)
    # not given: follow the tiles (nodata 0)
    assert _run(_config(tmp_path / "a", {"tiles": str(tiles)})).nodata_class == 0
    # -1 (= null) differs from the tiles: an error before any output, with both fixes
    for value in (-1, None):
        res = _cli(tmp_path, _config(tmp_path, {"tiles": str(tiles)}, nodata_class=value))
        assert _assert_one_line(res) == (
            "error: exclusion.nodata_class is none but the tiles were ingested with nodata "
            "class 0, and their statistics cannot change without a re-ingest: re-ingest into a "
            "new tile table with `--nodata-class none`, or remove exclusion.nodata_class from "
            "the config to use the tiles' 0"
        )
        assert not (tmp_path / "out").exists()
    # naming the same class as the tiles is fine
    assert _run(_config(tmp_path, {"tiles": str(tiles)}, nodata_class=0)).nodata_class == 0
    # a YAML error names the key and the expectation
    res = _cli(tmp_path, _config(tmp_path, {"tiles": str(tiles)}, nodata_class=-5))
    msg = _assert_one_line(res)
    assert "balanced_dataset.exclusion.nodata_class: must be >= -1; got -5" in msg


@pytest.mark.db
def test_catalog_run_summary_records_the_nodata_share(
    fresh_database_url: str, tmp_path: Path
) -> None:
    import psycopg

    from smt_tools.pipelines.catalog_init import run_catalog_init

    run_catalog_init(fresh_database_url)
    _, _, pairs = write_binary_scene(tmp_path, "bin")
    run_ingest(pairs, catalog=fresh_database_url, patch_size=16, nodata_class=0, workers=1)
    data = _config(tmp_path, {"dsn": fresh_database_url})
    result = _run(data)
    assert result.run_id is not None
    with psycopg.connect(fresh_database_url) as conn:
        (summary,) = conn.execute(
            "select summary from run where id = %s", (result.run_id,)
        ).fetchone() or (None,)
    summary = summary if isinstance(summary, dict) else json.loads(summary)
    assert summary["nodata_class"] == 0
    assert summary["nodata_share"] == pytest.approx(ZERO_SHARE)
    assert any("into a new catalog with" in w for w in summary["warnings"])
    # all excluded from the catalog: the fix names a new catalog, not a tile table
    data["balanced_dataset"]["input"]["where_clause"] = "valid_pixels < 256"
    with pytest.raises(EmptySelectionError, match="re-ingest into a new catalog with"):
        _run(data)
    assert pd.read_csv(tmp_path / "out" / "b.csv").shape[0] == N_TILES
