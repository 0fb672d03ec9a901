"""Datasets read exact pixel values from hand-made GeoTIFFs; handles, grid, mixing, sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from smt_tools.errors import ConfigError, InputDataError  # noqa: E402
from smt_tools.train import (  # noqa: E402
    CSVWindowedSegmentationDataset,
    RandomCropSegmentationDataset,
    build_weighted_sampler,
)
from tests.rasters import write_tif  # noqa: E402

H, W = 40, 50


def _image16() -> np.ndarray:
    """uint16 (3, H, W): band b pixel (r, c) = 1000 * b + 50 * r + c (up to 5,000: > 8 bits)."""
    r, c = np.mgrid[0:H, 0:W]
    return np.stack([1000 * b + 50 * r + c for b in (1, 2, 3)]).astype(np.uint16)


def _mask() -> np.ndarray:
    """uint8 (H, W): raw values 1..4 = (r + c) % 4 + 1, and 0 (nodata) in the first 3 columns."""
    r, c = np.mgrid[0:H, 0:W]
    m = ((r + c) % 4 + 1).astype(np.uint8)
    m[:, :3] = 0
    return m


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    img = write_tif(tmp_path / "img.tif", _image16())
    msk = write_tif(tmp_path / "msk.tif", _mask())
    return img, msk


def _windows_csv(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    p = tmp_path / "windows.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_windowed_exact_values_16bit_and_padding(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    csv = _windows_csv(
        tmp_path,
        [
            {
                "image_path": img.name,
                "mask_path": msk.name,
                "row_off": 0,
                "col_off": 0,
                "patch_size": 8,
            },
            {
                "image_path": str(img),
                "mask_path": str(msk),
                "row_off": 30,
                "col_off": 40,
                "patch_size": 16,
            },
        ],
    )
    ds = CSVWindowedSegmentationDataset(csv, n_classes=4, class_values=[1, 2, 3, 4])
    assert len(ds) == 2
    a = ds[0]
    raw = _image16()[:, :8, :8].astype(np.float64) / 65535
    assert a["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
    np.testing.assert_allclose(a["image"].numpy(), raw, rtol=1e-6)  # 16-bit kept
    exp = _mask()[:8, :8].astype(np.int64) - 1
    exp[_mask()[:8, :8] == 0] = 255  # unmapped raw value 0 -> ignore
    np.testing.assert_array_equal(a["mask"].numpy(), exp)
    # window past the bottom-right edge: 10x10 inside, the rest padded
    b = ds[1]
    assert b["image"].shape == (3, 16, 16)
    np.testing.assert_allclose(
        b["image"][:, :10, :10].numpy(), _image16()[:, 30:, 40:] / 65535, rtol=1e-6
    )
    assert float(b["image"][:, 10:, :].abs().sum()) == 0.0
    np.testing.assert_array_equal(
        b["mask"][:10, :10].numpy(), _mask()[30:, 40:].astype(np.int64) - 1
    )
    assert bool((b["mask"][10:, :] == 255).all()) and bool((b["mask"][:, 10:] == 255).all())


def test_windowed_bands_scale_and_remap(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    csv = _windows_csv(
        tmp_path,
        [
            {
                "image_path": str(img),
                "mask_path": str(msk),
                "row_off": 4,
                "col_off": 5,
                "patch_size": 4,
            }
        ],
    )
    ds = CSVWindowedSegmentationDataset(
        csv, n_classes=2, bands=[2], scale=[0, 10000], class_remap={1: 0, 2: 0, 3: 1, 4: 1}
    )
    item = ds[0]
    np.testing.assert_allclose(
        item["image"].numpy(), _image16()[1:2, 4:8, 5:9] / 10000.0, rtol=1e-6
    )
    np.testing.assert_array_equal(item["mask"].numpy(), (_mask()[4:8, 5:9] >= 3).astype(np.int64))


def test_windowed_raw_value_out_of_range_is_clear_error(
    tmp_path: Path, scene: tuple[Path, Path]
) -> None:
    img, msk = scene
    csv = _windows_csv(
        tmp_path,
        [
            {
                "image_path": str(img),
                "mask_path": str(msk),
                "row_off": 0,
                "col_off": 5,
                "patch_size": 4,
            }
        ],
    )
    ds = CSVWindowedSegmentationDataset(csv, n_classes=4)  # raw 4 is not < 4
    with pytest.raises(InputDataError, match=r"mask value 4 is not a class index.*class_values"):
        ds[0]


def test_windowed_columns_exclusion_and_folds(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    rows = [
        {"img": str(img), "msk": str(msk), "r": 0, "c": 8 * i, "excluded": i == 1,
         "sampler_weight": 0.0 if i == 2 else 1.0, "fold": i % 2}
        for i in range(4)
    ]  # fmt: skip
    csv = _windows_csv(tmp_path, rows)
    kw = dict(image_column="img", mask_column="msk", row_off_column="r", col_off_column="c",
              patch_size=8, n_classes=5)  # fmt: skip
    assert len(CSVWindowedSegmentationDataset(csv, **kw)) == 4  # type: ignore[arg-type]
    kept = CSVWindowedSegmentationDataset(csv, drop_excluded=True, **kw)  # type: ignore[arg-type]
    assert kept.frame["c"].tolist() == [0, 24]
    val = CSVWindowedSegmentationDataset(csv, folds=[1], **kw)  # type: ignore[arg-type]
    assert val.frame["c"].tolist() == [8, 24]
    with pytest.raises(InputDataError, match="missing column"):
        CSVWindowedSegmentationDataset(csv, n_classes=5)


def test_training_folds_respect_split_buffer_and_holdout(
    tmp_path: Path, scene: tuple[Path, Path]
) -> None:
    """Rows listing fold k in buffer_excluded_folds stay out of fold k's training set."""
    img, msk = scene
    folds = [0, 1, 1, 2, -1]
    buffers = ["", "0", "", "0;-1", ""]
    rows = [
        {"image_path": str(img), "mask_path": str(msk), "row_off": 0, "col_off": 8 * i,
         "patch_size": 8, "fold": f, "buffer_excluded_folds": b}
        for i, (f, b) in enumerate(zip(folds, buffers, strict=True))
    ]  # fmt: skip
    csv = _windows_csv(tmp_path, rows)
    train0 = CSVWindowedSegmentationDataset(csv, n_classes=5, exclude_folds=[0, -1])
    assert train0.frame["col_off"].tolist() == [16]  # fold 1 buffered for 0, fold 2 too, -1 holdout
    train1 = CSVWindowedSegmentationDataset(csv, n_classes=5, exclude_folds=[1, -1])
    assert train1.frame["col_off"].tolist() == [0, 24]


def _scenes_csv(tmp_path: Path, masks: list[np.ndarray], name: str = "scenes.csv") -> Path:
    """Scenes whose uint8 image band 1 = 10 * raw mask value (so alignment is checkable)."""
    rows = []
    for k, m in enumerate(masks):
        img = np.stack([m * 10, m * 0 + k, m * 0 + 7]).astype(np.uint8)
        write_tif(tmp_path / f"s{k}_img.tif", img)
        write_tif(tmp_path / f"s{k}_msk.tif", m.astype(np.uint8))
        rows.append({"image": f"s{k}_img.tif", "mask": f"s{k}_msk.tif", "group": f"g{k}"})
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_random_crop_exact_values(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"image": [img.name], "mask": [msk.name]}).to_csv(csv, index=False)
    ds = RandomCropSegmentationDataset(
        csv, crop_size=12, samples_per_epoch=5, n_classes=4, class_values=[1, 2, 3, 4], seed=3
    )
    assert len(ds) == 5
    for k in range(5):
        i, r, c = ds.position(k)
        assert i == 0 and 0 <= r <= H - 12 and 0 <= c <= W - 12
        item = ds[k]
        np.testing.assert_allclose(
            item["image"].numpy(), _image16()[:, r : r + 12, c : c + 12] / 65535, rtol=1e-6
        )
        raw = _mask()[r : r + 12, c : c + 12].astype(np.int64)
        np.testing.assert_array_equal(item["mask"].numpy(), np.where(raw == 0, 255, raw - 1))
    # same seed + epoch -> same crops; another epoch -> other crops
    again = [ds.position(k) for k in range(5)]
    ds.set_epoch(1)
    assert [ds.position(k) for k in range(5)] != again


def test_grid_mode_covers_every_pixel(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"image": [str(img)], "mask": [str(msk)]}).to_csv(csv, index=False)
    ds = RandomCropSegmentationDataset(
        csv, crop_size=16, grid_mode=True, grid_step=12, n_classes=5, samples_per_epoch=1
    )
    seen = np.zeros((H, W), dtype=np.int64)
    for k in range(len(ds)):
        _, r, c = ds.position(k)
        item = ds[k]
        seen[r : r + 16, c : c + 16] += 1
        np.testing.assert_array_equal(item["mask"].numpy(), _mask()[r : r + 16, c : c + 16])
    assert seen.min() >= 1  # every pixel covered
    # rows 0, 12, 24 (24 + 16 = 40 ends at the edge); cols 0, 12, 24 and 34 (shifted to the edge)
    assert sorted({ds.position(k)[1] for k in range(len(ds))}) == [0, 12, 24]
    assert sorted({ds.position(k)[2] for k in range(len(ds))}) == [0, 12, 24, 34]
    assert len(ds) == 12


def test_lru_eviction_closes_handles(tmp_path: Path) -> None:
    m = np.ones((20, 20), dtype=np.uint8)
    csv = _scenes_csv(tmp_path, [m, m * 2, m * 3])
    ds = RandomCropSegmentationDataset(csv, crop_size=8, n_classes=4, lru_cache_size=2, seed=0)
    ds._crop(0, 0, 0)  # opens scene 0 image + mask
    h_img = ds.cache.get(ds.images[0])
    h_msk = ds.cache.get(ds.masks[0])
    assert not h_img.closed and not h_msk.closed
    ds._crop(1, 0, 0)  # two more handles: both of scene 0 are evicted and closed
    assert h_img.closed and h_msk.closed
    assert len(ds.cache) == 2
    ds.close()
    assert len(ds.cache) == 0


def _stripes(k: int) -> np.ndarray:
    r, c = np.mgrid[0:32, 0:32]
    return ((r // (4 + k) + c // 5 + k) % 3 + 1).astype(np.uint8)


@pytest.mark.parametrize("mix", ["cutmix", "classmix", "both"])
def test_cutmix_classmix_keep_image_and_mask_aligned(tmp_path: Path, mix: str) -> None:
    csv = _scenes_csv(tmp_path, [_stripes(0), np.full((32, 32), 3, np.uint8), _stripes(2)])
    kw = dict(crop_size=16, samples_per_epoch=30, n_classes=4, seed=11,
              class_balanced_sampling=True)  # fmt: skip
    plain = RandomCropSegmentationDataset(csv, **kw)  # type: ignore[arg-type]
    mixed = RandomCropSegmentationDataset(
        csv,
        cutmix_prob=1.0 if mix in ("cutmix", "both") else 0.0,
        classmix_prob=1.0 if mix in ("classmix", "both") else 0.0,
        augmentation_list=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
        **kw,  # type: ignore[arg-type]
    )
    changed = 0
    for k in range(len(mixed)):
        item = mixed[k]
        band1 = np.rint(item["image"][0].numpy() * 255).astype(np.int64)
        np.testing.assert_array_equal(band1, item["mask"].numpy() * 10)
        base = plain[k]["mask"].numpy()
        m = item["mask"].numpy()
        changed += int(not (np.array_equal(m, base) or np.array_equal(m, base[:, ::-1])))
    assert changed > 5  # mixing really happened


def test_soft_labels_are_one_hot(tmp_path: Path, scene: tuple[Path, Path]) -> None:
    img, msk = scene
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"image": [str(img)], "mask": [str(msk)]}).to_csv(csv, index=False)
    ds = RandomCropSegmentationDataset(
        csv, crop_size=8, n_classes=4, class_values=[1, 2, 3, 4], soft_labels=True, seed=0,
        samples_per_epoch=3,
    )  # fmt: skip
    for k in range(3):
        _, r, c = ds.position(k)
        soft = ds[k]["mask"]
        assert soft.shape == (4, 8, 8) and soft.dtype == torch.float32
        raw = _mask()[r : r + 8, c : c + 8]
        np.testing.assert_array_equal(soft.sum(0).numpy(), (raw != 0).astype(np.float32))
        hard = soft.argmax(0).numpy()
        np.testing.assert_array_equal(hard[raw != 0], raw[raw != 0] - 1)


def test_class_balanced_image_weights(tmp_path: Path) -> None:
    a = np.ones((16, 16), np.uint8)  # all class 1
    b = np.ones((16, 16), np.uint8)
    b[:, 8:] = 2  # half rare class
    csv = _scenes_csv(tmp_path, [a, b])
    plain = RandomCropSegmentationDataset(csv, crop_size=8, n_classes=3)
    np.testing.assert_allclose(plain.image_weights, [0.5, 0.5])
    bal = RandomCropSegmentationDataset(csv, crop_size=8, n_classes=3, class_balanced_sampling=True)
    # global shares f = [.75, .25]; a: 1/.75, b: .5/.75 + .5/.25 -> b twice as likely as a
    np.testing.assert_allclose(bal.image_weights, [1 / 3, 2 / 3])


def test_workers_and_serialized_reads_give_same_batches(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    csv = _scenes_csv(tmp_path, [_stripes(0), _stripes(1)])
    kw = dict(crop_size=8, samples_per_epoch=8, n_classes=4, seed=5, cutmix_prob=0.5)
    ds0 = RandomCropSegmentationDataset(csv, **kw)  # type: ignore[arg-type]
    ds2 = RandomCropSegmentationDataset(
        csv, serialize_rasterio_reads=True, rasterio_lock_dir=str(tmp_path / "locks"),
        reopen_rasterio_on_read=True, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    b0 = [b["mask"] for b in DataLoader(ds0, batch_size=4, num_workers=0)]
    b2 = [b["mask"] for b in DataLoader(ds2, batch_size=4, num_workers=2)]
    for x, y in zip(b0, b2, strict=True):
        assert torch.equal(x, y)
    assert any((tmp_path / "locks").iterdir())


def test_n_first_rows_and_bad_params(tmp_path: Path) -> None:
    m = np.ones((16, 16), np.uint8)
    csv = _scenes_csv(tmp_path, [m, m, m])
    ds = RandomCropSegmentationDataset(csv, crop_size=8, n_classes=2, n_first_rows_to_read=2)
    assert len(ds.images) == 2
    with pytest.raises(ConfigError, match="cutmix_prob"):
        RandomCropSegmentationDataset(csv, crop_size=8, n_classes=2, cutmix_prob=1.5)
    with pytest.raises(ConfigError, match="class_values"):
        RandomCropSegmentationDataset(csv, crop_size=8, n_classes=2, class_values=[1, 2, 3])


def test_weighted_sampler_draws_rare_rows_more_often() -> None:
    frame = pd.DataFrame({"sampler_weight": [0.05] * 90 + [1.0] * 10})
    sampler = build_weighted_sampler(frame, num_samples=20_000, seed=0)
    draws = np.array(list(sampler))
    rare_share = float((draws >= 90).mean())
    expected = 10 / (10 + 90 * 0.05)  # 0.6897
    assert abs(rare_share - expected) < 0.015  # uniform sampling would give 0.10
    # same seed, same draws
    assert list(build_weighted_sampler(frame, num_samples=50, seed=0)) == list(
        build_weighted_sampler(frame, num_samples=50, seed=0)
    )
    # zero weight is never drawn
    w = pd.DataFrame({"sampler_weight": [0.0, 1.0, 1.0]})
    assert 0 not in set(build_weighted_sampler(w, num_samples=500, seed=1))


def test_weighted_sampler_errors() -> None:
    with pytest.raises(InputDataError, match=r"needs a .sampler_weight. column.*build-balanced"):
        build_weighted_sampler(pd.DataFrame({"x": [1]}), source="b.csv")
    with pytest.raises(InputDataError, match="every sampler_weight is 0"):
        build_weighted_sampler(pd.DataFrame({"sampler_weight": [0.0, 0.0]}))
    with pytest.raises(InputDataError, match="finite number"):
        build_weighted_sampler(pd.DataFrame({"sampler_weight": [1.0, float("nan")]}))


def _collate(ds: object, n: int) -> dict[str, torch.Tensor]:
    from torch.utils.data import default_collate

    return default_collate([ds[k] for k in range(n)])  # type: ignore[index]


@pytest.mark.parametrize(
    "kw",
    [
        {},  # uint8 scene: raw crop + (0, 1/255)
        {"scale": [5, 205]},  # offset != 0: (x - 5) / 200 on the device
        {"augmentation_list": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]},
        {"cutmix_prob": 1.0, "classmix_prob": 0.5},
        {"soft_labels": True},
    ],
    ids=["plain", "offset", "augmented", "mixing", "soft"],
)
def test_compact_batches_prepare_to_the_same_tensors(tmp_path: Path, kw: dict[str, object]) -> None:
    from smt_tools.train import prepare_batch

    csv = _scenes_csv(tmp_path, [_stripes(0), _stripes(1), _stripes(2)])
    base = dict(crop_size=16, samples_per_epoch=12, n_classes=4, seed=2, **kw)
    plain = RandomCropSegmentationDataset(csv, **base)  # type: ignore[arg-type]
    compact = RandomCropSegmentationDataset(csv, compact_batches=True, **base)  # type: ignore[arg-type]
    a, b = _collate(plain, 12), _collate(compact, 12)
    raw_image = "augmentation_list" not in kw
    assert b["image"].dtype == (torch.uint8 if raw_image else torch.float32)
    assert b["mask"].dtype == (torch.float32 if kw.get("soft_labels") else torch.uint8)
    assert b["image_scale"].shape == (12, 2) and "image_scale" not in a
    img_a, msk_a = prepare_batch(a)
    img_b, msk_b = prepare_batch(b)
    assert img_a.dtype == img_b.dtype == torch.float32
    assert torch.equal(img_a, img_b)  # bit-identical scaling, not merely close
    assert torch.equal(msk_a, msk_b) and msk_b.dtype == msk_a.dtype
    if not kw.get("soft_labels"):
        assert msk_b.dtype == torch.int64


def test_compact_batches_mixed_dtypes_and_wide_classes(
    tmp_path: Path, scene: tuple[Path, Path]
) -> None:
    from torch.utils.data import default_collate

    from smt_tools.train import prepare_batch

    img16, msk = scene
    img8 = write_tif(tmp_path / "img8.tif", (_image16() // 40).astype(np.uint8))
    row = {"mask_path": msk.name, "row_off": 4, "col_off": 6, "patch_size": 16}
    csv = _windows_csv(
        tmp_path, [{"image_path": img8.name, **row}, {"image_path": img16.name, **row}]
    )
    plain = CSVWindowedSegmentationDataset(csv, n_classes=5)
    compact = CSVWindowedSegmentationDataset(csv, n_classes=5, compact_batches=True)
    items = [compact[0], compact[1]]
    assert items[0]["image"].dtype == torch.uint8  # 8-bit travels raw
    assert items[1]["image"].dtype == torch.float32  # 16-bit is scaled in the worker
    assert items[1]["image_scale"].tolist() == [0.0, 1.0]
    img_a, msk_a = prepare_batch(default_collate([plain[0], plain[1]]))
    img_b, msk_b = prepare_batch(default_collate(items))  # one batch, both kinds
    assert torch.equal(img_a, img_b) and torch.equal(msk_a, msk_b)
    # more than 256 labels (or ignore_index > 255): int16 masks, same classes
    wide = CSVWindowedSegmentationDataset(
        csv, n_classes=300, ignore_index=300, compact_batches=True
    )
    assert wide[0]["mask"].dtype == torch.int16
    np.testing.assert_array_equal(wide[0]["mask"].numpy(), _mask()[4:20, 6:22])


def test_tagged_draws_get_their_own_augmentation(tmp_path: Path) -> None:
    """A row drawn several times in an epoch is augmented differently each time, and the
    batches do not depend on num_workers."""
    from torch.utils.data import DataLoader

    img = write_tif(tmp_path / "img.tif", np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16))
    msk = write_tif(tmp_path / "msk.tif", (np.arange(256).reshape(16, 16) % 3).astype(np.uint8))
    rows = [{"image_path": img.name, "mask_path": msk.name, "row_off": 0, "col_off": 0,
             "patch_size": 16, "sampler_weight": w} for w in (1.0, 0.0)]  # fmt: skip
    csv = _windows_csv(tmp_path, rows)
    aug = [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.VerticalFlip", "p": 0.5},
    ]
    ds = CSVWindowedSegmentationDataset(csv, n_classes=3, augmentation_list=aug, seed=4)
    sampler = build_weighted_sampler(ds, num_samples=16, seed=0, tag_draws=True)
    pairs = list(sampler)
    assert [row for row, _ in pairs] == [0] * 16 and [d for _, d in pairs] == list(range(16))
    # draw 0 is the plain index; later draws differ
    assert torch.equal(ds[(0, 0)]["mask"], ds[0]["mask"])
    seen = {ds[p]["mask"].numpy().tobytes() for p in pairs}
    assert len(seen) == 4  # all four flip combinations among 16 draws of the same window
    untagged = {ds[i]["mask"].numpy().tobytes() for i in build_weighted_sampler(ds, 16, seed=0)}
    assert len(untagged) == 1  # without tags every draw is the same copy
    b0 = [b["mask"] for b in DataLoader(ds, batch_size=4, sampler=sampler, num_workers=0)]
    b2 = [b["mask"] for b in DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(b0, b2, strict=True))


def test_weighted_sampler_refuses_random_crops(tmp_path: Path) -> None:
    """Random crops are virtual items, not CSV rows: weighting them by row would be silent
    nonsense, so it is a one-line error naming the fix."""
    csv = _scenes_csv(tmp_path, [_stripes(0), _stripes(1)])
    frame = pd.read_csv(csv)
    frame["sampler_weight"] = [1.0, 0.5]
    frame.to_csv(csv, index=False)
    ds = RandomCropSegmentationDataset(csv, crop_size=8, samples_per_epoch=40, n_classes=4)
    with pytest.raises(InputDataError, match=r"40 items from 2 rows.*class_balanced_sampling"):
        build_weighted_sampler(ds, seed=0)


def test_prepare_batch_leaves_the_batch_untouched() -> None:
    """A float32 image with its image_scale (a mixed batch promotes uint8 crops to float32) is
    scaled into a new tensor: preparing the same batch twice gives the same result."""
    from smt_tools.train import prepare_batch

    image = torch.full((2, 3, 4, 4), 204.0)
    batch = {
        "image": image,
        "mask": torch.zeros((2, 4, 4), dtype=torch.uint8),
        "image_scale": torch.tensor([[0.0, 1 / 255], [4.0, 1 / 200]], dtype=torch.float32),
    }
    first, mask = prepare_batch(batch)
    again, _ = prepare_batch(batch)
    assert torch.equal(batch["image"], torch.full((2, 3, 4, 4), 204.0))
    assert torch.equal(first, again) and mask.dtype == torch.int64
    assert first[0, 0, 0, 0].item() == pytest.approx(0.8) and first[1, 0, 0, 0].item() == 1.0
