"""Hostile numbers in configs and options (issue 11, B12): NaN, infinities and absurd
magnitudes are refused before any work, in one line that names the right key and the limit;
exit code 1 (config) or 2 (option usage), never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from smt_tools.cli.app import app
from tests.rasters import write_pair

runner = CliRunner()

BALANCED = """balanced_dataset:
  input: {INPUT}
  output: {csv_path: OUT/b.csv}
"""
RECORD = "{image_path: a.tif, mask_path: b.tif, row_off: ROW, col_off: 0, patch_size: SIZE}"


def _balanced(section: str = "", inp: str = "{tiles: t.parquet}") -> str:
    return BALANCED.replace("{INPUT}", inp) + (f"  {section}\n" if section else "")


def _records(row: str = "0", size: str = "16") -> str:
    return "{patch_records: [" + RECORD.replace("ROW", row).replace("SIZE", size) + "]}"


def _coreset(line: str) -> str:
    return "coreset:\n  input_csv_path: x.csv\n  output: {csv_path: OUT/c.csv}\n  " + line + "\n"


def _split(line: str, inp: str = "input_csv_path: x.csv") -> str:
    return f"split:\n  {inp}\n  output: {{csv_path: OUT/s.csv}}\n  {line}\n"


P = "balanced_dataset."
CASES: list[tuple[str, str, str]] = [
    # (command, YAML, expected one-line message after "error: c.yaml: ")
    (
        "build-balanced-dataset",
        _balanced(inp="{tiles: t.parquet, statement_timeout_s: .inf}"),
        P + "input.statement_timeout_s: must be a finite number; got inf",
    ),
    (
        "build-balanced-dataset",
        _balanced(inp="{dsn: x, statement_timeout_s: 1e9}"),
        P + "input.statement_timeout_s: must be <= 86400; got 1000000000.0",
    ),
    (
        "build-balanced-dataset",
        _balanced("weights: {rare_class_boost: .inf}"),
        P + "weights.rare_class_boost: must be a finite number; got inf",
    ),
    (
        "build-balanced-dataset",
        _balanced("weights: {rare_class_boost: 1.0e+300}"),
        P + "weights.rare_class_boost: must be <= 1000; got 1e+300",
    ),
    (
        "build-balanced-dataset",
        _balanced("clustering: {clr_pseudocount: .inf}"),
        P + "clustering.clr_pseudocount: must be a finite number; got inf",
    ),
    (
        "build-balanced-dataset",
        _balanced("clustering: {clr_pseudocount: .nan}"),
        P + "clustering.clr_pseudocount: must be a finite number; got nan",
    ),
    (  # YAML 1.1 reads 1e10 as text: still the number, and patch_size is named
        "build-balanced-dataset",
        _balanced(inp=_records(size="1e10")),
        P + "input.patch_records[0].patch_size: must be <= 65536; got 10000000000",
    ),
    (
        "build-balanced-dataset",
        _balanced(inp=_records(size="10000000000")),
        P + "input.patch_records[0].patch_size: must be <= 65536; got 10000000000",
    ),
    (
        "build-balanced-dataset",
        _balanced(inp=_records(size="16.5")),
        P + "input.patch_records[0].patch_size: must be a whole number; got 16.5",
    ),
    (
        "build-balanced-dataset",
        _balanced(inp=_records(row="1.0e+30")),
        P + "input.patch_records[0].row_off: must be <= 2147483647; got "
        "1000000000000000019884624838656",
    ),
    (
        "build-balanced-dataset",
        _balanced("clustering: {random_state: -1}"),
        P + "clustering.random_state: must be >= 0; got -1",
    ),
    (
        "build-balanced-dataset",
        _balanced("clustering: {k_selection: fixed, k: 100000000000}"),
        P + "clustering.k: must be <= 1024; got 100000000000",
    ),
    (
        "build-balanced-dataset",
        _balanced("uniqueness: {k_neighbors: 1e10}"),
        P + "uniqueness.k_neighbors: must be <= 1024; got 10000000000",
    ),
    (
        "build-balanced-dataset",
        _balanced("weights: {weight_floor: .nan}"),
        P + "weights.weight_floor: must be a finite number; got nan",
    ),
    (
        "build-balanced-dataset",
        _balanced("embeddings: {scale: [0, .inf]}"),
        P + "embeddings.scale[1]: must be a finite number; got inf",
    ),
    (
        "build-balanced-dataset",
        _balanced("embeddings: {batch_size: 1000000}"),
        P + "embeddings.batch_size: must be <= 4096; got 1000000",
    ),
    (
        "build-balanced-dataset",
        _balanced("exclusion: {min_entropy: .nan}"),
        P + "exclusion.min_entropy: must be a finite number; got nan",
    ),
    (
        "build-balanced-dataset",
        _balanced("exclusion: {nodata_class: 1e10}"),
        P + "exclusion.nodata_class: must be <= 65535; got 10000000000",
    ),
    (
        "build-balanced-dataset",
        _balanced(inp="{dsn: x, port: 1e10}"),
        P + "input.port: must be < 65536; got 10000000000",
    ),
    (
        "select-coreset",
        _coreset("budget: .inf"),
        "coreset.budget: must be a finite number; got inf",
    ),
    (
        "select-coreset",
        _coreset("budget: 1e10"),
        "coreset.budget: must be <= 2147483647; got 10000000000.0",
    ),
    (
        "select-coreset",
        _coreset("fa_cb_lambda: .nan"),
        "coreset.fa_cb_lambda: must be a finite number; got nan",
    ),
    (
        "select-coreset",
        _coreset("statement_timeout_s: .inf"),
        "coreset.statement_timeout_s: must be a finite number; got inf",
    ),
    (
        "select-coreset",
        _coreset("random_state: 1.0e+30"),
        "coreset.random_state: must be <= 4294967295; got 1000000000000000019884624838656",
    ),
    (
        "select-coreset",
        _coreset("sampler_weights: {cap: .inf}"),
        "coreset.sampler_weights.cap: must be a finite number; got inf",
    ),
    (
        "select-coreset",
        _coreset("fd: {k: 100000000}"),
        "coreset.fd.k: must be <= 4096; got 100000000",
    ),
    ("split", _split("buffer_m: .inf"), "split.buffer_m: must be a finite number; got inf"),
    ("split", _split("n_splits: 1e10"), "split.n_splits: must be <= 1000; got 10000000000"),
    ("split", _split("holdout: .nan"), "split.holdout: must be a finite number; got nan"),
    (
        "split",
        _split("", inp="catalog: {url: x, statement_timeout_s: .inf}"),
        "split.catalog.statement_timeout_s: must be a finite number; got inf",
    ),
]


def _one_line(res: Any) -> str:
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize(("command", "text", "expected"), CASES)
def test_hostile_config_numbers(command: str, text: str, expected: str, tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(text.replace("OUT", str(tmp_path / "out")))
    res = runner.invoke(app, [command, str(conf)])
    assert res.exit_code == 1, res.output
    assert _one_line(res) == f"error: {conf}: {expected}"
    assert not (tmp_path / "out").exists()


TRAIN = """train_dataset:
  _target_: smt_tools.train.CSVWindowedSegmentationDataset
  input_csv_path: x.csv
  n_classes: 2
  data_loader: {batch_size: 2}
val_groups: [a]
model: {_target_: smt_tools.train.UNet, in_channels: 3, n_classes: 2}
"""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("epochs: .inf", "epochs: must be a finite number; got inf"),
        ("epochs: 1e10", "epochs: must be <= 1000000; got 10000000000"),
        ("seed: 1.0e+30", "seed: must be <= 4294967295; got 1000000000000000019884624838656"),
        ("steps_per_epoch: .nan", "steps_per_epoch: must be a finite number; got nan"),
        (
            "optimizer: {_target_: torch.optim.AdamW, lr: .nan}",
            "optimizer.lr: must be a finite number; got nan",
        ),
    ],
)
def test_hostile_train_numbers(line: str, expected: str, tmp_path: Path) -> None:
    conf = tmp_path / "t.yaml"
    conf.write_text(TRAIN + line + "\n")
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    assert _one_line(res) == f"error: {conf}: {expected}"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train_dataset", "patch_size", "1e10", "must be a whole number <= 65536; got '1e10'"),
        ("train_dataset", "patch_size", ".inf", "must be a finite number; got inf"),
        (
            "train_dataset",
            "n_first_rows_to_read",
            "1.0e+12",
            "must be a whole number <= 2147483647; got 1000000000000.0",
        ),
        ("model", "base_channels", "1000000000", "must be a whole number <= 4096; got 1000000000"),
    ],
)
def test_hostile_constructor_numbers(
    section: str, key: str, value: str, expected: str, tmp_path: Path
) -> None:
    text = TRAIN
    anchor = "  n_classes: 2\n" if section == "train_dataset" else "n_classes: 2}"
    if section == "train_dataset":
        text = text.replace(anchor, f"{anchor}  {key}: {value}\n", 1)
    else:
        text = text.replace(anchor, f"n_classes: 2, {key}: {value}}}")
    conf = tmp_path / "t.yaml"
    conf.write_text(text)
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    assert _one_line(res) == f"error: {conf}: {section}.{key}: {expected}"


def _pairs(tmp: Path) -> Path:
    write_pair(tmp, "s", np.ones((32, 32), np.uint8))
    pairs = tmp / "pairs.csv"
    pairs.write_text("image,mask\ns_img.tif,s_mask.tif\n")
    return pairs


@pytest.mark.parametrize(
    ("args", "codes", "needle"),
    [
        (["--patch-size", "10000000000"], (1, 2), "10000000000"),
        (["--patch-size", "1e10"], (2,), "--patch-size"),
        (["--black-tolerance", "inf"], (1, 2), "--black-tolerance"),
        (["--black-tolerance", "nan"], (1, 2), "--black-tolerance"),
    ],
)
def test_hostile_ingest_options(
    args: list[str], codes: tuple[int, ...], needle: str, tmp_path: Path
) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "t.parquet"
    res = runner.invoke(app, ["catalog", "ingest", str(pairs), "--catalog", str(out), *args])
    assert res.exit_code in codes, res.output
    assert "Traceback" not in res.output and needle in res.output
    assert not out.exists()


def test_hostile_leakage_threshold(tmp_path: Path) -> None:
    csv = tmp_path / "f.csv"
    csv.write_text("tile_id,source_image_id,fold\n1,1,0\n2,2,1\n")
    for value in ("nan", "inf"):
        res = runner.invoke(
            app, ["check-leakage", "--folds", str(csv), "--near-duplicate-threshold", value]
        )
        assert res.exit_code == 1, res.output
        assert _one_line(res) == (
            f"error: --near-duplicate-threshold must be in (0, 2] (cosine distance); got {value}"
        )


@pytest.mark.parametrize(("value", "code"), [("inf", 1), ("1e300", 1), ("nan", 2), ("-1", 2)])
def test_hostile_leakage_buffer(value: str, code: int, tmp_path: Path) -> None:
    """``--buffer-m`` is bounded like ``split.buffer_m`` (inf would call every pair a leak);
    values below the option's minimum are usage errors (2)."""
    csv = tmp_path / "f.csv"
    csv.write_text("tile_id,source_image_id,fold\n1,1,0\n2,2,1\n")
    res = runner.invoke(app, ["check-leakage", "--folds", str(csv), "--buffer-m", value])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and "--buffer-m" in res.output
    if code == 1:
        assert _one_line(res) == (
            "error: --buffer-m must be a distance in metres between 0 and 1e+06; "
            f"got {float(value)}"
        )
