"""Batched DINOv2 inference over tile windows: CLS token of the last hidden state, float32.

The pipeline (docs/algorithms.md §7):

1. DataLoader workers (``num_workers``), each with its own raster handle cache, read the
   windows of whole batches in on-disk order and hand over RAW pixels (uint8 for 8-bit
   imagery), so the bytes through worker shared memory, pinning and the host-to-device copy
   are a quarter of float32 model input.
2. On GPU the loader pins each batch; the main process copies it with ``non_blocking`` on a
   side stream, one batch ahead of the model.
3. :func:`~smt_tools.embeddings.dataset.preprocess_batch` scales, resizes, crops and
   normalises the whole batch on the model's device.
4. The model runs under ``torch.inference_mode()``; on GPU under bf16 autocast (fp16 where
   bf16 is unsupported), its output copied back asynchronously while the next batch is
   queued, so the GPU never waits on the host between batches; on CPU in float32.

Batches come out in on-disk order; :func:`iter_embeddings` names each row by tile id and
:func:`extract_embeddings` puts them back in the caller's row order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from smt_tools._worker_errors import unwrap_worker_errors
from smt_tools.embeddings.dataset import (
    TileBatchDataset,
    default_workers,
    preprocess_batch,
    worker_init,
)
from smt_tools.embeddings.model import LoadedModel, Preprocess
from smt_tools.errors import missing_dependency


def pick_device(use_gpu: bool) -> str:
    """``cuda`` when asked for and available, else ``cpu`` (a warning says why)."""
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch and transformers", "embed", "Embeddings") from None
    if use_gpu and torch.cuda.is_available():
        return "cuda"
    if use_gpu:
        import warnings

        warnings.warn(
            "embeddings.use_gpu is true but no CUDA device is available; running on CPU",
            RuntimeWarning,
            stacklevel=2,
        )
    return "cpu"


def _forward(model: Any, x: Any, device: str) -> Any:
    """(b, 3, H, W) float32 tensor on ``device`` -> (b, d) float32 CLS tensor on ``device``
    (bf16/fp16 autocast on GPU). The caller holds ``torch.inference_mode()``."""
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            out = model(pixel_values=x).last_hidden_state[:, 0]
    else:
        out = model(pixel_values=x).last_hidden_state[:, 0]
    return out.float()


def forward_cls(model: Any, pixels: Any, device: str) -> np.ndarray:
    """(b, 3, H, W) float32 tensor -> (b, d) float32 CLS embeddings (``last_hidden_state[:, 0]``)."""
    import torch

    with torch.inference_mode():
        out = _forward(model, pixels.to(device, non_blocking=True), device)
        return out.cpu().numpy().astype(np.float32, copy=False)


@dataclass
class ExtractStats:
    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def make_loader(
    frame: pd.DataFrame, spec: Preprocess, batch_size: int, num_workers: int, device: str
) -> Any:
    """The DataLoader of raw batches ``(positions int64 (b,), pixels (b, c, h, w), cropped)``
    in on-disk order (:class:`~smt_tools.embeddings.dataset.TileBatchDataset`; pinned when
    ``device`` is CUDA); ``num_workers`` is capped at the cores."""
    from torch.utils.data import DataLoader

    workers = default_workers(num_workers)
    return DataLoader(
        TileBatchDataset(frame, spec, batch_size),  # type: ignore[arg-type]
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def device_batches(loader: Any, device: str) -> Iterator[tuple[np.ndarray, Any, bool]]:
    """``(positions, raw pixels on device, cropped)`` per loader batch. On CUDA each batch is
    copied from pinned memory with ``non_blocking`` on a side stream as soon as it is fetched
    (while the GPU still runs the previous batch); only work queued after it on the compute
    stream waits for the copy."""
    import torch

    if not device.startswith("cuda"):
        for pos, raw, cropped in loader:
            yield pos.numpy(), raw, bool(cropped)
        return
    stream = torch.cuda.Stream(device=device)
    for pos, raw, cropped in loader:
        with torch.cuda.stream(stream):
            dev = raw.to(device, non_blocking=True)
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(stream)
        dev.record_stream(compute)
        yield pos.numpy(), dev, bool(cropped)


def _iter_positions(
    frame: pd.DataFrame,
    loaded: LoadedModel,
    spec: Preprocess,
    batch_size: int,
    num_workers: int,
    device: str,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(frame row positions int64 (b,), embeddings float32 (b, d))`` in on-disk order.

    On CUDA the output of batch k is copied to pinned host memory asynchronously and handed
    out only after batch k + 1 is queued on the GPU (two batches in flight)."""
    import torch

    cuda = device.startswith("cuda")
    pending: deque[tuple[np.ndarray, Any, Any]] = deque()
    loader = make_loader(frame, spec, batch_size, num_workers, device)
    # unwrap: a read error in a worker reaches the caller as the worker's one-line message
    with torch.inference_mode(), unwrap_worker_errors():
        for pos, raw, cropped in device_batches(loader, device):
            out = _forward(loaded.model, preprocess_batch(raw, spec, cropped=cropped), device)
            if not cuda:
                yield pos, out.numpy().astype(np.float32, copy=False)
                continue
            host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            pending.append((pos, host, done))
            if len(pending) > 1:
                yield _finish(*pending.popleft())
        while pending:
            yield _finish(*pending.popleft())


def _finish(pos: np.ndarray, host: Any, done: Any) -> tuple[np.ndarray, np.ndarray]:
    done.synchronize()
    return pos, host.numpy().copy()


def iter_embeddings(
    frame: pd.DataFrame,
    loaded: LoadedModel,
    spec: Preprocess,
    *,
    batch_size: int,
    num_workers: int,
    device: str,
    stats: ExtractStats | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(tile_id int64 (b,), embedding float32 (b, d))`` batch by batch, in on-disk
    order (image, row, column): join the rows by tile id, not by position."""
    tile_id = frame["tile_id"].to_numpy(np.int64)
    stats = stats if stats is not None else ExtractStats()
    start = time.perf_counter()
    for pos, emb in _iter_positions(frame, loaded, spec, batch_size, num_workers, device):
        stats.images += len(pos)
        stats.seconds = time.perf_counter() - start
        yield tile_id[pos], emb


def extract_embeddings(
    frame: pd.DataFrame,
    loaded: LoadedModel,
    spec: Preprocess,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All embeddings at once: (n,) int64 tile ids and (n, d) float32 rows, in frame order."""
    n = len(frame)
    emb = np.zeros((n, loaded.dim), np.float32)
    for pos, b_emb in _iter_positions(frame, loaded, spec, batch_size, num_workers, device):
        emb[pos] = b_emb
        if progress is not None:
            progress(len(pos))
    return frame["tile_id"].to_numpy(np.int64).copy(), emb
