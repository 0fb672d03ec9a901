"""Older config spellings (smt_tools.config._aliases): each is read as today's with exactly one
deprecation line, gives the same validated config as the new spelling, works in ``--set``, and
conflicts with the new spelling are one-line errors. Also the two older behaviours: ``n_classes:
2`` binarises masks, and a ``rare_class_ids`` entry absent from the tiles is a warning."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config import load_config
from smt_tools.config._aliases import ALIASES
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.config.coreset import CoresetFile
from smt_tools.config.train import TrainConfig
from smt_tools.errors import ConfigError, SmtDeprecationWarning
from tests.rasters import write_pair

ROOT = Path(__file__).resolve().parents[1]
CORESET = {"coreset": {"input_csv_path": "b.csv", "output": {"csv_path": "keep.csv"}}}
BALANCED = {
    "balanced_dataset": {
        "input": {"tiles": "tiles.parquet"},
        "output": {"csv_path": "b.csv"},
    }
}
WINDOWED = "smt_tools.train.CSVWindowedSegmentationDataset"
TRAIN = {
    "train_dataset": {"_target_": WINDOWED, "input_csv_path": "b.csv", "n_classes": 2},
    "val_fold": 0,
    "model": {"_target_": "smt_tools.train.UNet", "in_channels": 3, "n_classes": 2},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` at the dotted ``path`` (blocks created)."""
    out = copy.deepcopy(base)
    node = out
    *head, key = path.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[key] = value
    return out


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def _validate(data: Any, model: type[BaseModel], overrides: tuple[str, ...] = ()) -> tuple:
    """The validated config and the deprecation lines it printed."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = validate_mapping(data, model, "c.yaml", overrides)
    lines = [str(w.message) for w in seen if issubclass(w.category, SmtDeprecationWarning)]
    return cfg, lines


def _line(old: str, new: str) -> str:
    return f"c.yaml: {old} is deprecated; use {new} (read as that)"


# (model, base config, old path, new path, value)
KEY_CASES = [
    (CoresetFile, CORESET, "coreset.output_csv_path", "coreset.output.csv_path", "sel.csv"),
    (CoresetFile, CORESET, "coreset.fd_k_min", "coreset.fd.k_min", 3),
    (CoresetFile, CORESET, "coreset.fd_k_max", "coreset.fd.k_max", 7),
    (
        BalancedFile,
        BALANCED,
        "balanced_dataset.boost.rare_class_multiplier",
        "balanced_dataset.weights.rare_class_boost",
        2.5,
    ),
    (
        BalancedFile,
        BALANCED,
        "balanced_dataset.selected_bands",
        "balanced_dataset.embeddings.bands",
        [3, 2, 1],
    ),
    (
        BalancedFile,
        BALANCED,
        "balanced_dataset.embeddings.selected_bands",
        "balanced_dataset.embeddings.bands",
        [4],
    ),
    (TrainConfig, TRAIN, "train_dataset.mask_class_mapping", "train_dataset.class_remap", {255: 1}),
    (TrainConfig, TRAIN, "train_dataset.selected_bands", "train_dataset.bands", [1, 2, 3]),
    (TrainConfig, TRAIN, "train_dataset.image_key", "train_dataset.image_column", "img"),
    (TrainConfig, TRAIN, "train_dataset.mask_key", "train_dataset.mask_column", "msk"),
]


@pytest.mark.parametrize(("model", "base", "old", "new", "value"), KEY_CASES)
def test_old_key_reads_as_new_with_one_line(
    model: type[BaseModel], base: dict[str, Any], old: str, new: str, value: Any
) -> None:
    if model is CoresetFile and old == "coreset.output_csv_path":
        base = copy.deepcopy(base)
        del base["coreset"]["output"]  # the older layout had no output block
    got, lines = _validate(_with(base, old, value), model)
    want, none = _validate(_with(base, new, value), model)
    assert lines == [_line(old, new)]
    assert none == []
    assert _dump(got) == _dump(want)


def test_every_alias_is_tested_and_in_the_readme() -> None:
    tested = {old for *_, old, _, _ in KEY_CASES} | {"balanced_dataset.mode"}
    val_aliases = {a.old.replace("val_dataset.", "train_dataset.") for a in ALIASES}
    assert val_aliases == tested
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for alias in ALIASES:
        key = alias.old.split(".")[-1]
        assert f"{key}" in readme, alias.old


def test_val_dataset_keys_too() -> None:
    base = _with(copy.deepcopy(TRAIN), "val_dataset", dict(TRAIN["train_dataset"]))
    del base["val_fold"]
    got, lines = _validate(_with(base, "val_dataset.image_key", "img"), TrainConfig)
    assert lines == [_line("val_dataset.image_key", "val_dataset.image_column")]
    assert got.val_dataset is not None and got.val_dataset.kwargs["image_column"] == "img"


def test_own_dataset_class_keeps_its_keys() -> None:
    own = _with(TRAIN, "train_dataset._target_", "my_pkg.data.MyDataset")
    got, lines = _validate(_with(own, "train_dataset.image_key", "img"), TrainConfig)
    assert lines == []
    assert got.train_dataset.kwargs["image_key"] == "img"


def test_mode_both_is_embeddings() -> None:
    got, lines = _validate(_with(BALANCED, "balanced_dataset.mode", "both"), BalancedFile)
    want, _ = _validate(_with(BALANCED, "balanced_dataset.mode", "embeddings"), BalancedFile)
    assert lines == [
        "c.yaml: balanced_dataset.mode: both is deprecated; use embeddings (read as that)"
    ]
    assert got.balanced_dataset.mode == "embeddings"
    assert _dump(got) == _dump(want)


def test_same_value_both_ways_is_read_once() -> None:
    data = _with(_with(CORESET, "coreset.fd.k_min", 3), "coreset.fd_k_min", 3)
    got, lines = _validate(data, CoresetFile)
    assert got.coreset.fd.k_min == 3
    assert lines == [_line("coreset.fd_k_min", "coreset.fd.k_min")]


@pytest.mark.parametrize(
    ("model", "data", "line"),
    [
        (
            CoresetFile,
            _with(CORESET, "coreset.output_csv_path", "other.csv"),
            "c.yaml: coreset.output_csv_path and coreset.output.csv_path are the same setting "
            "with different values ('keep.csv' and 'other.csv'); keep only "
            "coreset.output.csv_path",
        ),
        (
            BalancedFile,
            _with(
                _with(BALANCED, "balanced_dataset.weights.rare_class_boost", 2.0),
                "balanced_dataset.boost.rare_class_multiplier",
                3.0,
            ),
            "c.yaml: balanced_dataset.boost.rare_class_multiplier and "
            "balanced_dataset.weights.rare_class_boost are the same setting with different "
            "values (2.0 and 3.0); keep only balanced_dataset.weights.rare_class_boost",
        ),
    ],
)
def test_old_and_new_with_different_values_is_one_line_error(
    model: type[BaseModel], data: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _validate(data, model)
    assert str(info.value) == line
    assert "\n" not in str(info.value)


def test_set_with_an_old_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CORESET))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = load_config(path, CoresetFile, ["fd_k_max=9", "coreset.output_csv_path=o.csv"])
    assert cfg.coreset.fd.k_max == 9
    assert str(cfg.coreset.output.csv_path) == "o.csv"
    assert [str(w.message) for w in seen] == [
        f"{path} (--set fd_k_max): coreset.fd_k_max is deprecated; use coreset.fd.k_max "
        "(read as that)",
        f"{path} (--set coreset.output_csv_path): coreset.output_csv_path is deprecated; use "
        "coreset.output.csv_path (read as that)",
    ]


def test_set_mode_both(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BALANCED))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = load_config(path, BalancedFile, ["mode=both"])
    assert cfg.balanced_dataset.mode == "embeddings"
    assert [str(w.message) for w in seen] == [
        f"{path} (--set mode): balanced_dataset.mode: both is deprecated; use embeddings "
        "(read as that)"
    ]


def test_cli_prints_the_line_once_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_with(CORESET, "coreset.fd_k_min", 3)))
    res = CliRunner().invoke(app, ["config", "show", str(path)])
    assert res.exit_code == 0, res.output
    line = f"warning: {_line('coreset.fd_k_min', 'coreset.fd.k_min').replace('c.yaml', str(path))}"
    assert res.stderr.splitlines().count(line) == 1
    assert "k_min: 3" in res.stdout


# ----------------------------------------------------------------------------- behaviours


def test_two_classes_without_remap_binarise(tmp_path: Path) -> None:
    """Raw 0 -> 0, every raw value 1..255 -> 1 (docs/algorithms.md §13)."""
    from smt_tools.train import CSVWindowedSegmentationDataset

    raw = np.array([[0, 1, 2, 255], [0, 0, 7, 128], [3, 0, 254, 0], [0, 9, 0, 1]], np.uint8)
    img, msk = write_pair(tmp_path, "bin", raw)
    csv = tmp_path / "w.csv"
    row = {"image_path": img, "mask_path": msk, "row_off": 0, "col_off": 0, "patch_size": 4}
    pd.DataFrame([row]).to_csv(csv, index=False)
    want = (raw > 0).astype(np.int64)
    for compact in (False, True):
        ds = CSVWindowedSegmentationDataset(csv, n_classes=2, compact_batches=compact)
        np.testing.assert_array_equal(ds[0]["mask"].numpy().astype(np.int64), want)
    # class_values [0, 1] keeps the older meaning of 255 (and every other value) as ignored
    kept = CSVWindowedSegmentationDataset(csv, n_classes=2, class_values=[0, 1])
    expected = np.where(raw <= 1, raw, 255).astype(np.int64)
    np.testing.assert_array_equal(kept[0]["mask"].numpy(), expected)


def test_rare_class_id_absent_is_a_warning_and_the_run_completes(tmp_path: Path) -> None:
    from smt_tools.pipelines.balanced import run_balanced
    from tests.test_balanced_pipeline import config, hand_scene, records

    scene = hand_scene(tmp_path / "scene")
    data = config(
        tmp_path,
        records(*scene),
        weights={"rare_class_boost": 3.0, "rare_class_ids": [3, 9], "weight_floor": 0.5},
    )
    res = run_balanced(validate_mapping(data, BalancedFile, "c.yaml").balanced_dataset)
    assert res.rare_classes == [3]  # 9 left out; 3 boosted as without it
    assert (
        "weights.rare_class_ids: class 9 does not occur in these tiles (classes: 1, 2, 3, 4); "
        "nothing is boosted for it"
    ) in res.warnings
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    c_tiles = out.loc[[g == "C" for g in "ABCAABDCBAABCABD"], "sampler_weight"]
    assert c_tiles.unique().tolist() == [1.0]


def test_the_callers_data_is_not_changed() -> None:
    data = _with(_with(BALANCED, "balanced_dataset.boost.rare_class_multiplier", 2.0), "x", 1)
    del data["x"]
    before = copy.deepcopy(data)
    got, _ = _validate(data, BalancedFile)
    assert data == before
    assert got.balanced_dataset.weights.rare_class_boost == 2.0
