"""check-leakage audits a split run where it is recorded: PostGIS or a Parquet tile table.

The same split audited from the catalog (``--catalog --run-id``, or a config's ``catalog:``
block) and from its folds CSV gives the same findings, tile for tile.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app

runner = CliRunner()
INGEST = ["--patch-size", "128", "--workers", "1", "--nodata-class", "0"]


def _cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def _catalog(kind: str, fresh: str | None, demo_pairs: Path, tmp_path: Path) -> str:
    if kind == "postgis":
        assert fresh is not None
        assert _cli("catalog", "init", "--catalog", fresh)[0] == 0
        target = fresh
    else:
        target = str(tmp_path / "tiles.parquet")
    code, out, err = _cli("catalog", "ingest", demo_pairs, *INGEST, "--catalog", target)
    assert code == 0, out + err
    return target


def _split(target: str, tmp_path: Path, n_splits: int = 2, buffer_m: float = 0.0) -> int:
    key = "path" if target.endswith(".parquet") else "url"
    conf = tmp_path / "split.yaml"
    body = {
        "catalog": {key: target},
        "n_splits": n_splits,
        "buffer_m": buffer_m,
        "output": {"csv_path": str(tmp_path / "folds.csv")},
    }
    conf.write_text(yaml.safe_dump({"split": body}))
    code, out, err = _cli("split", conf, "--json", tmp_path / "split.json")
    assert code == 0, out + err
    run_id = json.loads((tmp_path / "split.json").read_text())["run_id"]
    assert isinstance(run_id, int)
    return run_id


def _audit(tmp_path: Path, name: str, *args: object) -> dict[str, object]:
    code, out, err = _cli("check-leakage", *args, "--json", tmp_path / f"{name}.json")
    assert code in (0, 3), out + err
    summary = json.loads((tmp_path / f"{name}.json").read_text())["summary"]
    summary.pop("report_path", None)
    return {**summary, "exit": code}


@pytest.mark.parametrize("kind", ["parquet", pytest.param("postgis", marks=pytest.mark.db)])
def test_catalog_run_audit_equals_folds_csv_audit(
    kind: str, request: pytest.FixtureRequest, demo_pairs: Path, tmp_path: Path
) -> None:
    fresh = request.getfixturevalue("fresh_database_url") if kind == "postgis" else None
    target = _catalog(kind, fresh, demo_pairs, tmp_path)
    run_id = _split(target, tmp_path)
    csv = _audit(tmp_path, "csv", "--folds", tmp_path / "folds.csv", "--buffer-m", 5000)
    flags = _audit(tmp_path, "flags", "--catalog", target, "--run-id", run_id, "--buffer-m", 5000)
    key = "path" if kind == "parquet" else "url"
    conf = tmp_path / "leak.yaml"
    conf.write_text(
        yaml.safe_dump(
            {"check_leakage": {"catalog": {key: target, "run_id": run_id}, "buffer_m": 5000.0}}
        )
    )
    from_config = _audit(tmp_path, "config", conf)
    assert csv == flags == from_config
    # the demo scenes lie within 5 km of each other: tiles of the two folds meet (exit 3)
    assert csv["spatial_checked"] is True and csv["exit"] == 3
    assert csv["leaking_tiles"] > 0  # type: ignore[operator]
    assert sum(csv["label_tiles"].values()) == 64  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["parquet", pytest.param("postgis", marks=pytest.mark.db)])
def test_buffer_exclusions_come_from_the_catalog_run(
    kind: str, request: pytest.FixtureRequest, demo_pairs: Path, tmp_path: Path
) -> None:
    """A buffered split records per tile the rounds it was dropped from; the catalog audit must
    honour them exactly as the CSV's buffer_excluded_folds column (without it: 288 leaks)."""
    fresh = request.getfixturevalue("fresh_database_url") if kind == "postgis" else None
    target = _catalog(kind, fresh, demo_pairs, tmp_path)
    run_id = _split(target, tmp_path, n_splits=3, buffer_m=1000.0)
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"buffer_excluded_folds": str})
    assert folds["buffer_excluded_folds"].fillna("").ne("").sum() == 48
    folds.drop(columns="buffer_excluded_folds").to_csv(tmp_path / "bare.csv", index=False)
    bare = _audit(tmp_path, "bare", "--folds", tmp_path / "bare.csv", "--buffer-m", 1000)
    assert bare["exit"] == 3 and bare["checks"]["spatial"]["items"] == 288  # type: ignore[index]
    csv = _audit(tmp_path, "csv", "--folds", tmp_path / "folds.csv", "--buffer-m", 1000)
    cat = _audit(tmp_path, "cat", "--catalog", target, "--run-id", run_id, "--buffer-m", 1000)
    assert csv == cat
    assert cat["exit"] == 0 and cat["checks"]["spatial"]["status"] == "ok"  # type: ignore[index]
    sizes = cat["label_tiles"].values()  # type: ignore[union-attr]
    assert sorted(sizes) == [16, 16, 32]  # 4 scenes of 16 tiles in 3 folds


def test_a_run_that_is_not_a_split_is_refused(demo_pairs: Path, tmp_path: Path) -> None:
    target = _catalog("parquet", None, demo_pairs, tmp_path)
    conf = tmp_path / "b.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "balanced_dataset": {
                    "input": {"tiles": target},
                    "clustering": {"k_selection": "fixed", "k": 2},
                    "output": {"csv_path": str(tmp_path / "b.csv")},
                }
            }
        )
    )
    assert _cli("build-balanced-dataset", conf)[0] == 0
    code, _, err = _cli("check-leakage", "--catalog", target, "--run-id", 1)
    assert code == 1
    assert err.strip() == (
        f"error: catalog {target}: run 1 is a build-balanced-dataset run with no folds; "
        "check-leakage audits a split run (run `pytorch-smt-tools split` with this catalog "
        "and use its run id)"
    )
    code, _, err = _cli("check-leakage", "--catalog", target)  # no run id
    assert code == 1 and err.count("\n") == 1 and "catalog needs run_id" in err
