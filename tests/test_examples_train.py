"""Every train YAML in smt_tools/examples/ runs (a couple of steps) on the demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("albumentations")

from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.raster import read_info, tile_windows

EXAMPLES = Path(__file__).resolve().parents[1] / "smt_tools" / "examples"
runner = CliRunner()


def build_balanced_csv(demo_dir: Path, out: Path, patch: int = 128) -> Path:
    """The balanced CSV of the demo scenes (masks_only), through build-balanced-dataset's pipeline."""
    pairs = pd.read_csv(demo_dir / "pairs.csv")
    rows = []
    for img, msk in zip(pairs["image"], pairs["mask"], strict=True):
        info = read_info(demo_dir / img)
        for r, c, _, _ in tile_windows(info.width, info.height, patch):
            rows.append((str(demo_dir / img), str(demo_dir / msk), int(r), int(c), patch))
    records = out.parent / "records.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        rows, columns=["image_path", "mask_path", "row_off", "col_off", "patch_size"]
    ).to_csv(records, index=False)
    data = {
        "balanced_dataset": {
            "mode": "masks_only",
            "input": {"patch_records_csv": str(records), "scan_workers": 1},
            "clustering": {"k_selection": "fixed", "k": 4, "random_state": 0},
            "output": {"csv_path": str(out), "write_catalog_run": False},
        }
    }
    run_balanced(validate_mapping(data, BalancedFile, "balanced.yaml").balanced_dataset)
    return out


def _rewrite(value: Any, demo_dir: Path, tmp: Path) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, demo_dir, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, demo_dir, tmp) for v in value]
    if isinstance(value, str) and value.startswith("demo/"):
        return str(demo_dir / value.removeprefix("demo/"))
    if isinstance(value, str) and value.startswith("runs/"):
        return str(tmp / value)
    return value


def _run_example(name: str, demo_dir: Path, tmp: Path) -> tuple[dict[str, Any], Any]:
    cfg = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    cfg = _rewrite(cfg, demo_dir, tmp)
    cfg.update({"epochs": 1, "steps_per_epoch": 2, "val_steps": 1})  # a couple of steps
    conf = tmp / name
    conf.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 0, res.output
    return cfg, res


def test_weighted_sampler_example_runs(demo_dir: Path, tmp_path: Path) -> None:
    # `make demo` writes demo/balanced_train.csv; here a copy of the demo gets its own
    demo = tmp_path / "demo"
    demo.mkdir()
    for sub in ("images", "masks"):
        (demo / sub).symlink_to(demo_dir / sub)
    (demo / "pairs.csv").write_bytes((demo_dir / "pairs.csv").read_bytes())
    balanced = build_balanced_csv(demo, demo / "balanced_train.csv")
    frame = pd.read_csv(balanced)
    assert "sampler_weight" in frame.columns and "scene_002" in set(frame["group_id"])
    cfg, res = _run_example("weighted_sampler_segmentation.yaml", demo, tmp_path)
    assert cfg["train_dataset"]["data_loader"]["weighted_sampler"] is True
    out = Path(cfg["output_dir"])
    hist = pd.read_csv(out / "metrics.csv")
    assert list(hist["epoch"]) == [1] and 0.0 <= hist.loc[0, "miou"] <= 1.0
    assert (out / "best.pt").is_file() and (out / "metrics.png").is_file()
    assert "weighted sampler" in res.stdout and "rare class building IoU" in res.stdout
    n_val = int((frame["group_id"] == "scene_002").sum())
    assert f"/ {n_val} validation items" in res.stdout


def test_random_crop_example_runs(demo_dir: Path, tmp_path: Path) -> None:
    cfg, res = _run_example("random_crop_segmentation.yaml", demo_dir, tmp_path)
    assert cfg["train_dataset"]["input_csv_path"] == str(demo_dir / "pairs.csv")
    out = Path(cfg["output_dir"])
    hist = pd.read_csv(out / "metrics.csv")
    assert len(hist) == 1 and np.isfinite(hist.loc[0, "train_loss"])
    # validation: grid over the one held-out 512 px scene with 128 px crops = 16 items
    assert "160 train / 16 validation items" in res.stdout
