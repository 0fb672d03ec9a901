"""Training-side faults of issue 11: the epoch reaches persistent DataLoader workers (B11) and
the weighted sampler refuses what it cannot weight, without reading items (B16)."""

from __future__ import annotations

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
from smt_tools.errors import ConfigError, InputDataError  # noqa: E402
from smt_tools.train import (  # noqa: E402
    CSVWindowedSegmentationDataset,
    RandomCropSegmentationDataset,
    build_weighted_sampler,
)
from smt_tools.train.loop import fit  # noqa: E402
from tests.rasters import write_tif  # noqa: E402

H, W = 120, 150
CROP = 16
SCALE = [0, 65535]


@pytest.fixture(scope="module")
def scene_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 120 x 150 scene whose image encodes each pixel's position: band 1 = row, band 2 = col
    (uint16, read with scale [0, 65535]), so a crop's top-left pixel tells where it was cut."""
    tmp = tmp_path_factory.mktemp("faults")
    r, c = np.mgrid[0:H, 0:W]
    write_tif(tmp / "img.tif", np.stack([r, c]).astype(np.uint16))
    write_tif(tmp / "msk.tif", ((r // 10 + c // 10) % 2).astype(np.uint8))
    csv = tmp / "scenes.csv"
    pd.DataFrame({"image": ["img.tif"], "mask": ["msk.tif"]}).to_csv(csv, index=False)
    return csv


def _crops(csv: Path, **kw: Any) -> RandomCropSegmentationDataset:
    return RandomCropSegmentationDataset(
        csv, crop_size=CROP, samples_per_epoch=12, n_classes=2, scale=SCALE, seed=5, **kw
    )


def _corners(images: torch.Tensor) -> list[tuple[int, int]]:
    """(row_off, col_off) of each crop of a (N, 2, h, w) batch, from its top-left pixel."""
    rc = (images[:, :, 0, 0].double() * 65535).round().long()
    return [(int(a), int(b)) for a, b in rc.tolist()]


def _epochs(ds: RandomCropSegmentationDataset, loader: DataLoader[Any], n: int) -> list[list[Any]]:
    out = []
    for epoch in range(n):
        ds.set_epoch(epoch)
        out.append([p for batch in loader for p in _corners(batch["image"])])
    return out


# --- B11: the epoch reaches every worker ---------------------------------------------------------


@pytest.mark.parametrize(("num_workers", "persistent"), [(0, False), (2, False), (2, True)])
def test_random_crops_change_every_epoch_with_any_workers(
    scene_csv: Path, num_workers: int, persistent: bool
) -> None:
    """Crops of epochs 0, 1, 2 differ, and are exactly the positions the dataset defines for
    (seed, epoch): the same with persistent workers, fresh workers or none."""
    ds = _crops(scene_csv)
    expected = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        expected.append([ds.position(i)[1:] for i in range(len(ds))])
    assert len({tuple(e) for e in expected}) == 3  # the definition itself varies by epoch
    loader = DataLoader(ds, batch_size=4, num_workers=num_workers, persistent_workers=persistent)
    got = _epochs(ds, loader, 3)
    assert got == expected
    assert got[0] != got[1] and got[1] != got[2]
    # each crop lies inside the scene
    assert all(0 <= r <= H - CROP and 0 <= c <= W - CROP for e in got for r, c in e)


def test_shuffled_epochs_hold_the_same_crops_with_any_worker_lifetime(scene_csv: Path) -> None:
    """With shuffle the ORDER depends on torch's loader generator (fresh workers draw a new base
    seed from it every epoch), but the crops of an epoch are the same set either way."""
    runs = []
    for persistent in (False, True):
        ds = _crops(scene_csv)
        gen = torch.Generator().manual_seed(11)
        loader = DataLoader(
            ds,
            batch_size=3,
            shuffle=True,
            num_workers=2,
            persistent_workers=persistent,
            generator=gen,
        )
        runs.append([sorted(e) for e in _epochs(ds, loader, 3)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1] != runs[0][2]


def test_weighted_sampler_augmentations_identical_persistent_or_not(
    scene_csv: Path, tmp_path: Path
) -> None:
    """The train command's loader: a seeded, draw-tagged weighted sampler over CSV windows with a
    flip. Persistent workers must flip exactly as fresh ones do in every epoch (before the fix
    they kept epoch 0's augmentation seeds)."""
    rows = [
        {
            "image_path": "img.tif",
            "mask_path": "msk.tif",
            "row_off": 16 * k,
            "col_off": 8 * k,
            "patch_size": CROP,
            "sampler_weight": 1.0 + k,
        }
        for k in range(6)
    ]
    csv = scene_csv.parent / "flip_windows.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    aug = [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.VerticalFlip", "p": 0.5},
    ]
    runs = []
    for persistent in (False, True):
        ds = CSVWindowedSegmentationDataset(
            csv, n_classes=2, scale=SCALE, augmentation_list=aug, seed=3
        )
        sampler = build_weighted_sampler(ds, num_samples=16, seed=7, tag_draws=True)
        loader = DataLoader(
            ds, batch_size=4, sampler=sampler, num_workers=2, persistent_workers=persistent
        )
        epochs = []
        for epoch in range(3):
            ds.set_epoch(epoch)
            epochs.append(torch.cat([b["image"] for b in loader]))
        runs.append(epochs)
    for fresh, kept in zip(*runs, strict=True):
        assert torch.equal(fresh, kept)
    corners = {c for e in runs[0] for c in _corners(e)}
    # flipped crops start at another corner than the window's top-left: augmentation happened
    assert corners - {(16 * k, 8 * k) for k in range(6)}


class _Recorder(nn.Module):
    """A 1x1 conv that records the crop corners of every TRAINING batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.extend(_corners(x.detach()))
        return self.conv(x)


def _fit(scene_csv: Path, tmp: Path, persistent: bool, steps: int) -> list[tuple[int, int]]:
    torch.manual_seed(0)
    train = _crops(scene_csv)
    val = _crops(scene_csv, grid_mode=True)
    model = _Recorder()
    fit(
        model,
        nn.CrossEntropyLoss(ignore_index=255),
        torch.optim.SGD(model.parameters(), lr=0.01),
        DataLoader(train, batch_size=4, num_workers=2, persistent_workers=persistent),
        DataLoader(val, batch_size=64),
        epochs=2,
        n_classes=2,
        device=torch.device("cpu"),
        output_dir=tmp,
        steps_per_epoch=steps,
        val_steps=1,
        write_plot=False,
    )
    return model.seen


def test_fit_persistent_workers_new_crops_per_epoch_and_pass(
    scene_csv: Path, tmp_path: Path
) -> None:
    """The train loop with persistent workers: epoch 2 is not a replay of epoch 1, a second pass
    inside an epoch (steps_per_epoch > batches) is not a replay of the first, and the crops are
    those of non-persistent workers."""
    per_epoch = 12  # samples_per_epoch; 3 batches of 4
    persistent = _fit(scene_csv, tmp_path / "p", True, steps=6)  # two passes per epoch
    fresh = _fit(scene_csv, tmp_path / "f", False, steps=6)
    assert persistent == fresh
    assert len(persistent) == 4 * per_epoch
    e1p1, e1p2, e2p1, e2p2 = (persistent[k * per_epoch : (k + 1) * per_epoch] for k in range(4))
    assert len({tuple(e1p1), tuple(e1p2), tuple(e2p1), tuple(e2p2)}) == 4
    # epoch 2's first pass is the dataset's definition of epoch 2
    ds = _crops(scene_csv)
    ds.set_epoch(2)
    assert e2p1 == [ds.position(i)[1:] for i in range(per_epoch)]


def test_epoch_property_and_set_epoch(scene_csv: Path) -> None:
    ds = _crops(scene_csv)
    assert ds.epoch == 0
    before = [ds.position(i) for i in range(4)]
    ds.epoch = 3
    assert ds.epoch == 3 and ds._epoch_key() == (3, 0)
    ds.set_epoch(3, repeat=1)
    assert ds._epoch_key() == (3, 1)
    again = [ds.position(i) for i in range(4)]
    ds.set_epoch(0)
    assert [ds.position(i) for i in range(4)] == before != again


# --- B16: the weighted sampler refuses, at once, what it cannot weight ---------------------------


class _NoFrame(Dataset[Any]):
    """A dataset without .frame whose items must never be read (reading would never end)."""

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        raise AssertionError("build_weighted_sampler read an item")


def test_dataset_without_frame_is_refused_without_reading(scene_csv: Path) -> None:
    ds = _NoFrame()
    with pytest.raises(ConfigError) as info:
        build_weighted_sampler(ds, seed=0, source="train.csv")
    msg = str(info.value)
    assert ds.reads == 0
    assert msg.startswith("train.csv: weighted_sampler cannot weight a _NoFrame (")
    assert "sampler_weight" in msg and "CSVWindowedSegmentationDataset" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([{"w": 1.0}, {"w": 2.0}], "cannot weight a list (it holds a dict, not numbers)"),
        (np.ones((3, 2)), "an array of shape (3, 2) and dtype float64, not 1-D numbers"),
        (np.array(["a", "b"]), "dtype <U1"),
        ("1,2,3", "cannot weight a str"),
        (iter([1.0, 2.0]), "cannot weight a list_iterator"),
        (type("Frameish", (), {"frame": [1.0, 2.0]})(), "its .frame is a list, not a DataFrame"),
    ],
)
def test_non_weights_are_refused(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_weighted_sampler(value, seed=0)
    assert needle in str(info.value), str(info.value)


def test_random_crops_refused_even_when_lengths_match(scene_csv: Path, tmp_path: Path) -> None:
    """Two scenes and samples_per_epoch 2: the lengths agree, but item i is a random crop, not
    row i, so weighting it by row i's weight would be silent nonsense."""
    frame = pd.read_csv(scene_csv)
    two = pd.concat([frame, frame.assign(image="img2.tif", mask="msk2.tif")])
    two["sampler_weight"] = [1.0, 0.25]
    for name in ("img", "msk"):
        (tmp_path / f"{name}.tif").symlink_to(scene_csv.parent / f"{name}.tif")
        (tmp_path / f"{name}2.tif").symlink_to(scene_csv.parent / f"{name}.tif")
    csv = tmp_path / "two.csv"
    two.to_csv(csv, index=False)
    ds = RandomCropSegmentationDataset(csv, crop_size=CROP, samples_per_epoch=2, scale=SCALE)
    assert len(ds) == len(ds.frame) == 2
    with pytest.raises(InputDataError, match=r"2 items from 2 rows \(random crops, not rows\)"):
        build_weighted_sampler(ds, seed=0)


def test_accepted_inputs_give_exactly_their_weights(scene_csv: Path, tmp_path: Path) -> None:
    w = [0.5, 1.0, 0.0, 2.0]
    rows = [
        {
            "image_path": "img.tif",
            "mask_path": "msk.tif",
            "row_off": 16 * k,
            "col_off": 0,
            "patch_size": CROP,
            "sampler_weight": x,
        }
        for k, x in enumerate(w)
    ]
    csv = scene_csv.parent / "windows.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    windowed = CSVWindowedSegmentationDataset(csv, n_classes=2, scale=SCALE)
    for value in (
        windowed,
        windowed.frame,
        np.array(w),
        np.array([1, 2, 0, 4], dtype=np.int64) / np.array([2, 2, 1, 2]),
        w,
        tuple(w),
        pd.Series(w),
        torch.tensor(w),
    ):
        sampler = build_weighted_sampler(value, seed=0)
        assert sampler.weights.tolist() == w, type(value)
    tagged = build_weighted_sampler(windowed, num_samples=50, seed=1, tag_draws=True)
    draws = list(tagged)
    assert [d for _, d in draws] == list(range(50))
    assert all(row != 2 for row, _ in draws)  # weight 0: never drawn


def test_cli_weighted_sampler_on_random_crops_one_line(scene_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(scene_csv)
    frame["sampler_weight"] = 1.0
    csv = tmp_path / "scenes.csv"
    frame.to_csv(csv, index=False)
    for name in ("img", "msk"):
        (tmp_path / f"{name}.tif").symlink_to(scene_csv.parent / f"{name}.tif")
    ds = {
        "_target_": "smt_tools.train.RandomCropSegmentationDataset",
        "input_csv_path": str(csv),
        "crop_size": CROP,
        "samples_per_epoch": 1,
        "n_classes": 2,
        "scale": SCALE,
        "data_loader": {"batch_size": 1, "weighted_sampler": True},
    }
    cfg = {
        "train_dataset": ds,
        "val_dataset": {**ds, "input_csv_path": str(csv), "data_loader": {"batch_size": 1}},
        "allow_shared_images": True,
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 2,
            "n_classes": 2,
            "base_channels": 4,
            "depth": 2,
        },
        "epochs": 1,
        "output_dir": str(tmp_path / "run"),
    }
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = CliRunner().invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0] == (
        f"error: {csv}: weighted_sampler draws one item per CSV row by sampler_weight, but "
        "RandomCropSegmentationDataset has 1 items from 1 rows (random crops, not rows); use "
        "CSVWindowedSegmentationDataset for the balanced CSV (random crops choose scenes "
        "themselves: class_balanced_sampling)"
    )
    assert not (tmp_path / "run").exists()


# --- fold selection: a fold column pandas reads as float still matches ----------------------------


def test_buffer_column_read_as_float_still_drops_near_tiles(scene_csv: Path) -> None:
    """`split` lists, per tile, the folds whose training set must not use it. When every listed
    value is a single fold and some cells are empty, pandas reads the column as float64 (1.0):
    the tile must still be dropped from fold 1's training set (it lies within the buffer of a
    fold-1 validation tile), and a fold column with gaps still selects fold 1."""
    rows = [
        {"row_off": 0, "fold": 0, "buffer_excluded_folds": "1"},
        {"row_off": 16, "fold": 0, "buffer_excluded_folds": ""},
        {"row_off": 32, "fold": 1, "buffer_excluded_folds": ""},
        {"row_off": 48, "fold": 2, "buffer_excluded_folds": ""},
        {"row_off": 64, "fold": None, "buffer_excluded_folds": ""},
    ]
    frame = pd.DataFrame(rows).assign(
        image_path="img.tif", mask_path="msk.tif", col_off=0, patch_size=CROP
    )
    csv = scene_csv.parent / "folds.csv"
    frame.to_csv(csv, index=False)
    read = pd.read_csv(csv)
    assert read["buffer_excluded_folds"].dtype.kind == "f" and read["fold"].dtype.kind == "f"
    train = CSVWindowedSegmentationDataset(csv, n_classes=2, scale=SCALE, exclude_folds=[1, -1])
    assert train.frame["row_off"].tolist() == [16, 48, 64]
    val = CSVWindowedSegmentationDataset(csv, n_classes=2, scale=SCALE, folds=[1])
    assert val.frame["row_off"].tolist() == [32]
