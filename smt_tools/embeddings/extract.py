"""Batched DINOv2 inference over tile windows: CLS token of the last hidden state, float32.

Readers run in DataLoader worker processes (``num_workers``), each with its own raster handle
cache; they hand over ready, normalised batches (pinned on GPU) so the model never waits on
I/O when there are enough workers. Inference runs under ``torch.inference_mode()``; on GPU
under bf16 autocast (fp16 where bf16 is unsupported); on CPU in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from smt_tools._worker_errors import unwrap_worker_errors
from smt_tools.embeddings.dataset import TileBatchDataset, default_workers, worker_init
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


def forward_cls(model: Any, pixels: Any, device: str) -> np.ndarray:
    """(b, 3, H, W) float32 tensor -> (b, d) float32 CLS embeddings (``last_hidden_state[:, 0]``)."""
    import torch

    with torch.inference_mode():
        x = pixels.to(device, non_blocking=True)
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                out = model(pixel_values=x).last_hidden_state[:, 0]
        else:
            out = model(pixel_values=x).last_hidden_state[:, 0]
        return out.float().cpu().numpy().astype(np.float32, copy=False)


@dataclass
class ExtractStats:
    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


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
    """Yield ``(tile_id int64 (b,), embedding float32 (b, d))`` batch by batch, in frame order."""
    import torch
    from torch.utils.data import DataLoader

    dataset = TileBatchDataset(frame, spec, batch_size)
    workers = default_workers(num_workers)
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    stats = stats if stats is not None else ExtractStats()
    start = time.perf_counter()
    # unwrap: a read error in a worker reaches the caller as the worker's one-line message
    with torch.inference_mode(), unwrap_worker_errors():
        for ids, pixels in loader:
            emb = forward_cls(loaded.model, pixels, device)
            stats.images += len(ids)
            stats.seconds = time.perf_counter() - start
            yield ids.numpy().astype(np.int64), emb


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
    ids: list[np.ndarray] = []
    embs: list[np.ndarray] = []
    for b_ids, b_emb in iter_embeddings(
        frame, loaded, spec, batch_size=batch_size, num_workers=num_workers, device=device
    ):
        ids.append(b_ids)
        embs.append(b_emb)
        if progress is not None:
            progress(len(b_ids))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, loaded.dim), np.float32)
    return np.concatenate(ids), np.concatenate(embs)
