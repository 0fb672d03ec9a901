"""``split``: group / stratified-group k-fold with a spatial buffer (docs/algorithms.md §11).

Input: a balanced CSV (one row per tile) or the catalog. Output:
- CSV input: the same CSV with two more columns, ``fold`` (int; ``-1`` = holdout test set) and
  ``buffer_excluded_folds`` (``;``-separated folds, ``-1`` for the holdout test set, whose
  training set must NOT use this tile because it lies within ``buffer_m`` of a tile evaluated
  there; empty when none). Training set of fold f = rows with ``fold >= 0``, ``fold != f`` and f
  not in ``buffer_excluded_folds``; validation set = rows with ``fold == f``.
- ``stratified_group`` balances the class pixel counts of the tiles that are used: rows with
  ``excluded = true`` (build-balanced-dataset's exclusions) count no pixels, but still get a fold.
- ``spatial_blocks``: square blocks of ``block_size_m`` (:mod:`smt_tools.splits.blocks`) are the
  groups, assigned like ``stratified_group``; the CSV gains ``block_id`` (text).
- catalog input: a ``run`` row (command ``split``, the buffer exclusions in its summary) with
  ``tile_result.fold`` per tile; plus the CSV when ``output.csv_path`` is set.

Distances: each pair is measured by :mod:`smt_tools.splits.distance` (planar in one
low-distortion CRS, else geodesic on WGS 84); the method is in the summary (``buffer_method``).
Tiles without a CRS (pixel space) are never measured against other images; within one image
see :func:`smt_tools.splits.buffer.pixel_space_exclusions`. The GeoJSON holds only the tiles
with a CRS (one warning line says how many were left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.atomic import StagedOutputs, reraise_output_error
from smt_tools.config.split import SplitConfig
from smt_tools.errors import InputDataError
from smt_tools.export.qgis_style import fold_qml
from smt_tools.export.run_record import run_json_path
from smt_tools.pipelines._sources import open_source
from smt_tools.pipelines._split_csv import read_split_csv
from smt_tools.splits.blocks import SpatialBlocks, spatial_blocks
from smt_tools.splits.buffer import (
    TEST_FOLD,
    buffer_exclusions,
    pixel_space_exclusions,
    planar_buffer_exclusions,
)
from smt_tools.splits.distance import (
    DistanceMethod,
    distance_method,
    tile_crs,
    tile_footprints,
)
from smt_tools.splits.fold_text import format_excluded_folds, parse_excluded_folds
from smt_tools.splits.kfold import assign_folds, encode_groups, fold_report, holdout_mask

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileStore

#: the split's buffer where the tiles live: (rows, their folds, distance method) -> exclusions
BufferFn = Callable[[np.ndarray, np.ndarray, DistanceMethod], "np.ndarray | None"]

__all__ = [
    "FoldSummary",
    "SplitResult",
    "compute_split",
    "format_excluded_folds",
    "parse_excluded_folds",
    "read_split_csv",
    "run_split",
]


@dataclass(frozen=True)
class FoldSummary:
    """One fold: fold id (``-1`` = holdout test), validation tiles, groups, valid pixels, class
    shares (C,) of its pixels, and training tiles the buffer drops for it."""

    fold: int
    tiles: int
    groups: int
    pixels: int
    shares: tuple[float, ...]
    buffer_dropped: int


@dataclass
class SplitResult:
    """What ``split`` did; ``tile_ids`` (n,), ``fold`` (n,) and ``exclusions`` (n, k+1) bool
    are aligned with the input rows."""

    n_tiles: int
    n_groups: int
    n_splits: int
    strategy: str
    group_column: str
    buffer_m: float
    backend: str
    distance_crs: str
    class_values: tuple[int, ...]
    global_share: tuple[float, ...]
    max_deviation: float
    folds: list[FoldSummary]
    tile_ids: np.ndarray = field(repr=False)
    fold: np.ndarray = field(repr=False)
    exclusions: np.ndarray = field(repr=False)
    csv_path: Path | None = None
    geojson_path: Path | None = None
    run_id: int | None = None
    #: how distances were measured (see :meth:`buffer_line`)
    method: DistanceMethod | None = None
    #: one line each, printed as ``warning: ...`` (e.g. tiles left out of the GeoJSON)
    warnings: list[str] = field(default_factory=list)
    #: the config as recorded in the catalog's ``run`` row (also in ``run.json``)
    config_record: dict[str, Any] | None = None
    #: the spatial blocks (strategy ``spatial_blocks``), else None
    blocks: SpatialBlocks | None = field(default=None, repr=False)

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the CSV (or the GeoJSON); None for catalog-only output."""
        return run_json_path(self.csv_path or self.geojson_path)

    def buffer_line(self) -> str:
        """``buffer 50 m, measured geodesically on WGS 84 (tiles in 2 CRSs: ...)``."""
        how = self.method.describe() if self.method is not None else self.distance_crs
        return f"buffer {self.buffer_m:g} m, {how}"

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (also stored as the catalog run's summary)."""
        blocks = self.blocks
        extra = {} if blocks is None else {"blocks": blocks.n_blocks, "block_crs": blocks.crs}
        return {
            **extra,
            "tiles": self.n_tiles,
            "groups": self.n_groups,
            "n_splits": self.n_splits,
            "strategy": self.strategy,
            "group_column": self.group_column,
            "buffer_m": self.buffer_m,
            "buffer_backend": self.backend,
            "distance_crs": self.distance_crs,
            "buffer_method": self.method.kind if self.method is not None else None,
            "buffer_method_detail": self.buffer_line(),
            "tiles_without_crs": self.method.tiles_without_crs if self.method is not None else 0,
            "warnings": list(self.warnings),
            "class_values": list(self.class_values),
            "global_share": [round(x, 6) for x in self.global_share],
            "max_share_deviation": round(self.max_deviation, 6),
            "folds": [
                {
                    "fold": f.fold,
                    "tiles": f.tiles,
                    "groups": f.groups,
                    "pixels": f.pixels,
                    "shares": [round(x, 6) for x in f.shares],
                    "buffer_dropped_train_tiles": f.buffer_dropped,
                }
                for f in self.folds
            ],
        }


def compute_split(
    frame: pd.DataFrame,
    counts: np.ndarray | None,
    cfg: SplitConfig,
    buffer_fn: BufferFn | None = None,
    blocks: SpatialBlocks | None = None,
) -> tuple[np.ndarray, np.ndarray, DistanceMethod]:
    """Folds and buffer exclusions of ``frame`` (rows = tiles).

    Returns ``fold`` (n,) int64 (``-1`` holdout), ``exclusions`` (n, n_splits + 1) bool and the
    distance method. ``buffer_fn(rows, fold, method)`` replaces the shapely buffer for the tiles
    with a CRS (the PostGIS backend): rows (m,) int64 positions of those tiles, fold (m,) their
    folds; it returns their (m, n_splits + 1) exclusions, or None when the store cannot compute
    them (a Parquet tile table: shapely does it here). Tiles without a CRS are handled by
    :func:`~smt_tools.splits.buffer.pixel_space_exclusions`. ``blocks``: the tiles' spatial
    blocks for strategy ``spatial_blocks`` (computed here when not given).
    """
    method = blocks.method if blocks is not None else distance_method(frame)
    groups, strategy = _fold_groups(frame, cfg, method, blocks)
    fold = np.full(len(frame), TEST_FOLD, dtype=np.int64)
    test = (
        holdout_mask(groups, cfg.holdout, cfg.random_state)
        if cfg.holdout > 0
        else np.zeros(len(frame), dtype=bool)
    )
    cv = np.flatnonzero(~test)
    fold[cv] = assign_folds(
        groups[cv],
        cfg.n_splits,
        counts=None if counts is None else counts[cv],
        strategy=strategy,
        random_state=cfg.random_state,
    )
    georef = tile_crs(frame) != ""
    exclusions = np.zeros((len(frame), cfg.n_splits + 1), dtype=bool)
    rows = np.flatnonzero(georef)
    if len(rows):
        found = buffer_fn(rows, fold[rows], method) if buffer_fn is not None else None
        if found is not None:
            exclusions[rows] = found
        elif method.kind == "planar":  # boxes on a grid, in batches: no geometry objects
            exclusions[rows] = planar_buffer_exclusions(
                frame, rows, fold[rows], cfg.buffer_m, cfg.n_splits
            )
        else:
            sub = frame.iloc[rows]
            exclusions[rows] = buffer_exclusions(
                tile_footprints(sub, method), fold[rows], cfg.buffer_m, cfg.n_splits
            )
    pixel = np.flatnonzero(~georef)
    if len(pixel):
        exclusions[pixel] = pixel_space_exclusions(
            frame.iloc[pixel], fold[pixel], cfg.buffer_m, cfg.n_splits
        )
    return fold, exclusions, method


def _fold_groups(
    frame: pd.DataFrame,
    cfg: SplitConfig,
    method: DistanceMethod,
    blocks: SpatialBlocks | None,
) -> tuple[np.ndarray, str]:
    """The groups folds are made of, (n,), and how they are assigned: the spatial blocks
    (assigned like ``stratified_group``) or the values of ``group_column``."""
    if cfg.strategy != "spatial_blocks":
        return frame[cfg.group_column].to_numpy(), cfg.strategy
    assert cfg.block_size_m is not None
    found = blocks or spatial_blocks(frame, cfg.block_size_m, method)
    if found.n_blocks < cfg.n_splits:
        raise InputDataError(
            f"split.block_size_m: blocks of {found.block_size_m:g} m hold the tiles in only "
            f"{found.n_blocks} blocks, fewer than n_splits={cfg.n_splits}; use smaller blocks "
            "or fewer folds"
        )
    return found.codes, "stratified_group"


def _fold_summaries(
    groups: np.ndarray,
    counts: np.ndarray | None,
    fold: np.ndarray,
    exclusions: np.ndarray,
    cfg: SplitConfig,
) -> tuple[list[FoldSummary], np.ndarray, float, np.ndarray]:
    k = cfg.n_splits
    codes, _ = encode_groups(groups)
    c = counts if counts is not None else np.zeros((len(groups), 0), dtype=np.int64)
    report = fold_report(c, fold, k)
    test = fold == TEST_FOLD
    out: list[FoldSummary] = []
    for f in range(k):
        rows = fold == f
        out.append(
            FoldSummary(
                fold=f,
                tiles=int(rows.sum()),
                groups=len(np.unique(codes[rows])),
                pixels=int(report.pixels[f]),
                shares=tuple(float(x) for x in report.shares[f]),
                buffer_dropped=int(exclusions[:, f].sum()),
            )
        )
    if test.any():
        px = c[test].sum(axis=0).astype(np.float64)
        out.append(
            FoldSummary(
                fold=TEST_FOLD,
                tiles=int(test.sum()),
                groups=len(np.unique(codes[test])),
                pixels=int(px.sum()),
                shares=tuple(float(x) for x in (px / px.sum() if px.sum() > 0 else px)),
                buffer_dropped=int(exclusions[:, k].sum()),
            )
        )
    return out, report.global_share, report.max_deviation, codes


def _write_map(
    frame: pd.DataFrame, path: Path, fmt: str | None, n_splits: int, staging: StagedOutputs
) -> tuple[Path, str | None]:
    """Stage the folds layer with its categorical style (one colour per fold, holdout and
    buffer-dropped tiles marked); return the path written (``.fgb`` when a large layer was
    switched from GeoJSON) and the warning line, if any."""
    from smt_tools.export.vector import write_vector

    props = [
        c
        for c in (
            *("tile_id", "source_image_id", "group_id", "block_id", "fold"),
            "buffer_excluded_folds",
        )
        if c in frame.columns
    ]
    written = write_vector(frame, path, props, fold_qml(n_splits), fmt=fmt, staging=staging)
    return written.path, written.note


def _write_outputs(
    cfg: SplitConfig,
    out: pd.DataFrame,
    result: SplitResult,
    store: TileStore | None,
    started: datetime,
) -> None:
    """Stage the CSV and the folds layer, record the catalog run, then move the files in
    together: a failed run leaves every earlier output untouched (like build-balanced-dataset)."""
    staging = StagedOutputs()
    try:
        if cfg.output.csv_path is not None:
            out.to_csv(staging.file(Path(cfg.output.csv_path)), index=False)
            result.csv_path = Path(cfg.output.csv_path)
        if cfg.output.geojson_path is not None:
            path = Path(cfg.output.geojson_path)
            written, note = _write_map(out, path, cfg.output.format, cfg.n_splits, staging)
            if note:
                result.warnings.append(note)
            result.geojson_path = written
        if store is not None:
            from smt_tools.catalog.store import RunRecord

            results = pd.DataFrame(
                {
                    "tile_id": out["tile_id"].to_numpy(np.int64),
                    "fold": out["fold"].to_numpy(),
                    "buffer_excluded_folds": out["buffer_excluded_folds"].to_numpy(),
                }
            )
            result.run_id = store.record_run(
                RunRecord(
                    "split",
                    _config_for_run(cfg),
                    result.summary(),
                    results,
                    started,
                    datetime.now(timezone.utc),
                    map_style=fold_qml(cfg.n_splits),
                )
            )
        staging.commit()
    except BaseException as exc:
        staging.cleanup()
        reraise_output_error(exc)  # disk full etc.: one line naming the output
        raise


def _config_for_run(cfg: SplitConfig) -> dict[str, Any]:
    from smt_tools.pipelines._config_record import config_record

    return config_record("split", cfg)["split"]  # split records its section unwrapped


class _StoreBuffer:
    """The split's buffer computed where the tiles live (:meth:`TileStore.buffer_exclusions`);
    ``computed`` says whether the store did it (a Parquet table cannot: shapely does)."""

    def __init__(self, cfg: SplitConfig, store: TileStore, tile_ids: np.ndarray) -> None:
        self.cfg, self.store, self.tile_ids = cfg, store, tile_ids
        self.computed = False

    def __call__(self, rows: np.ndarray, fold: np.ndarray, method: DistanceMethod) -> Any:
        assert self.cfg.catalog is not None
        found = self.store.buffer_exclusions(
            self.tile_ids[rows],
            fold,
            self.cfg.buffer_m,
            self.cfg.n_splits,
            method.crs,
            table=self.cfg.catalog.table,
            geodesic=method.kind == "geodesic",
        )
        self.computed = found is not None
        return found


def _read_catalog(
    cfg: SplitConfig, store: TileStore
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None, _StoreBuffer]:
    """The catalog's tiles (frame, counts, class values) and the buffer computed where they
    live."""
    from smt_tools.pipelines._sources import tile_query

    assert cfg.catalog is not None
    # the user's filter is checked; the run filter is bound; the run's excluded tiles left out
    query = tile_query(cfg.catalog, included_only=True)
    if store.kind == "parquet":  # bounded memory: path columns stay categorical
        table = store.read_tiles(query, batched=True)  # type: ignore[call-arg]
    else:
        table = store.read_tiles(query)
    frame = table.frame
    if cfg.strategy != "spatial_blocks" and cfg.group_column not in frame.columns:
        raise InputDataError(
            f"split.group_column: the catalog tiles have no column {cfg.group_column!r}; "
            f"use one of {', '.join(frame.columns[:8])}, ..."
        )
    buffer = _StoreBuffer(cfg, store, frame["tile_id"].to_numpy(np.int64))
    return frame, table.counts, table.class_values, buffer


def run_split(
    cfg: SplitConfig,
    progress: Callable[[str], None] | None = None,
    config_path: str | Path | None = None,
) -> SplitResult:
    """Run the ``split`` command for a validated config (see module docstring for outputs).

    ``config_path`` (the YAML file) is checked not to be an output."""
    from smt_tools.pipelines._preflight import preflight_split

    preflight_split(cfg, config_path)  # outputs writable and not inputs, before any work
    started = datetime.now(timezone.utc)
    # the catalog (when it is the input) stays open for the run: one connection
    with open_source(cfg.catalog, "split.catalog") as store:
        return _run(cfg, store, started, progress)


def _run(
    cfg: SplitConfig,
    store: TileStore | None,
    started: datetime,
    progress: Callable[[str], None] | None,
) -> SplitResult:
    """Read, fold, buffer, summarise and write, with the input's store open."""
    buffer_fn: _StoreBuffer | None = None
    class_values: np.ndarray | None
    if store is None:
        assert cfg.input_csv_path is not None
        by_blocks = cfg.strategy == "spatial_blocks"  # the blocks are the groups
        frame, counts, class_values = read_split_csv(
            cfg.input_csv_path, None if by_blocks else cfg.group_column, cfg.strategy != "group"
        )
    else:
        frame, counts, class_values, buffer_fn = _read_catalog(cfg, store)
    blocks = None
    if cfg.strategy == "spatial_blocks":
        assert cfg.block_size_m is not None
        where = str(cfg.input_csv_path) if store is None else "split.catalog"
        blocks = spatial_blocks(frame, cfg.block_size_m, source=where)
    if counts is not None and "excluded" in frame.columns:
        # excluded tiles are never sampled: balance the pixels that will actually be used
        excluded = frame["excluded"].astype(str).str.lower().isin(["true", "1", "1.0"])
        counts = counts * (~excluded.to_numpy())[:, None]
    if progress:
        progress(f"{len(frame)} tiles loaded")
    fold, exclusions, method = compute_split(frame, counts, cfg, buffer_fn, blocks)
    # where the buffer was computed: in the store (PostGIS) or here with shapely
    backend = store.kind if store is not None and buffer_fn and buffer_fn.computed else "shapely"
    groups = blocks.codes if blocks is not None else frame[cfg.group_column].to_numpy()
    folds, global_share, max_dev, codes = _fold_summaries(groups, counts, fold, exclusions, cfg)
    result = SplitResult(
        n_tiles=len(frame),
        n_groups=len(np.unique(codes)),
        n_splits=cfg.n_splits,
        strategy=cfg.strategy,
        group_column="block_id" if blocks is not None else cfg.group_column,
        buffer_m=cfg.buffer_m,
        backend=backend,
        distance_crs=method.crs,
        class_values=tuple(int(v) for v in (class_values if class_values is not None else [])),
        global_share=tuple(float(x) for x in global_share),
        max_deviation=float(max_dev),
        folds=folds,
        tile_ids=frame["tile_id"].to_numpy(np.int64),
        fold=fold,
        exclusions=exclusions,
        method=method,
        blocks=blocks,
    )
    out = frame.copy(deep=False)
    if blocks is not None:
        out["block_id"] = blocks.ids()
    out["fold"] = fold
    out["buffer_excluded_folds"] = format_excluded_folds(exclusions)
    _write_outputs(cfg, out, result, store, started)
    result.config_record = _config_for_run(cfg)
    return result
