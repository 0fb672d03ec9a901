"""Exit codes of every command, with real inputs: 0 ok, 1 error, 2 usage, 3 leak found.

Demo rasters (make-demo-data), a local tile table and a real PostGIS for the catalog commands.
Every error is one line on stderr (no traceback); usage errors get click's usage message.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from tests.split_data import balanced_csv_from_pairs

runner = CliRunner()

COMMANDS = [
    ["doctor"],
    ["make-demo-data"],
    ["catalog", "init"],
    ["catalog", "ingest"],
    ["catalog", "stats"],
    ["build-balanced-dataset"],
    ["embed"],
    ["select-coreset"],
    ["split"],
    ["check-leakage"],
    ["train"],
]


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Usage: " in err and "Traceback" not in err
    flat = " ".join(err.replace("│", " ").split())  # rich boxes wrap long messages
    for n in needles:
        assert n in flat, (n, err)


def _yaml(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiles(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session demo scenes ingested into a local tile table (128 px tiles)."""
    out = tmp_path_factory.mktemp("exit_tiles") / "tiles.parquet"
    code, _, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "128",
        "--nodata-class", "0", "--catalog", str(out), "-q",
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def audit_csv(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A balanced-style CSV (tile_id, source_image_id, footprints ...) of the demo scenes."""
    out = tmp_path_factory.mktemp("exit_audit") / "tiles.csv"
    balanced_csv_from_pairs(demo_pairs, out)
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_lists_the_common_options(command: list[str]) -> None:
    code, out, err = _run(*command, "--help")
    assert code == 0, err
    flat = " ".join(out.split())
    for option in ("--json", "--quiet", "-q", "--verbose", "-v"):
        assert option in flat, (command, option)


@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: " ".join(c))
def test_unknown_option_is_usage_error(command: list[str]) -> None:
    code, _, err = _run(*command, "--no-such-option")
    _usage_error(code, err, "No such option: --no-such-option")


def test_quiet_and_verbose_together_is_usage_error(tmp_path: Path) -> None:
    code, _, err = _run("make-demo-data", str(tmp_path / "d"), "-q", "-v")
    _usage_error(code, err, "give either -q/--quiet or -v/--verbose, not both")
    assert not (tmp_path / "d").exists()


def test_make_demo_data(tmp_path: Path) -> None:
    code, out, err = _run("make-demo-data", str(tmp_path / "d"), "--scenes", "2", "--size", "64")
    assert code == 0, err
    assert out.startswith("Wrote 2 scenes of 64x64 px")
    assert len(pd.read_csv(tmp_path / "d" / "pairs.csv")) == 2
    # --size below the minimum: click's range check, exit 2, nothing written
    code, _, err = _run("make-demo-data", str(tmp_path / "e"), "--size", "8")
    _usage_error(code, err, "Invalid value for '--size'", "greater than or equal to 64")
    assert not (tmp_path / "e").exists()
    # the output folder is a file: one line, exit 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run("make-demo-data", str(blocker), "--scenes", "1", "--size", "64")
    assert str(blocker) in _one_line_error(code, err)


def test_ingest_choices_and_errors(demo_pairs: Path, tmp_path: Path) -> None:
    # a bad --edge is a usage error that lists the allowed values (was exit 1)
    code, _, err = _run("catalog", "ingest", str(demo_pairs), "--edge", "foo")
    _usage_error(code, err, "Invalid value for '--edge'", "'drop'", "'shift'", "'pad'")
    code, out, _ = _run("catalog", "ingest", "--help")
    assert "drop|shift|pad" in out.replace(" ", "")
    # a missing pairs CSV: one line naming it
    code, _, err = _run(
        "catalog", "ingest", str(tmp_path / "nope.csv"), "--catalog", str(tmp_path / "t.parquet")
    )
    assert "nope.csv" in _one_line_error(code, err)
    # a good ingest into a local table
    code, out, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "256", "--nodata-class", "0",
        "--catalog", str(tmp_path / "t.parquet"),
    )  # fmt: skip
    assert code == 0, err
    assert "Images: 4 listed, 4 scanned (4 new, 0 changed), 0 unchanged skipped" in out


def test_catalog_commands_against_postgis(fresh_database_url: str, demo_pairs: Path) -> None:
    url = fresh_database_url
    # not migrated yet: stats and ingest are one-line errors naming the fix
    code, _, err = _run("catalog", "stats", "--catalog", url)
    assert "catalog init" in _one_line_error(code, err)
    code, out, err = _run("catalog", "init", "--catalog", url)
    assert code == 0, err
    assert "migration(s) applied" in out
    code, out, err = _run(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "256", "--nodata-class", "0",
        "--catalog", url,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = _run("catalog", "stats", "--catalog", url)
    assert code == 0, err
    assert ": 16 tiles, 4 source images" in out
    # unreachable server: exit 1, one line, password never printed
    code, _, err = _run("catalog", "init", "--catalog", "postgresql://u:s3cret@127.0.0.1:1/x")
    line = _one_line_error(code, err)
    assert "cannot connect" in line and "s3cret" not in line


def test_config_commands(tiles: Path, tmp_path: Path) -> None:
    balanced = _yaml(
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
    code, _, err = _run("build-balanced-dataset", str(balanced), "-q")
    assert code == 0, err
    # missing config file, bad value: exit 1, one line naming the file
    code, _, err = _run("build-balanced-dataset", str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in _one_line_error(code, err)
    bad = _yaml(tmp_path / "bad.yaml", {"balanced_dataset": {"sampling_method": "rank_mx"}})
    code, _, err = _run("build-balanced-dataset", str(bad))
    assert "rank_mx" in _one_line_error(code, err)
    # no config argument: usage
    code, _, err = _run("build-balanced-dataset")
    _usage_error(code, err, "Missing argument")
    # embed without embeddings.parquet_path: one line
    code, _, err = _run("embed", str(balanced))
    assert "embeddings.parquet_path" in _one_line_error(code, err)

    coreset = {
        "method": "cb",
        "budget": 0.5,
        "input_csv_path": str(tmp_path / "b.csv"),
        "output": {"csv_path": str(tmp_path / "c.csv")},
    }
    code, _, err = _run("select-coreset", str(_yaml(tmp_path / "c.yaml", {"coreset": coreset})))
    assert code == 0, err
    coreset["method"] = "nope"
    code, _, err = _run("select-coreset", str(_yaml(tmp_path / "c2.yaml", {"coreset": coreset})))
    assert "nope" in _one_line_error(code, err)

    split = {
        "input_csv_path": str(tmp_path / "b.csv"),
        "n_splits": 2,
        "output": {"csv_path": str(tmp_path / "s.csv")},
    }
    code, _, err = _run("split", str(_yaml(tmp_path / "s.yaml", {"split": split})))
    assert code == 0, err
    split["n_splits"] = 40  # more folds than the 4 source images
    code, _, err = _run("split", str(_yaml(tmp_path / "s2.yaml", {"split": split})))
    _one_line_error(code, err)

    code, _, err = _run("train", str(tmp_path / "no_train.yaml"))
    assert "no_train.yaml" in _one_line_error(code, err)


def test_check_leakage_leak_no_leak_bad_input(audit_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(audit_csv)
    # source image ids hash the (temporary) paths: order the scenes by file name instead
    by_name = frame.drop_duplicates("source_image_id").sort_values("image_path")
    ids = by_name["source_image_id"].tolist()
    assert len(ids) == 4
    # scenes 1 and 2 do not overlap (scene 3 revisits scene 0): no leak, exit 0
    frame[frame["source_image_id"] == ids[1]].to_csv(tmp_path / "t.csv", index=False)
    frame[frame["source_image_id"] == ids[2]].to_csv(tmp_path / "v.csv", index=False)
    code, out, err = _run("check-leakage", "--train", str(tmp_path / "t.csv"),
                          "--val", str(tmp_path / "v.csv"))  # fmt: skip
    assert code == 0, out + err
    assert out.rstrip().endswith("No leakage found.")
    # one source image on both sides: leak, exit 3 (distinct from errors)
    scene = frame[frame["source_image_id"] == ids[1]]
    scene.iloc[:8].to_csv(tmp_path / "t2.csv", index=False)
    scene.iloc[8:].to_csv(tmp_path / "v2.csv", index=False)
    code, out, err = _run("check-leakage", "--train", str(tmp_path / "t2.csv"),
                          "--val", str(tmp_path / "v2.csv"))  # fmt: skip
    assert code == 3, out + err
    assert "LEAK source_image:" in out
    assert "Leakage found: see the table above (exit code 3)." in err
    # bad input: exit 1, one line
    pd.DataFrame({"tile_id": [1], "foo": [2]}).to_csv(tmp_path / "bad.csv", index=False)
    code, _, err = _run("check-leakage", "--train", str(tmp_path / "bad.csv"),
                        "--val", str(tmp_path / "bad.csv"))  # fmt: skip
    assert "missing column(s) source_image_id" in _one_line_error(code, err)
    code, _, err = _run("check-leakage", "--folds", str(tmp_path / "missing.csv"))
    assert "missing.csv" in _one_line_error(code, err)
    # an unknown kNN backend is a usage error listing the choices (was accepted silently)
    code, _, err = _run("check-leakage", "--train", str(tmp_path / "t.csv"),
                        "--val", str(tmp_path / "v.csv"), "--knn-backend", "annoy")  # fmt: skip
    _usage_error(
        code, err, "Invalid value for '--knn-backend'", "'sklearn'", "'faiss'", "'torch'",
        "'hnsw'", "'auto'",
    )  # fmt: skip
    code, out, _ = _run("check-leakage", "--help")
    flat = " ".join(out.split())
    assert "<sklearn|faiss|torch|" in flat.replace(" ", "")  # the metavar wraps after torch
    assert "3: leakage found" in flat


def test_json_path_that_is_a_folder_is_usage_error(tmp_path: Path) -> None:
    code, _, err = _run("doctor", "--json", str(tmp_path))
    _usage_error(code, err, "is a folder; give a file name")
