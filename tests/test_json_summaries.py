"""``--json PATH`` holds the numbers the command prints; ``run.json`` beside local outputs holds
the fields of the catalog's ``run`` row (config, version, summary) plus input fingerprints."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools import __version__
from smt_tools.cli.app import app
from smt_tools.export.run_record import RECORD_FIELDS, jsonable
from tests.split_data import balanced_csv_from_pairs

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == list(RECORD_FIELDS)
    assert data["tool_version"] == __version__
    return data


def _yaml(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("json_tiles") / "tiles.parquet"
    code, _, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "128", "--nodata-class", "0",
        "--catalog", str(out), "-q",
    )  # fmt: skip
    assert code == 0, err
    return out


def test_ingest_json_equals_printed_numbers(demo_pairs: Path, tmp_path: Path) -> None:
    table = tmp_path / "t.parquet"
    code, out, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "256", "--nodata-class", "0",
        "--catalog", str(table), "--json", str(tmp_path / "ingest.json"),
    )  # fmt: skip
    assert code == 0, err
    rec = _load(tmp_path / "ingest.json")
    s = rec["summary"]
    assert rec["command"] == "catalog ingest" and rec["exit_code"] == 0 and rec["error"] is None
    m = re.search(r"Images: (\d+) listed, (\d+) scanned \((\d+) new, (\d+) changed\), (\d+)", out)
    assert m is not None, out
    assert [int(g) for g in m.groups()] == [
        s["images_total"], s["images_scanned"], s["images_new"], s["images_replaced"],
        s["images_skipped"],
    ]  # fmt: skip
    assert (s["images_total"], s["tiles_written"]) == (4, 16)
    m = re.search(r"Tiles written: (\d+) .* now holds (\d+) tiles of (\d+) source images", out)
    assert m is not None, out
    assert [int(g) for g in m.groups()] == [16, s["tiles_in_catalog"], s["sources_in_catalog"]]
    # every class row of the printed table, pixels and share, is in the JSON
    rows = re.findall(r"│\s*(\d+)\S*[^│]*│\s*([\d,]+)\s*│\s*([\d.]+) %", out)
    assert len(rows) == len(s["classes"]) > 1
    for (value, pixels, share), c in zip(rows, s["classes"], strict=True):
        assert int(value) == c["class_value"] and int(pixels.replace(",", "")) == c["pixels"]
        assert share == f"{100 * c['share']:.2f}"
    # a local tile table gets a run record beside it: inputs are the pairs CSV (with its size
    # and mtime) and nothing else given on the command line
    run = _load(tmp_path / "t.run.json")
    assert run["summary"] == s
    st = os.stat(demo_pairs)
    pairs = [i for i in run["inputs"] if i["path"] == str(demo_pairs.resolve())]
    assert len(pairs) == 1 and pairs[0]["size"] == st.st_size
    mtime = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat()
    assert pairs[0]["mtime"] == mtime


def test_balanced_json_and_run_json(tiles: Path, tmp_path: Path) -> None:
    conf = _yaml(
        tmp_path / "b.yaml",
        {
            "balanced_dataset": {
                "mode": "masks_only",
                "input": {"tiles": str(tiles)},
                "clustering": {"k_selection": "fixed", "k": 3},
                "output": {"csv_path": str(tmp_path / "out" / "b.csv")},
            }
        },
    )
    code, out, err = _run("build-balanced-dataset", str(conf), "--json", str(tmp_path / "s.json"))
    assert code == 0, err
    rec = _load(tmp_path / "s.json")
    s = rec["summary"]
    m = re.search(r"Tiles: (\d+) in, (\d+) excluded.*, (\d+) weighted", out)
    assert m is not None, out
    assert [int(g) for g in m.groups()] == [s["tiles"], s["excluded"], s["included"]]
    m = re.search(r"min ([\d.]+), max ([\d.]+); effective sample size ([\d,.]+) of (\d+)", out)
    assert m is not None, out
    assert m.group(1) == f"{s['weight_min']:.3f}" and m.group(2) == f"{s['weight_max']:.3f}"
    assert m.group(3) == f"{s['ess']:,.1f}" and int(m.group(4)) == s["included"]
    assert f"Composition clusters: k = {s['k']} (fixed" in out and s["k"] == 3
    frame = pd.read_csv(tmp_path / "out" / "b.csv")
    assert len(frame) == s["tiles"] and int(frame["excluded"].sum()) == s["excluded"]
    # run.json beside the CSV: same record, the config as loaded (defaults filled in)
    run = _load(tmp_path / "out" / "b.run.json")
    assert run["summary"] == s and run["command"] == "build-balanced-dataset"
    cfg = run["config"]["balanced_dataset"]
    assert cfg["clustering"]["k"] == 3 and cfg["sampling_method"] == "rank_max"  # a default
    assert {i["path"] for i in run["inputs"]} == {str(conf.resolve()), str(tiles.resolve())}
    # the run is recorded beside the tile table (the Parquet catalog), as in PostGIS
    assert run["run_id"] == 1 and "Recorded catalog run 1" in out
    runs = Path(f"{tiles}.runs")
    assert sorted(p.name for p in runs.iterdir()) == ["last_run_id", "run-000001.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.csv", "b.run.json"]


def test_check_leakage_json_leak_and_error(demo_pairs: Path, tmp_path: Path) -> None:
    frame = balanced_csv_from_pairs(demo_pairs, tmp_path / "all.csv")
    first = frame[frame["source_image_id"] == frame["source_image_id"].iloc[0]]
    first.iloc[:8].to_csv(tmp_path / "t.csv", index=False)
    first.iloc[8:].to_csv(tmp_path / "v.csv", index=False)
    args = ["check-leakage", "--train", str(tmp_path / "t.csv"), "--val", str(tmp_path / "v.csv")]
    code, out, _ = _run(*args, "--json", str(tmp_path / "leak.json"))
    assert code == 3
    rec = _load(tmp_path / "leak.json")
    s = rec["summary"]
    assert rec["exit_code"] == 3 and s["leak"] is True
    assert s["label_tiles"] == {"train": 8, "val": 8}
    assert s["checks"]["source_image"]["status"] == "leak"
    assert s["checks"]["near_duplicate"] == {"status": "skipped"}
    # the table row of check (a): tiles and groups as printed
    row = next(ln for ln in out.splitlines() if "(a) source image" in ln)
    nums = [int(x) for x in re.findall(r"│\s*(\d+)\s*(?=│)", row)]
    a = s["checks"]["source_image"]
    assert nums == [a["tiles"], a["items"]] == [16, 1]
    assert f"LEAK source_image: {a['detail']}" in out
    assert {i["path"] for i in rec["inputs"]} == {
        str((tmp_path / "t.csv").resolve()),
        str((tmp_path / "v.csv").resolve()),
    }
    # an error: the record says so (exit code 1, the one-line message), no summary
    code, _, err = _run("check-leakage", "--folds", str(tmp_path / "missing.csv"),
                        "--json", str(tmp_path / "err.json"))  # fmt: skip
    assert code == 1
    rec = _load(tmp_path / "err.json")
    assert rec["exit_code"] == 1 and rec["summary"] == {}
    assert "error: " + rec["error"] == err.strip()


def test_quiet_and_verbose(tiles: Path, tmp_path: Path) -> None:
    conf = _yaml(
        tmp_path / "b.yaml",
        {
            "balanced_dataset": {
                "mode": "masks_only",
                "input": {"tiles": str(tiles)},
                "clustering": {"k_selection": "fixed", "k": 3},
                "output": {"csv_path": str(tmp_path / "b.csv")},
            }
        },
    )
    code, out, err = _run("build-balanced-dataset", str(conf), "-q")
    assert code == 0 and out == "", (out, err)
    # warnings (and errors) are still shown
    assert err.startswith("warning: sampling_method rank_max: mode masks_only")
    assert len(err.splitlines()) == 1
    code, out, err = _run("build-balanced-dataset", str(conf), "-v", "--json", str(tmp_path / "j"))
    assert code == 0, err
    assert f"run record: {tmp_path / 'b.run.json'}" in err
    assert f"summary JSON: {tmp_path / 'j'}" in err
    timings = next(ln for ln in err.splitlines() if ln.startswith("timings: "))
    assert "load " in timings and "total " in timings
    assert "Tiles: " in out  # the normal summary stays


def test_jsonable_values() -> None:
    import numpy as np

    value = {1: np.int64(3), "p": Path("/a"), "n": float("nan"), "t": (np.float32(0.5),)}
    assert jsonable(value) == {"1": 3, "p": "/a", "n": None, "t": [0.5]}


def test_run_json_matches_catalog_run_row(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    url = fresh_database_url
    assert _run("catalog", "init", "--catalog", url, "-q")[0] == 0
    code, _, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "256", "--nodata-class", "0",
        "--catalog", url, "-q",
    )  # fmt: skip
    assert code == 0, err
    conf = _yaml(
        tmp_path / "b.yaml",
        {
            "balanced_dataset": {
                "mode": "masks_only",
                "input": {"dsn": url},
                "clustering": {"k_selection": "fixed", "k": 3},
                "output": {"csv_path": str(tmp_path / "b.csv")},
            }
        },
    )
    code, out, err = _run("build-balanced-dataset", str(conf), "--json", str(tmp_path / "s.json"))
    assert code == 0, err
    run = _load(tmp_path / "b.run.json")
    assert _load(tmp_path / "s.json") == run
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select id, command, config, started_at, finished_at, tool_version, summary from run"
        ).fetchall()
    assert len(row) == 1
    run_id, command, config, started, finished, version, summary = row[0]
    assert run["run_id"] == run_id and f"Recorded catalog run {run_id}" in out
    assert (run["command"], run["config"], run["tool_version"]) == (command, config, version)
    timing = {"timings_s", "version"}  # the catalog row is written before the final timings
    assert {k: v for k, v in run["summary"].items() if k not in timing} == {
        k: v for k, v in summary.items() if k not in timing
    }
    assert datetime.fromisoformat(run["started_at"]) <= started <= finished
    assert finished <= datetime.fromisoformat(run["finished_at"])
