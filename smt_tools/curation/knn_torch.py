"""Exact cosine kNN in torch: chunked matmul + top-k (``uniqueness.backend: torch``).

On the GPU when ``torch.cuda.is_available()``, else the same code on the CPU (an exact
fallback, no approximation). Rows are unit vectors, so cosine similarity is the inner
product: a block of query rows is multiplied by all rows and the ``kq`` largest similarities
of each query are kept. The block is sized so that its (rows x n) similarity matrix stays
within :data:`GPU_BLOCK_BYTES` / :data:`CPU_BLOCK_BYTES`.

``precision`` (GPU only; the CPU always computes in fp32):

- ``fp32``: full fp32 matmul (TF32 switched off for the search);
- ``tf32`` / ``bf16``: the matmul runs in TF32 / bfloat16 and keeps ``kq +``
  :data:`RERANK_MARGIN` candidates per query, which are then re-ranked by their fp32
  similarity; the ``kq`` best of those are returned. A true neighbour is lost only if the
  low-precision rounding (about 1e-3 for TF32, 1e-2 for bf16) pushes it behind
  ``kq + margin`` others, which needs that many candidates within the rounding of it.

The caller (:mod:`smt_tools.curation.uniqueness`) recomputes the returned neighbours'
distances in float32 numpy and removes self by tile id, as for every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from smt_tools.errors import missing_dependency

#: extra candidates per query kept by a tf32/bf16 search, re-ranked in fp32
RERANK_MARGIN = 16

#: size of one block's (rows x n) similarity matrix on the GPU / on the CPU
GPU_BLOCK_BYTES = 1 << 30
CPU_BLOCK_BYTES = 1 << 27


def import_torch(purpose: str = "uniqueness.backend: torch") -> Any:
    """``torch``, or the standard one-line error naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "embed", purpose) from None
    return torch


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (False without torch)."""
    try:
        import torch
    except (ImportError, OSError):
        return False
    return bool(torch.cuda.is_available())


def search_torch(
    z: np.ndarray,
    kq: int,
    *,
    precision: str = "fp32",
    device: str | None = None,
    num_threads: int = 0,
    **_unused: object,
) -> np.ndarray:
    """(n, kq) int64 positions of the ``kq`` largest inner products of every row (self included).

    z: (n, d) float32 unit rows. device: ``cuda`` / ``cpu`` (None: cuda when available).
    num_threads: CPU threads for the search (0: torch's default); restored afterwards.
    """
    torch = import_torch()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    low = precision if dev != "cpu" else "fp32"  # bf16/tf32 matmuls are a GPU option
    n = z.shape[0]
    kq = min(kq, n)
    cand = min(n, kq + RERANK_MARGIN) if low != "fp32" else kq
    budget = GPU_BLOCK_BYTES if dev != "cpu" else CPU_BLOCK_BYTES
    rows = int(max(1, min(n, budget // (4 * n))))
    out = np.empty((n, kq), dtype=np.int64)
    with _settings(torch, dev, low, num_threads), torch.inference_mode():
        x32 = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(dev)
        xs = x32.to(torch.bfloat16) if low == "bf16" else x32
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            sim = xs[start:stop] @ xs.T  # (rows, n)
            top = torch.topk(sim, cand, dim=1, largest=True, sorted=False).indices
            del sim
            if low != "fp32":
                top = _rerank(torch, x32[start:stop], x32, top, kq)
            out[start:stop] = top.cpu().numpy()
    return out


def _rerank(torch: Any, q: Any, x: Any, cand: Any, kq: int) -> Any:
    """The ``kq`` of ``cand`` (rows, m) with the largest fp32 inner product with ``q``."""
    sim = (x[cand] * q[:, None, :]).sum(dim=2)  # elementwise: fp32 whatever the matmul mode
    best = torch.topk(sim, kq, dim=1, largest=True, sorted=False).indices
    return torch.gather(cand, 1, best)


@contextmanager
def _settings(torch: Any, dev: str, precision: str, num_threads: int) -> Iterator[None]:
    """TF32 on only for the ``tf32`` matmul (fp32 elsewhere), CPU threads; both restored."""
    old_precision = torch.get_float32_matmul_precision()
    old_threads = torch.get_num_threads()
    try:
        torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
        if dev == "cpu" and num_threads > 0:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_float32_matmul_precision(old_precision)
        torch.set_num_threads(old_threads)
