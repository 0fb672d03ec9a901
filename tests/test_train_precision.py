"""Mixed precision in the train loop (smt_tools.train.precision) and the loop's timings."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, Dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from smt_tools.cli.app import app  # noqa: E402
from smt_tools.config._loader import validate_mapping  # noqa: E402
from smt_tools.config.train import TrainConfig  # noqa: E402
from smt_tools.errors import ConfigError  # noqa: E402
from smt_tools.train import UNet  # noqa: E402
from smt_tools.train.loop import fit  # noqa: E402
from smt_tools.train.losses import DiceFocalLoss  # noqa: E402
from smt_tools.train.precision import (  # noqa: E402
    Precision,
    PrecisionFallbackWarning,
    resolve_precision,
)
from tests.rasters import write_tif  # noqa: E402

runner = CliRunner()


def _batch(seed: int = 0) -> tuple[Any, Any]:
    """image (2, 3, 16, 16) float32, mask (2, 16, 16) int64 in {0, 1, 2} with ignored rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 16, 16, generator=g)
    y = (x[:, 0] * 3).long().clamp(max=2)
    y[:, :2] = 255
    return x, y


def _model() -> Any:
    torch.manual_seed(0)
    return UNet(in_channels=3, n_classes=3, base_channels=4, depth=2)


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("requested", ["auto", "fp32"])
def test_auto_and_fp32_resolve_to_fp32_on_cpu_silently(requested: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prec = resolve_precision(requested, torch.device("cpu"))
    assert (prec.name, prec.device_type, prec.scaler) == ("fp32", "cpu", None)
    assert prec.dtype == torch.float32


@pytest.mark.parametrize("requested", ["bf16", "fp16"])
def test_explicit_half_precision_on_cpu_is_fp32_with_one_warning(requested: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prec = resolve_precision(requested, "cpu")
    assert prec.name == "fp32" and prec.scaler is None
    assert [w.category for w in caught] == [PrecisionFallbackWarning]
    assert str(caught[0].message).startswith(f"precision: {requested} needs a CUDA GPU; training")


@pytest.mark.parametrize(
    ("capability", "requested", "expected"),
    [((8, 0), "auto", "bf16"), ((9, 0), "bf16", "bf16"), ((7, 5), "auto", "fp16"),
     ((8, 6), "fp16", "fp16"), ((7, 0), "fp32", "fp32")],
)  # fmt: skip
def test_resolution_on_a_cuda_gpu_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], requested: str, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler("cuda") without CUDA disables itself
        prec = resolve_precision(requested, torch.device("cuda:0"))
    assert (prec.name, prec.device_type) == (expected, "cuda")
    assert isinstance(prec.scaler, torch.amp.GradScaler) == (expected == "fp16")


def test_bf16_on_a_gpu_without_native_bf16_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError) as exc:
        resolve_precision("bf16", "cuda")
    assert str(exc.value) == (
        "precision: bf16: Tesla T4 (compute capability 7.5) has no native bfloat16; "
        "set precision: fp16 or auto"
    )


def test_bad_precision_value_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_precision("bf32", "cpu")
    assert str(exc.value) == "precision must be one of auto, bf16, fp16, fp32; got 'bf32'"
    cfg = {
        "train_dataset": {"_target_": "smt_tools.train.RandomCropSegmentationDataset"},
        "val_fold": 0,
        "model": {"_target_": "smt_tools.train.UNet"},
        "precision": "bf32",
    }
    with pytest.raises(ConfigError) as exc:
        validate_mapping(cfg, TrainConfig, "t.yaml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("t.yaml: precision: must be 'auto', 'bf16', 'fp16' or 'fp32'; got 'bf32'")
    assert validate_mapping({**cfg, "precision": "fp16"}, TrainConfig, "t.yaml").precision == "fp16"
    assert validate_mapping({**cfg, "precision": "auto"}, TrainConfig, "t.yaml").precision == "auto"
    del cfg["precision"]
    assert validate_mapping(cfg, TrainConfig, "t.yaml").precision == "auto"


# ----------------------------------------------------------------------------- one step


def test_fp32_step_is_exactly_a_plain_step() -> None:
    x, y = _batch()
    loss_fn = DiceFocalLoss()
    a, b = _model(), _model()
    opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01)
    for _ in range(2):
        loss_a = Precision("fp32", "cpu").train_step(a, loss_fn, opt_a, x, y)
        opt_b.zero_grad(set_to_none=True)
        loss_b = loss_fn(b(x), y)
        loss_b.backward()
        opt_b.step()
        assert float(loss_a.detach()) == float(loss_b.detach())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_bf16_autocast_covers_the_forward_only_loss_in_float32() -> None:
    model, (x, y) = _model(), _batch()
    seen: list[Any] = []
    model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    losses: list[Any] = []

    def loss_fn(logits: Any, mask: Any) -> Any:
        losses.append((logits.dtype, torch.is_autocast_enabled("cpu")))
        return DiceFocalLoss()(logits, mask)

    prec = Precision("bf16", "cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = prec.train_step(model, loss_fn, opt, x, y)
    assert seen == [torch.bfloat16]  # the model ran under autocast
    assert losses == [(torch.float32, False)]  # the loss on float32 logits, outside autocast
    assert loss.dtype == torch.float32 and not loss.requires_grad
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert prec.forward(model, x).dtype == torch.float32


def test_fp16_step_uses_a_grad_scaler() -> None:
    model, (x, y) = _model(), _batch()
    prec = Precision("fp16", "cpu")
    assert isinstance(prec.scaler, torch.amp.GradScaler)
    assert prec.scaler.get_scale() == 65536.0
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    loss = prec.train_step(model, DiceFocalLoss(), opt, x, y)
    assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))
    # finite gradients: the step was taken and counted towards the next growth of the scale
    assert prec.state_dict() == {**prec.scaler.state_dict(), "_growth_tracker": 1}
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    # an overflowing scale: the step is skipped (weights unchanged) and the scale halves
    prec = Precision("fp16", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**127))
    before = [p.detach().clone() for p in model.parameters()]
    prec.train_step(model, lambda logits, mask: logits.sum() * 1e6, opt, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert prec.scaler.get_scale() == 2.0**126
    restored = Precision("fp16", "cpu")
    restored.load_state_dict(prec.state_dict())
    assert restored.scaler.get_scale() == 2.0**126
    assert Precision("bf16", "cpu").scaler is None and Precision("bf16", "cpu").state_dict() is None


# ----------------------------------------------------------------------------- the loop


class _SlowPairs(Dataset[dict[str, Any]]):
    """8 items of (image (3, 16, 16), mask (16, 16)); each read sleeps ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, Any]:
        time.sleep(self.delay)
        x, y = _batch(i)
        return {"image": x[0], "mask": y[0]}


def _fit(tmp_path: Path, precision: Any, delay: float = 0.0, epochs: int = 2) -> Any:
    loader = DataLoader(_SlowPairs(delay), batch_size=2)
    model = _model()
    return fit(
        model, DiceFocalLoss(), torch.optim.Adam(model.parameters(), lr=0.01), loader, loader,
        epochs=epochs, n_classes=3, device=torch.device("cpu"), output_dir=tmp_path,
        steps_per_epoch=3, write_plot=False, precision=precision,
    )  # fmt: skip


def test_loop_timings_are_non_negative_and_within_wall_time(tmp_path: Path) -> None:
    delay = 0.01
    start = time.perf_counter()
    res = _fit(tmp_path, "auto", delay=delay)
    wall = time.perf_counter() - start
    t = res.timings
    assert res.precision == "fp32"
    assert t.steps == 2 * 3
    assert t.data_wait_s >= 0 and t.step_s >= 0
    assert t.data_wait_s + t.step_s <= wall
    # 6 batches of 2 items that each sleep 10 ms: at least 0.12 s waiting for data
    assert t.data_wait_s >= 6 * 2 * delay
    # the training part of each epoch's seconds holds the steps and the waits
    assert t.data_wait_s + t.step_s <= float(res.history["seconds"].sum())
    assert t.steps_per_s == pytest.approx(6 / (t.data_wait_s + t.step_s))
    # per epoch: 3 steps each, adding up to the totals
    assert [e.steps for e in t.per_epoch] == [3, 3]
    assert sum(e.data_wait_s for e in t.per_epoch) == pytest.approx(t.data_wait_s)
    assert sum(e.step_s for e in t.per_epoch) == pytest.approx(t.step_s)
    for e, seconds in zip(t.per_epoch, res.history["seconds"], strict=True):
        assert e.data_wait_s >= 3 * 2 * delay and e.data_wait_s + e.step_s <= seconds + 1e-3


def test_loop_under_bf16_autocast_trains_validates_and_keeps_fp32_checkpoints(
    tmp_path: Path,
) -> None:
    res = _fit(tmp_path, Precision("bf16", "cpu"))
    assert res.precision == "bf16"
    hist = res.history
    assert np.isfinite(hist[["train_loss", "val_loss"]].to_numpy()).all()
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert {v.dtype for v in state["model_state"].values() if v.is_floating_point()} == {
            torch.float32
        }
        assert "grad_scaler" not in state.get("training_state", {})
    # validation ran under the same autocast: its loss differs from an fp32 evaluation
    fp32 = _fit(tmp_path / "fp32", "fp32")
    assert fp32.precision == "fp32"
    assert not np.array_equal(hist["val_loss"].to_numpy(), fp32.history["val_loss"].to_numpy())


def test_fp16_loop_saves_the_scaler_state_for_resuming(tmp_path: Path) -> None:
    res = _fit(tmp_path, Precision("fp16", "cpu"), epochs=1)
    assert res.precision == "fp16"
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["training_state"]["grad_scaler"]["scale"] == 65536.0
    assert state["training_state"]["grad_scaler"]["_growth_tracker"] == 3


# ----------------------------------------------------------------------------- the command


def test_cli_precision_fallback_is_one_warning_and_the_summary_names_it(tmp_path: Path) -> None:
    r, c = np.mgrid[0:32, 0:32]
    rows = []
    for k in range(2):
        mask = ((r // (3 + k) + c // 4) % 3 + 1).astype(np.uint8)
        img = np.stack([mask * 60, 255 - mask * 60, (r * 7 + k) % 255]).astype(np.uint8)
        ip = write_tif(tmp_path / f"s{k}_img.tif", img)
        mp = write_tif(tmp_path / f"s{k}_msk.tif", mask)
        for ro in (0, 16):
            rows.append({"image_path": ip.name, "mask_path": mp.name, "row_off": ro,
                         "col_off": 0, "patch_size": 16, "group_id": f"s{k}", "fold": k})  # fmt: skip
    csv = tmp_path / "tiles.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    cfg = {
        "train_dataset": {
            "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
            "input_csv_path": str(csv),
            "n_classes": 3,
            "class_values": [1, 2, 3],
            "data_loader": {"batch_size": 2},
        },
        "val_fold": 1,
        "model": {"_target_": "smt_tools.train.UNet", "n_classes": 3, "base_channels": 4},
        "epochs": 1,
        "output_dir": str(tmp_path / "run"),
    }
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["train", str(conf), "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: precision")]
    assert warned == [
        "warning: precision: bf16 needs a CUDA GPU; training on cpu in fp32 (set precision: "
        "auto to choose per device without this warning)"
    ]
    assert "Trained 1 epoch(s) on cpu (fp32; uniform sampling;" in res.stdout
    out = tmp_path / "summary.json"
    res = runner.invoke(app, ["train", str(conf), "--set", "precision=fp32", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: precision" not in res.stderr
    record = json.loads(out.read_text(encoding="utf-8"))
    summary = record["summary"]
    assert summary["precision"] == "fp32" and summary["loader_wait_s"] >= 0
