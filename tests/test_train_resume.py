"""``train --resume``: a run stopped after epoch k and resumed to N trains exactly the weights and
metrics of an uninterrupted run to N; changed configs are refused naming the keys; a finished
run resumed is a no-op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("albumentations")

from typer.testing import CliRunner  # noqa: E402

from smt_tools.cli.app import app  # noqa: E402
from smt_tools.config._loader import validate_mapping  # noqa: E402
from smt_tools.config.train import TrainConfig  # noqa: E402
from smt_tools.errors import ConfigError, InputDataError  # noqa: E402
from smt_tools.pipelines.train import run_training  # noqa: E402
from smt_tools.train.checkpoint import load_checkpoint  # noqa: E402
from tests.rasters import write_tif  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def windows_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 scenes of 32 x 32 (3 classes, raw 1..3), 4 windows of 16 px each, fold = scene % 2."""
    tmp = tmp_path_factory.mktemp("resume")
    r, c = np.mgrid[0:32, 0:32]
    rows = []
    for k in range(4):
        mask = ((r // (3 + k) + c // 4) % 3 + 1).astype(np.uint8)
        img = np.stack([mask * 60, 255 - mask * 60, (r * 7 + k) % 255]).astype(np.uint8)
        ip = write_tif(tmp / f"s{k}_img.tif", img)
        mp = write_tif(tmp / f"s{k}_msk.tif", mask)
        for ro in (0, 16):
            for co in (0, 16):
                rows.append({"image_path": ip.name, "mask_path": mp.name, "row_off": ro,
                             "col_off": co, "patch_size": 16, "group_id": f"s{k}",
                             "fold": k % 2, "sampler_weight": 1.0 if k else 0.3})  # fmt: skip
    path = tmp / "windows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(csv: Path, out: Path, *, epochs: int, weighted: bool = True, **dl: Any) -> dict:
    return {
        "train_dataset": {
            "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
            "input_csv_path": str(csv),
            "n_classes": 3,
            "class_values": [1, 2, 3],
            "augmentation_list": [
                {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
                {"_target_": "albumentations.RandomRotate90", "p": 0.5},
            ],
            "data_loader": {
                "batch_size": 3,
                "shuffle": True,
                "weighted_sampler": weighted,
                "weighted_sampler_num_samples": 7,
                **dl,
            },
        },
        "val_fold": 1,
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 3,
            "n_classes": 3,
            "base_channels": 4,
            "depth": 2,
        },
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.01},
        "scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.7},
        "epochs": epochs,
        "steps_per_epoch": 4,  # more than one pass over 8 rows / 7 draws: the loader restarts
        "torch_threads": 1,
        "seed": 3,
        "output_dir": str(out),
        "class_names": ["a", "b", "c"],
    }


def _run(raw: dict, resume: bool | Path = False) -> Any:
    return run_training(validate_mapping(raw, TrainConfig, "t.yaml"), resume=resume)


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical weights, optimizer state and per-epoch metrics (all but the seconds)."""
    ca = torch.load(a / "last.pt", weights_only=True)
    cb = torch.load(b / "last.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"]
    assert ca["model_state"].keys() == cb["model_state"].keys()
    for k, v in ca["model_state"].items():
        assert torch.equal(v, cb["model_state"][k]), k
    oa, ob = ca["training_state"]["optimizer"], cb["training_state"]["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]  # includes the scheduled lr
    for i, st in oa["state"].items():
        for name, t in st.items():
            assert torch.equal(t, ob["state"][i][name]), (i, name)
    ha = pd.read_csv(a / "metrics.csv").drop(columns=["seconds"])
    hb = pd.read_csv(b / "metrics.csv").drop(columns=["seconds"])
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)


@pytest.mark.parametrize(
    ("weighted", "first", "second"),
    [
        (True, {}, {}),  # weighted sampler, 0 workers
        (False, {}, {}),  # shuffled rows, 0 workers
        (True, {"num_workers": 2}, {"num_workers": 2}),
        (False, {}, {"num_workers": 2, "persistent_workers": True}),  # workers may change
    ],
)
def test_resumed_run_equals_the_uninterrupted_run(
    windows_csv: Path, tmp_path: Path, weighted: bool, first: dict, second: dict
) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    _run(_config(windows_csv, full, epochs=4, weighted=weighted))
    stopped = _run(_config(windows_csv, part, epochs=2, weighted=weighted, **first))
    assert list(stopped.history["epoch"]) == [1, 2]
    res = _run(_config(windows_csv, part, epochs=4, weighted=weighted, **second), resume=True)
    assert res.start_epoch == 3 and res.resumed_epoch == 2
    assert res.resumed_from == part / "last.pt"
    assert list(res.history["epoch"]) == [1, 2, 3, 4]
    _same_run(full, part)
    # the learning rate followed the scheduler across the restart: 0.01 * 0.7^(epoch-1)
    lrs = pd.read_csv(part / "metrics.csv")["lr"].to_numpy()
    np.testing.assert_allclose(lrs, 0.01 * 0.7 ** np.arange(4), rtol=1e-12)
    assert res.summary()["history"][3]["epoch"] == 4
    # atomic writes: nothing but the outputs in the folder
    assert sorted(p.name for p in part.iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.csv",
        "metrics.png",
    ]


def test_checkpoint_holds_the_training_state(windows_csv: Path, tmp_path: Path) -> None:
    _run(_config(windows_csv, tmp_path / "run", epochs=1))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")  # loads with weights_only=True
    ts = ckpt["training_state"]
    assert ckpt["epoch"] == 1 and ckpt["format"] == 1 and len(ckpt["config_hash"]) == 16
    assert ts["dataset_epoch"] == 1 and ts["epochs"] == 1 and ts["best_epoch"] == 1
    assert set(ts["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert ts["scheduler"]["last_epoch"] == 1
    assert len(ts["optimizer"]["state"]) == len(ckpt["model_state"]) - sum(
        "running" in k or "num_batches" in k for k in ckpt["model_state"]
    )
    assert [r["epoch"] for r in ts["history"]] == [1]
    # best.pt is the model for inference: no training state, so not resumable
    with pytest.raises(InputDataError, match="no training state"):
        load_checkpoint(tmp_path / "run" / "best.pt")


def test_resume_refuses_a_changed_config_naming_the_keys(windows_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(_config(windows_csv, out, epochs=1))
    before = (out / "last.pt").read_bytes()
    raw = _config(windows_csv, out, epochs=3)
    raw["model"]["base_channels"] = 8
    raw["optimizer"]["lr"] = 0.02
    raw["class_names"] = ["a", "b", "x"]
    with pytest.raises(ConfigError) as err:
        _run(raw, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{out / 'last.pt'}: cannot resume")
    for key in ("class_names", "model.base_channels (4 -> 8)", "optimizer.lr (0.01 -> 0.02)"):
        assert key in msg
    assert (out / "last.pt").read_bytes() == before  # nothing trained, nothing written
    # keys that do not change the weights may change
    raw = _config(windows_csv, tmp_path / "elsewhere", epochs=2, num_workers=2)
    raw.update({"val_steps": 1, "device": "cpu", "rare_class": 2})
    res = _run(raw, resume=out / "last.pt")
    assert res.start_epoch == 2 and (tmp_path / "elsewhere" / "last.pt").is_file()


def _write(tmp: Path, raw: dict) -> Path:
    p = tmp / "train.yaml"
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return p


def _stdout_lines(res: Any) -> list[str]:
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


def test_cli_resume_goes_on_and_a_finished_run_is_a_no_op(
    windows_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    conf = _write(tmp_path, _config(windows_csv, out, epochs=2))
    res = runner.invoke(app, ["train", str(conf), "--epochs", "1"])
    assert res.exit_code == 0, res.output
    epochs = [ln for ln in _stdout_lines(res) if ln.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1  train loss")
    res = runner.invoke(app, ["train", str(conf), "--resume"])
    assert res.exit_code == 0, res.output
    lines = _stdout_lines(res)
    assert lines[0] == f"Resuming {out / 'last.pt'} after epoch 1 of 2"
    assert [ln.split("  ")[0] for ln in lines if ln.startswith("epoch ")] == ["epoch 2/2"]
    assert "Trained 1 epoch(s)" in res.stdout
    assert list(pd.read_csv(out / "metrics.csv")["epoch"]) == [1, 2]
    # finished: nothing trained, nothing rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = runner.invoke(app, ["train", str(conf), "--resume-from", str(out / "last.pt")])
    assert res.exit_code == 0, res.output
    assert _stdout_lines(res) == [
        f"{out / 'last.pt'}: the run already finished 2 of 2 epoch(s); nothing to train "
        "(raise --epochs to go on)"
    ]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_cli_resume_errors_are_one_line(windows_csv: Path, tmp_path: Path) -> None:
    conf = _write(tmp_path, _config(windows_csv, tmp_path / "empty", epochs=2))
    res = runner.invoke(app, ["train", str(conf), "--resume"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no checkpoint to resume from" in lines[0]
    assert str(tmp_path / "empty" / "last.pt") in lines[0]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["train", str(conf), "--resume-from", str(junk)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.pt: not a readable training checkpoint" in lines[0]
