"""Damaged GeoTIFFs (issue 11, B14): every read error is ONE line naming the file, the window and
GDAL's own cause, from the main process and from DataLoader / scan workers alike."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.windows import Window
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.errors import RasterOpenError, RasterReadError
from smt_tools.raster.handles import describe_raster_error, open_raster
from tests.corrupt_data import garble_blocks, garble_header, write_tiled

torch = pytest.importorskip("torch")

runner = CliRunner()
SIZE = 64
#: GDAL's cause for a garbled deflate block (block row 2 = pixel rows 32..47), as rasterio chains it
CAUSE = "IReadBlock failed at X offset 0, Y offset 2: TIFFReadEncodedTile() failed"
CAUSE_RE = re.compile(
    r"\(GDAL: band 1: IReadBlock failed at X offset [02], Y offset 2: TIFFReadEncodedTile\(\) "
    r"failed; ZIPDecode:Decoding error at scanline \d+\)"
)


def _image(k: int) -> np.ndarray:
    """uint8 (3, 64, 64), values 40..199 (never black)."""
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([40 + (r + c + k) % 160, 40 + (r * 3 + k) % 160, 40 + (c * 5) % 160]).astype(
        np.uint8
    )


def _mask(k: int) -> np.ndarray:
    """uint8 (64, 64), classes 1..3 (no nodata)."""
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    return ((r // 8 + c // 8 + k) % 3 + 1).astype(np.uint8)


def _scenes(folder: Path, n: int) -> list[tuple[Path, Path]]:
    out = []
    for k in range(n):
        img = write_tiled(folder / f"s{k}_img.tif", _image(k), origin=500_000.0 + 1000 * k)
        msk = write_tiled(folder / f"s{k}_msk.tif", _mask(k), origin=500_000.0 + 1000 * k)
        out.append((img, msk))
    return out


#: a progress bar's last render (rich prints it once when stderr is not a terminal)
_PROGRESS = re.compile(r"^(Epoch \d+/\d+ \w+|Embedding tiles|Scanning|Reading|\w+).* \d+/\d+ ")


def _one_line(stderr: str) -> str:
    """The error line; every other stderr line must be a progress bar's final render."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert all(_PROGRESS.match(ln) for ln in lines if ln not in errors), stderr
    assert "Traceback" not in stderr and "Caught " not in stderr, stderr
    return errors[0]


def _check_read_line(line: str, path: Path) -> None:
    assert line.startswith(f"error: {path}: failed to read window row_off=32 "), line
    assert CAUSE_RE.search(line) and line.endswith("re-copy or re-export it"), line
    assert "See previous exception" not in line and "Traceback" not in line, line
    # short: the path plus at most 250 characters (here 230 to 240)
    assert len(line) - len(str(path)) < 250, (len(line), line)


# --- the raster layer -------------------------------------------------------------------------


def test_gdal_cause_is_taken_from_the_chain(tmp_path: Path) -> None:
    """rasterio's own message is a placeholder; GDAL's cause sits on the chained exception."""
    (img, _), *_ = _scenes(tmp_path, 1)
    garble_blocks(img, 32)
    with rasterio.open(img) as ds:
        assert ds.read(window=Window(0, 0, 32, 32)).shape == (3, 32, 32)  # upper half intact
        with pytest.raises(rasterio.errors.RasterioIOError) as info:
            ds.read(window=Window(0, 32, 32, 32))
    assert "See previous exception" in str(info.value)
    text = describe_raster_error(info.value, str(img))
    assert text.startswith("band 1: " + CAUSE), text
    assert "See previous" not in text and img.name not in text
    assert describe_raster_error(ValueError("")) == "ValueError"
    assert len(describe_raster_error(OSError("x" * 500))) == 160


def test_window_reads_name_file_window_and_cause(tmp_path: Path) -> None:
    """The three readers (scan, training datasets, embeddings) give the same one-line error."""
    from smt_tools.embeddings.dataset import TileBatchDataset
    from smt_tools.embeddings.model import Preprocess
    from smt_tools.raster.window import read_pixels, read_window

    (img, _), *_ = _scenes(tmp_path, 1)
    garble_blocks(img, 32)
    ds = open_raster(img)
    try:
        errors = []
        with pytest.raises(RasterReadError) as e1:
            read_pixels(ds, str(img), None, Window(0, 32, 32, 32))
        errors.append(str(e1.value))
        with pytest.raises(RasterReadError) as e2:
            read_window(ds, 32, 0, 32, 32, None, 0)
        errors.append(str(e2.value))
    finally:
        ds.close()
    frame = pd.DataFrame(
        {
            "tile_id": [1],
            "image_path": [str(img)],
            "row_off": [32],
            "col_off": [0],
            "height": [32],
            "width": [32],
        }
    )
    spec = Preprocess(
        bands=(1, 2, 3),
        scale=(0.0, 255.0),
        shortest_edge=32,
        crop=28,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    with pytest.raises(RasterReadError) as e3:
        TileBatchDataset(frame, spec, 1)[0]
    errors.append(str(e3.value))
    for msg in errors:
        assert "\n" not in msg
        _check_read_line("error: " + msg, img)


def test_open_garbage_header_names_file_and_cause(tmp_path: Path) -> None:
    (img, _), *_ = _scenes(tmp_path, 1)
    garble_header(img)
    with pytest.raises(RasterOpenError) as info:
        open_raster(img)
    msg = str(info.value)
    assert msg.startswith(f"{img}: not a readable raster (GDAL: not recognized as being in a ")
    assert msg.count(str(img)) == 1 and "\n" not in msg


# --- through the commands ---------------------------------------------------------------------


def _train_config(tmp_path: Path, rows: list[dict[str, Any]], num_workers: int) -> Path:
    csv = tmp_path / "balanced.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    loader = {
        "batch_size": 4,
        "shuffle": False,
        "weighted_sampler": False,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
    }
    cfg = {
        "train_dataset": {
            "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
            "input_csv_path": str(csv),
            "n_classes": 3,
            "class_values": [1, 2, 3],
            "data_loader": loader,
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
        "epochs": 1,
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _windows(pair: tuple[Path, Path], fold: int) -> list[dict[str, Any]]:
    return [
        {
            "image_path": pair[0].name,
            "mask_path": pair[1].name,
            "row_off": r,
            "col_off": c,
            "patch_size": 32,
            "fold": fold,
        }
        for r in (0, 32)
        for c in (0, 32)
    ]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_corrupt_block_one_line(tmp_path: Path, num_workers: int) -> None:
    """Scene 0 trains (its lower half is garbage), scene 1 validates: the first training batch
    fails, in the main process or in a (persistent) DataLoader worker."""
    pairs = _scenes(tmp_path, 2)
    garble_blocks(pairs[0][0], 32)
    conf = _train_config(tmp_path, _windows(pairs[0], 0) + _windows(pairs[1], 1), num_workers)
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    line = _one_line(res.stderr)
    _check_read_line(line, pairs[0][0])
    assert "DataLoader worker" not in line
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_unopenable_file_one_line(tmp_path: Path, num_workers: int) -> None:
    """A scene whose header is garbage is first opened inside a worker (rows are read lazily)."""
    pairs = _scenes(tmp_path, 3)
    garble_header(pairs[2][0])
    rows = _windows(pairs[0], 0) + _windows(pairs[2], 0) + _windows(pairs[1], 1)
    conf = _train_config(tmp_path, rows, num_workers)
    res = runner.invoke(app, ["train", str(conf)])
    assert res.exit_code == 1, res.output
    line = _one_line(res.stderr)
    assert line.startswith(f"error: {pairs[2][0]}: not a readable raster (GDAL: not recognized")
    assert "Caught" not in line and "Traceback" not in line, line
    assert len(line) - len(str(pairs[2][0])) < 240, line


def _ingest_cli(pairs_csv: Path, target: Path, workers: int) -> Any:
    return runner.invoke(
        app,
        [
            "catalog",
            "ingest",
            str(pairs_csv),
            "--patch-size",
            "32",
            "--nodata-class",
            "0",
            "--workers",
            str(workers),
            "--catalog",
            str(target),
        ],
    )


def _pairs_csv(tmp_path: Path, pairs: list[tuple[Path, Path]]) -> Path:
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"image": [p[0].name for p in pairs], "mask": [p[1].name for p in pairs]}).to_csv(
        path, index=False
    )
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_corrupt_block_one_line_nothing_written(tmp_path: Path, workers: int) -> None:
    pairs = _scenes(tmp_path, 2)
    garble_blocks(pairs[1][1], 32)  # the mask: read first for every window
    target = tmp_path / "tiles.parquet"
    res = _ingest_cli(_pairs_csv(tmp_path, pairs), target, workers)
    assert res.exit_code == 1, res.output
    line = _one_line(res.stderr)
    # the inspection's pixel sample or the scan meets the damaged blocks first: either way the
    # line names the file, a window and GDAL's cause
    assert re.match(
        rf"error: {re.escape(str(pairs[1][1]))}: failed to read window row_off=\d+ col_off=\d+ "
        r"size=\d+x\d+ \(GDAL: band 1: IReadBlock failed at X offset 0, Y offset 2: "
        r"TIFFReadEncodedTile\(\) failed",
        line,
    ), line
    assert "See previous" not in line, line
    assert not target.exists()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_embed_corrupt_block_one_line(tmp_path: Path, num_workers: int) -> None:
    """Ingest two good scenes, then damage one image (same size and mtime): embed fails with
    one line from the main process or a reader worker; the cache keeps only whole chunks."""
    pytest.importorskip("transformers")
    from tests.test_embeddings import save_tiny_dinov2

    pairs = _scenes(tmp_path, 2)
    tiles = tmp_path / "tiles.parquet"
    res = _ingest_cli(_pairs_csv(tmp_path, pairs), tiles, 1)
    assert res.exit_code == 0, res.output
    garble_blocks(pairs[1][0], 32)
    model = save_tiny_dinov2(tmp_path / "tiny")
    cfg = {
        "balanced_dataset": {
            "mode": "embeddings",
            "input": {"tiles": str(tiles)},
            "exclusion": {"nodata_class": 0},
            "embeddings": {
                "dino_model": str(model),
                "batch_size": 2,
                "num_workers": num_workers,
                "parquet_path": str(tmp_path / "emb.parquet"),
            },
            "output": {"csv_path": str(tmp_path / "out.csv")},
        }
    }
    conf = tmp_path / "embed.yaml"
    conf.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, ["embed", str(conf)])
    assert res.exit_code == 1, res.output
    line = _one_line(res.stderr)
    _check_read_line(line, pairs[1][0])
    assert "DataLoader worker" not in line


def test_class_balanced_crops_damaged_mask_one_line(tmp_path: Path) -> None:
    """Random crops read every mask (decimated) for class_balanced_sampling at construction."""
    from smt_tools.train import RandomCropSegmentationDataset

    pairs = _scenes(tmp_path, 2)
    garble_blocks(pairs[1][1], 32)
    csv = _pairs_csv(tmp_path, pairs)
    with pytest.raises(RasterReadError) as info:
        RandomCropSegmentationDataset(csv, crop_size=16, n_classes=4, class_balanced_sampling=True)
    msg = str(info.value)
    assert msg.startswith(f"{pairs[1][1]}: failed to read window row_off=0 col_off=0 size=64x64 ")
    assert CAUSE_RE.search(msg) and "\n" not in msg, msg


class _Failing(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item 3 raises ``error``; the others are zeros."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        if i == 3:
            raise self.error
        return torch.zeros(1)


def test_worker_errors_come_back_as_their_own_line() -> None:
    """What torch re-raises from a worker is the worker's type with a long traceback message;
    unwrap_worker_errors gives back the original one-line message (other errors pass as they
    are)."""
    from torch.utils.data import DataLoader

    from smt_tools._worker_errors import unwrap_worker_errors, worker_message
    from smt_tools.errors import InputDataError

    line = "/data/a.tif: failed to read window row_off=32 col_off=0 size=32x32 (GDAL: x)"
    for error in (RasterReadError(line), InputDataError("rows.csv: bad value 'x' in row 3")):
        loader = DataLoader(_Failing(error), batch_size=2, num_workers=2)
        with pytest.raises(type(error)) as raw:
            list(loader)
        assert str(raw.value).startswith(f"Caught {type(error).__name__} in DataLoader worker")
        assert worker_message(raw.value) == str(error)
        with pytest.raises(type(error)) as info, unwrap_worker_errors():
            list(loader)
        assert str(info.value) == str(error)
        assert info.value.__cause__ is None and info.value.__suppress_context__
    # main-process errors and non-SmtErrors are left alone
    with pytest.raises(RasterReadError, match=r"^plain$"), unwrap_worker_errors():
        list(DataLoader(_Failing(RasterReadError("plain")), batch_size=2))
    with pytest.raises(ValueError, match=r"^Caught ValueError in DataLoader worker"):
        with unwrap_worker_errors():
            list(DataLoader(_Failing(ValueError("v")), batch_size=2, num_workers=1))
    assert worker_message(ValueError("Caught nothing")) is None
