"""smt_tools/examples/coreset_local.yaml runs as shipped on the demo data (paths re-pointed).

The balanced CSV it reads is made the way `make demo` makes it: ingest the demo pairs into a
local tile table, then build-balanced-dataset with smt_tools/examples/balanced_train.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "smt_tools" / "examples"


def _invoke(args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _demo_balanced_csv(demo_pairs: Path, tmp: Path) -> Path:
    from smt_tools.pipelines.ingest import run_ingest

    data = yaml.safe_load((EXAMPLES / "balanced_train.yaml").read_text())
    cfg = data["balanced_dataset"]
    tiles = tmp / cfg["input"]["tiles"]
    tiles.parent.mkdir(parents=True, exist_ok=True)
    run_ingest(demo_pairs, catalog=str(tiles), patch_size=256, nodata_class=0, workers=1)
    cfg["input"]["tiles"] = str(tiles)
    cfg["output"] = {"csv_path": str(tmp / cfg["output"]["csv_path"])}
    conf = tmp / "balanced.yaml"
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    _invoke(["build-balanced-dataset", str(conf)])
    return Path(cfg["output"]["csv_path"])


def test_coreset_local_example(demo_pairs: Path, tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "coreset_local.yaml").read_text())
    assert set(data) == {"coreset"}
    cfg = data["coreset"]
    assert cfg["method"] == "cb" and cfg["budget"] == 0.3
    assert cfg["input_csv_path"] == "demo/balanced_train.csv"
    assert cfg["output"]["csv_path"] == "demo/coreset.csv"
    balanced = _demo_balanced_csv(demo_pairs, tmp_path)
    assert balanced == tmp_path / cfg["input_csv_path"]
    cfg["input_csv_path"] = str(balanced)
    for key in ("csv_path", "geojson_path"):
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    conf = tmp_path / "coreset.yaml"
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    res = _invoke(["select-coreset", str(conf)])

    src = pd.read_csv(balanced)
    out = pd.read_csv(cfg["output"]["csv_path"])
    n_ok = int((~src["excluded"]).sum())
    b = int(np.floor(0.3 * n_ok + 0.5))
    assert f"Selected {b} of {n_ok} included tiles" in res.stdout
    assert "with cb on cpu" in res.stdout or "with cb on cuda" in res.stdout  # device: auto
    assert out["tile_id"].tolist() == src["tile_id"].tolist()
    assert int(out["coreset_selected"].sum()) == b
    assert not out.loc[out["excluded"], "coreset_selected"].any()
    assert (out.loc[~out["coreset_selected"], "sampler_weight"] == 0).all()
    assert (out.loc[out["coreset_selected"], "sampler_weight"] > 0).all()
    # cb's first pick is the included tile with the most mixed classes (highest entropy)
    ok = out[~out["excluded"]]
    first = ok.loc[ok["coreset_score"].idxmax()]
    assert first["class_entropy"] == ok["class_entropy"].max()
    gj = json.loads(Path(cfg["output"]["geojson_path"]).read_text())
    assert len(gj["features"]) == len(out)
    assert Path(cfg["output"]["geojson_path"]).with_suffix(".qml").is_file()
