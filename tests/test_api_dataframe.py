"""The Python API (smt_tools.balance / select_coreset): DataFrame in, the command's table out.

Each test runs the command (CliRunner) and the API on the same tile table and config and
requires the same rows and numbers, exactly.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import smt_tools
from smt_tools.cli.app import app
from smt_tools.config import load_config
from smt_tools.config.balanced import BalancedFile
from smt_tools.errors import ConfigError, InputDataError

README = Path(__file__).resolve().parents[1] / "README.md"

BALANCED: dict[str, Any] = {
    "clustering": {"k_min": 2, "k_max": 6, "random_state": 7},
    "exclusion": {"exclude_black_border": True},
    "weights": {"rare_class_boost": 2.0},
}


@pytest.fixture(scope="module")
def tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pairs ingested into a Parquet tile table (64 tiles of 128 px, nodata 0)."""
    from smt_tools.pipelines.ingest import run_ingest

    out = tmp_path_factory.mktemp("api") / "tiles.parquet"
    run_ingest(demo_pairs, catalog=str(out), patch_size=128, nodata_class=0, workers=1)
    return out


def _cli(command: str, key: str, body: dict[str, Any], conf: Path) -> None:
    conf.write_text(yaml.safe_dump({key: body}))
    res = CliRunner().invoke(app, [command, str(conf)])
    assert res.exit_code == 0, res.output


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as plain str (a CSV reads an empty field as NaN, a category as text)."""
    out = frame.copy()
    for c in out.columns:
        col = out[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            out[c] = col.astype(object).where(col.notna(), "").astype(str)
    return out


def _same(api: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """``api`` holds exactly the rows, columns and values of the CSV at ``csv``."""
    cli = pd.read_csv(csv)
    assert list(api.columns) == list(cli.columns)
    pd.testing.assert_frame_equal(_plain(api), _plain(cli), check_dtype=False, check_exact=True)
    return cli


def _cli_balanced(tiles: Path, tmp: Path, **extra: Any) -> Path:
    body = copy.deepcopy(BALANCED) | extra
    csv = tmp / "cli_balanced.csv"
    body["input"] = {"tiles": str(tiles)}
    body["output"] = {"csv_path": str(csv), "write_catalog_run": False}
    _cli("build-balanced-dataset", "balanced_dataset", body, tmp / "b.yaml")
    return csv


def test_balance_returns_the_cli_table_and_leaves_the_input_alone(
    tiles: Path, tmp_path: Path
) -> None:
    csv = _cli_balanced(tiles, tmp_path)
    df = smt_tools.read_tiles(tiles)
    assert len(df) == 64 and df.attrs["class_values"] == [1, 2, 3, 4, 5, 6]
    assert df.attrs["nodata_class"] == 0
    before = df.copy(deep=True)
    counts_before = np.stack(df["class_counts"].to_list())
    listing = sorted(tmp_path.rglob("*"))

    out = smt_tools.balance(df, copy.deepcopy(BALANCED))

    cli = _same(out, csv)
    np.testing.assert_array_equal(out["sampler_weight"].to_numpy(), cli["sampler_weight"])
    assert (out["sampler_weight"] > 0).sum() == (~out["excluded"]).sum() > 0
    assert out["excluded"].any()  # black-border tiles of the demo scenes
    # the input is untouched (values, columns, the count arrays) and nothing was written
    pd.testing.assert_frame_equal(
        df.drop(columns="class_counts"), before.drop(columns="class_counts")
    )
    np.testing.assert_array_equal(np.stack(df["class_counts"].to_list()), counts_before)
    assert sorted(tmp_path.rglob("*")) == listing


def test_balance_takes_a_yaml_path_a_whole_file_and_the_config_object(
    tiles: Path, tmp_path: Path
) -> None:
    csv = _cli_balanced(tiles, tmp_path)  # writes tmp_path/b.yaml, outputs named
    df = smt_tools.read_tiles(tiles)
    # the command's own YAML: its input is replaced by df, its CSV written like the command's
    data = yaml.safe_load((tmp_path / "b.yaml").read_text())
    data["balanced_dataset"]["output"]["csv_path"] = str(tmp_path / "api.csv")
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(data))
    out = smt_tools.balance(df, tmp_path / "api.yaml")
    _same(out, csv)
    _same(pd.read_csv(tmp_path / "api.csv"), csv)
    # the parsed whole-file mapping and the validated config object give the same table
    pd.testing.assert_frame_equal(smt_tools.balance(df, {"balanced_dataset": BALANCED}), out)
    obj = load_config(tmp_path / "b.yaml", BalancedFile)
    pd.testing.assert_frame_equal(smt_tools.balance(df, obj), out)


def test_select_coreset_matches_the_cli_on_a_balanced_table(tiles: Path, tmp_path: Path) -> None:
    csv = _cli_balanced(tiles, tmp_path)
    body = {"method": "cb", "budget": 0.4, "input_csv_path": str(csv)}
    body["output"] = {"csv_path": str(tmp_path / "cli_core.csv")}
    _cli("select-coreset", "coreset", body, tmp_path / "c.yaml")

    balanced = smt_tools.balance(smt_tools.read_tiles(tiles), copy.deepcopy(BALANCED))
    before = balanced.copy(deep=True)
    core = smt_tools.select_coreset(balanced, {"method": "cb", "budget": 0.4})
    cli = _same(core, tmp_path / "cli_core.csv")
    pd.testing.assert_frame_equal(balanced, before)  # not modified
    picked = set(core.loc[core["coreset_selected"], "tile_id"])
    assert picked == set(cli.loc[cli["coreset_selected"].astype(bool), "tile_id"])
    assert len(picked) == round(0.4 * int((~balanced["excluded"]).sum()))
    assert (core.loc[~core["coreset_selected"], "sampler_weight"] == 0).all()
    # the CLI's CSV read back with pandas is an input too
    again = smt_tools.select_coreset(pd.read_csv(csv), {"coreset": {"method": "cb", "budget": 0.4}})
    assert set(again.loc[again["coreset_selected"], "tile_id"]) == picked


def test_select_coreset_on_a_tile_table_matches_the_cli_catalog_input(
    tiles: Path, tmp_path: Path
) -> None:
    body = {"method": "lc", "budget": 20, "budget_mode": "count", "catalog": {"path": str(tiles)}}
    body["output"] = {"csv_path": str(tmp_path / "cli_core.csv"), "write_catalog_run": False}
    _cli("select-coreset", "coreset", body, tmp_path / "c.yaml")
    core = smt_tools.select_coreset(smt_tools.read_tiles(tiles), tmp_path / "c.yaml")
    cli = _same(core, tmp_path / "cli_core.csv")  # the YAML named the CSV: written again
    assert int(core["coreset_selected"].sum()) == 20 == int(cli["coreset_selected"].sum())
    assert not (tiles.parent / "tiles.parquet.runs").exists()  # no run recorded


def test_embeddings_given_as_an_array_or_the_cache_path(tiles: Path, tmp_path: Path) -> None:
    from smt_tools.embeddings.cache import write_chunk

    df = smt_tools.read_tiles(tiles)
    emb = np.random.default_rng(3).normal(size=(len(df), 8)).astype(np.float32)
    cache = tmp_path / "emb.parquet"
    write_chunk(cache, df["tile_id"].to_numpy(np.int64), emb, "test-model", "h")
    body = {"method": "kcenter", "budget": 0.25, "pca_dim": None, "input_csv_path": ""}
    body["input_csv_path"] = str(_cli_balanced(tiles, tmp_path))
    body["parquet_path"] = str(cache)
    body["output"] = {"csv_path": str(tmp_path / "cli_core.csv")}
    _cli("select-coreset", "coreset", body, tmp_path / "c.yaml")

    balanced = smt_tools.balance(df, copy.deepcopy(BALANCED))
    cfg = {"method": "kcenter", "budget": 0.25, "pca_dim": None}
    by_array = smt_tools.select_coreset(balanced, cfg, embeddings=emb)
    by_cache = smt_tools.select_coreset(balanced, cfg, embeddings=cache)
    _same(by_array, tmp_path / "cli_core.csv")
    pd.testing.assert_frame_equal(by_cache, by_array)
    # a missing vector for an included tile is one clear line
    holes = emb.copy()
    row = int(np.flatnonzero(~balanced["excluded"].to_numpy())[0])
    holes[row] = np.nan
    with pytest.raises(InputDataError, match=rf"embeddings: row {row} of the DataFrame"):
        smt_tools.select_coreset(balanced, cfg, embeddings=holes)
    with pytest.raises(InputDataError, match=r"row-aligned with the DataFrame \(64 rows\)"):
        smt_tools.select_coreset(balanced, cfg, embeddings=emb[:10])


def test_balance_uniqueness_from_an_array_equals_the_cache_run(tiles: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from smt_tools.embeddings.cache import read_embeddings
    from tests.test_embeddings import save_tiny_dinov2

    model = save_tiny_dinov2(tmp_path / "tiny")
    cache = tmp_path / "emb.parquet"
    extra = {"mode": "embeddings", "uniqueness": {"k_neighbors": 3, "backend": "sklearn"}}
    extra["embeddings"] = {"dino_model": str(model), "parquet_path": str(cache), "num_workers": 0}
    csv = _cli_balanced(tiles, tmp_path, **extra)  # computes and caches the embeddings
    df = smt_tools.read_tiles(tiles)
    emb, found = read_embeddings(cache, df["tile_id"].to_numpy(np.int64))
    cfg = copy.deepcopy(BALANCED) | extra
    out = smt_tools.balance(df, cfg, embeddings=np.where(found[:, None], emb, np.nan))
    cli = _same(out, csv)
    assert np.isfinite(cli.loc[~cli["excluded"], "uniqueness_score"]).all()
    pd.testing.assert_frame_equal(smt_tools.balance(df, cfg, embeddings=cache), out)


def test_missing_column_and_bad_input_are_one_clear_line(tiles: Path) -> None:
    df = smt_tools.read_tiles(tiles)
    with pytest.raises(InputDataError) as err:
        smt_tools.balance(df.drop(columns="nodata_ratio"), BALANCED)
    assert "DataFrame: missing column(s) nodata_ratio;" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InputDataError, match=r"missing column\(s\) class_counts;"):
        smt_tools.balance(df.drop(columns="class_counts"), BALANCED)
    balanced = smt_tools.balance(df, BALANCED)
    with pytest.raises(InputDataError, match=r"DataFrame: missing column\(s\) excluded;"):
        smt_tools.select_coreset(balanced.drop(columns="excluded"), {"budget": 0.3})
    # read with plain pandas, the class values are not known: say how to give them
    raw = pd.read_parquet(tiles)
    with pytest.raises(InputDataError, match=r"pass class_values=\[\.\.\.\]"):
        smt_tools.balance(raw, BALANCED)
    given = smt_tools.balance(raw, BALANCED, class_values=[1, 2, 3, 4, 5, 6], nodata_class=0)
    pd.testing.assert_frame_equal(given, balanced)
    with pytest.raises(InputDataError, match="row 0: class_counts must have 7 entries"):
        smt_tools.balance(raw, BALANCED, class_values=[0, 1, 2, 3, 4, 5, 6])


def test_bad_config_is_the_cli_message(tiles: Path, tmp_path: Path) -> None:
    body = {"sampling_method": "rank_mx", "input": {"tiles": str(tiles)}}
    body["output"] = {"csv_path": str(tmp_path / "x.csv")}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"balanced_dataset": body}))
    res = CliRunner().invoke(app, ["build-balanced-dataset", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 1
    with pytest.raises(ConfigError) as err:
        smt_tools.balance(smt_tools.read_tiles(tiles), tmp_path / "bad.yaml")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}: balanced_dataset.sampling_method:")
    assert " ".join(message.split()) in " ".join(res.output.split())
    with pytest.raises(ConfigError, match=r"output\.geojson_path needs output\.csv_path"):
        smt_tools.balance(smt_tools.read_tiles(tiles), {"output": {"geojson_path": "x.geojson"}})
    with pytest.raises(ConfigError, match=r"coreset\.budget_mode|budget 2 with budget_mode"):
        smt_tools.select_coreset(smt_tools.read_tiles(tiles), {"budget": 2})


def _readme_snippet() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README: the Python API section has a python block"
    return blocks[0]


def test_readme_python_api_example_runs(
    tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Python API snippet, run as written on demo/tiles.parquet."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "tiles.parquet").write_bytes(tiles.read_bytes())
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), scope)
    weights, core = scope["weights"], scope["core"]
    assert len(weights) == 64 and weights["sampler_weight"].ge(0).all()
    assert int(core["coreset_selected"].sum()) == round(0.3 * int((~weights["excluded"]).sum()))
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["tiles.parquet"]
