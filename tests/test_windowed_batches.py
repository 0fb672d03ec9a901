"""Batches written in place (smt_tools.train._batch): the windowed dataset's ``__getitems__``
writes a DataLoader batch into one tensor per key and ``collate_batch`` hands those tensors on;
with workers a default-output batch of 8-bit windows crosses as uint8 and is widened on
arrival. Every path gives exactly the batch ``default_collate`` makes of the single items."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, default_collate  # noqa: E402

from smt_tools.train import CSVWindowedSegmentationDataset  # noqa: E402
from smt_tools.train._batch import (  # noqa: E402
    _WidenOnArrival,
    collate_batch,
    feeds_collate_batch,
    widen_batch,
)
from smt_tools.train._direct import read_inside  # noqa: E402
from smt_tools.train.datasets import warm_worker  # noqa: E402
from tests.test_windowed_speedups import S, write_grid  # noqa: E402

#: (scene, row_off, col_off): inside, on the edge (padded), and on the second scene
WINDOWS = [(0, 0, 0), (1, 32, 48), (0, 64, 80), (1, 0, 16), (0, 16, 32), (1, 60, 0), (0, 48, 8)]
ORDER = [4, 1, 6, 5, 0, 3, 2]  # shuffled: batches mix scenes and edge windows


@pytest.fixture
def grid_csv(tmp_path: Path) -> Path:
    return write_grid(tmp_path, WINDOWS)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


KINDS = [  # (compact_batches, scale): default and compact output, with and without an offset
    (False, None),
    (False, [10, 200]),
    (True, None),
    (True, [10, 200]),
]


@pytest.mark.parametrize(("compact", "scale"), KINDS)
def test_batch_items_are_the_single_items_and_collate_without_a_copy(
    grid_csv: Path, compact: bool, scale: list[int] | None
) -> None:
    ds = CSVWindowedSegmentationDataset(
        grid_csv, n_classes=5, class_values=[1, 2, 3, 4, 5], scale=scale, compact_batches=compact
    )
    asked = [(6, 1), 0, 2, (5, 0), 3]
    items = ds.__getitems__(asked)
    singles = [ds[a] for a in asked]
    for item, single in zip(items, singles, strict=True):
        _same(item, single)
    batch = collate_batch(items)
    _same(batch, default_collate(singles))
    assert batch["image"].data_ptr() == items[0]["image"].data_ptr()  # the rows, not a copy
    assert batch["image"].dtype == (torch.uint8 if compact else torch.float32)
    assert batch["mask"].dtype == (torch.uint8 if compact else torch.int64)


@pytest.mark.parametrize("compact", [False, True])
def test_loaders_give_the_default_collate_batches_with_0_and_2_workers(
    grid_csv: Path, compact: bool
) -> None:
    ds = CSVWindowedSegmentationDataset(
        grid_csv, n_classes=5, class_values=[1, 2, 3, 4, 5], compact_batches=compact
    )
    expected = [default_collate([ds[i] for i in ORDER[j : j + 3]]) for j in range(0, 7, 3)]
    for workers in (0, 2):
        for collate in (collate_batch, None):
            loader = DataLoader(
                ds,
                batch_size=3,
                sampler=ORDER,
                num_workers=workers,
                worker_init_fn=warm_worker if workers else None,
                collate_fn=collate,
            )
            got = list(loader)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                _same(a, b)


def test_a_uint8_batch_widened_on_arrival_is_the_float32_formula() -> None:
    """Every uint8 value, with an offset and without: (x - offset) * factor in float32, and
    the class mask widened; also through a pickle round trip (what a worker sends)."""
    raw = torch.arange(256, dtype=torch.uint8).reshape(2, 2, 8, 8)
    mask = (torch.arange(128, dtype=torch.uint8) % 7).reshape(2, 8, 8)
    for lo, hi in ((0.0, 255.0), (10.0, 200.0)):
        factor = np.float32(1.0 / (hi - lo))
        params = (float(np.float32(lo)), float(factor))
        expected = np.subtract(raw.numpy(), np.float32(lo), dtype=np.float32) * factor
        got = widen_batch(raw, mask, params, torch.int64)
        np.testing.assert_array_equal(got["image"].numpy(), expected)
        assert got["mask"].dtype == torch.int64 and torch.equal(got["mask"], mask.long())
        sent = pickle.loads(pickle.dumps(_WidenOnArrival(raw, mask, params, torch.int64)))
        assert type(sent) is dict
        _same(sent, got)


def test_batches_of_different_window_sizes_fall_back_to_single_items(grid_csv: Path) -> None:
    frame = pd.read_csv(grid_csv)
    frame.loc[1, "patch_size"] = 8
    mixed = grid_csv.with_name("mixed.csv")
    frame.to_csv(mixed, index=False)
    ds = CSVWindowedSegmentationDataset(mixed, n_classes=5, class_values=[1, 2, 3, 4, 5])
    items = ds.__getitems__([0, 1, 2])
    assert items[1]["image"].shape == (3, 8, 8)
    for i, item in zip([0, 1, 2], items, strict=True):
        _same(item, ds[i])
    with pytest.raises(RuntimeError):  # what default_collate says about unequal sizes
        collate_batch(items)


def test_collate_batch_of_ordinary_items_is_default_collate() -> None:
    items = [{"image": torch.full((2, 3), float(k)), "mask": torch.tensor([k])} for k in range(4)]
    _same(collate_batch(items), default_collate(items))
    pairs = [(torch.ones(2) * k, k) for k in range(3)]
    a, b = collate_batch(pairs), default_collate(pairs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # rows of a tensor, but not in order: stacked, not handed on
    base = torch.arange(12.0).reshape(3, 4)
    swapped = [{"x": base[1]}, {"x": base[0]}, {"x": base[2]}]
    got = collate_batch(swapped)
    assert torch.equal(got["x"], base[[1, 0, 2]]) and got["x"].data_ptr() != base.data_ptr()


def test_inside_reads_equal_rasterio_reads(grid_csv: Path) -> None:
    with rasterio.open(grid_csv.parent / "img1.tif") as ds:
        for r, c, bands in ((0, 0, None), (32, 48, [3, 1]), (54, 74, [2])):
            got = read_inside(ds, "img1.tif", r, c, S, S, bands)
            assert got is not None
            want = ds.read(bands or [1, 2, 3], window=Window(c, r, S, S))
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert read_inside(ds, "img1.tif", 60, 0, S, S, None) is None  # past the edge
        assert read_inside(ds, "img1.tif", -1, 0, S, S, None) is None
        assert read_inside(ds, "img1.tif", 0, 0, S, S, [4]) is None  # no band 4: read_window


def test_a_worker_fetcher_of_collate_batch_is_recognised(grid_csv: Path) -> None:
    """Only a DataLoader worker whose collate_fn is collate_batch gets the batch sent as
    uint8 alone (the float32 rows it would not send are left unwritten there)."""

    class Probe(CSVWindowedSegmentationDataset):
        def __getitems__(self, indices: Any) -> list[dict[str, torch.Tensor]]:  # type: ignore[override]
            flag = feeds_collate_batch(sys._getframe(1))
            return [{"flag": torch.tensor(flag)} for _ in indices]

    ds = Probe(grid_csv, n_classes=5, class_values=[1, 2, 3, 4, 5])
    for workers, collate, want in (
        (2, collate_batch, True),
        (2, None, False),
        (0, collate_batch, False),
    ):
        loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
        assert next(iter(loader))["flag"].tolist() == [want, want]
    assert not feeds_collate_batch(sys._getframe(0))


def test_widened_batches_reuse_memory_only_once_it_is_free() -> None:
    """A widened batch's memory goes back to the pool only when nothing uses it any more
    (a view or a numpy array of it keeps it); then the next batch reuses it."""
    raw = torch.full((2, 3, 8, 8), 51, dtype=torch.uint8)
    mask = torch.ones((2, 8, 8), dtype=torch.uint8)
    params = (0.0, float(np.float32(1.0 / 255.0)))
    first = widen_batch(raw, mask, params, torch.int64)
    ptr = first["image"].data_ptr()
    view, array = first["image"][1], first["image"].numpy()
    expected = array.copy()
    del first
    for _ in range(3):  # the view and the array keep the memory: never handed out again
        again = widen_batch(raw + 1, mask, params, torch.int64)
        assert again["image"].data_ptr() != ptr
        del again
    np.testing.assert_array_equal(array, expected)
    assert torch.equal(view, torch.from_numpy(expected[1]))
    del view, array
    reused = widen_batch(raw, mask, params, torch.int64)
    assert reused["image"].data_ptr() == ptr  # free now: reused, with the new values
    np.testing.assert_array_equal(reused["image"].numpy(), expected)
