"""smt_tools/examples/balanced_longtail_repeat.yaml runs as shipped on the long-tail demo (paths
re-pointed), and its weights are repeat-factor sampling (docs/algorithms.md §8, §9) recomputed
here from the class counts it wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app

EXAMPLE = (
    Path(__file__).resolve().parents[1]
    / "smt_tools"
    / "examples"
    / ("balanced_longtail_repeat.yaml")
)


def test_balanced_longtail_repeat_example(tmp_path: Path) -> None:
    from smt_tools.pipelines.ingest import run_ingest
    from smt_tools.raster.demo_data import make_demo_data

    data = yaml.safe_load(EXAMPLE.read_text())
    cfg = data["balanced_dataset"]
    assert (
        cfg["sampling_method"] == "repeat_factor" and cfg["input"]["tiles"] == "demo/tiles.parquet"
    )
    demo = tmp_path / "demo"
    # what the header says: make-demo-data --profile longtail, then catalog ingest (256 px)
    pairs = make_demo_data(demo, scenes=4, size=512, seed=0, profile="longtail")
    run_ingest(
        pairs,
        catalog=str(demo / "tiles.parquet"),
        patch_size=256,
        nodata_class=0,
        workers=1,
        class_names_csv=demo / "classes.csv",
    )
    cfg["input"]["tiles"] = str(demo / "tiles.parquet")
    for key in ("csv_path", "report_dir"):
        assert cfg["output"][key].startswith("demo/")
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    res = CliRunner().invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    assert "Tiles: 16 in" in res.stdout
    assert "6 rare_object" in res.stdout

    out = pd.read_csv(cfg["output"]["csv_path"])
    assert len(out) == 16
    inc = out[~out["excluded"]]
    counts = inc["class_counts_json"].map(json.loads)
    classes = sorted({c for d in counts for c in d})
    t = cfg["weights"]["repeat_threshold"]
    share = {c: sum(d.get(c, 0) >= 1 for d in counts) / len(inc) for c in classes}
    r = {c: max(1.0, math.sqrt(t / f)) if f > 0 else 1.0 for c, f in share.items()}
    # the rare class is in one tile of the included ones, below t: it is the one repeated
    assert share["6"] == pytest.approx(1 / len(inc)) and share["6"] < t
    assert r["6"] == pytest.approx(math.sqrt(t * len(inc)))
    score = counts.map(lambda d: max((r[c] for c, n in d.items() if n >= 1), default=1.0))
    expected = (score / score.max()).clip(lower=cfg["weights"]["weight_floor"])
    assert inc["sampler_weight"].to_numpy() == pytest.approx(expected.to_numpy())
    assert (out.loc[out["excluded"], "sampler_weight"] == 0).all()
    rare_tiles = inc[counts.map(lambda d: d.get("6", 0) >= 1)]
    assert (rare_tiles["sampler_weight"] == 1.0).all()
    assert (Path(cfg["output"]["report_dir"]) / "report.html").is_file()
