"""Shared machinery of the datasets: windowed reads past the edge, per-raster locks, scaling,
class remapping, augmentation and output format. See :mod:`smt_tools.train.datasets`."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from smt_tools.errors import ConfigError, InputDataError, RasterReadError
from smt_tools.raster import RasterCache, open_raster
from smt_tools.train._targets import build_transforms

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

DEFAULT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "smt_rasterio_locks")
_TRUE = {"true", "1", "yes", "t", "y"}


# ----------------------------------------------------------------------------- reading


def read_window(
    ds: DatasetReader,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    bands: Sequence[int] | None,
    fill: float,
    out_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a window that may run past the raster edge.

    Returns (data (len(bands), height, width) in the raster's dtype, or ``out_dtype`` (GDAL
    converts values while reading, no scaling), inside): ``inside`` is None when the whole
    window lies inside the raster, else a (height, width) bool array (True = pixel inside).
    Pixels outside are ``fill``.
    """
    from rasterio.windows import Window

    idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
    r0, c0 = max(row_off, 0), max(col_off, 0)
    r1, c1 = min(row_off + height, ds.height), min(col_off + width, ds.width)
    full = (r0, c0, r1, c1) == (row_off, col_off, row_off + height, col_off + width)
    data = None
    if r1 > r0 and c1 > c0:
        try:
            data = ds.read(idx, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=out_dtype)
        except Exception as exc:  # rasterio raises several types for corrupt blocks
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RasterReadError(
                f"{ds.name}: cannot read window row_off={row_off} col_off={col_off} "
                f"size={height}x{width} ({first})"
            ) from None
    if full and data is not None:
        return data, None
    dtype = np.dtype(out_dtype or ds.dtypes[idx[0] - 1])
    out = np.full(
        (len(idx), height, width), fill, dtype=np.result_type(dtype, np.min_scalar_type(fill))
    )
    inside = np.zeros((height, width), dtype=bool)
    if data is not None:
        out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data
        inside[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = True
    return out, inside


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


# ----------------------------------------------------------------------------- base


class _WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Shared machinery: handle cache, scaling, class remapping, augmentation, output format."""

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
        self.epoch = 0
        self.cache = RasterCache(maxsize=self.lru_cache_size)
        self._lut = self._build_lut(class_values, class_remap)
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
        if mapping is None:
            return None
        if any(k < 0 or k > 65535 for k in mapping):
            raise ConfigError(f"{self.name}: class_remap keys must be mask values in [0, 65535]")
        lut = np.full(65536, self.ignore_index, dtype=np.int64)
        for k, v in mapping.items():
            lut[k] = v
        return lut

    def _mask_to_classes(
        self, raw: np.ndarray, inside: np.ndarray | None, where: str
    ) -> np.ndarray:
        """Raw mask (H, W) -> int64 class indices; outside (inside False) / unmapped -> ignore."""
        if self._lut is not None:
            if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
                out = self._lut[raw]  # one gather, no range check needed
            else:
                m = raw.astype(np.int64)
                out = self._lut[np.clip(m, 0, 65535)]
                out[(m < 0) | (m > 65535)] = self.ignore_index
        else:
            # range check on the raw (usually uint8) array: 8x fewer bytes than on int64
            lo, hi = int(raw.min(initial=0)), int(raw.max(initial=0))
            out = raw.astype(np.int64)
            if lo < 0 or hi >= self.n_classes:
                bad = (out != self.ignore_index) & ((out < 0) | (out >= self.n_classes))
                if inside is not None:
                    bad &= inside
                if bad.any():
                    v = int(out[bad][0])
                    raise InputDataError(
                        f"{where}: mask value {v} is not a class index in [0, {self.n_classes}); "
                        "set class_values (raw value per class) or class_remap in the dataset "
                        "config"
                    )
        if inside is not None:
            out[~inside] = self.ignore_index
        return out

    # -- image scaling
    def _scale_image(self, img: np.ndarray, source_dtype: np.dtype | None = None) -> np.ndarray:
        """(bands, H, W) values -> float32 scaled with the per-dataset range.

        source_dtype: the raster's dtype when ``img`` was already read as float32 (then the
        scaling happens in place).
        """
        rng = self.scale
        if rng is None:
            dt = np.dtype(self.image_dtype) if self.image_dtype else (source_dtype or img.dtype)
            rng = _dtype_range(dt)
        x = img if img.dtype == np.float32 and source_dtype is not None else img.astype(np.float32)
        if rng is not None:
            lo, hi = rng
            if lo != 0.0:
                x -= np.float32(lo)
            x *= np.float32(1.0 / (hi - lo))
        return x

    # -- raster access
    def _handle(self, path: str) -> DatasetReader:
        return self.cache.get(path)

    def _read_pair(
        self, image_path: str, mask_path: str, row_off: int, col_off: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return image (bands, H, W) float32 scaled, mask (H, W) raw, inside (H, W) or None."""
        img, src_dtype = self._read_image(image_path, row_off, col_off, height, width)
        msk, inside = self._read(mask_path, row_off, col_off, height, width, [1], self.ignore_index)
        return self._scale_image(img, src_dtype), msk[0], inside

    def _read_image(
        self, path: str, row_off: int, col_off: int, height: int, width: int
    ) -> tuple[np.ndarray, np.dtype]:
        """Image window read straight into float32 (GDAL converts), and the raster's dtype."""
        lock = (
            _file_lock(self.rasterio_lock_dir, path)
            if self.serialize_rasterio_reads
            else contextlib.nullcontext()
        )
        with lock:
            if self.reopen_rasterio_on_read:
                with open_raster(path) as ds:
                    dt = np.dtype(ds.dtypes[(self.bands or [1])[0] - 1])
                    data = read_window(
                        ds, row_off, col_off, height, width, self.bands, 0, "float32"
                    )
                    return data[0], dt
            ds = self._handle(path)
            dt = np.dtype(ds.dtypes[(self.bands or [1])[0] - 1])
            return read_window(ds, row_off, col_off, height, width, self.bands, 0, "float32")[0], dt

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
    def _item_seed(self, index: int, salt: int = 0) -> np.random.SeedSequence:
        base = self.seed
        if base is None:
            info = torch.utils.data.get_worker_info()
            base = int(info.seed if info is not None else torch.initial_seed()) % (2**63)
        return np.random.SeedSequence([int(base), int(self.epoch), int(index), salt])

    def _finish(self, image: np.ndarray, mask: np.ndarray, index: int) -> dict[str, torch.Tensor]:
        """Scaled image (bands, H, W) float32 + class mask (H, W) int64 -> augmented tensors."""
        if self.transform is not None:
            if hasattr(self.transform, "set_random_seed"):
                seed = int(self._item_seed(index, salt=7).generate_state(1)[0])
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
            msk_t = msk_t.long()
        else:
            img_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            msk_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        if self.soft_labels:
            valid = msk_t != self.ignore_index
            safe = torch.where(valid, msk_t, torch.zeros_like(msk_t))
            soft = torch.nn.functional.one_hot(safe, self.n_classes).permute(2, 0, 1).float()
            return {"image": img_t, "mask": soft * valid.unsqueeze(0).float()}
        return {"image": img_t, "mask": msk_t}

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops / augmentations of the next epoch (call before iterating)."""
        self.epoch = int(epoch)

    def close(self) -> None:
        """Close every open raster handle of this process."""
        self.cache.close()


def _read_csv(path: str | os.PathLike[str], n_rows: int | None, name: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"{name}: input_csv_path {p} not found; check the path")
    try:
        frame = pd.read_csv(p, nrows=n_rows)
    except Exception as exc:
        raise InputDataError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise InputDataError(f"{p}: the CSV has no rows")
    return frame


def _resolve_paths(series: pd.Series, base: Path) -> list[str]:
    out = []
    for v in series.astype(str):
        q = Path(v).expanduser()
        out.append(str(q if q.is_absolute() else base / q))
    return out


def _as_bool(series: pd.Series) -> np.ndarray:
    if series.dtype == bool:
        return series.to_numpy()
    return series.astype(str).str.strip().str.lower().isin(_TRUE).to_numpy()


#: column written by `split`: ';'-separated folds whose training set must not use the tile
BUFFER_COLUMN = "buffer_excluded_folds"


def _select_folds(
    frame: pd.DataFrame,
    folds: Sequence[int | str] | None,
    exclude_folds: Sequence[int | str] | None,
    fold_column: str,
    source: str,
) -> pd.DataFrame:
    """Rows whose ``fold_column`` value is in ``folds`` and not in ``exclude_folds`` (compared
    as text, so integer folds and group names both work)."""
    if folds is None and exclude_folds is None:
        return frame
    if fold_column not in frame.columns:
        raise InputDataError(
            f"{source}: selecting rows by '{fold_column}' needs that column; run "
            "`pytorch-smt-tools split` first (fold) or remove val_fold / val_groups / folds"
        )
    f = frame[fold_column].astype(str).str.strip()
    keep = np.ones(len(frame), dtype=bool)
    if folds is not None:
        keep &= f.isin([str(x) for x in folds]).to_numpy()
    if exclude_folds is not None:
        excluded = {str(x) for x in exclude_folds}
        keep &= ~f.isin(excluded).to_numpy()
        if fold_column == "fold" and BUFFER_COLUMN in frame.columns:
            # `split` lists, per tile, the folds whose training set must not use it (the tile
            # lies within buffer_m of one of their validation tiles); "-1" is the holdout test
            # set, which counts only when it is the held-out set (final training, no val fold).
            held_out = excluded - {"-1"} or excluded
            listed = frame[BUFFER_COLUMN].fillna("").astype(str).str.split(";")
            near = listed.map(lambda items: any(i.strip() in held_out for i in items))
            keep &= ~near.to_numpy(bool)
    out = frame.loc[keep].reset_index(drop=True)
    if out.empty:
        raise InputDataError(
            f"{source}: no rows left after selecting {fold_column} in {list(folds or [])} "
            f"and not in {list(exclude_folds or [])}; check val_fold / val_groups"
        )
    return out
