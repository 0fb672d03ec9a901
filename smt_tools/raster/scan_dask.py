"""The scan of :mod:`smt_tools.raster.scan` on a Dask cluster (``catalog ingest --scheduler``).

One task per source image; an image with more than ``band_tiles`` windows is split into row
bands (whole rows of windows, in the grid's row-major order) so a country mosaic spreads over
the workers. Each task reads its windows on the worker (the worker keeps its raster handles
open between tasks, as a pool process does) and returns its statistics as one Arrow record
batch; the driver assembles them with the same code as the local scan, so the tiles, their
ids and histograms are the same whichever way they were computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from smt_tools.raster.scan import (
    SourceRecord,
    _assemble,
    _Chunk,
    _ChunkResult,
    _scan_chunk,
    close_cached_handles,
)
from smt_tools.tiletable import TileTable

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["BAND_TILES", "row_bands", "scan_on_cluster"]

#: windows per task at most, in whole rows of windows (one row may be longer)
BAND_TILES = 4096
_COUNT = "count_"


def row_bands(windows: np.ndarray, band_tiles: int = BAND_TILES) -> list[slice]:
    """Slices of ``windows`` ((n, 4) row_off, col_off, h, w) of at most ``band_tiles`` windows
    that cut only where ``row_off`` changes (a single row longer than that is one band)."""
    n = int(windows.shape[0])
    if n <= band_tiles:
        return [slice(0, n)]
    row_ends = [*(np.flatnonzero(np.diff(windows[:, 0]) != 0) + 1).tolist(), n]
    bands: list[slice] = []
    begin = prev_end = 0
    for end in row_ends:
        if end - begin > band_tiles and prev_end > begin:  # this row would overfill the band
            bands.append(slice(begin, prev_end))
            begin = prev_end
        prev_end = end
    bands.append(slice(begin, n))
    return bands


def _to_batch(res: _ChunkResult) -> pa.RecordBatch:
    """A chunk's statistics as one record batch: a ``count_<value>`` column per mask value."""
    arrays = [
        pa.array(res.nodata_pixels, pa.int64()),
        pa.array(res.mask_border, pa.bool_()),
        pa.array(res.black_border, pa.bool_()),
        *(pa.array(res.counts[:, j], pa.int64()) for j in range(res.values.size)),
    ]
    names = [
        "nodata_pixels",
        "mask_border",
        "black_border",
        *(f"{_COUNT}{int(v)}" for v in res.values),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _from_batch(index: int, batch: pa.RecordBatch) -> _ChunkResult:
    names = [c for c in batch.schema.names if c.startswith(_COUNT)]
    values = np.array([int(c[len(_COUNT) :]) for c in names], np.int64)
    n = batch.num_rows
    counts = np.zeros((n, len(names)), np.int64)
    for j, c in enumerate(names):
        counts[:, j] = batch.column(c).to_numpy(zero_copy_only=False)
    return _ChunkResult(
        index,
        values,
        counts,
        batch.column("nodata_pixels").to_numpy(zero_copy_only=False).astype(np.int64),
        batch.column("mask_border").to_numpy(zero_copy_only=False).astype(bool),
        batch.column("black_border").to_numpy(zero_copy_only=False).astype(bool),
    )


def scan_band(chunk: _Chunk) -> pa.RecordBatch:
    """The task run on a worker: one band of one source image."""
    return _to_batch(_scan_chunk(chunk))


def scan_on_cluster(
    client: Client,
    sources: Sequence[SourceRecord],
    windows: Sequence[np.ndarray],
    *,
    nodata_class: int | None = None,
    black_tolerance: float = 0,
    read_image: bool = True,
    band_tiles: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """:func:`smt_tools.raster.scan.scan` with the windows read on the cluster's workers.

    ``progress(n)`` is called with the tiles of every finished task; ``band_tiles`` (default
    :data:`BAND_TILES`) bounds the windows of one task. A mask value error raised
    on a worker reaches the caller as the same one-line :class:`InputDataError` naming the file.
    """
    from smt_tools.dask_cluster import run_tasks

    if len(sources) != len(windows):
        raise ValueError("sources and windows must have the same length")
    band_tiles = BAND_TILES if band_tiles is None else band_tiles
    chunks: list[_Chunk] = []
    for src, win in zip(sources, windows, strict=True):
        win = np.asarray(win, dtype=np.int64).reshape(-1, 4)
        for band in row_bands(win, band_tiles):
            chunks.append(
                _Chunk(
                    index=len(chunks),
                    image_path=src.image.path,
                    mask_path=src.mask.path,
                    windows=win[band],
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

    def on_result(chunk: _Chunk, batch: pa.RecordBatch) -> None:
        results[chunk.index] = _from_batch(chunk.index, batch)
        if progress is not None:
            progress(batch.num_rows)

    # files may have been rewritten since a long-lived worker opened them
    client.run(close_cached_handles)
    run_tasks(
        client,
        scan_band,
        chunks,
        name="scan",
        describe=lambda ch: (
            f"{ch.image_path} (rows {int(ch.windows[0, 0])}.."
            f"{int(ch.windows[-1, 0] + ch.windows[-1, 2])})"
        ),
        on_result=on_result,
    )
    return _assemble(sources, windows, chunks, results, nodata_class)
