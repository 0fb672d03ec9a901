"""Batches written in place: the windowed dataset's ``__getitems__`` writes every item of a
DataLoader batch straight into one (N, ...) tensor per key, and :func:`collate_batch` hands those
tensors on instead of stacking the items into new ones.

Without it a default-output item (float32 image, int64 mask: 1.3 MB at 256 px) is written three
times: the scaled crop, the stacked batch (``default_collate``), and, with workers, that stack
in fresh shared memory, whose pages cost far more to allocate than the copy itself (about
0.8 ms per MB on the 2-core benchmark machine). Here:

- in the main process (``num_workers: 0``) each item is written once, into the batch;
- in a DataLoader worker the tensors that cross to the main process share ONE block of shared
  memory per batch (one file descriptor passed, not one per key); a default-output batch of
  8-bit windows crosses as its uint8 image and uint8 class mask (a fifth of the bytes) and is
  widened to float32 / int64 as it is unpickled in the main process (:class:`_WidenOnArrival`,
  :func:`widen_batch`): the main process receives exactly the batch ``default_collate`` would
  have made. The float32 / int64 rows are still written in the worker, so the items are right
  for any collate_fn, except when ``__getitems__`` is called by torch's fetcher whose
  collate_fn is :func:`collate_batch` (:func:`feeds_collate_batch`): that fetcher passes the
  items straight to it and it sends only the uint8 copies.

Values are those of the per-item path: ``(x - offset) * factor`` in float32, one rounding per
operation (:func:`scale_into`, :func:`widen_batch`), as ``_WindowDataset._scale_image``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

__all__ = [
    "assemble",
    "batch_tensors",
    "collate_batch",
    "feeds_collate_batch",
    "scale_into",
    "widen_batch",
]


class _RecycledBuffers:
    """Host memory for the batches made in the main process (written in place with
    ``num_workers: 0``, widened on arrival from workers), reused once free.

    Every batch needs fresh memory (1.3 MB per 256 px default-output item), and a fresh page
    costs a page fault: on the benchmark machine that is most of the widening's time. A buffer here is
    a numpy array handed out as a tensor (``torch.from_numpy``); torch holds that array until
    the tensor's storage is freed (the tensor, its views and any ``.numpy()`` of it gone), and
    only then does the array's finalizer return the memory to the pool, for the next batch.
    At most ``keep`` free buffers of one size are kept."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.free: dict[int, list[np.ndarray]] = {}

    def tensor(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        nbytes = math.prod(shape) * np_dtype.itemsize
        pool = self.free.get(nbytes)
        raw = pool.pop() if pool else np.empty(nbytes, dtype=np.uint8)
        arr = raw.view(np_dtype).reshape(tuple(shape))
        weakref.finalize(arr, self._release, raw)
        return torch.from_numpy(arr)

    def _release(self, raw: np.ndarray) -> None:
        pool = self.free.setdefault(raw.nbytes, [])
        if len(pool) < self.keep:
            pool.append(raw)


_buffers = _RecycledBuffers()


def batch_tensors(specs: Sequence[tuple[Sequence[int], torch.dtype]]) -> list[torch.Tensor]:
    """Uninitialised tensors of the (shape, dtype) ``specs``; in a DataLoader worker all in
    ONE block of shared memory (as ``default_collate`` allocates its batches, but one block
    per batch rather than one per key): sending them to the main process copies nothing and
    passes one file descriptor."""
    if get_worker_info() is None:  # recycled memory, no fresh pages (_RecycledBuffers)
        return [_buffers.tensor(shape, dtype) for shape, dtype in specs]
    offsets, nbytes = [], 0
    for shape, dtype in specs:
        offsets.append(nbytes)
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        nbytes += -(-size // 64) * 64  # 64-byte aligned starts
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
    out = []
    for (shape, dtype), offset in zip(specs, offsets, strict=True):
        strides = [1] * len(shape)
        for d in range(len(shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * int(shape[d + 1])
        size = torch.empty(0, dtype=dtype).element_size()
        # tensors of their own (not views): their rows' ``_base`` is the tensor (see _rows_of)
        t = torch.empty(0, dtype=dtype).set_(storage, offset // size, tuple(shape), strides)
        out.append(t)
    return out


def scale_into(raw: np.ndarray, params: tuple[np.float32, np.float32] | None, out: Any) -> None:
    """Write ``(raw - offset) * factor`` (float32, ``params`` = (offset, factor); None: ``raw``
    cast to float32) into the float32 tensor ``out`` of ``raw``'s shape: the same float32
    operations as ``_WindowDataset._scale_image`` (one rounding each), so the same values."""
    dst = out.numpy()
    if params is None:
        dst[...] = raw
        return
    lo, factor = params
    if raw.dtype == np.uint8:
        out.copy_(torch.from_numpy(raw if raw.flags.writeable else raw.copy()))
        if lo != 0.0:
            out.sub_(float(lo))
        out.mul_(float(factor))
    elif lo == 0.0:
        np.multiply(raw, factor, out=dst, dtype=np.float32)
    else:
        np.subtract(raw, lo, out=dst, dtype=np.float32)
        dst *= factor


def _widen(image: torch.Tensor, params: tuple[float, float]) -> torch.Tensor:
    """float32 ``(image - offset) * factor`` of a uint8 batch, computed as the per-item path
    does (a cast, then the subtraction and the product in place, each one float32 rounding)."""
    out = _buffers.tensor(image.shape, torch.float32)
    for row, src in zip(out, image, strict=True):  # row by row: each row stays in cache
        row.copy_(src)
        if params[0] != 0.0:
            row.sub_(params[0])
        row.mul_(params[1])
    return out


def widen_batch(
    image: torch.Tensor, mask: torch.Tensor, params: tuple[float, float], mask_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The default-output batch of a uint8 image batch and class mask batch (in recycled
    host memory: :class:`_RecycledBuffers`)."""
    wide = _buffers.tensor(mask.shape, mask_dtype)
    wide.copy_(mask)
    return {"image": _widen(image, params), "mask": wide}


class _WidenOnArrival:
    """A default-output batch on its way from a DataLoader worker to the main process: the
    uint8 image and class mask cross in shared memory (a fifth of the bytes of float32 and
    int64, and each byte of shared memory costs its pages' allocation) and are widened by
    :func:`widen_batch` as they are unpickled there: the main process receives exactly the
    batch the worker collated."""

    def __init__(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        params: tuple[float, float],
        mask_dtype: torch.dtype,
    ) -> None:
        self.args = (image, mask, params, mask_dtype)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return widen_batch, self.args


#: (weak reference to a float32 image batch, its uint8 twin arguments for _WidenOnArrival)
_twin: list[Any] = [None, None]


def assemble(
    raws: list[np.ndarray],
    masks: list[np.ndarray],
    *,
    keep_raw: bool,
    params: tuple[np.float32, np.float32] | None,
    mask_dtype: torch.dtype,
    compact: bool,
    for_collate_batch: bool = False,
) -> dict[str, torch.Tensor] | None:
    """The batch tensors of the items (``raws``: raw images, one dtype and shape; ``masks``:
    class masks, one shape): ``image`` (raw uint8 with ``keep_raw``, else float32 scaled with
    ``params``), ``mask`` (``mask_dtype``), and with ``compact`` ``image_scale`` (N, 2). None
    when the items differ in shape or dtype.

    In a DataLoader worker the tensors that cross to the main process are in shared memory;
    a default-output batch of 8-bit images also keeps uint8 copies in shared memory, which
    :func:`collate_batch` sends instead (:class:`_WidenOnArrival`); ``for_collate_batch``
    (the caller is a DataLoader fetcher whose collate_fn is :func:`collate_batch`, which sends
    only those copies) leaves the float32 image and the mask of such a batch unwritten."""
    first, m0 = raws[0], masks[0]
    if any(r.shape != first.shape or r.dtype != first.dtype for r in raws):
        return None
    if any(m.shape != m0.shape for m in masks):
        return None
    n = len(raws)
    twin = (
        not compact
        and get_worker_info() is not None
        and first.dtype == np.uint8
        and params is not None
        and all(m.dtype == np.uint8 for m in masks)
    )
    img_shape, msk_shape = (n, *first.shape), (n, *m0.shape)
    specs = [  # what crosses to the main process: image, mask (uint8 copies for twin), scales
        (img_shape, torch.uint8 if keep_raw or twin else torch.float32),
        (msk_shape, torch.uint8 if twin else mask_dtype),
    ]
    if compact:
        specs.append(((n, 2), torch.float32))
    sent = batch_tensors(specs)
    out: dict[str, torch.Tensor] = {}
    if keep_raw or twin:
        np.stack(raws, out=sent[0].numpy())
    if keep_raw:
        out["image"] = sent[0]
    else:
        image = torch.empty(img_shape) if twin else sent[0]
        if not (twin and for_collate_batch):
            for k, raw in enumerate(raws):
                scale_into(raw, params, image[k])
        out["image"] = image
    if twin:
        np.stack(masks, out=sent[1].numpy())
        out["mask"] = (  # with for_collate_batch the rows are not sent: left unwritten
            torch.empty(msk_shape, dtype=mask_dtype)
            if for_collate_batch
            else sent[1].to(mask_dtype)
        )
        assert params is not None
        lo_f = (float(params[0]), float(params[1]))
        _twin[0], _twin[1] = weakref.ref(out["image"]), (sent[0], sent[1], lo_f, mask_dtype)
    else:
        for k, m in enumerate(masks):
            sent[1][k].copy_(torch.from_numpy(m))
        out["mask"] = sent[1]
    if compact:
        sent[2][:, 0], sent[2][:, 1] = (
            (float(params[0]), float(params[1])) if keep_raw and params is not None else (0.0, 1.0)
        )
        out["image_scale"] = sent[2]
    return out


def _rows_of(values: list[Any]) -> torch.Tensor | None:
    """The (N, ...) tensor whose rows 0..N-1 the tensors ``values`` are (views written by
    ``__getitems__``), else None."""
    first = values[0]
    base = getattr(first, "_base", None) if isinstance(first, torch.Tensor) else None
    if base is None or base.dim() == 0 or base.shape[0] != len(values):
        return None
    if not base.is_contiguous() or first.shape != base.shape[1:]:
        return None
    step, start = base.stride(0), base.storage_offset()
    for k, v in enumerate(values):
        if (
            not isinstance(v, torch.Tensor)
            or v._base is not base
            or v.storage_offset() != start + k * step
            or v.shape != first.shape
            or not v.is_contiguous()
        ):
            return None
    return base


def feeds_collate_batch(caller: Any) -> bool:
    """Whether ``caller`` (the frame that called ``__getitems__``) is a DataLoader worker's
    fetcher whose collate_fn is :func:`collate_batch`: torch's ``_MapDatasetFetcher.fetch``
    passes the items straight to its collate_fn and keeps nothing else of them."""
    fetcher = caller.f_locals.get("self") if caller is not None else None
    return (
        get_worker_info() is not None
        and type(fetcher).__name__ == "_MapDatasetFetcher"
        and caller.f_code.co_name == "fetch"
        and getattr(fetcher, "collate_fn", None) is collate_batch
    )


def collate_batch(batch: list[Any]) -> Any:
    """``collate_fn`` for DataLoaders over the windowed datasets: a batch of dict items whose
    tensors are the rows of one tensor per key (as ``__getitems__`` writes them) is returned
    as ``{key: that tensor}``, no copy; anything else goes to ``default_collate``. Equal to
    ``default_collate(batch)`` either way."""
    if not batch or type(batch[0]) is not dict:
        return default_collate(batch)
    keys = list(batch[0])
    out: dict[str, Any] = {}
    for key in keys:
        try:
            values = [item[key] for item in batch]
        except (KeyError, TypeError):
            return default_collate(batch)
        rows = _rows_of(values)
        if rows is None:
            return default_collate(batch)
        out[key] = rows
    if any(type(item) is not dict or len(item) != len(keys) for item in batch):
        return default_collate(batch)
    ref, args = _twin
    if ref is not None and ref() is out["image"] and keys == ["image", "mask"]:
        _twin[0] = _twin[1] = None
        return _WidenOnArrival(*args)
    return out
