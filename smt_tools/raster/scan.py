"""Scan image/mask pairs into a :class:`~smt_tools.tiletable.TileTable`.

Each window is read ONCE from the mask and once from the image (docs/algorithms.md §3); all
statistics come from those two arrays. Work is split into chunks of windows of one source
image and spread over processes; every process keeps its own cache of open handles, so a
file is opened once per process, never once per tile.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rasterio.windows import Window

from smt_tools.errors import InputDataError
from smt_tools.raster.handles import RasterCache
from smt_tools.raster.info import RasterInfo, check_pair, info_from_dataset
from smt_tools.raster.maskcheck import (
    MAX_DISTINCT_VALUES,
    MaskValueError,
    check_mask,
    mask_value_counts,
    too_many_values_message,
    value_error_message,
)
from smt_tools.raster.paths import path_stem
from smt_tools.raster.stats import image_black_border, ring
from smt_tools.raster.window import inside_part, read_pixels
from smt_tools.tiletable import (
    TileTable,
    canonical_path,
    entropy_from_counts,
    source_image_key,
    tile_keys,
)

_CACHE = RasterCache(maxsize=32)

#: Version of the per-tile statistics rules (docs/algorithms.md §1-4), stored with every source
#: image: a source scanned under other rules is re-scanned by the next ingest, never kept with
#: flags computed differently. 1: round 1 (nodata default 0, any black ring pixel, padded tiles
#: flagged); 2: no nodata class by default, black runs, padding never a border.
SCAN_RULES = 2


@dataclass(frozen=True)
class PairSpec:
    """One image/mask pair as listed in a pairs CSV."""

    image_path: str
    mask_path: str
    group_id: str | None = None


@dataclass(frozen=True)
class SourceRecord:
    """A checked pair: metadata of both files and the ids the catalog uses.

    mask_band: the 1-based band of the mask read for class values.
    """

    source_image_id: int
    image: RasterInfo
    mask: RasterInfo
    group_id: str
    mask_band: int = 1


def inspect_pair(
    pair: PairSpec,
    cache: RasterCache | None = None,
    mask_band: int | None = None,
    option: str = "--mask-band",
) -> SourceRecord:
    """Open both files, check they agree and that the mask holds class values, and return
    their metadata.

    mask_band: 1-based band of a multi-band mask (None: the mask must have one band); ``option``
    names that setting in messages (``--mask-band``, ``input.mask_band``). The mask
    checks (band, integer dtype, a small pixel sample: :func:`~smt_tools.raster.maskcheck.check_mask`)
    raise :class:`~smt_tools.errors.InputDataError` with one line naming the file and the fix.
    """
    cache = cache if cache is not None else _CACHE  # an empty cache is falsy (len 0)
    img_path = canonical_path(pair.image_path)
    msk_path = canonical_path(pair.mask_path)
    img_ds = cache.get(img_path)
    img = info_from_dataset(img_ds, img_path)
    msk_ds = cache.get(msk_path)
    msk = info_from_dataset(msk_ds, msk_path)
    check_pair(img, msk)
    band = check_mask(msk_ds, msk_path, img_ds, img_path, mask_band, option)
    group = pair.group_id or path_stem(img_path)
    return SourceRecord(source_image_key(img_path), img, msk, group, band)


def close_cached_handles() -> None:
    """Close this process's cached raster handles (call before re-reading files that may have
    been rewritten since they were opened, e.g. an incremental re-ingest in a long-lived process)."""
    _CACHE.close()


@dataclass(frozen=True)
class _Chunk:
    index: int
    image_path: str
    mask_path: str
    windows: np.ndarray  # (n, 4) row_off, col_off, h, w
    width: int
    height: int
    nodata_class: int | None
    black_tolerance: float
    image_nodata: float | None
    read_image: bool
    mask_band: int = 1


@dataclass
class _ChunkResult:
    index: int
    values: np.ndarray  # (V,) mask values present in the chunk
    counts: np.ndarray  # (n, V) int64
    nodata_pixels: np.ndarray  # (n,) int64 (missing pixels outside the raster included)
    mask_border: np.ndarray  # (n,) bool
    black_border: np.ndarray  # (n,) bool


def _scan_chunk(chunk: _Chunk, cache: RasterCache | None = None) -> _ChunkResult:
    cache = cache if cache is not None else _CACHE  # an empty cache is falsy (len 0)
    mds = cache.get(chunk.mask_path)
    ids = cache.get(chunk.image_path) if chunk.read_image else None
    n = chunk.windows.shape[0]
    row_values: list[np.ndarray] = []
    row_counts: list[np.ndarray] = []
    nodata_pixels = np.zeros(n, np.int64)
    mask_border = np.zeros(n, bool)
    black_border = np.zeros(n, bool)
    nd = chunk.nodata_class
    tol = chunk.black_tolerance
    for i in range(n):
        r, c, h, w = (int(x) for x in chunk.windows[i])
        part = inside_part(r, c, h, w, chunk.height, chunk.width)
        if part is None:
            raise InputDataError(
                f"{chunk.mask_path}: window row_off={r} col_off={c} size {h}x{w} lies outside the "
                f"raster ({chunk.width}x{chunk.height} px); fix the patch record"
            )
        r0, c0, r1, c1 = part
        win = Window(c0, r0, c1 - c0, r1 - r0)
        outside = h * w - (r1 - r0) * (c1 - c0)
        mask = read_pixels(mds, chunk.mask_path, chunk.mask_band, win)
        if mask.dtype.kind not in "ui":
            raise InputDataError(
                f"{chunk.mask_path}: mask dtype is {mask.dtype}; masks must hold integer class values"
            )
        try:
            values, counts = mask_value_counts(mask)
        except MaskValueError as exc:
            where = f"window row_off={r0} col_off={c0} size={r1 - r0}x{c1 - c0}"
            raise InputDataError(value_error_message(chunk.mask_path, exc, where)) from None
        row_values.append(values)
        row_counts.append(counts)
        if nd is not None:
            hit = np.flatnonzero(values == nd)
            nd_count = int(counts[hit[0]]) if hit.size else 0
            # pixels outside the raster (edge pad) are nodata but never a border: the flags
            # come from the part of the window inside the raster
            mask_border[i] = nd_count > 0 and bool(np.any(ring(mask) == nd))
        else:
            nd_count = 0
            mask_border[i] = False
        nodata_pixels[i] = nd_count + outside
        if ids is not None:
            image = read_pixels(ids, chunk.image_path, None, win)
            black_border[i] = image_black_border(image, tol, chunk.image_nodata)
    present = np.unique(np.concatenate(row_values)) if row_values else np.zeros(0, np.int64)
    if present.size > MAX_DISTINCT_VALUES:
        raise InputDataError(
            too_many_values_message(
                chunk.mask_path, int(present.size), f"in {n} windows of band {chunk.mask_band}"
            )
        )
    full = np.zeros((n, present.size), np.int64)
    for i, (vals, cnts) in enumerate(zip(row_values, row_counts, strict=True)):
        full[i, np.searchsorted(present, vals)] = cnts
    return _ChunkResult(
        chunk.index,
        present.astype(np.int64),
        full,
        nodata_pixels,
        mask_border,
        black_border,
    )


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes that die with this process (see :func:`die_with_parent`)."""
    from smt_tools.workers import die_with_parent

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context(method),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def resolve_workers(workers: int) -> int:
    """0 means one process per available core."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def scan(
    sources: Sequence[SourceRecord],
    windows: Sequence[np.ndarray],
    *,
    nodata_class: int | None = None,
    black_tolerance: float = 0,
    read_image: bool = True,
    workers: int = 0,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """Statistics for ``windows[k]`` of ``sources[k]`` (each (n_k, 4) int64 row, col, h, w).

    ``progress(n)`` is called with the number of tiles finished after every chunk.
    Returns a table in source order, windows in the order given.

    nodata_class: the mask value treated as nodata (None, the default: every mask value is a
    class); window pixels outside the raster are always nodata. Each source's mask is read
    from its ``mask_band``. A mask value outside 0..65535, or more than
    :data:`~smt_tools.raster.maskcheck.MAX_DISTINCT_VALUES` distinct values, raises
    :class:`~smt_tools.errors.InputDataError` naming the file.
    """
    if len(sources) != len(windows):
        raise ValueError("sources and windows must have the same length")
    chunks: list[_Chunk] = []
    for src, win in zip(sources, windows, strict=True):
        win = np.asarray(win, dtype=np.int64).reshape(-1, 4)
        for start in range(0, win.shape[0], chunk_size):
            chunks.append(
                _Chunk(
                    index=len(chunks),
                    image_path=src.image.path,
                    mask_path=src.mask.path,
                    windows=win[start : start + chunk_size],
                    width=src.mask.width,
                    height=src.mask.height,
                    nodata_class=nodata_class,
                    black_tolerance=black_tolerance,
                    image_nodata=src.image.nodata,
                    read_image=read_image,
                    mask_band=src.mask_band,
                )
            )
    results: list[_ChunkResult | None] = [None] * len(chunks)
    n_workers = min(resolve_workers(workers), max(1, len(chunks)))
    if n_workers == 1:
        for ch in chunks:
            results[ch.index] = _scan_chunk(ch)
            if progress:
                progress(ch.windows.shape[0])
    else:
        with _pool(n_workers) as pool:
            pending: set[Future[_ChunkResult]] = set()
            queue = iter(chunks)
            # Keep a bounded number of chunks in flight (memory stays flat on huge scans).
            for ch in queue:
                pending.add(pool.submit(_scan_chunk, ch))
                if len(pending) >= 4 * n_workers:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()
                    results[res.index] = res
                    if progress:
                        progress(res.counts.shape[0])
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(_scan_chunk, nxt))
    return _assemble(sources, windows, chunks, results, nodata_class)


def _assemble(
    sources: Sequence[SourceRecord],
    windows: Sequence[np.ndarray],
    chunks: list[_Chunk],
    results: list[_ChunkResult | None],
    nodata_class: int | None,
) -> TileTable:
    done = [r for r in results if r is not None]
    all_values = (
        np.unique(np.concatenate([r.values for r in done])) if done else np.zeros(0, np.int64)
    )
    if all_values.size > MAX_DISTINCT_VALUES:
        _too_many_values(chunks, results)
    class_values = (
        all_values[all_values != nodata_class] if nodata_class is not None else all_values
    )
    col = {int(v): j for j, v in enumerate(class_values)}
    total = sum(ch.windows.shape[0] for ch in chunks)
    counts = np.zeros((total, len(class_values)), np.int64)
    nodata_px = np.zeros(total, np.int64)
    mborder = np.zeros(total, bool)
    bborder = np.zeros(total, bool)
    pos = 0
    for ch, res in zip(chunks, results, strict=True):
        assert res is not None
        n = ch.windows.shape[0]
        for j, v in enumerate(res.values):
            target = col.get(int(v))
            if target is not None:
                counts[pos : pos + n, target] = res.counts[:, j]
        nodata_px[pos : pos + n] = res.nodata_pixels
        mborder[pos : pos + n] = res.mask_border
        bborder[pos : pos + n] = res.black_border
        pos += n
    frames = []
    for src, win in zip(sources, windows, strict=True):
        win = np.asarray(win, dtype=np.int64).reshape(-1, 4)
        frames.append(_frame_for(src, win))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    window_px = (
        (frame["height"] * frame["width"]).to_numpy(np.int64) if total else np.zeros(0, np.int64)
    )
    frame["valid_pixels"] = counts.sum(axis=1)
    frame["nodata_ratio"] = nodata_px / np.maximum(window_px, 1)
    frame["class_entropy"] = entropy_from_counts(counts)
    frame["has_mask_border_nodata"] = mborder
    frame["has_image_black_border"] = bborder
    if "mask_band" in frame.columns:  # last, as the catalog and a tile table give it
        frame["mask_band"] = frame.pop("mask_band")
    return TileTable(
        frame=frame, counts=counts, class_values=class_values, nodata_class=nodata_class
    )


def _too_many_values(chunks: list[_Chunk], results: list[_ChunkResult | None]) -> None:
    """Raise naming the first mask by which the scan holds too many distinct values."""
    seen: set[int] = set()
    for ch, res in zip(chunks, results, strict=True):
        assert res is not None
        seen.update(int(v) for v in res.values)
        if len(seen) > MAX_DISTINCT_VALUES:
            raise InputDataError(
                too_many_values_message(ch.mask_path, len(seen), "in the masks up to this file")
            )


def _frame_for(src: SourceRecord, win: np.ndarray) -> pd.DataFrame:
    a, b, c, d, e, f = src.image.transform
    r = win[:, 0].astype(np.float64)
    cc = win[:, 1].astype(np.float64)
    h = win[:, 2].astype(np.float64)
    w = win[:, 3].astype(np.float64)
    xs = np.stack(
        [a * x + b * y + c for x, y in ((cc, r), (cc + w, r), (cc, r + h), (cc + w, r + h))]
    )
    ys = np.stack(
        [d * x + e * y + f for x, y in ((cc, r), (cc + w, r), (cc, r + h), (cc + w, r + h))]
    )
    return pd.DataFrame(
        {
            "tile_id": tile_keys(src.image.path, win[:, 0], win[:, 1], win[:, 2], win[:, 3]),
            "source_image_id": np.full(win.shape[0], src.source_image_id, dtype=np.int64),
            "group_id": src.group_id,
            "image_path": src.image.path,
            "mask_path": src.mask.path,
            "row_off": win[:, 0],
            "col_off": win[:, 1],
            "height": win[:, 2],
            "width": win[:, 3],
            "minx": xs.min(axis=0),
            "miny": ys.min(axis=0),
            "maxx": xs.max(axis=0),
            "maxy": ys.max(axis=0),
            "crs": src.image.crs,
            "mask_band": np.full(win.shape[0], src.mask_band, dtype=np.int64),
        }
    )
