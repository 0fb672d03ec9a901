"""Shared machinery of the datasets: windowed reads past the edge (through
:func:`smt_tools.raster.window.read_window`), per-raster locks, scaling,
class remapping, augmentation and output format. See :mod:`smt_tools.train.datasets`."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from smt_tools.errors import ConfigError, InputDataError
from smt_tools.raster import RasterCache, open_raster
from smt_tools.raster.window import read_window
from smt_tools.train._direct import read_inside
from smt_tools.train._targets import build_transforms

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

DEFAULT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "smt_rasterio_locks")
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
}


# ----------------------------------------------------------------------------- reading


def _dtype_range(dtype: np.dtype) -> tuple[float, float] | None:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype == np.bool_:
        return 0.0, 1.0
    return None


@contextlib.contextmanager
def _file_lock(lock_dir: str, key: str) -> Iterator[None]:
    """Exclusive inter-process lock for ``key`` (one lock file per raster in ``lock_dir``)."""
    os.makedirs(lock_dir, exist_ok=True)
    name = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20] + ".lock"
    fd = os.open(os.path.join(lock_dir, name), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


#: OpenCV's LUT runs on one thread below this many pixels (a DataLoader worker stays on one core)
_CV2_LUT_MAX_PIXELS = 1 << 18
_cv2_module: Any = None


def _lookup_u8(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``table[raw]`` for a uint8 ``raw`` array and a 256-entry uint8 ``table``.

    OpenCV's ``LUT`` (installed with albumentations, the ``train`` extra) when available:
    several times faster than ``np.take``, which first widens every index to int64. The result
    is the same array either way."""
    global _cv2_module
    if raw.size < _CV2_LUT_MAX_PIXELS and raw.ndim == 2:
        if _cv2_module is None:
            try:
                import cv2

                _cv2_module = cv2
            except ImportError:
                _cv2_module = False
        if _cv2_module is not False:
            return np.asarray(_cv2_module.LUT(raw, table))
    return np.take(table, raw)


# ----------------------------------------------------------------------------- base


class _WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Shared machinery: handle cache, scaling, class remapping, augmentation, output format."""

    #: __getitem__ also takes (row, draw) pairs (see smt_tools.train.sampler.DrawTaggedSampler)
    accepts_draw_tags = True

    def __init__(
        self,
        *,
        n_classes: int,
        bands: Sequence[int] | None,
        image_dtype: str | None,
        scale: Sequence[float] | None,
        class_values: Sequence[int] | None,
        class_remap: Mapping[int, int] | None,
        ignore_index: int,
        augmentation_list: Any,
        soft_labels: bool,
        lru_cache_size: int,
        serialize_rasterio_reads: bool,
        rasterio_lock_dir: str | None,
        reopen_rasterio_on_read: bool,
        seed: int | None,
        name: str,
        compact_batches: bool = False,
    ) -> None:
        if n_classes < 1:
            raise ConfigError(f"{name}: n_classes must be >= 1; got {n_classes}")
        if lru_cache_size < 1:
            raise ConfigError(f"{name}: lru_cache_size must be >= 1; got {lru_cache_size}")
        if not 0 <= ignore_index <= 65535 or ignore_index < n_classes:
            raise ConfigError(
                f"{name}: ignore_index must be >= n_classes ({n_classes}) and <= 65535; got {ignore_index}"
            )
        if class_values is not None and class_remap is not None:
            raise ConfigError(f"{name}: give class_values or class_remap, not both")
        if scale is not None and (len(scale) != 2 or float(scale[1]) <= float(scale[0])):
            raise ConfigError(f"{name}: scale must be [min, max] with max > min; got {list(scale)}")
        if bands is not None and (len(bands) == 0 or min(int(b) for b in bands) < 1):
            raise ConfigError(f"{name}: bands are 1-based band numbers; got {list(bands)}")
        self.name = name
        self.n_classes = int(n_classes)
        self.bands = None if bands is None else [int(b) for b in bands]
        self.image_dtype = image_dtype
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.ignore_index = int(ignore_index)
        self.soft_labels = bool(soft_labels)
        self.lru_cache_size = int(lru_cache_size)
        self.serialize_rasterio_reads = bool(serialize_rasterio_reads)
        self.rasterio_lock_dir = rasterio_lock_dir or DEFAULT_LOCK_DIR
        self.reopen_rasterio_on_read = bool(reopen_rasterio_on_read)
        self.seed = seed
        # (epoch, repeat) in shared memory: DataLoader workers (persistent ones too) read the
        # values the main process sets, so set_epoch reaches every worker whatever its lifetime
        self._epoch_state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.cache = RasterCache(maxsize=self.lru_cache_size)
        self.compact_batches = bool(compact_batches)
        self._mask_dtype: np.dtype[Any] = np.dtype(np.int64)
        if self.compact_batches:
            top = max(self.n_classes - 1, self.ignore_index)
            self._mask_dtype = np.dtype(
                np.uint8 if top <= 255 else np.int16 if top <= 32767 else np.int32
            )
        #: raw 8-bit crops may be delivered unscaled (False where crops of different dtypes mix)
        self._raw_images_ok = True
        self._scale_cache: dict[np.dtype[Any], tuple[np.float32, np.float32] | None] = {}
        self._scale_tensors: dict[tuple[float, float], torch.Tensor] = {}
        self._lut = self._build_lut(class_values, class_remap)
        self._lut8 = self._lut[:256].copy() if self._lut is not None else np.empty(0, np.int64)
        #: the same 256 entries as uint8 when every class index and ignore_index fit in 8 bits
        self._lut8_u8 = (
            self._lut8.astype(np.uint8)
            if self._lut is not None and max(self.n_classes - 1, self.ignore_index) <= 255
            else None
        )
        self.transform = build_transforms(augmentation_list, f"{name}.augmentation_list")

    # -- class handling
    def _build_lut(
        self, class_values: Sequence[int] | None, class_remap: Mapping[int, int] | None
    ) -> np.ndarray | None:
        mapping: dict[int, int] | None = None
        if class_values is not None:
            if len(class_values) != self.n_classes:
                raise ConfigError(
                    f"{self.name}: class_values lists {len(class_values)} raw values for "
                    f"n_classes={self.n_classes}; list one raw mask value per class"
                )
            mapping = {int(v): i for i, v in enumerate(class_values)}
        elif class_remap is not None:
            mapping = {int(k): int(v) for k, v in class_remap.items()}
            bad = [
                v
                for v in mapping.values()
                if not (0 <= v < self.n_classes or v == self.ignore_index)
            ]
            if bad:
                raise ConfigError(
                    f"{self.name}: class_remap targets must be in [0, {self.n_classes}) or "
                    f"{self.ignore_index}; got {bad[0]}"
                )
        if mapping is None and self.n_classes == 2:  # binarised: docs/algorithms.md §13
            lut = np.ones(65536, dtype=self._mask_dtype)  # every raw value > 0 -> 1 (255 too)
            lut[0] = 0
            return lut
        if mapping is None:
            return None
        if any(k < 0 or k > 65535 for k in mapping):
            raise ConfigError(f"{self.name}: class_remap keys must be mask values in [0, 65535]")
        lut = np.full(65536, self.ignore_index, dtype=self._mask_dtype)
        for k, v in mapping.items():
            lut[k] = v
        return lut

    def _mask_to_classes(
        self,
        raw: np.ndarray,
        inside: np.ndarray | None,
        where: str | Callable[[], str],
        narrow: bool = False,
    ) -> np.ndarray:
        """Raw mask (H, W) -> class indices (int64; the compact dtype with ``compact_batches``);
        outside (inside False) / unmapped -> ignore_index. ``where``: the error line's subject
        (or a function returning it: built only when a value is refused). ``narrow``: the same
        values, possibly in a narrower integer dtype (uint8 from the 8-bit lookup), for a
        caller that widens them while copying them into a batch."""
        if self._lut is not None:
            if raw.dtype == np.uint8 and self._lut8_u8 is not None:
                out = _lookup_u8(self._lut8_u8, raw)
                if not narrow:
                    out = out.astype(self._mask_dtype, copy=False)
            elif raw.dtype == np.uint8:
                out = np.take(self._lut8, raw)  # 2 KiB table: stays in L1 cache
            elif raw.dtype == np.uint16:
                out = np.take(self._lut, raw)  # one gather, no range check needed
            else:
                m = raw.astype(np.int64)
                out = self._lut[np.clip(m, 0, 65535)]
                out[(m < 0) | (m > 65535)] = self.ignore_index
        else:
            self._check_class_indices(raw, inside, where)
            # every value inside is a class index or ignore_index: it fits the output dtype
            out = raw.astype(self._mask_dtype)
        if inside is not None:
            out[~inside] = self.ignore_index
        return out

    def _check_class_indices(
        self, raw: np.ndarray, inside: np.ndarray | None, where: str | Callable[[], str]
    ) -> None:
        """Refuse a raw mask (no class_values / class_remap) holding a value inside the raster
        that is neither a class index in [0, n_classes) nor ignore_index.

        The comparisons run on the raw (usually uint8) array: 8x fewer bytes than on int64;
        the widening to int64 is left to masks of signed or wider types."""
        lo, hi = int(raw.min(initial=0)), int(raw.max(initial=0))
        if lo >= 0 and hi < self.n_classes:
            return
        if raw.dtype.kind == "u" and lo >= 0:
            bad = raw >= self.n_classes
            if self.ignore_index <= np.iinfo(raw.dtype).max:
                bad &= raw != self.ignore_index
        else:
            wide = raw.astype(np.int64)
            bad = (wide != self.ignore_index) & ((wide < 0) | (wide >= self.n_classes))
        if inside is not None:
            bad &= inside
        if bad.any():
            v = int(raw[bad][0])
            subject = where if isinstance(where, str) else where()
            raise InputDataError(
                f"{subject}: mask value {v} is not a class index in [0, {self.n_classes}); "
                "set class_values (raw value per class) or class_remap in the dataset config"
            )

    # -- image scaling
    def _scale_params(self, dtype: np.dtype) -> tuple[np.float32, np.float32] | None:
        """(offset, factor) of the scaling ``(x - offset) * factor`` for raw data of ``dtype``
        (None: float data, used as is)."""
        if dtype in self._scale_cache:
            return self._scale_cache[dtype]
        rng = self.scale
        if rng is None:
            rng = _dtype_range(np.dtype(self.image_dtype) if self.image_dtype else dtype)
        params = None if rng is None else (np.float32(rng[0]), np.float32(1.0 / (rng[1] - rng[0])))
        self._scale_cache[dtype] = params
        return params

    def _scale_image(self, img: np.ndarray) -> np.ndarray:
        """(bands, H, W) raw values -> float32 scaled with the per-dataset range.

        ``(x - offset) * factor`` in float32 (:meth:`_scale_params`), the same operations
        :func:`prepare_batch` performs on compact batches. An 8-bit crop is converted by torch
        (a cast, then the scaling in place: about half the time of numpy's mixed-type ufunc,
        and bit-identical since every step is one IEEE float32 operation); other dtypes go
        through a single numpy ufunc call.
        """
        params = self._scale_params(img.dtype)
        if params is None:
            return img.astype(np.float32)
        lo, factor = params
        if img.dtype == np.uint8 and img.flags.c_contiguous and img.flags.writeable:
            t = torch.from_numpy(img).to(torch.float32)
            if lo != 0.0:
                t.sub_(float(lo))
            return t.mul_(float(factor)).numpy()
        if lo == 0.0:
            return np.multiply(img, factor, dtype=np.float32)
        x = np.subtract(img, lo, dtype=np.float32)
        x *= factor
        return x

    def _keeps_raw(self, dtype: np.dtype) -> bool:
        """Whether a crop of ``dtype`` travels unscaled (compact batches without augmentation,
        8-bit data: :func:`prepare_batch` scales it on the device)."""
        return (
            self.compact_batches
            and self.transform is None
            and self._raw_images_ok
            and dtype == np.uint8
            and self._scale_params(dtype) is not None
        )

    def _prepare_image(self, img: np.ndarray) -> np.ndarray:
        """Scaled float32, or the raw 8-bit crop when it travels unscaled (:meth:`_keeps_raw`)."""
        return img if self._keeps_raw(img.dtype) else self._scale_image(img)

    # -- raster access
    def _handle(self, path: str) -> DatasetReader:
        return self.cache.get(path)

    def _read_pair(
        self,
        image_path: str,
        mask_path: str,
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        mask_band: int = 0,
        raw: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return image (bands, H, W) (float32 scaled, or raw uint8: see _prepare_image; with
        ``raw`` as read), mask (H, W) raw, inside (H, W) or None.

        ``mask_band``: the 1-based band of the mask (0: not given, the mask must have one band;
        a multi-band mask is refused rather than read from band 1 silently)."""
        img, _ = self._read(image_path, row_off, col_off, height, width, self.bands, 0)
        bands = [int(mask_band)] if mask_band > 0 else None
        msk, inside = self._read(
            mask_path, row_off, col_off, height, width, bands, self.ignore_index
        )
        if msk.shape[0] != 1:
            raise InputDataError(
                f"{mask_path}: mask has {msk.shape[0]} bands; a mask is one band of class values: "
                "name the band in a mask_band column of the CSV (the balanced CSV has one) or the "
                "dataset's mask_band key"
            )
        return (img if raw else self._prepare_image(img)), msk[0], inside

    def _read(
        self,
        path: str,
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        bands: Sequence[int] | None,
        fill: float,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not (self.serialize_rasterio_reads or self.reopen_rasterio_on_read):
            ds = self._handle(path)
            data = read_inside(ds, path, row_off, col_off, height, width, bands)
            if data is not None:
                return data, None
            return read_window(ds, row_off, col_off, height, width, bands, fill)
        lock = (
            _file_lock(self.rasterio_lock_dir, path)
            if self.serialize_rasterio_reads
            else contextlib.nullcontext()
        )
        with lock:
            if self.reopen_rasterio_on_read:
                with open_raster(path) as ds:
                    return read_window(ds, row_off, col_off, height, width, bands, fill)
            return read_window(self._handle(path), row_off, col_off, height, width, bands, fill)

    # -- output
    def _base_seed(self) -> int:
        """``seed``, else torch's seed of this worker (or process)."""
        if self.seed is not None:
            return int(self.seed)
        info = torch.utils.data.get_worker_info()
        return int(info.seed if info is not None else torch.initial_seed()) % (2**63)

    def _item_seed(self, index: int, salt: int = 0, draw: int = 0) -> np.random.SeedSequence:
        """Seed of item ``index`` in this epoch; ``draw`` > 0 tells repeated draws apart."""
        epoch, repeat = self._epoch_key()
        entropy = [self._base_seed(), epoch, int(index), salt]
        if repeat:
            return np.random.SeedSequence([*entropy, int(draw), repeat])
        return np.random.SeedSequence([*entropy, int(draw)] if draw else entropy)

    @staticmethod
    def _unpack(index: int | tuple[int, int]) -> tuple[int, int]:
        """(row, draw) of a plain index or of a ``(row, draw)`` pair from a tagged sampler."""
        if isinstance(index, tuple):
            return int(index[0]), int(index[1])
        return int(index), 0

    def _finish(
        self, image: np.ndarray, mask: np.ndarray, index: int, draw: int = 0
    ) -> dict[str, torch.Tensor]:
        """Image (bands, H, W) from _prepare_image + class mask (H, W) -> augmented tensors.

        With ``compact_batches`` the item also holds ``image_scale`` = (offset, factor), float32:
        :func:`prepare_batch` computes ``(image - offset) * factor`` on the device ((0, 1) for an
        image already scaled here)."""
        if self.transform is not None:
            seed = int(self._item_seed(index, salt=7, draw=draw).generate_state(1)[0])
            if hasattr(self.transform, "set_random_state"):
                # one shared stream for the whole pipeline: Compose.set_random_seed would give
                # every transform the same seed, so all p=0.5 decisions would coincide
                self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
            elif hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(seed)
            out = self.transform(
                image=np.ascontiguousarray(image.transpose(1, 2, 0)),
                mask=mask.astype(np.int32 if mask.max(initial=0) > 255 else np.uint8),
            )
            img_t = out["image"]
            msk_t = out["mask"]
            if isinstance(img_t, np.ndarray):
                img_t = torch.from_numpy(np.ascontiguousarray(img_t.transpose(2, 0, 1)))
            if isinstance(msk_t, np.ndarray):
                msk_t = torch.from_numpy(np.ascontiguousarray(msk_t))
            img_t = img_t.float()
            msk_t = msk_t.to(_TORCH_DTYPES[self._mask_dtype])
        else:
            img_t = torch.from_numpy(np.ascontiguousarray(image))
            msk_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=self._mask_dtype))
        item: dict[str, torch.Tensor]
        if self.soft_labels:
            hard = msk_t.long()
            valid = hard != self.ignore_index
            safe = torch.where(valid, hard, torch.zeros_like(hard))
            soft = torch.nn.functional.one_hot(safe, self.n_classes).permute(2, 0, 1).float()
            item = {"image": img_t, "mask": soft * valid.unsqueeze(0).float()}
        else:
            item = {"image": img_t, "mask": msk_t}
        if self.compact_batches:
            params = self._scale_params(image.dtype) if img_t.dtype == torch.uint8 else None
            key = (0.0, 1.0) if params is None else (float(params[0]), float(params[1]))
            scale = self._scale_tensors.get(key)
            if scale is None:
                scale = self._scale_tensors[key] = torch.tensor(key, dtype=torch.float32)
            item["image_scale"] = scale.clone()  # every item owns its tensor
        return item

    @property
    def epoch(self) -> int:
        """The epoch whose random crops / augmentations items get (see :meth:`set_epoch`)."""
        return int(self._epoch_state[0])

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.set_epoch(value)

    def _epoch_key(self) -> tuple[int, int]:
        """(epoch, repeat), read from the shared memory the main process writes."""
        epoch, repeat = self._epoch_state.tolist()
        return int(epoch), int(repeat)

    def set_epoch(self, epoch: int, repeat: int = 0) -> None:
        """Change the random crops / augmentations of the next pass (call before iterating).

        ``repeat`` > 0 tells apart further passes over the loader within one epoch (the train
        loop restarts the loader when ``steps_per_epoch`` exceeds its length). The values live
        in shared memory, so DataLoader workers see them, persistent workers included:
        epoch 1 gives the same crops with ``persistent_workers`` true or false, any
        ``num_workers``.
        """
        self._epoch_state[0] = int(epoch)
        self._epoch_state[1] = int(repeat)

    def close(self) -> None:
        """Close every open raster handle of this process."""
        self.cache.close()
