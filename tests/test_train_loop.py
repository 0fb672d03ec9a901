"""Training loop, pipeline split rules and the train command's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from smt_tools.cli.app import app  # noqa: E402
from smt_tools.config._loader import validate_mapping  # noqa: E402
from smt_tools.config.train import TrainConfig  # noqa: E402
from smt_tools.errors import InputDataError  # noqa: E402
from smt_tools.pipelines.train import run_training  # noqa: E402
from smt_tools.train import UNet  # noqa: E402
from smt_tools.train.losses import DiceFocalLoss  # noqa: E402
from tests.rasters import write_tif  # noqa: E402

runner = CliRunner()
SIZE = 32


def test_one_training_step_decreases_the_loss() -> None:
    torch.manual_seed(0)
    model = UNet(in_channels=3, n_classes=3, base_channels=4, depth=2)
    x = torch.rand(2, 3, 16, 16)
    y = (x[:, 0] * 3).long().clamp(max=2)
    y[:, :2] = 255  # ignored rows
    loss_fn = DiceFocalLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    before = loss_fn(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = loss_fn(model(x), y)
    assert after.item() < before.item()


def test_unet_odd_sizes_and_shapes() -> None:
    m = UNet(in_channels=4, n_classes=1, base_channels=4, depth=3).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 4, 37, 21)).shape == (1, 1, 37, 21)


@pytest.fixture(scope="module")
def windows_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 scenes of 32x32 (3 classes, raw 1..3), 4 windows each, fold = scene % 2."""
    tmp = tmp_path_factory.mktemp("loop")
    rows = []
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    for k in range(4):
        mask = ((r // (3 + k) + c // 4) % 3 + 1).astype(np.uint8)
        img = np.stack([mask * 60, 255 - mask * 60, (r * 7 + k) % 255]).astype(np.uint8)
        ip = write_tif(tmp / f"s{k}_img.tif", img)
        mp = write_tif(tmp / f"s{k}_msk.tif", mask)
        for ro in (0, 16):
            for co in (0, 16):
                rows.append({"image_path": ip.name, "mask_path": mp.name, "row_off": ro,
                             "col_off": co, "patch_size": 16, "source_image_id": k,
                             "group_id": f"s{k}", "fold": k % 2,
                             "sampler_weight": 1.0 if k else 0.2})  # fmt: skip
    path = tmp / "balanced.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(csv: Path, out: Path, **over: Any) -> dict[str, Any]:
    ds = {
        "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
        "input_csv_path": str(csv),
        "n_classes": 3,
        "class_values": [1, 2, 3],
        "data_loader": {"batch_size": 4, "weighted_sampler": True, "shuffle": True},
    }
    cfg: dict[str, Any] = {
        "train_dataset": ds,
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
        "steps_per_epoch": 3,
        "output_dir": str(out),
        "class_names": ["a", "b", "c"],
    }
    cfg.update(over)
    return cfg


def test_pipeline_fold_split_files_and_metrics(windows_csv: Path, tmp_path: Path) -> None:
    cfg = validate_mapping(_config(windows_csv, tmp_path / "run"), TrainConfig, "t.yaml")
    res = run_training(cfg)
    # fold 1 = scenes 1 and 3 (8 windows) validate; scenes 0 and 2 train
    assert res.val_items == 8 and res.train_items == 8
    assert res.weighted_sampler
    assert [p.name for p in res.files] == ["best.pt", "last.pt", "metrics.csv", "metrics.png"]
    assert all(p.is_file() for p in res.files)
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(hist["epoch"]) == [1, 2]
    for col in ("train_loss", "val_loss", "miou", "micro_iou", "iou_a", "iou_b", "iou_c"):
        assert col in hist.columns
    # every validation pixel is scored: 8 windows of 16x16
    assert int(hist.loc[0, ["pixels_a", "pixels_b", "pixels_c"]].sum()) == 8 * 256
    iou = hist.loc[0, ["iou_a", "iou_b", "iou_c"]].to_numpy(dtype=float)
    assert hist.loc[0, "miou"] == pytest.approx(np.nanmean(iou))
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ckpt["epoch"] == res.best_epoch and "model_state" in ckpt
    assert res.best_miou == pytest.approx(hist["miou"].max())


def test_pipeline_refuses_shared_source_images(windows_csv: Path, tmp_path: Path) -> None:
    cfg = _config(windows_csv, tmp_path / "run", val_fold=None)
    cfg["val_dataset"] = {**cfg["train_dataset"], "data_loader": {"batch_size": 4}}
    with pytest.raises(InputDataError, match="in both the training and the validation"):
        run_training(validate_mapping(cfg, TrainConfig, "t.yaml"))


def _write(tmp: Path, cfg: dict[str, Any]) -> Path:
    p = tmp / "train.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def _fails(conf: Path, *needles: str) -> None:
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_bad_configs_exit_1_with_one_line(windows_csv: Path, tmp_path: Path) -> None:
    base = _config(windows_csv, tmp_path / "run")
    cfg = {**base, "epochz": 3}
    _fails(_write(tmp_path, cfg), "train.yaml", "epochz", "did you mean 'epochs'")
    cfg = {**base, "train_dataset": {**base["train_dataset"], "_target_": "smt_tools.train.Nope"}}
    _fails(_write(tmp_path, cfg), "train_dataset._target_", "smt_tools.train")
    cfg = {**base, "train_dataset": {**base["train_dataset"], "_target_": "not a path"}}
    _fails(_write(tmp_path, cfg), "train_dataset._target_", "dotted class path")
    cfg = {**base, "train_dataset": {**base["train_dataset"], "crop_sise": 3}}
    _fails(_write(tmp_path, cfg), "train_dataset.crop_sise", "unknown parameter")
    aug = [{"_target_": "albumentations.HorizontalFlipp", "p": 0.5}]
    cfg = {**base, "train_dataset": {**base["train_dataset"], "augmentation_list": aug}}
    _fails(_write(tmp_path, cfg), "augmentation_list[0]", "HorizontalFlip")
    legacy = "pytorch_segmentation_models_trainer.dataset_loader.dataset.SegmentationDataset"
    cfg = {**base, "train_dataset": {**base["train_dataset"], "_target_": legacy}}
    _fails(_write(tmp_path, cfg), "does not wrap")
    cfg = {**base, "val_fold": None}
    _fails(_write(tmp_path, cfg), "no validation data")
    cfg = {**base, "device": "gpu"}
    _fails(_write(tmp_path, cfg), "device", "cuda")
    # weighted sampler on a CSV without sampler_weight
    plain = tmp_path / "plain.csv"
    pd.read_csv(windows_csv).drop(columns=["sampler_weight"]).to_csv(plain, index=False)
    for name in pd.read_csv(windows_csv)["image_path"].unique():
        for f in (name, name.replace("img", "msk")):
            (tmp_path / f).symlink_to(windows_csv.parent / f)
    cfg = {**base, "train_dataset": {**base["train_dataset"], "input_csv_path": str(plain)}}
    _fails(_write(tmp_path, cfg), "plain.csv", "sampler_weight", "weighted_sampler: false")
    # missing fold column
    cfg["train_dataset"]["data_loader"] = {"batch_size": 4}
    pd.read_csv(plain).drop(columns=["fold"]).to_csv(plain, index=False)
    _fails(_write(tmp_path, cfg), "needs that column", "fold")


def test_legacy_dataset_path_is_mapped_with_warning(windows_csv: Path, tmp_path: Path) -> None:
    cfg = _config(windows_csv, tmp_path / "run", epochs=1, steps_per_epoch=1)
    cfg["train_dataset"]["_target_"] = (
        "pytorch_segmentation_models_trainer.dataset_loader.dataset.CSVWindowedSegmentationDataset"
    )
    res = runner.invoke(app, ["train", str(_write(tmp_path, cfg))])
    assert res.exit_code == 0, res.output
    assert "older tool's class path; using smt_tools.train.CSVWindowedSegmentationDataset" in (
        res.stderr
    )
    assert "best mIoU" in res.stdout and "rare class" in res.stdout


def test_weighted_sampler_only_on_the_training_loader(windows_csv: Path) -> None:
    from torch.utils.data import SequentialSampler, WeightedRandomSampler

    from smt_tools.config.train import DataLoaderConfig
    from smt_tools.pipelines.train import _loader
    from smt_tools.train import CSVWindowedSegmentationDataset, DrawTaggedSampler

    ds = CSVWindowedSegmentationDataset(windows_csv, n_classes=3, class_values=[1, 2, 3])
    dl = DataLoaderConfig(
        batch_size=4, shuffle=True, weighted_sampler=True, weighted_sampler_num_samples=7
    )
    train = _loader(ds, dl, train=True, seed=0, source="b.csv")
    # shuffle turned off, no error; draws tagged (row, draw) for our datasets
    assert isinstance(train.sampler, DrawTaggedSampler)
    assert isinstance(train.sampler.sampler, WeightedRandomSampler)
    assert train.sampler.num_samples == 7
    with pytest.warns(UserWarning, match="training loader only"):
        val = _loader(ds, dl.model_copy(update={"shuffle": False}), train=False, seed=0, source="v")
    assert isinstance(val.sampler, SequentialSampler)


def test_compact_batches_train_to_the_same_model(windows_csv: Path, tmp_path: Path) -> None:
    """The train command turns compact_batches on; the model it trains is the one the default
    float32 / int64 batches train (prepare_batch gives bit-identical inputs)."""
    from smt_tools.pipelines.train import _build_dataset

    spec = _config(windows_csv, tmp_path)["train_dataset"]
    spec = {k: v for k, v in spec.items() if k != "data_loader"}
    assert _build_dataset(spec, "t", 0).compact_batches is True
    assert _build_dataset({**spec, "compact_batches": False}, "t", 0).compact_batches is False

    runs = {}
    for compact in (True, False):
        raw = _config(windows_csv, tmp_path / f"run_{compact}", torch_threads=1)
        raw["train_dataset"]["compact_batches"] = compact
        cfg = validate_mapping(raw, TrainConfig, "t.yaml")
        run_training(cfg)
        runs[compact] = pd.read_csv(tmp_path / f"run_{compact}" / "metrics.csv")
    cols = [c for c in runs[True].columns if c.startswith(("train_loss", "val_loss", "iou_"))]
    assert len(cols) == 5
    pd.testing.assert_frame_equal(runs[True][cols], runs[False][cols], check_exact=True)
    state = [
        torch.load(tmp_path / f"run_{c}" / "last.pt", weights_only=False)["model_state"]
        for c in (True, False)
    ]
    assert all(torch.equal(state[0][k], state[1][k]) for k in state[0])
