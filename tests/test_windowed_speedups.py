"""The windowed dataset's fast paths give the documented items: a direct rasterio read plus the
documented scaling and class mapping (docs/algorithms.md §13, smt_tools.train.datasets), the
same batches with 0 and 2 DataLoader workers, batches read in on-disk order, handles opened
once; albumentations imported without its update check."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

torch = pytest.importorskip("torch")

from smt_tools.errors import InputDataError  # noqa: E402
from smt_tools.train import CSVWindowedSegmentationDataset, prepare_batch  # noqa: E402
from smt_tools.train.datasets import warm_worker  # noqa: E402
from tests.rasters import write_tif  # noqa: E402

H, W, S = 70, 90, 16
#: (scene, row_off, col_off): inside, on the edge (padded), and on the second scene
WINDOWS = [(0, 0, 0), (1, 32, 48), (0, 64, 80), (1, 0, 16), (0, 16, 32), (1, 60, 0)]


def _image(k: int) -> np.ndarray:
    """uint8 (3, H, W): band b pixel (r, c) = (7 * r + 3 * c + 50 * b + 11 * k) % 256."""
    r, c = np.mgrid[0:H, 0:W]
    return np.stack([(7 * r + 3 * c + 50 * b + 11 * k) % 256 for b in range(3)]).astype(np.uint8)


def _mask(k: int) -> np.ndarray:
    """uint8 (H, W): raw values 1..5 = (r + 2c + k) % 5 + 1, 255 (ignore) in row 5."""
    r, c = np.mgrid[0:H, 0:W]
    m = ((r + 2 * c + k) % 5 + 1).astype(np.uint8)
    m[5] = 255
    return m


def write_grid(folder: Path, windows: list[tuple[int, int, int]], **columns: object) -> Path:
    """The two scenes (``_image``, ``_mask``) as GeoTIFFs in ``folder`` and ``balanced.csv``
    with one S-px window per (scene, row_off, col_off) of ``windows``, plus ``columns``."""
    rows = []
    for k in range(2):
        write_tif(folder / f"img{k}.tif", _image(k))
        write_tif(folder / f"msk{k}.tif", _mask(k))
    for k, r, c in windows:
        rows.append(
            {"image_path": f"img{k}.tif", "mask_path": f"msk{k}.tif", "row_off": r,
             "col_off": c, "patch_size": S, "mask_band": 1, **columns}
        )  # fmt: skip
    p = folder / "balanced.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


@pytest.fixture
def grid_csv(tmp_path: Path) -> Path:
    return write_grid(tmp_path, WINDOWS, sampler_weight=1.0)


def _direct(folder: Path, k: int, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw image (3, S, S) and mask (S, S) by a boundless rasterio read (0 / 255 outside),
    and the inside-the-raster flags."""
    win = Window(c, r, S, S)
    with rasterio.open(folder / f"img{k}.tif") as ds:
        img = ds.read(window=win, boundless=True, fill_value=0)
    with rasterio.open(folder / f"msk{k}.tif") as ds:
        msk = ds.read(1, window=win, boundless=True, fill_value=255)
    rr, cc = np.mgrid[r : r + S, c : c + S]
    return img, msk, (rr < H) & (cc < W)


def test_items_equal_a_direct_read_and_the_documented_transform(grid_csv: Path) -> None:
    values = [1, 2, 3, 4, 5]
    plain = CSVWindowedSegmentationDataset(grid_csv, n_classes=5, class_values=values)
    compact = CSVWindowedSegmentationDataset(
        grid_csv, n_classes=5, class_values=values, compact_batches=True
    )
    lut = np.full(256, 255, np.int64)
    lut[values] = np.arange(5)
    for i, (k, r, c) in enumerate(WINDOWS):
        img, msk, inside = _direct(grid_csv.parent, k, r, c)
        classes = np.where(inside, lut[msk], 255)
        item = plain[i]
        assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64
        # (x - 0) * float32(1 / 255), one float32 rounding
        expected = img.astype(np.float32) * np.float32(1.0 / 255.0)
        np.testing.assert_array_equal(item["image"].numpy(), expected)
        np.testing.assert_array_equal(item["mask"].numpy(), classes)
        small = compact[i]
        assert small["image"].dtype == torch.uint8 and small["mask"].dtype == torch.uint8
        np.testing.assert_array_equal(small["image"].numpy(), img)
        np.testing.assert_array_equal(small["mask"].numpy(), classes)
        assert small["image_scale"].tolist() == [0.0, np.float32(1.0 / 255.0)]
        assert small["image_scale"] is not compact[i]["image_scale"]  # each item owns one


def test_scaling_of_8bit_data_is_the_float32_formula(grid_csv: Path) -> None:
    """Every uint8 value, with an offset (scale [10, 200]) and without: bit-identical to
    ``(x - offset) * factor`` computed by numpy in float32."""
    raw = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for scale, lo in ((None, 0.0), ([10, 200], 10.0)):
        ds = CSVWindowedSegmentationDataset(grid_csv, n_classes=6, scale=scale)
        hi = 255.0 if scale is None else 200.0
        factor = np.float32(1.0 / (hi - lo))
        expected = np.subtract(raw, np.float32(lo), dtype=np.float32) * factor
        np.testing.assert_array_equal(ds._scale_image(raw.copy()), expected)
        assert ds[2]["image"].dtype == torch.float32


def test_batches_identical_with_0_and_2_workers(grid_csv: Path) -> None:
    from torch.utils.data import DataLoader

    order = [4, 1, 5, 0, 3, 2]  # a shuffled order: batches mix scenes
    for compact in (False, True):
        ds = CSVWindowedSegmentationDataset(grid_csv, n_classes=6, compact_batches=compact)
        runs = []
        for workers in (0, 2):
            loader = DataLoader(
                ds,
                batch_size=4,
                sampler=order,
                num_workers=workers,
                worker_init_fn=warm_worker if workers else None,
            )
            runs.append([prepare_batch(b) for b in loader])
        single = [prepare_batch(torch.utils.data.default_collate([ds[i] for i in order[:4]]))]
        for (i0, m0), (i2, m2) in zip(runs[0], runs[1], strict=True):
            assert torch.equal(i0, i2) and torch.equal(m0, m2)
        assert torch.equal(runs[0][0][0], single[0][0]) and torch.equal(runs[0][0][1], single[0][1])


def test_a_batch_is_read_in_disk_order_and_returned_in_the_order_asked(grid_csv: Path) -> None:
    ds = CSVWindowedSegmentationDataset(grid_csv, n_classes=6)
    read: list[tuple[str, int, int]] = []
    original = ds._read_pair

    def spy(image: str, *args: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        read.append((Path(image).name, args[1], args[2]))
        return original(image, *args)

    ds._read_pair = spy  # type: ignore[method-assign]
    asked = [(5, 0), 0, (2, 3), 1, 4, 3]  # plain indices and (row, draw) pairs mixed
    items = ds.__getitems__(asked)
    assert read == sorted(read)  # img0 windows, then img1's, each by (row_off, col_off)
    for a, item in zip(asked, items, strict=True):
        expected = ds[a]
        assert torch.equal(item["image"], expected["image"])
        assert torch.equal(item["mask"], expected["mask"])


def test_handles_are_opened_once_per_process(grid_csv: Path) -> None:
    from torch.utils.data import DataLoader

    ds = CSVWindowedSegmentationDataset(grid_csv, n_classes=6)
    assert ds.warm_handles() == 4 and ds.cache.opens == 4  # 2 images + 2 masks
    for _ in range(3):
        for _ in DataLoader(ds, batch_size=4, num_workers=0):
            pass
    assert ds.cache.opens == 4  # three passes, no reopen
    # a cache of 2 handles: a sorted batch reads one scene's windows together, so each
    # batch of 6 windows opens each file once (4 opens) instead of once per scene switch
    small = CSVWindowedSegmentationDataset(grid_csv, n_classes=6, lru_cache_size=2)
    small.__getitems__(list(range(len(WINDOWS))))
    assert small.cache.opens == 4
    unsorted = CSVWindowedSegmentationDataset(grid_csv, n_classes=6, lru_cache_size=2)
    for i in range(len(WINDOWS)):
        unsorted[i]
    assert (
        unsorted.cache.opens
        == 2 * sum(1 for a, b in itertools.pairwise(WINDOWS) if a[0] != b[0]) + 2
    )


def test_worker_warm_up_opens_handles_in_the_worker(grid_csv: Path) -> None:
    """``warm_worker`` opens the worker's handles before its first batch; the parent's cache
    stays empty (handles are never shared across processes)."""
    from torch.utils.data import DataLoader

    class Probe(CSVWindowedSegmentationDataset):
        def __getitem__(self, index: object) -> dict[str, object]:  # type: ignore[override]
            return {"opened": torch.tensor(self.cache.opens), "open": torch.tensor(len(self.cache))}

        __getitems__ = None  # type: ignore[assignment]

    ds = Probe(grid_csv, n_classes=6)
    loader = DataLoader(ds, batch_size=1, num_workers=1, worker_init_fn=warm_worker)
    first = next(iter(loader))
    assert int(first["opened"]) == 4 and int(first["open"]) == 4  # warmed before item 0
    assert ds.cache.opens == 0 and len(ds.cache) == 0


def test_mask_check_still_refuses_a_stray_value(tmp_path: Path) -> None:
    """Without class_values the raw mask must hold class indices or ignore_index: the check
    on the raw uint8 array names the window of a stray value, and ignores pixels outside."""
    m = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)
    m[0, 0] = 255  # ignore_index: allowed
    m[20, 21] = 7  # stray
    write_tif(tmp_path / "img.tif", _image(0))
    write_tif(tmp_path / "msk.tif", m)
    rows = [{"image_path": "img.tif", "mask_path": "msk.tif", "row_off": r, "col_off": c,
             "patch_size": S} for r, c in ((0, 0), (16, 16))]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "w.csv", index=False)
    ds = CSVWindowedSegmentationDataset(tmp_path / "w.csv", n_classes=3)
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), m[:S, :S].astype(np.int64))
    with pytest.raises(InputDataError, match=r"msk\.tif window \(16, 16, 16\): mask value 7"):
        ds[1]


def _offline_python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` with NO_ALBUMENTATIONS_UPDATE unset and PyPI unreachable (a proxy
    that refuses connections): albumentations' update check, if it runs, warns on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("smt_tools.train._targets", "build_transforms([{'_target_': 'albumentations.HorizontalFlip'}], 'a')"),
        ("smt_tools.config._targets", "resolve_target('albumentations.HorizontalFlip', 'a')"),
    ],
)  # fmt: skip
def test_albumentations_import_makes_no_update_check(module: str, call: str) -> None:
    pytest.importorskip("albumentations")
    bare = _offline_python("import albumentations")
    assert "version info" in bare.stderr  # the noise this guards against, offline
    name = call.split("(")[0]
    done = _offline_python(
        f"import os, sys; from {module} import {name}; {call}; "
        "assert 'albumentations' in sys.modules; print(os.environ['NO_ALBUMENTATIONS_UPDATE'])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "version info" not in done.stderr and "NO_ALBUMENTATIONS_UPDATE" not in done.stderr


def test_uint8_lookup_is_numpy_take_with_and_without_opencv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 8-bit class lookup gives ``np.take``'s array whichever implementation runs."""
    from smt_tools.train import _base

    rng = np.random.default_rng(0)
    table = rng.integers(0, 256, 256).astype(np.uint8)
    raw = np.concatenate([np.arange(256, dtype=np.uint8), rng.integers(0, 256, 256 * 63)])
    raw = raw.astype(np.uint8).reshape(64, 256)
    expected = np.take(table, raw)
    fast = _base._lookup_u8(table, raw)
    assert fast.dtype == np.uint8 and np.array_equal(fast, expected)
    monkeypatch.setattr(_base, "_cv2_module", False)  # OpenCV not installed
    assert np.array_equal(_base._lookup_u8(table, raw), expected)
    big = rng.integers(0, 256, (600, 600)).astype(np.uint8)  # above the one-thread size
    assert np.array_equal(_base._lookup_u8(table, big), np.take(table, big))
