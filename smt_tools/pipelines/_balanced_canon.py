"""Canonical-order numbers of build-balanced-dataset, computed from the input-order tile table.

The steps work on the tiles sorted by ``tile_id`` (docs/algorithms.md), but copying the whole
table into that order costs a second table (two gigabytes at ten million tiles). These helpers
gather only what a step needs, in batches of :data:`BATCH_ROWS` rows, with the same arithmetic
per row as :class:`~smt_tools.tiletable.TileTable`, so every number is bit for bit the one the
sorted copy gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smt_tools.tiletable import TileTable

#: rows per batch when gathering counts or writing outputs (also the output's row group size)
BATCH_ROWS = 1 << 19


def plain_strings(table: TileTable) -> TileTable:
    """``table`` with ``category`` columns (a tile table read in batches) as plain strings,
    as every reader of a whole table gets them."""
    frame = table.frame
    cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if cats:
        frame = frame.astype({c: "str" for c in cats})
    return TileTable(frame, table.counts, table.class_values, table.nodata_class)


def proportions_of(table: TileTable, rows: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Class proportions of ``table``'s rows ``rows`` (m,) int64, in that order: (m, C) float64,
    exactly :meth:`TileTable.proportions` of ``table.take(rows)``."""
    out = np.empty((rows.size, table.n_classes), np.float64)
    batch = batch or BATCH_ROWS
    for s in range(0, rows.size, batch):
        counts = table.counts[rows[s : s + batch]]
        valid = counts.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[s : s + batch] = np.where(valid > 0, counts / np.where(valid > 0, valid, 1.0), 0.0)
    return out


def counts_float(table: TileTable, rows: np.ndarray, batch: int | None = None) -> np.ndarray:
    """``table.counts[rows]`` as (m, C) float64 (what the class shares multiply)."""
    out = np.empty((rows.size, table.n_classes), np.float64)
    batch = batch or BATCH_ROWS
    for s in range(0, rows.size, batch):
        out[s : s + batch] = table.counts[rows[s : s + batch]]
    return out


def column_sums(table: TileTable, keep: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Pixels per class over the rows where ``keep`` (n,) bool: (C,) int64 (exact, any order)."""
    total = np.zeros(table.n_classes, np.int64)
    batch = batch or BATCH_ROWS
    for s in range(0, len(table), batch):
        total += table.counts[s : s + batch][keep[s : s + batch]].sum(axis=0)
    return total


def tiles_with_class(
    table: TileTable, rows: np.ndarray, min_pixels: int, batch: int | None = None
) -> np.ndarray:
    """Tiles among ``table``'s rows ``rows`` in which each class is present: (C,) int64,
    :func:`smt_tools.curation.repeat_factor.tiles_with_class` of ``table.counts[rows]``
    (integers: exact in any batching)."""
    from smt_tools.curation.repeat_factor import tiles_with_class as count

    total = np.zeros(table.n_classes, np.int64)
    batch = batch or BATCH_ROWS
    for s in range(0, rows.size, batch):
        total += count(table.counts[rows[s : s + batch]], min_pixels)
    return total


def tile_repeat_factor(
    table: TileTable, rows: np.ndarray, r: np.ndarray, min_pixels: int, batch: int | None = None
) -> np.ndarray:
    """The repeat factor of ``table``'s rows ``rows`` (m,) in that order: (m,) float64,
    :func:`smt_tools.curation.repeat_factor.tile_repeat_factor` of ``table.counts[rows]`` (a
    maximum over each row: exact in any batching)."""
    from smt_tools.curation.repeat_factor import tile_repeat_factor as per_tile

    out = np.empty(rows.size, np.float64)
    batch = batch or BATCH_ROWS
    for s in range(0, rows.size, batch):
        out[s : s + batch] = per_tile(table.counts[rows[s : s + batch]], r, min_pixels)
    return out


_PAD_COLUMNS = ["image_path", "row_off", "col_off", "height", "width", "nodata_ratio"]


def padded_note(frame: pd.DataFrame, back: np.ndarray, excluded: np.ndarray) -> list[str]:
    """:func:`~smt_tools.pipelines._tiling_report.padded_tiles_note` of the tiles in
    canonical order, computed on the input-order ``frame`` one source image at a time (one
    header read per image, linear in the tiles). back: (n,) canonical position of each input
    row; excluded: (n,) bool in input order."""
    from smt_tools.raster.padding import padded_tiles

    cand = np.flatnonzero(frame["nodata_ratio"].to_numpy(np.float64) > 0)
    if cand.size == 0:
        return []
    sub = frame[_PAD_COLUMNS].iloc[cand].reset_index(drop=True)
    codes, _ = pd.factorize(sub["image_path"])
    by_image = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[by_image])) + 1
    groups = np.split(by_image, bounds)
    # images in the order their first candidate has among the canonical rows (as the note lists)
    groups.sort(key=lambda g: int(back[cand[g]].min()))
    padded = np.zeros(cand.size, bool)
    unreadable: list[str] = []
    for g in groups:
        flags, bad = padded_tiles(sub.iloc[g])
        padded[g] = flags
        unreadable += bad
    return _note_lines(int(padded.sum()), int((padded & excluded[cand]).sum()), unreadable)


def _note_lines(n: int, out: int, unreadable: list[str]) -> list[str]:
    """The text of :func:`~smt_tools.pipelines._tiling_report.padded_tiles_note` (kept word
    for word; tests/test_balanced_batched.py compares the two)."""
    unchecked = (
        f"; {len(unreadable)} source image{'s' if len(unreadable) != 1 else ''} could not be "
        f"opened to check for padded tiles (first: {unreadable[0]})"
        if unreadable
        else ""
    )
    if not n:
        return [f"padded tiles: none found{unchecked}"] if unreadable else []
    return [
        f"padded tiles (windows past the image edge, --edge pad): {n}, {n - out} kept and "
        f"{out} excluded; their pixels outside the image count as nodata (nodata_ratio), "
        f"never as a border{unchecked}"
    ]
