"""smt_tools/examples/split_kfold.yaml and check_leakage.yaml run as shipped (paths pointed at a
copy of the demo data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from tests.split_data import balanced_csv_from_pairs

EXAMPLE = Path(__file__).resolve().parents[1] / "smt_tools" / "examples" / "split_kfold.yaml"
LEAKAGE_EXAMPLE = EXAMPLE.with_name("check_leakage.yaml")


def test_split_kfold_example_runs_on_demo_data(demo_pairs: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    cfg = data["split"]
    assert cfg["input_csv_path"] == "demo/balanced_train.csv"
    # same relative layout as `make demo`, under tmp_path
    (tmp_path / "demo").mkdir()
    balanced_csv_from_pairs(demo_pairs, tmp_path / cfg["input_csv_path"], patch=128)
    for key in ("csv_path", "geojson_path"):
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    cfg["input_csv_path"] = str(tmp_path / cfg["input_csv_path"])
    conf = tmp_path / "split_kfold.yaml"
    conf.write_text(yaml.safe_dump(data))

    res = CliRunner().invoke(app, ["split", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"], dtype={"buffer_excluded_folds": str})
    assert len(out) == 64
    # 4 scenes, 4 folds: one scene per fold, every tile of a scene in the same fold
    per_group = out.groupby("source_image_id")["fold"].nunique()
    assert (per_group == 1).all()
    assert sorted(out["fold"].unique()) == [0, 1, 2, 3]
    # the revisit overlaps scene 0: those tiles are dropped from each other's training folds
    scene0 = out[out["group_id"] == "scene_000"]
    revisit = out[out["group_id"] == "scene_003_revisit_of_000"]
    f_rev = str(int(revisit["fold"].iloc[0]))
    dropped = scene0["buffer_excluded_folds"].fillna("").str.split(";").apply(lambda v: f_rev in v)
    assert dropped.sum() > 0
    others = out[~out["group_id"].isin(["scene_000", "scene_003_revisit_of_000"])]
    assert others["buffer_excluded_folds"].isna().all()  # scenes 1 km apart: no buffer effect
    gj = json.loads(Path(cfg["output"]["geojson_path"]).read_text())
    assert len(gj["features"]) == 64
    assert {"fold", "buffer_excluded_folds"} <= set(gj["features"][0]["properties"])
    assert Path(cfg["output"]["geojson_path"]).with_suffix(".qml").is_file()
    assert np.isfinite(out["minx"]).all()

    flags = tmp_path / "flags.json"
    res = CliRunner().invoke(
        app,
        [
            *("check-leakage", "--folds", cfg["output"]["csv_path"], "--buffer-m", "50"),
            *("--report", str(tmp_path / "demo" / "leakage.geojson"), "--json", str(flags)),
        ],
    )
    assert res.exit_code == 0, res.output
    # check_leakage.yaml is the same audit as a config file: the same findings and map
    leak = yaml.safe_load(LEAKAGE_EXAMPLE.read_text())
    audit = leak["check_leakage"]
    assert audit["folds"] == data["split"]["output"]["csv_path"].removeprefix(str(tmp_path) + "/")
    for key in ("folds", "report"):
        audit[key] = str(tmp_path / audit[key])
    conf = tmp_path / "check_leakage.yaml"
    conf.write_text(yaml.safe_dump(leak))
    first = Path(audit["report"]).read_bytes()
    plan = CliRunner().invoke(app, ["check-leakage", str(conf), "--dry-run"])
    assert plan.exit_code == 0 and "nothing computed or written" in plan.stdout, plan.output
    from_config = tmp_path / "config.json"
    res = CliRunner().invoke(app, ["check-leakage", str(conf), "--json", str(from_config)])
    assert res.exit_code == 0, res.output
    assert (
        json.loads(from_config.read_text())["summary"] == json.loads(flags.read_text())["summary"]
    )
    assert Path(audit["report"]).read_bytes() == first


def test_split_config_errors_are_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("split:\n  n_splits: 3\n  output:\n    csv_path: x.csv\n")
    res = CliRunner().invoke(app, ["split", str(conf)])
    assert res.exit_code == 1
    assert "give exactly one input" in res.output
    conf.write_text(
        "split:\n  input_csv_path: a.csv\n  stratgy: group\n  output: {csv_path: b.csv}\n"
    )
    res = CliRunner().invoke(app, ["split", str(conf)])
    assert res.exit_code == 1
    assert "split.stratgy: unknown key; did you mean 'strategy'?" in res.output
    src = tmp_path / "a.csv"
    pd.DataFrame({"tile_id": [1, 2], "source_image_id": [1, 2]}).to_csv(src, index=False)
    conf.write_text(
        f"split:\n  input_csv_path: {src}\n  n_splits: 2\n  output: {{csv_path: {tmp_path / 'b.csv'}}}\n"
    )
    res = CliRunner().invoke(app, ["split", str(conf)])
    assert res.exit_code == 1
    assert "missing column(s) minx, miny, maxx, maxy, crs, class_counts_json" in res.output
    assert not (tmp_path / "b.csv").exists()


def test_excluded_tiles_count_no_pixels(tmp_path: Path) -> None:
    from smt_tools.config.split import SplitConfig
    from smt_tools.pipelines.split import run_split
    from tests.split_data import grid_frame

    frame, counts = grid_frame(n_images=6, per_side=2)
    counts[:, :] = 0
    counts[:, 0] = 100
    frame["excluded"] = frame["source_image_id"] == 10_000
    counts[frame["excluded"].to_numpy(), 1] = 10_000  # huge, but never used
    frame["class_counts_json"] = [
        json.dumps({str(c + 1): int(v) for c, v in enumerate(row)}) for row in counts
    ]
    frame.to_csv(tmp_path / "in.csv", index=False)
    cfg = SplitConfig.model_validate(
        {
            "input_csv_path": str(tmp_path / "in.csv"),
            "n_splits": 3,
            "output": {"csv_path": str(tmp_path / "out.csv")},
        }
    )
    res = run_split(cfg)
    assert res.global_share[:2] == (1.0, 0.0)
    assert sum(f.tiles for f in res.folds) == 24  # excluded tiles still get a fold
    assert (pd.read_csv(tmp_path / "out.csv")["fold"] >= 0).all()
