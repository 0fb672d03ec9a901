"""The embedding pipeline: raw uint8 batches through the loader, preprocessing on the model's
device, windows in on-disk order, embeddings back in the caller's row order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smt_tools.embeddings.dataset import TileBatchDataset, disk_order_batches, preprocess_batch
from smt_tools.embeddings.model import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_model
from tests.rasters import write_tif

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

MEAN = np.array(IMAGENET_MEAN, np.float64)[:, None, None]
STD = np.array(IMAGENET_STD, np.float64)[:, None, None]

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.gpu),
]


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return name


# --- preprocessing on the device ------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_uint8_window_preprocessed_on_device_equals_hand_computed(device: str) -> None:
    """A (3, 4, 6) uint8 window with value 40c + 6i + j: shortest edge 4 = target, so no
    resize; the centre 2 x 2 crop is rows 1..2, columns 2..3; then /255 and ImageNet mean/std."""
    dev = _device(device)
    c, i, j = np.meshgrid(np.arange(3), np.arange(4), np.arange(6), indexing="ij")
    window = (40 * c + 6 * i + j).astype(np.uint8)
    spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 255.0), shortest_edge=4, crop=2)
    out = preprocess_batch(torch.from_numpy(window[None]).to(dev), spec)
    assert out.device.type == dev and out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    crop = window[:, 1:3, 2:4].astype(np.float64)
    expected = (crop / 255.0 - MEAN) / STD
    # e.g. channel 0, top-left: value 8 -> (8/255 - 0.485) / 0.229 = -1.980917...
    assert expected[0, 0, 0] == pytest.approx((8 / 255 - 0.485) / 0.229)
    np.testing.assert_allclose(out[0].cpu().numpy(), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_uint16_scale_clip_resize_of_constant_windows(device: str) -> None:
    """One band of uint16, scale [0, 1000]: 250 -> 0.25, 1500 -> clipped to 1.0; a constant
    window stays constant through the antialiased bicubic resize 16 -> 8 and is repeated to
    three channels."""
    dev = _device(device)
    raw = np.stack([np.full((1, 16, 16), v, np.uint16) for v in (250, 1500)])
    spec = Preprocess(bands=(1,), scale=(0.0, 1000.0), shortest_edge=8, crop=6)
    out = preprocess_batch(torch.from_numpy(raw).to(dev), spec).cpu().numpy()
    assert out.shape == (2, 3, 6, 6)
    for k, v in enumerate((0.25, 1.0)):
        np.testing.assert_allclose(out[k], np.broadcast_to((v - MEAN) / STD, (3, 6, 6)), atol=2e-6)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 8, 12), (2, 3, 6, 6)])
def test_float_input_is_not_modified(shape: tuple[int, ...]) -> None:
    """Crop-only, resize and cropped paths all leave the caller's float32 tensor untouched."""
    raw = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    before = raw.clone()
    spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 1.0), shortest_edge=8, crop=6)
    out = preprocess_batch(raw, spec, cropped=shape[-1] == 6)
    assert out.shape == (2, 3, 6, 6) and torch.equal(raw, before)


@pytest.mark.gpu
def test_device_preprocessing_matches_cpu_with_resize() -> None:
    """The same batched ops on GPU and CPU: equal up to float rounding (resize 64 -> 32)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (4, 3, 64, 80), dtype=torch.uint8, generator=g)
    spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 255.0), shortest_edge=32, crop=28)
    cpu = preprocess_batch(raw, spec)
    gpu = preprocess_batch(raw.cuda(), spec).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)


# --- on-disk order --------------------------------------------------------------------------


def _frame(rows: list[tuple[str, int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tile_id": np.arange(100, 100 + len(rows), dtype=np.int64),
            "image_path": [r[0] for r in rows],
            "row_off": [r[1] for r in rows],
            "col_off": [r[2] for r in rows],
            "height": [r[3] for r in rows],
            "width": [r[4] for r in rows],
        }
    )


def test_disk_order_batches_groups_shape_then_image_row_column() -> None:
    frame = _frame(
        [
            ("b.tif", 0, 0, 8, 8),  # 0
            ("a.tif", 8, 0, 8, 8),  # 1
            ("a.tif", 0, 8, 8, 8),  # 2
            ("a.tif", 0, 16, 8, 4),  # 3  narrower edge window: a batch of its shape
            ("a.tif", 0, 0, 8, 8),  # 4
            ("b.tif", 0, 8, 8, 8),  # 5
        ]
    )
    batches = disk_order_batches(frame, 2)
    assert [b.tolist() for b in batches] == [[3], [4, 2], [1, 0], [5]]
    assert all(b.dtype == np.int64 for b in batches)
    assert disk_order_batches(frame.iloc[:0], 2) == []


def test_loader_items_are_raw_uint8_in_disk_order(tmp_path: Path) -> None:
    """The dataset hands over the raster's own uint8 values (no float conversion) with the
    caller's row positions; outside the raster the fill is scale[0]."""
    data = np.arange(3 * 16 * 16, dtype=np.int64).reshape(3, 16, 16) % 251
    img = write_tif(tmp_path / "a.tif", data.astype(np.uint8))
    frame = _frame([(str(img), 8, 8, 8, 8), (str(img), 0, 0, 8, 8), (str(img), 12, 12, 8, 8)])
    spec = Preprocess(bands=(3, 2, 1), scale=(7.0, 255.0), shortest_edge=8, crop=8)
    ds = TileBatchDataset(frame, spec, 8)
    assert len(ds) == 1
    pos, raw, cropped = ds[0]
    assert cropped is True  # no resize, crop = whole window
    assert pos.tolist() == [1, 0, 2] and raw.dtype == torch.uint8 and raw.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(raw[0].numpy(), data[::-1, 0:8, 0:8])
    np.testing.assert_array_equal(raw[1].numpy(), data[::-1, 8:16, 8:16])
    edge = raw[2].numpy()
    np.testing.assert_array_equal(edge[:, :4, :4], data[::-1, 12:16, 12:16])
    assert (edge[:, 4:, :] == 7).all() and (edge[:, :, 4:] == 7).all()


def test_reader_takes_the_centre_crop_only_when_no_resize_follows(tmp_path: Path) -> None:
    """Shortest edge = window size: the reader sends only the centre crop (rows/columns 2..5
    of an 8 x 8 window for crop 4), and preprocessing it gives exactly the model input of the
    whole window; otherwise (resize 8 -> 16) the whole window travels."""
    data = (np.arange(3 * 8 * 8).reshape(3, 8, 8) * 3 % 256).astype(np.uint8)
    img = write_tif(tmp_path / "a.tif", data)
    frame = _frame([(str(img), 0, 0, 8, 8)])
    crop_spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 255.0), shortest_edge=8, crop=4)
    _, raw, cropped = TileBatchDataset(frame, crop_spec, 4)[0]
    assert cropped is True and raw.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(raw[0].numpy(), data[:, 2:6, 2:6])
    whole = torch.from_numpy(data[None])
    assert torch.equal(
        preprocess_batch(raw, crop_spec, cropped=True), preprocess_batch(whole, crop_spec)
    )
    resize_spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 255.0), shortest_edge=16, crop=12)
    _, raw, cropped = TileBatchDataset(frame, resize_spec, 4)[0]
    assert cropped is False and torch.equal(raw, whole)


# --- embeddings in the caller's row order ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_embeddings import save_tiny_dinov2

    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny_pipeline"))


def _reference(frame: pd.DataFrame, loaded: object, spec: Preprocess) -> np.ndarray:
    """Embeddings row by row, by hand: rasterio read, numpy scale / crop / normalise, model."""
    import rasterio
    from rasterio.windows import Window

    rows = []
    for r in frame.itertuples():
        with rasterio.open(r.image_path) as src:
            win = src.read(list(spec.bands), window=Window(r.col_off, r.row_off, r.width, r.height))
        x = np.clip(
            (win.astype(np.float64) - spec.scale[0]) / (spec.scale[1] - spec.scale[0]), 0, 1
        )
        top, left = (r.height - spec.crop) // 2, (r.width - spec.crop) // 2
        x = x[:, top : top + spec.crop, left : left + spec.crop]
        rows.append((x - MEAN) / STD)
    pixels = torch.from_numpy(np.stack(rows).astype(np.float32))
    with torch.inference_mode():
        out = loaded.model(pixel_values=pixels).last_hidden_state[:, 0]  # type: ignore[attr-defined]
    return out.numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_embeddings_return_in_caller_row_order(tiny: Path, tmp_path: Path, workers: int) -> None:
    """Two images of 64 x 64 cut in 32 px windows (no resize: shortest edge 32, crop 28),
    rows shuffled across images: extract_embeddings gives row k the embedding of row k's window
    (hand-computed reference), iter_embeddings names every row by its tile id."""
    from smt_tools.embeddings.extract import extract_embeddings, iter_embeddings

    rng = np.random.default_rng(3)
    rows = []
    for name in ("b.tif", "a.tif"):
        img = write_tif(tmp_path / name, rng.integers(0, 256, (3, 64, 64), dtype=np.uint8))
        rows += [(str(img), r, c, 32, 32) for r in (0, 32) for c in (0, 32)]
    frame = _frame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)
    loaded = load_model(str(tiny))
    spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 255.0), shortest_edge=32, crop=28)
    ref = _reference(frame, loaded, spec)
    ids, emb = extract_embeddings(frame, loaded, spec, batch_size=3, num_workers=workers)
    np.testing.assert_array_equal(ids, frame["tile_id"].to_numpy())
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    got = list(
        iter_embeddings(frame, loaded, spec, batch_size=3, num_workers=workers, device="cpu")
    )
    assert [len(i) for i, _ in got] == [3, 3, 2]  # a.tif's 4 windows, then b.tif's
    order = np.concatenate([i for i, _ in got])
    paths = frame.set_index("tile_id").loc[order, "image_path"].tolist()
    assert paths == sorted(paths)
    by_id = dict(zip(frame["tile_id"].tolist(), ref, strict=True))
    for b_ids, b_emb in got:
        np.testing.assert_allclose(b_emb, np.stack([by_id[t] for t in b_ids]), atol=1e-5)
