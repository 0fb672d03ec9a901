"""Random (or grid) square crops from whole scenes: :class:`RandomCropSegmentationDataset`
(see :mod:`smt_tools.train.datasets` for the output format, scaling and randomness)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smt_tools.errors import ConfigError, InputDataError, RasterMismatchError
from smt_tools.raster import tile_windows
from smt_tools.raster.window import read_pixels
from smt_tools.train._base import _WindowDataset
from smt_tools.train._table import _mask_bands, _read_csv, _resolve_paths, _select_folds

__all__ = ["RandomCropSegmentationDataset"]


# ----------------------------------------------------------------------------- random crops


def _scene_rows(
    frame: pd.DataFrame,
    image_column: str | None,
    mask_column: str | None,
    fold_keys: tuple[Sequence[int | str] | None, Sequence[int | str] | None, str],
    src: str,
) -> tuple[pd.DataFrame, str, str]:
    """(rows, image column, mask column) of the scenes CSV: the columns as given, else
    image / mask, else image_path / mask_path; rows selected by ``fold_keys`` (folds,
    exclude_folds, fold_column), one per scene."""
    image_column = image_column or ("image" if "image" in frame.columns else "image_path")
    mask_column = mask_column or ("mask" if "mask" in frame.columns else "mask_path")
    missing = [c for c in (image_column, mask_column) if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{src}: missing column(s) {', '.join(missing)}; expected columns image, mask "
            "(or set image_column / mask_column)"
        )
    frame = _select_folds(frame, *fold_keys, src)
    # one row per scene (a balanced CSV lists each scene many times)
    frame = frame.drop_duplicates(subset=[image_column, mask_column]).reset_index(drop=True)
    return frame, image_column, mask_column


class RandomCropSegmentationDataset(_WindowDataset):
    """Random (or grid) square crops from whole scenes listed in a CSV (image, mask).

    Parameters (config keys, the documented ones first):
        input_csv_path: CSV of full-size images and masks (columns image, mask; ``image_path`` /
            ``mask_path`` are accepted too, or set image_column / mask_column).
        mask_band, mask_band_column: the 1-based band of each mask (a ``mask_band`` column,
            else the key; with neither, a mask must have one band).
        root_dir: folder relative paths are resolved against (default: the CSV's folder).
        crop_size: side of the square crop in pixels.
        samples_per_epoch: dataset length in random mode (ignored in grid mode).
        n_classes: number of classes.
        augmentation_list: albumentations transforms (``_target_`` dicts) after cropping.
        lru_cache_size: open raster handles kept per worker (LRU, evicted handles are closed).
        class_balanced_sampling: choose images by Σ_c p_img[c] / f_c (inverse global class
            frequency) times their area, instead of by area alone; computed once from decimated
            mask reads (at most ``histogram_size`` px a side).
        cutmix_prob, cutmix_alpha: class-aware CutMix (a box of side crop·sqrt(1-λ),
            λ ~ Beta(α, α), from a second crop whose image has a different dominant class).
        classmix_prob: ClassMix (pixels of one class of a second crop pasted onto the first).
        soft_labels: float one-hot masks (n_classes, H, W) instead of class indices.
        grid_mode, grid_step: deterministic sliding-window crops covering every pixel
            (step defaults to crop_size; the last crop is shifted back to the edge).
        serialize_rasterio_reads, rasterio_lock_dir: one reader at a time per raster across
            processes (file locks), for GDAL builds that fail on concurrent compressed reads.
        reopen_rasterio_on_read: open + close the raster inside each (locked) read.
        n_first_rows_to_read: read only the first N CSV rows.
        seed: base seed (None: torch's per-worker seed); crops depend on (seed, epoch, index).
        data_loader: DataLoader keyword arguments, kept as ``self.data_loader`` (the train
            command reads them from the config's ``data_loader`` block).
        compact_batches: deliver 8-bit images unscaled and masks as uint8 (see the module
            docstring and :func:`prepare_batch`).
    """

    #: items are crops drawn per epoch, not rows of ``frame`` (the weighted sampler refuses it)
    items_are_rows = False

    def __init__(
        self,
        input_csv_path: str | os.PathLike[str],
        root_dir: str | os.PathLike[str] | None = None,
        crop_size: int = 512,
        samples_per_epoch: int = 1000,
        n_classes: int = 2,
        augmentation_list: Any = None,
        lru_cache_size: int = 64,
        class_balanced_sampling: bool = False,
        cutmix_prob: float = 0.0,
        cutmix_alpha: float = 1.0,
        classmix_prob: float = 0.0,
        soft_labels: bool = False,
        grid_mode: bool = False,
        grid_step: int | None = None,
        serialize_rasterio_reads: bool = False,
        rasterio_lock_dir: str | None = None,
        reopen_rasterio_on_read: bool = False,
        n_first_rows_to_read: int | None = None,
        bands: Sequence[int] | None = None,
        image_dtype: str | None = None,
        scale: Sequence[float] | None = None,
        class_values: Sequence[int] | None = None,
        class_remap: Mapping[int, int] | None = None,
        ignore_index: int = 255,
        image_column: str | None = None,
        mask_column: str | None = None,
        mask_band: int | None = None,
        mask_band_column: str = "mask_band",
        folds: Sequence[int | str] | None = None,
        exclude_folds: Sequence[int | str] | None = None,
        fold_column: str = "fold",
        histogram_size: int = 256,
        seed: int | None = None,
        data_loader: Mapping[str, Any] | None = None,
        compact_batches: bool = False,
    ) -> None:
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
            name="RandomCropSegmentationDataset",
            compact_batches=compact_batches,
        )
        self._set_sampling_options(
            crop_size=crop_size,
            samples_per_epoch=samples_per_epoch,
            grid_mode=grid_mode,
            grid_step=grid_step,
            cutmix_prob=cutmix_prob,
            cutmix_alpha=cutmix_alpha,
            classmix_prob=classmix_prob,
        )
        self.input_csv_path = Path(input_csv_path)
        src = str(self.input_csv_path)
        frame = _read_csv(self.input_csv_path, n_first_rows_to_read, self.name)
        frame, image_column, mask_column = _scene_rows(
            frame, image_column, mask_column, (folds, exclude_folds, fold_column), src
        )
        base = Path(root_dir) if root_dir is not None else self.input_csv_path.parent
        self.frame = frame
        self.images = _resolve_paths(frame[image_column], base)
        self.masks = _resolve_paths(frame[mask_column], base)
        self.mask_bands = _mask_bands(frame, mask_band_column, mask_band, src, self.name)
        self.data_loader = dict(data_loader or {})
        self._set_up_sampling(class_balanced_sampling, histogram_size)
        self.cache.close()  # handles are reopened lazily in each worker

    # -- set-up
    def _set_sampling_options(
        self,
        *,
        crop_size: int,
        samples_per_epoch: int,
        grid_mode: bool,
        grid_step: int | None,
        cutmix_prob: float,
        cutmix_alpha: float,
        classmix_prob: float,
    ) -> None:
        """Check and keep the crop and mixing options."""
        name = self.name
        if crop_size < 1:
            raise ConfigError(f"{name}: crop_size must be >= 1; got {crop_size}")
        if samples_per_epoch < 1 and not grid_mode:
            raise ConfigError(f"{name}: samples_per_epoch must be >= 1; got {samples_per_epoch}")
        for key, p in (("cutmix_prob", cutmix_prob), ("classmix_prob", classmix_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name}: {key} must be in [0, 1]; got {p}")
        if cutmix_alpha <= 0:
            raise ConfigError(f"{name}: cutmix_alpha must be > 0; got {cutmix_alpha}")
        if grid_step is not None and grid_step < 1:
            raise ConfigError(f"{name}: grid_step must be >= 1; got {grid_step}")
        self.crop_size = int(crop_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.cutmix_prob = float(cutmix_prob)
        self.cutmix_alpha = float(cutmix_alpha)
        self.classmix_prob = float(classmix_prob)
        self.grid_mode = bool(grid_mode)
        self.grid_step = int(grid_step) if grid_step is not None else self.crop_size

    def _set_up_sampling(self, class_balanced_sampling: bool, histogram_size: int) -> None:
        """Read every scene's size (and class shares where needed): the image weights, and the
        crop positions in grid mode."""
        self.class_balanced_sampling = bool(class_balanced_sampling)
        self.histogram_size = int(histogram_size)
        self.sizes = self._read_sizes()  # (n_images, 2) height, width
        if self.cutmix_prob > 0 or self.classmix_prob > 0:
            # mixing pastes pixels of one crop into another: all raw or all scaled
            self._raw_images_ok = len(set(self._dtypes)) == 1
        self.class_shares: np.ndarray | None = None  # (n_images, n_classes)
        if self.class_balanced_sampling or self.cutmix_prob > 0:
            self.class_shares = self._class_shares()
        self.image_weights = self._image_weights()
        self._cdf = np.cumsum(self.image_weights)
        self.grid = self._grid_positions() if self.grid_mode else None
        self._epoch_positions: tuple[tuple[int, int, int], np.ndarray] | None = None

    def _read_sizes(self) -> np.ndarray:
        sizes = np.zeros((len(self.images), 2), dtype=np.int64)
        self._dtypes: list[str] = []
        for i, (ip, mp) in enumerate(zip(self.images, self.masks, strict=True)):
            img, msk = self.cache.get(ip), self.cache.get(mp)
            self._dtypes.append(str(img.dtypes[(self.bands or [1])[0] - 1]))
            band = int(self.mask_bands[i])
            if (band == 0 and msk.count > 1) or band > msk.count:
                raise InputDataError(
                    f"{mp}: mask has {msk.count} band(s) and mask_band is "
                    f"{band or 'not set'}; a mask is one band of class values: give a "
                    f"mask_band from 1 to {msk.count} (CSV column or dataset key)"
                )
            if (img.height, img.width) != (msk.height, msk.width):
                raise RasterMismatchError(
                    f"{ip} is {img.width}x{img.height} px but its mask {mp} is "
                    f"{msk.width}x{msk.height}; image and mask must have the same size"
                )
            sizes[i] = (img.height, img.width)
        return sizes

    def _class_shares(self) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        shares = np.zeros((len(self.masks), self.n_classes), dtype=np.float64)
        for i, mp in enumerate(self.masks):
            ds = self.cache.get(mp)
            band = max(1, int(self.mask_bands[i]))
            f = max(1.0, max(ds.height, ds.width) / self.histogram_size)
            shape = (max(1, round(ds.height / f)), max(1, round(ds.width / f)))
            whole = Window(0, 0, ds.width, ds.height)  # a damaged mask: one line naming it
            raw = read_pixels(ds, mp, band, whole, out_shape=shape, resampling=Resampling.nearest)
            cls = self._mask_to_classes(raw, None, mp)
            valid = cls[cls != self.ignore_index]
            if valid.size:
                shares[i] = (
                    np.bincount(valid, minlength=self.n_classes)[: self.n_classes] / valid.size
                )
        return shares

    def _image_weights(self) -> np.ndarray:
        area = (self.sizes[:, 0] * self.sizes[:, 1]).astype(np.float64)
        w = area.copy()
        if self.class_balanced_sampling and self.class_shares is not None:
            f = (self.class_shares * area[:, None]).sum(axis=0) / area.sum()
            inv = np.where(f > 0, 1.0 / np.where(f > 0, f, 1.0), 0.0)
            w = area * (self.class_shares @ inv)
            if w.sum() <= 0:
                w = area.copy()
        return w / w.sum()

    def _grid_positions(self) -> np.ndarray:
        rows = []
        for i, (h, w) in enumerate(self.sizes):
            edge = "shift" if h >= self.crop_size and w >= self.crop_size else "pad"
            win = tile_windows(int(w), int(h), self.crop_size, self.grid_step, edge, self.images[i])
            rows.append(np.column_stack([np.full(len(win), i, dtype=np.int64), win[:, :2]]))
        return np.concatenate(rows)

    @property
    def source_images(self) -> set[str]:
        """Resolved image paths this dataset reads (for the image-level split check)."""
        return set(self.images)

    # -- sampling
    def __len__(self) -> int:
        return len(self.grid) if self.grid is not None else self.samples_per_epoch

    def _random_position(
        self, rng: np.random.Generator, image: int | None = None, p: np.ndarray | None = None
    ) -> tuple[int, int, int]:
        if image is None:
            cdf = self._cdf if p is None else np.cumsum(p)
            i = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        else:
            i = image
        h, w = self.sizes[i]
        r = int(rng.integers(0, max(int(h) - self.crop_size, 0) + 1))
        c = int(rng.integers(0, max(int(w) - self.crop_size, 0) + 1))
        return i, r, c

    def _crop(self, i: int, r: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.crop_size
        img, msk, inside = self._read_pair(
            self.images[i], self.masks[i], r, c, s, s, int(self.mask_bands[i])
        )
        classes = self._mask_to_classes(msk, inside, f"{self.masks[i]} window ({r}, {c}, {s})")
        return img, classes

    def position(self, index: int) -> tuple[int, int, int]:
        """(image index, row_off, col_off) of item ``index`` for the current epoch."""
        if self.grid is not None:
            i, r, c = self.grid[index]
            return int(i), int(r), int(c)
        key = (self._base_seed(), *self._epoch_key())
        if self._epoch_positions is None or self._epoch_positions[0] != key:
            self._epoch_positions = (key, self._draw_positions(*key))
        i, r, c = self._epoch_positions[1][index]
        return int(i), int(r), int(c)

    def _draw_positions(self, base: int, epoch: int, repeat: int = 0) -> np.ndarray:
        """(samples_per_epoch, 3) image, row_off, col_off of one epoch, drawn at once."""
        entropy = [base, epoch, 0x5EED, repeat] if repeat else [base, epoch, 0x5EED]
        rng = np.random.default_rng(np.random.SeedSequence(entropy))
        n = self.samples_per_epoch
        u = rng.random(n) * self._cdf[-1]
        img = np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self._cdf) - 1)
        span = np.maximum(self.sizes[img] - self.crop_size, 0) + 1  # (n, 2) row, col choices
        off = np.floor(rng.random((n, 2)) * span).astype(np.int64)
        return np.column_stack([img, np.minimum(off, span - 1)])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, draw = self._unpack(index)
        if index < 0 or index >= len(self):
            raise IndexError(index)
        i, r, c = self.position(index)
        image, mask = self._crop(i, r, c)
        if not self.grid_mode and (self.cutmix_prob > 0 or self.classmix_prob > 0):
            rng = np.random.default_rng(self._item_seed(index, salt=1, draw=draw))
            if self.cutmix_prob > 0 and rng.random() < self.cutmix_prob:
                image, mask = self._cutmix(image, mask, i, rng)
            if self.classmix_prob > 0 and rng.random() < self.classmix_prob:
                image, mask = self._classmix(image, mask, rng)
        return self._finish(image, mask, index, draw)

    def _partner_weights(self, first: int) -> np.ndarray:
        if self.class_shares is None:
            return self.image_weights
        dominant = self.class_shares.argmax(axis=1)
        other = dominant != dominant[first]
        if not other.any():
            return self.image_weights
        w = self.image_weights * other
        return w / w.sum()

    def _cutmix(
        self, image: np.ndarray, mask: np.ndarray, first: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        j, r, c = self._random_position(rng, p=self._partner_weights(first))
        img2, msk2 = self._crop(j, r, c)
        s = self.crop_size
        lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        side = round(float(s * np.sqrt(1.0 - lam)))
        if side <= 0:
            return image, mask
        cy, cx = int(rng.integers(0, s)), int(rng.integers(0, s))
        y0, y1 = max(cy - side // 2, 0), min(cy - side // 2 + side, s)
        x0, x1 = max(cx - side // 2, 0), min(cx - side // 2 + side, s)
        image = image.copy()
        mask = mask.copy()
        image[:, y0:y1, x0:x1] = img2[:, y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = msk2[y0:y1, x0:x1]
        return image, mask

    def _classmix(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        j, r, c = self._random_position(rng)
        img2, msk2 = self._crop(j, r, c)
        present = np.unique(msk2[msk2 != self.ignore_index])
        if present.size == 0:
            return image, mask
        if self.class_shares is not None:
            # prefer rarer classes: weight ∝ 1 / global share
            f = self.class_shares.mean(axis=0)[present]
            w = 1.0 / np.maximum(f, 1e-6)
            cls = int(rng.choice(present, p=w / w.sum()))
        else:
            cls = int(rng.choice(present))
        sel = msk2 == cls
        image = image.copy()
        mask = mask.copy()
        image[:, sel] = img2[:, sel]
        mask[sel] = cls
        return image, mask
