"""Segmentation datasets that read windows of large GeoTIFFs on the fly (no tiles on disk).

- :class:`CSVWindowedSegmentationDataset`: one CSV row = one window (the balanced CSV written by
  ``build-balanced-dataset``: image_path, mask_path, row_off, col_off, patch_size).
- :class:`RandomCropSegmentationDataset`: a CSV of whole scenes (image, mask); random (or grid)
  square crops, optional class-balanced image choice, CutMix / ClassMix, soft labels.

Both return ``{"image": float32 tensor (bands, H, W), "mask": int64 tensor (H, W)}`` (soft
labels: float32 (n_classes, H, W), an all-zero vector on ignored pixels). Images are scaled to
[0, 1] with a per-DATASET range (``scale: [min, max]``, else the dtype's range: uint8 / 255,
uint16 / 65535; float data is used as is), so 16-bit data is never truncated to 8 bits.
Mask pixels outside the raster (windows past the edge) are ``ignore_index`` (255); with
``class_values`` / ``class_remap`` every raw value not listed is ``ignore_index`` too.

``compact_batches: true`` keeps batches small on their way through collation, worker shared
memory and the copy to the GPU: an 8-bit image crop stays uint8 (with ``image_scale`` =
(offset, factor) per item) unless augmentations run, and masks are uint8 class indices (int16
above 255). :func:`prepare_batch` (what the train loop calls) moves a batch to the device and
returns exactly the float32 image and int64 mask the default output has. Five times fewer bytes
per crop; the float conversion happens once, on the device.

Raster handles come from :class:`smt_tools.raster.RasterCache` (LRU, closes on eviction) and are
opened per DataLoader worker (``worker_init_fn=warm_worker`` opens them before the first batch);
a DataLoader batch of the windowed dataset is read in on-disk order (``__getitems__``: sorted by
image, row, column) and returned in the order asked, written straight into one batch tensor per
key that :func:`collate_batch` (the ``collate_fn`` ``train`` passes) hands on without a copy;
with workers, a default-output batch of 8-bit windows crosses to the main process as uint8 and
is widened there (:mod:`smt_tools.train._batch`). Randomness is a function of (seed, epoch,
index), so a crop does not depend on which worker draws it. ``set_epoch`` writes the epoch into
shared memory, so workers see it whatever their lifetime (``persistent_workers: true``
included): each epoch gets new crops, the same ones with persistent workers, fresh workers or
none.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smt_tools.errors import ConfigError, InputDataError
from smt_tools.raster.window import read_window
from smt_tools.train._base import _TORCH_DTYPES, _WindowDataset
from smt_tools.train._batch import assemble, collate_batch, feeds_collate_batch
from smt_tools.train._table import (
    _as_bool,
    _mask_bands,
    _read_csv,
    _resolve_paths,
    _select_folds,
)
from smt_tools.train.random_crop import RandomCropSegmentationDataset

__all__ = [
    "CSVWindowedSegmentationDataset",
    "RandomCropSegmentationDataset",
    "collate_batch",
    "prepare_batch",
    "read_window",
    "warm_worker",
]


def prepare_batch(
    batch: Any, device: torch.device | str = "cpu", non_blocking: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image float32 (N, bands, H, W), mask) of a collated batch, on ``device``.

    Accepts a dict batch (``image``, ``mask``, optional ``image_scale`` (N, 2) from
    ``compact_batches``) or an (image, mask) pair. Compact images are scaled on the device with
    ``(image - offset) * factor`` in float32: the same values the dataset computes without
    ``compact_batches``. Integer masks become int64 (soft float masks are kept as they are).
    """
    if isinstance(batch, Mapping):
        image, mask, scale = batch["image"], batch["mask"], batch.get("image_scale")
    else:
        image, mask, scale = batch[0], batch[1], None
    image = image.to(device, non_blocking=non_blocking)
    mask = mask.to(device, non_blocking=non_blocking)
    if scale is not None:
        s = scale.to(device, non_blocking=non_blocking).view(-1, 2, *([1] * (image.dim() - 1)))
        # torch.sub allocates: the caller's batch is never scaled in place (float32 images
        # would otherwise be changed under the caller's feet)
        image = torch.sub(image.float(), s[:, 0]).mul_(s[:, 1])
    elif not image.is_floating_point():
        image = image.float()
    if not mask.is_floating_point():
        mask = mask.long()
    return image, mask


# ----------------------------------------------------------------------------- windowed


def _window_rows(
    frame: pd.DataFrame, needed: list[str], drop_excluded: bool, src: str
) -> pd.DataFrame:
    """The window CSV's rows, checked for the ``needed`` columns; with ``drop_excluded`` the
    rows with excluded == true or sampler_weight <= 0 dropped (none may be left: an error)."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{src}: missing column(s) {', '.join(missing)}; expected the balanced CSV "
            "(image_path, mask_path, row_off, col_off, patch_size) or set the *_column keys"
        )
    if not drop_excluded:
        return frame
    drop = np.zeros(len(frame), dtype=bool)
    if "excluded" in frame.columns:
        drop |= _as_bool(frame["excluded"])
    if "sampler_weight" in frame.columns:
        drop |= pd.to_numeric(frame["sampler_weight"], errors="coerce").fillna(0).to_numpy() <= 0
    frame = frame.loc[~drop].reset_index(drop=True)
    if frame.empty:
        raise InputDataError(f"{src}: every row is excluded (drop_excluded: true)")
    return frame


def _window_sizes(
    frame: pd.DataFrame, patch_size: int | None, patch_size_column: str, src: str
) -> np.ndarray:
    """(n,) int64 window sizes: ``patch_size`` for every row, else the CSV's column; all > 0."""
    sizes: np.ndarray = (
        np.full(len(frame), int(patch_size), dtype=np.int64)
        if patch_size is not None
        else frame[patch_size_column].astype(np.int64).to_numpy()
    )
    if (sizes <= 0).any():
        raise InputDataError(f"{src}: {patch_size_column} must be positive")
    return sizes


class CSVWindowedSegmentationDataset(_WindowDataset):
    """One CSV row = one window of an image/mask pair.

    Parameters (config keys):
        input_csv_path: CSV with one row per window (the balanced CSV).
        root_dir: folder relative paths are resolved against (default: the CSV's folder).
        n_classes: number of training classes (model output channels; 1 = binary).
        bands: 1-based image bands to read (default all).
        image_dtype / scale: the scaling range (default the file dtype's range).
        class_values: raw mask value of each class (position = class index); other values ignored.
        class_remap: {raw value: class index} (alternative to class_values).
        ignore_index: mask value for pixels outside the raster / unmapped (default 255).
        image_column, mask_column, row_off_column, col_off_column, patch_size_column: CSV names.
        patch_size: fixed window size when the CSV has no patch_size column.
        mask_band, mask_band_column: the 1-based band of the masks: the CSV's ``mask_band``
            column (the balanced CSV carries the band chosen at ingest), else the ``mask_band``
            key; with neither, a mask must have one band.
        drop_excluded: drop rows with excluded == true or sampler_weight == 0 (default False).
        folds / exclude_folds / fold_column: keep / drop rows by fold (image-level split).
        n_first_rows_to_read: read only the first N CSV rows.
        lru_cache_size, serialize_rasterio_reads, rasterio_lock_dir, reopen_rasterio_on_read:
            handle cache and read serialisation (see RandomCropSegmentationDataset).
        use_rasterio: accepted for compatibility (always true).
        compact_batches: deliver 8-bit images unscaled and masks as uint8 (see the module
            docstring and :func:`prepare_batch`).
    """

    #: item i is row i of ``frame`` (what the weighted sampler weights by sampler_weight)
    items_are_rows = True

    def __init__(
        self,
        input_csv_path: str | os.PathLike[str],
        root_dir: str | os.PathLike[str] | None = None,
        n_classes: int = 2,
        bands: Sequence[int] | None = None,
        image_dtype: str | None = None,
        scale: Sequence[float] | None = None,
        class_values: Sequence[int] | None = None,
        class_remap: Mapping[int, int] | None = None,
        ignore_index: int = 255,
        augmentation_list: Any = None,
        soft_labels: bool = False,
        image_column: str = "image_path",
        mask_column: str = "mask_path",
        row_off_column: str = "row_off",
        col_off_column: str = "col_off",
        patch_size_column: str = "patch_size",
        patch_size: int | None = None,
        mask_band: int | None = None,
        mask_band_column: str = "mask_band",
        drop_excluded: bool = False,
        folds: Sequence[int | str] | None = None,
        exclude_folds: Sequence[int | str] | None = None,
        fold_column: str = "fold",
        n_first_rows_to_read: int | None = None,
        lru_cache_size: int = 64,
        serialize_rasterio_reads: bool = False,
        rasterio_lock_dir: str | None = None,
        reopen_rasterio_on_read: bool = False,
        seed: int | None = None,
        use_rasterio: bool = True,
        compact_batches: bool = False,
    ) -> None:
        name = "CSVWindowedSegmentationDataset"
        if not use_rasterio:
            raise ConfigError(f"{name}: use_rasterio: false is not supported (reads are windowed)")
        super().__init__(
            n_classes=n_classes,
            bands=bands,
            image_dtype=image_dtype,
            scale=scale,
            class_values=class_values,
            class_remap=class_remap,
            ignore_index=ignore_index,
            augmentation_list=augmentation_list,
            soft_labels=soft_labels,
            lru_cache_size=lru_cache_size,
            serialize_rasterio_reads=serialize_rasterio_reads,
            rasterio_lock_dir=rasterio_lock_dir,
            reopen_rasterio_on_read=reopen_rasterio_on_read,
            seed=seed,
            name=name,
            compact_batches=compact_batches,
        )
        self.input_csv_path = Path(input_csv_path)
        src = str(self.input_csv_path)
        columns = [image_column, mask_column, row_off_column, col_off_column]
        frame = _window_rows(
            _read_csv(self.input_csv_path, n_first_rows_to_read, name),
            columns + ([patch_size_column] if patch_size is None else []),
            drop_excluded,
            src,
        )
        frame = _select_folds(frame, folds, exclude_folds, fold_column, src)
        base = Path(root_dir) if root_dir is not None else self.input_csv_path.parent
        self.frame = frame
        self._images = _resolve_paths(frame[image_column], base)
        self._masks = _resolve_paths(frame[mask_column], base)
        self._rows: np.ndarray = frame[row_off_column].astype(np.int64).to_numpy()
        self._cols: np.ndarray = frame[col_off_column].astype(np.int64).to_numpy()
        self._sizes = _window_sizes(frame, patch_size, patch_size_column, src)
        self._mask_bands = _mask_bands(frame, mask_band_column, mask_band, src, name)
        #: the first row of each image (row order), for warm_handles
        first = ~pd.Series(self._images).duplicated().to_numpy()
        self._first_rows: np.ndarray = np.flatnonzero(first)[: self.lru_cache_size]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def source_images(self) -> set[str]:
        """Resolved image paths this dataset reads (for the image-level split check)."""
        return set(self._images)

    def window(self, index: int) -> tuple[str, str, int, int, int]:
        """(image_path, mask_path, row_off, col_off, size) of row ``index``."""
        return (
            self._images[index],
            self._masks[index],
            int(self._rows[index]),
            int(self._cols[index]),
            int(self._sizes[index]),
        )

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Row ``index``, or ``(row, draw)`` from a tagged weighted sampler (each draw of a row
        gets its own augmentation)."""
        row, draw = self._unpack(index)
        img_path, msk_path, r, c, s = self.window(row)
        img, msk, inside = self._read_pair(
            img_path, msk_path, r, c, s, s, int(self._mask_bands[row])
        )
        classes = self._mask_to_classes(msk, inside, lambda: f"{msk_path} window ({r}, {c}, {s})")
        return self._finish(img, classes, row, draw)

    def __getitems__(
        self, indices: Sequence[int | tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        """The items of a batch (what a DataLoader asks for), read in on-disk order.

        The windows are read sorted by (image, row_off, col_off), so windows of one raster
        follow each other (its handle and GDAL's cached blocks are reused); the items come
        back in the order asked, each equal to ``self[index]``. Without augmentation or soft
        labels, items of one shape are written straight into one batch tensor per key (in
        shared memory in a DataLoader worker) and are its rows: :func:`collate_batch` hands
        those tensors on without stacking them again (see :mod:`smt_tools.train._batch`)."""
        pairs = [self._unpack(i) for i in indices]
        keys = [(self._images[r], int(self._rows[r]), int(self._cols[r])) for r, _ in pairs]
        raws: list[np.ndarray] = [np.empty(0)] * len(pairs)
        masks: list[np.ndarray] = [np.empty(0)] * len(pairs)
        for k in sorted(range(len(pairs)), key=keys.__getitem__):
            raws[k], masks[k] = self._read_raw(pairs[k][0])
        if pairs and self.transform is None and not self.soft_labels:
            dtype = raws[0].dtype
            batch = assemble(
                raws,
                masks,
                keep_raw=self._keeps_raw(dtype),
                params=self._scale_params(dtype),
                mask_dtype=_TORCH_DTYPES[self._mask_dtype],
                compact=self.compact_batches,
                for_collate_batch=feeds_collate_batch(sys._getframe(1)),
            )
            if batch is not None:
                return [{key: t[k] for key, t in batch.items()} for k in range(len(pairs))]
        return [
            self._finish(self._prepare_image(raw), mask, row, draw)
            for raw, mask, (row, draw) in zip(raws, masks, pairs, strict=True)
        ]

    def _read_raw(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(raw image (bands, s, s), class mask (s, s), possibly uint8) of row ``row``."""
        img_path, msk_path, r, c, s = self.window(row)
        raw, msk, inside = self._read_pair(
            img_path, msk_path, r, c, s, s, int(self._mask_bands[row]), True
        )
        where = lambda: f"{msk_path} window ({r}, {c}, {s})"  # noqa: E731
        return raw, self._mask_to_classes(msk, inside, where, True)

    def warm_handles(self) -> int:
        """Open the rasters of the first images (at most ``lru_cache_size`` files: the image
        and mask of each image's first row, in row order) in this process; returns how many
        handles are open. Called by :func:`warm_worker` in each DataLoader worker, so the first
        batches do not pay for the opens."""
        paths: dict[str, None] = {}
        for r in self._first_rows.tolist():
            for path in (self._images[r], self._masks[r]):
                if len(paths) < self.lru_cache_size and path not in paths:
                    paths[path] = None
                    self._handle(path)
        return len(self.cache)


def warm_worker(worker_id: int) -> None:
    """``worker_init_fn`` for a DataLoader over a windowed dataset: opens the worker's raster
    handles once, before its first batch (see :meth:`CSVWindowedSegmentationDataset.warm_handles`)."""
    info = torch.utils.data.get_worker_info()
    dataset = getattr(info, "dataset", None)
    while dataset is not None and not hasattr(dataset, "warm_handles"):
        dataset = getattr(dataset, "dataset", None)  # a Subset / wrapper: its dataset
    if dataset is not None:
        dataset.warm_handles()
