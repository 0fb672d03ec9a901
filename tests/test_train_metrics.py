"""Per-epoch metrics of training: the confusion matrix and mIoU against hand-computed values,
the one line printed per epoch, and the history carried in the train result."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from smt_tools.cli.app import app  # noqa: E402
from smt_tools.config._loader import validate_mapping  # noqa: E402
from smt_tools.config.train import TrainConfig  # noqa: E402
from smt_tools.pipelines.train import run_training  # noqa: E402
from smt_tools.train import confusion_matrix, scores_from_confusion  # noqa: E402
from smt_tools.train.loop import epoch_line, evaluate, fit  # noqa: E402
from tests.rasters import write_tif  # noqa: E402

runner = CliRunner()

# 12 pixels, 4 classes; class 3 is predicted only on ignored pixels (255), so it is absent from
# both truth and prediction once those are excluded
TARGET = [0, 0, 0, 1, 1, 1, 2, 2, 255, 255, 0, 1]
PRED = [0, 0, 1, 1, 1, 2, 2, 0, 3, 0, 0, 1]
# by hand, rows = truth, columns = prediction, over the 10 valid pixels
HAND_CM = np.array([[3, 1, 0, 0], [0, 3, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.int64)
# IoU = TP / (TP + FP + FN): class 0 3/(3+1+1), class 1 3/(3+1+1), class 2 1/(1+1+1), class 3 -
HAND_IOU = [0.6, 0.6, 1 / 3]
HAND_MIOU = (0.6 + 0.6 + 1 / 3) / 3  # class 3 left out of the mean


def test_confusion_matrix_and_miou_match_the_hand_computed_values() -> None:
    t = torch.tensor(TARGET).reshape(1, 3, 4)
    p = torch.tensor(PRED).reshape(1, 3, 4)
    cm = confusion_matrix(p, t, n_classes=4, ignore_index=255)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, HAND_CM)
    s = scores_from_confusion(cm)
    np.testing.assert_allclose(s.iou[:3], HAND_IOU, rtol=0, atol=1e-15)
    assert math.isnan(s.iou[3])
    assert s.miou == pytest.approx(HAND_MIOU, abs=1e-15)
    assert s.miou == pytest.approx(0.5111111111111111, abs=1e-15)
    assert s.micro_iou == pytest.approx(7 / 13, abs=1e-15)
    assert s.pixel_accuracy == pytest.approx(0.7, abs=1e-15)
    np.testing.assert_array_equal(s.support, [4, 4, 2, 0])


class _OneHot(nn.Module):
    """Logits = the input (a one-hot of the prediction), times a weight fixed at 1.0; with
    lr 0 the predictions are exactly the input's argmax in every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class _Pairs(Dataset[dict[str, torch.Tensor]]):
    """Item i: the i-th 3 x 4 third of (PRED, TARGET) as (one-hot image, mask)."""

    def __init__(self, pred: list[int], target: list[int]) -> None:
        p = torch.tensor(pred).reshape(3, 1, 4)
        self.images = nn.functional.one_hot(p, 4).permute(0, 3, 1, 2).float()
        self.masks = torch.tensor(target).reshape(3, 1, 4)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


def _ce() -> nn.Module:
    return nn.CrossEntropyLoss(ignore_index=255)


def test_evaluate_accumulates_the_confusion_matrix_over_batches() -> None:
    loader = DataLoader(_Pairs(PRED, TARGET), batch_size=2)  # batches of 2 and 1 items
    loss, cm = evaluate(_OneHot(), loader, _ce(), 4, torch.device("cpu"))
    np.testing.assert_array_equal(cm, HAND_CM)
    assert math.isfinite(loss)


def test_fit_prints_through_on_epoch_the_exact_miou(tmp_path: Path) -> None:
    model = _OneHot()
    loader = DataLoader(_Pairs(PRED, TARGET), batch_size=3)
    rows: list[dict[str, Any]] = []
    res = fit(
        model,
        _ce(),
        torch.optim.SGD(model.parameters(), lr=0.0),
        loader,
        DataLoader(_Pairs(PRED, TARGET), batch_size=3),
        epochs=2,
        n_classes=4,
        device=torch.device("cpu"),
        output_dir=tmp_path,
        class_names=["a", "b", "c", "d"],
        on_epoch=rows.append,
        write_plot=False,
    )
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["miou"] == pytest.approx(HAND_MIOU, abs=1e-15)
        assert [row[f"iou_{n}"] for n in "abc"] == pytest.approx(HAND_IOU, abs=1e-15)
        assert math.isnan(row["iou_d"]) and row["pixels_d"] == 0
        # one batch of the same pixels, the same weights: the two losses agree
        assert row["train_loss"] == pytest.approx(row["val_loss"], abs=1e-6)
        assert row["lr"] == 0.0
        line = epoch_line(row, 2)
        assert line.startswith(f"epoch {row['epoch']}/2  train loss ")
        assert "  mIoU 0.5111  " in line and line.endswith(" s")
    # the checkpoint is on disk when the line is printed; the CSV holds the same rows
    csv = pd.read_csv(tmp_path / "metrics.csv")
    assert list(csv["miou"]) == pytest.approx([HAND_MIOU] * 2, abs=1e-15)
    assert res.best_epoch == 1  # ties keep the first epoch


def test_epoch_line_format() -> None:
    row = {
        "epoch": 3,
        "train_loss": 0.41234,
        "val_loss": 0.50119,
        "miou": 0.44712,
        "micro_iou": 0.5,
        "iou_field": 0.5,
        "iou_water": float("nan"),
        "pixels_field": 10,
        "lr": 0.001,
        "seconds": 12.34,
    }
    assert epoch_line(row, 10) == (
        "epoch 3/10  train loss 0.4123  val loss 0.5012  mIoU 0.4471  12.3 s"
    )
    assert epoch_line(row, 10, verbose=True) == (
        "epoch 3/10  train loss 0.4123  val loss 0.5012  mIoU 0.4471  "
        "IoU field 0.5000, water n/a  12.3 s"
    )
    no_val = {"epoch": 1, "train_loss": 1.0, "lr": 0.1, "seconds": 0.04}
    assert epoch_line(no_val, 2) == "epoch 1/2  train loss 1.0000  0.0 s"
    assert epoch_line(no_val, 2, verbose=True) == "epoch 1/2  train loss 1.0000  0.0 s"


def test_fit_without_validation_keeps_train_loss_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(4, 4, 1)
    rows: list[dict[str, Any]] = []
    res = fit(
        model,
        _ce(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(_Pairs(PRED, TARGET), batch_size=3),
        None,
        epochs=3,
        n_classes=4,
        device=torch.device("cpu"),
        output_dir=tmp_path,
        on_epoch=rows.append,
    )
    assert [sorted(r) for r in rows] == [["epoch", "lr", "seconds", "train_loss"]] * 3
    assert rows[2]["train_loss"] < rows[0]["train_loss"]
    assert epoch_line(rows[0], 3).count("loss") == 1
    assert list(pd.read_csv(tmp_path / "metrics.csv").columns) == [
        "epoch",
        "train_loss",
        "lr",
        "seconds",
    ]
    assert res.best_epoch == 3  # the last epoch is the one kept
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 3
    assert (tmp_path / "metrics.png").is_file()


# --- the train command --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def windows_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 scenes of 32 x 32 (3 classes, raw 1..3), 4 windows of 16 px each; fold = scene."""
    tmp = tmp_path_factory.mktemp("metrics")
    r, c = np.mgrid[0:32, 0:32]
    rows = []
    for k in range(2):
        mask = ((r // (3 + k) + c // 4) % 3 + 1).astype(np.uint8)
        img = np.stack([mask * 60, 255 - mask * 60, (r * 7 + k) % 255]).astype(np.uint8)
        ip = write_tif(tmp / f"s{k}_img.tif", img)
        mp = write_tif(tmp / f"s{k}_msk.tif", mask)
        for ro in (0, 16):
            for co in (0, 16):
                rows.append({"image_path": ip.name, "mask_path": mp.name, "row_off": ro,
                             "col_off": co, "patch_size": 16, "group_id": f"s{k}",
                             "fold": k})  # fmt: skip
    path = tmp / "windows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(csv: Path, out: Path) -> dict[str, Any]:
    return {
        "train_dataset": {
            "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
            "input_csv_path": str(csv),
            "n_classes": 3,
            "class_values": [1, 2, 3],
            "data_loader": {"batch_size": 2, "shuffle": True},
        },
        "val_fold": 1,
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 3,
            "n_classes": 3,
            "base_channels": 4,
            "depth": 2,
        },
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
        "epochs": 2,
        "steps_per_epoch": 2,
        "output_dir": str(out),
        "class_names": ["a", "b", "c"],
    }


def test_train_command_prints_one_line_per_epoch(windows_csv: Path, tmp_path: Path) -> None:
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(_config(windows_csv, tmp_path / "run")), encoding="utf-8")
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 0, res.output
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2
    for line, row in zip(lines, hist.to_dict(orient="records"), strict=True):
        assert line == epoch_line(row, 2)  # the numbers of metrics.csv, 4 decimals
        assert f"mIoU {row['miou']:.4f}" in line and "IoU a" not in line
    assert "Trained 2 epoch(s)" in res.stdout


def test_train_result_summary_is_plain_json(windows_csv: Path, tmp_path: Path) -> None:
    cfg = validate_mapping(_config(windows_csv, tmp_path / "run"), TrainConfig, "t.yaml")
    res = run_training(cfg)
    summary = res.summary()
    text = json.dumps(summary, allow_nan=False)  # no NaN, no numpy, no Path
    back = json.loads(text)
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in back["history"]] == [1, 2]
    for got, want in zip(back["history"], hist.to_dict(orient="records"), strict=True):
        assert set(got) == set(want)
        for k, v in want.items():
            if isinstance(v, float) and math.isnan(v):
                assert got[k] is None
            else:
                assert got[k] == pytest.approx(v, rel=1e-12), k
    assert back["best_miou"] == pytest.approx(hist["miou"].max())
    assert back["resumed_from"] is None and back["start_epoch"] == 1
