"""Tile windows as model-ready tensors: read through the raster layer, scaled, resized.

:class:`TileBatchDataset` yields whole BATCHES (one item = one batch of tiles): a worker reads
the windows of a batch through its own :class:`~smt_tools.raster.RasterCache` (handles are
per process; the cache re-opens after fork), and preprocesses the stack with one tensor op
per step, so the main process only moves ready tensors to the model.

Radiometric scaling is per DATASET (docs/algorithms.md §7): ``scale: [min, max]`` from config, or the
dtype range for integer data; values are clipped to [0, 1] after scaling.
"""

from __future__ import annotations

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


def preprocess_batch(raw: Any, spec: Preprocess) -> Any:
    """(b, c, h, w) numeric tensor -> (b, 3, crop, crop) float32 normalised model input.

    Steps: per-dataset scale to [0, 1] (clipped), bicubic antialiased resize of the shortest
    edge to ``spec.shortest_edge``, centre crop, one band repeated to three, mean/std. When no
    resize is needed the crop is taken first, so only the cropped pixels are converted.
    """
    import torch
    import torch.nn.functional as F

    lo, hi = spec.scale
    h, w = int(raw.shape[-2]), int(raw.shape[-1])
    edge = spec.shortest_edge
    if min(h, w) == edge:
        x = _centre_crop(raw, spec.crop).to(torch.float32)
        x.sub_(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)
    else:
        x = raw.to(torch.float32)
        x.sub_(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)
        if h <= w:
            size = (edge, max(1, round(w * edge / h)))
        else:
            size = (max(1, round(h * edge / w)), edge)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        x = _centre_crop(x.clamp_(0.0, 1.0), spec.crop)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) * inv_std).contiguous()


class TileBatchDataset:
    """Map-style dataset whose item ``i`` is batch ``i``: ``(tile_ids int64 (b,), pixels)``.

    frame: tile rows with tile_id, image_path, row_off, col_off, height, width.
    Windows that extend past the raster are filled with ``scale[0]`` outside it.
    """

    def __init__(self, frame: pd.DataFrame, spec: Preprocess, batch_size: int) -> None:
        self.tile_id = frame["tile_id"].to_numpy(np.int64)
        self.image_path = frame["image_path"].astype(str).to_numpy()
        self.window = frame[["row_off", "col_off", "height", "width"]].to_numpy(np.int64)
        self.spec = spec
        self.batch_size = batch_size
        self.cache = _CACHE

    def __len__(self) -> int:
        return (len(self.tile_id) + self.batch_size - 1) // self.batch_size

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

    def __getitem__(self, b: int) -> tuple[Any, Any]:
        import torch

        start = b * self.batch_size
        stop = min(start + self.batch_size, len(self.tile_id))
        raws = [self.read_tile(i) for i in range(start, stop)]
        shapes = {a.shape for a in raws}
        if len(shapes) == 1:
            pixels = preprocess_batch(torch.from_numpy(np.stack(raws)), self.spec)
        else:  # mixed window sizes: resize one by one (same result per tile)
            pixels = torch.cat(
                [preprocess_batch(torch.from_numpy(a[None]), self.spec) for a in raws]
            )
        return torch.from_numpy(self.tile_id[start:stop].copy()), pixels


def default_workers(requested: int) -> int:
    """``num_workers`` capped at the cores available (0 = read in the main process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(requested, cores or 1))
