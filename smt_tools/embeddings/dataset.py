"""Tile windows as raw pixel batches, and the batched preprocessing that makes model input.

:class:`TileBatchDataset` yields whole BATCHES (one item = one batch of tiles) of RAW window
pixels in the raster's dtype (uint8 for 8-bit imagery); a window that needs no resize travels
as its centre crop only, so a 256² uint8 window moves a quarter of the bytes of its float32
224² model input. Windows are read in on-disk order (image, row, column; windows of one shape
batched together), each DataLoader worker through its own :class:`~smt_tools.raster.RasterCache`
(handles are per process; the cache re-opens after fork). The positions in the item say which
caller rows the batch holds.

:func:`preprocess_batch` then turns a raw batch into model input with one batched tensor op
per step, on whatever device the batch is on (the model's: the main process copies the raw
batch there first). Radiometric scaling is per DATASET (docs/algorithms.md §7): ``scale:
[min, max]`` from config, or the dtype range for integer data; values are clipped to [0, 1]
after scaling.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.embeddings.model import Preprocess
from smt_tools.errors import ConfigError
from smt_tools.raster.handles import RasterCache
from smt_tools.raster.window import read_window

_CACHE = RasterCache(maxsize=32)


def resolve_scale(
    image_paths: Sequence[str],
    bands: Sequence[int],
    scale: tuple[float, float] | None,
    cache: RasterCache | None = None,
) -> tuple[float, float]:
    """The per-dataset (min, max): ``scale`` if given, else the integer dtype range.

    Also checks that every image has the requested bands. Float images need ``scale``.
    """
    cache = cache or _CACHE
    dtypes: set[str] = set()
    for path in sorted(set(image_paths)):
        ds = cache.get(path)
        if max(bands) > ds.count:
            raise ConfigError(
                f"embeddings.bands {list(bands)}: {path} has only {ds.count} band(s); "
                "list 1-based bands that exist (one band is repeated to RGB)"
            )
        dtypes.update(ds.dtypes[b - 1] for b in bands)
    if scale is not None:
        return float(scale[0]), float(scale[1])
    kinds = {np.dtype(d).kind for d in dtypes}
    if kinds - {"u", "i"}:
        raise ConfigError(
            f"embeddings.scale is not set and the images hold {', '.join(sorted(dtypes))} data; "
            "set embeddings.scale: [min, max] to the radiometric range of the whole dataset"
        )
    if len(dtypes) > 1:
        raise ConfigError(
            f"embeddings.scale is not set and the images mix dtypes {', '.join(sorted(dtypes))}; "
            "set embeddings.scale: [min, max] so all images share one radiometric scale"
        )
    info = np.iinfo(np.dtype(dtypes.pop()))
    return float(info.min), float(info.max)


def worker_init(_worker_id: int) -> None:
    """DataLoader worker setup: one torch thread per worker (the model owns the cores)."""
    import torch

    torch.set_num_threads(1)


def _centre_crop(x: Any, crop: int) -> Any:
    """Centre ``crop`` x ``crop`` window of (..., h, w); zero-padded bottom/right if smaller."""
    import torch.nn.functional as F

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < crop or w < crop:  # the official processor never needs this; keep it defined
        x = F.pad(x, (0, max(0, crop - w), 0, max(0, crop - h)))
        h, w = int(x.shape[-2]), int(x.shape[-1])
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


@functools.lru_cache(maxsize=16)
def _norm_tensors(mean: tuple[float, ...], std: tuple[float, ...], device: str) -> tuple[Any, Any]:
    """(mean, 1 / std) as (1, 3, 1, 1) float32 tensors on ``device``, made once per device:
    building them per batch would be a blocking host-to-device copy between batches."""
    import torch

    with torch.inference_mode(False), torch.no_grad():
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        inv_std = 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        return m.to(device), inv_std.to(device)


def _scale01(raw: Any, lo: float, hi: float) -> Any:
    """float32 ``clip((raw - lo) / (hi - lo), 0, 1)`` in a new tensor (``raw`` is left as is)."""
    import torch

    return raw.to(torch.float32).sub(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)


def crops_before_resize(height: int, width: int, spec: Preprocess) -> bool:
    """True when a ``height`` x ``width`` window needs no resize and covers the crop: its
    centre crop can be taken on the raw values (by the reader: fewer bytes to move)."""
    return min(height, width) == spec.shortest_edge and min(height, width) >= spec.crop


def preprocess_batch(raw: Any, spec: Preprocess, *, cropped: bool = False) -> Any:
    """(b, c, h, w) raw tensor (any numeric dtype, c = 1 or 3) -> (b, 3, crop, crop) float32
    normalised model input, on ``raw``'s device (docs/algorithms.md §7).

    Steps: per-dataset scale to [0, 1] (clipped), bicubic antialiased resize of the shortest
    edge to ``spec.shortest_edge`` (``torch.nn.functional.interpolate``), centre crop, one band
    repeated to three, mean/std. When no resize is needed the crop is taken first, so only the
    cropped pixels are converted; ``cropped``: ``raw`` is that crop already (the reader took
    it, :func:`crops_before_resize`). The same ops run on CPU and GPU, so the input differs
    between devices only by float rounding.
    """
    import torch.nn.functional as F

    lo, hi = spec.scale
    h, w = int(raw.shape[-2]), int(raw.shape[-1])
    edge = spec.shortest_edge
    if cropped or min(h, w) == edge:
        x = _scale01(raw if cropped else _centre_crop(raw, spec.crop), lo, hi)
    else:
        x = _scale01(raw, lo, hi)
        if h <= w:
            size = (edge, max(1, round(w * edge / h)))
        else:
            size = (max(1, round(h * edge / w)), edge)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        x = _centre_crop(x.clamp_(0.0, 1.0), spec.crop)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean, inv_std = _norm_tensors(spec.mean, spec.std, str(x.device))
    return ((x - mean) * inv_std).contiguous()


def disk_order_batches(frame: pd.DataFrame, batch_size: int) -> list[np.ndarray]:
    """Row positions of ``frame`` cut into batches in on-disk order.

    Rows are ordered by window shape (height, width), then image, row and column offset, so
    a batch holds windows of one shape (one stacked tensor) that are neighbours in the file
    (GDAL reads each block once and the worker's handle stays open). Returns int64 arrays of
    at most ``batch_size`` positions; every position appears once.
    """
    if len(frame) == 0:
        return []
    img = pd.factorize(frame["image_path"].astype(str), sort=True)[0]
    cols = [frame[c].to_numpy(np.int64) for c in ("col_off", "row_off")]
    hw = [frame[c].to_numpy(np.int64) for c in ("width", "height")]
    order = np.lexsort((*cols, img, *hw)).astype(np.int64)
    shape_key = np.stack(hw, axis=1)[order]
    change = np.flatnonzero(np.any(shape_key[1:] != shape_key[:-1], axis=1)) + 1
    batches: list[np.ndarray] = []
    for group in np.split(order, change):
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    return batches


class TileBatchDataset:
    """Map-style dataset whose item ``i`` is batch ``i`` in on-disk order:
    ``(positions int64 (b,), pixels (b, c, h, w), cropped bool)``.

    frame: tile rows with image_path, row_off, col_off, height, width; positions are row
    numbers of ``frame`` (0-based). pixels are the raw window values in the raster's dtype
    (``scale[0]``, rounded to that dtype, outside the raster); c = ``len(spec.bands)``. When
    the windows need no resize (:func:`crops_before_resize`) pixels hold only their centre
    ``crop`` x ``crop`` and ``cropped`` is True (pass it on to :func:`preprocess_batch`).
    """

    def __init__(self, frame: pd.DataFrame, spec: Preprocess, batch_size: int) -> None:
        self.image_path = frame["image_path"].astype(str).to_numpy()
        self.window = frame[["row_off", "col_off", "height", "width"]].to_numpy(np.int64)
        self.spec = spec
        self.batch_size = batch_size
        self.batches = disk_order_batches(frame, batch_size)
        self.cache = _CACHE

    def __len__(self) -> int:
        return len(self.batches)

    def read_tile(self, i: int) -> np.ndarray:
        """(bands, h, w) raw pixels of tile row ``i``, in the raster's dtype (``scale[0]``
        outside the raster)."""
        r, c, h, w = (int(v) for v in self.window[i])
        path = str(self.image_path[i])
        data, _ = read_window(
            self.cache.get(path),
            r,
            c,
            h,
            w,
            self.spec.bands,
            self.spec.scale[0],
            path=path,
            keep_dtype=True,
        )
        return data

    def __getitem__(self, b: int) -> tuple[Any, Any, bool]:
        import torch

        positions = self.batches[b]
        h, w = (int(v) for v in self.window[positions[0], 2:])  # one shape per batch
        rows, cols = slice(None), slice(None)
        cropped = crops_before_resize(h, w, self.spec)
        if cropped:
            top, left, crop = (h - self.spec.crop) // 2, (w - self.spec.crop) // 2, self.spec.crop
            rows, cols = slice(top, top + crop), slice(left, left + crop)
        # np.stack promotes when images of different dtypes share a batch (scale given)
        out = np.stack([self.read_tile(int(i))[:, rows, cols] for i in positions])
        return torch.from_numpy(positions.copy()), torch.from_numpy(out), cropped


def default_workers(requested: int) -> int:
    """``num_workers`` capped at the cores available (0 = read in the main process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(requested, cores or 1))
