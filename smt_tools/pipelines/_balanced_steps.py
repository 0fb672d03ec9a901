"""The steps of build-balanced-dataset: load -> exclude -> compose -> uniqueness -> weigh -> diagnose.

Each step takes the config and the earlier steps' typed results and returns its own; every array
is in the canonical order (tiles sorted by ``tile_id``) until :func:`output_frame` puts the rows
back in input order. The numbers follow docs/algorithms.md §5-§9; the writing is in
:mod:`smt_tools.pipelines._balanced_write`, the order of the steps in
:func:`smt_tools.pipelines.balanced.run_balanced`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.choices import mode_signals
from smt_tools.config.balanced import BalancedDatasetConfig
from smt_tools.curation.composition import CompositionResult, cluster_compositions
from smt_tools.curation.diagnostics import (
    class_shares_uniform_vs_weighted,
    effective_sample_size,
    nodata_pixel_share,
)
from smt_tools.curation.exclusion import exclusion_flags, tile_exclusions
from smt_tools.curation.weights import rare_classes
from smt_tools.errors import ConfigError, EmptySelectionError, InputDataError
from smt_tools.export.csv_out import balanced_frame
from smt_tools.export.run_record import run_json_path
from smt_tools.pipelines import _balanced_canon as canon_of
from smt_tools.pipelines import _inputs, _nodata
from smt_tools.pipelines._balanced_score import sampler_weights
from smt_tools.progress import ProgressFactory
from smt_tools.tiletable import TileTable

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileStore


@dataclass
class BalancedResult:
    """The numbers of one run (all shares are fractions; timings in seconds)."""

    n_tiles: int
    n_excluded: int
    exclusion_counts: dict[str, int]
    mode: str
    sampling_method: str
    effective_method: str
    k: int | None
    k_selection: str
    k_range: tuple[int, int] | None
    k_scores: dict[int, float]
    cluster_sizes: dict[int, int]
    ess: float
    class_values: list[int]
    class_names: dict[int, str]
    uniform_share: list[float]
    weighted_share: list[float]
    weight_min: float
    weight_max: float
    rare_classes: list[int]
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    rows_written: int = 0
    run_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    has_uniqueness: bool = False
    #: the mask value treated as nodata (None: every value is a class) and the share of
    #: window pixels that are not a class: over all input tiles, and over the included
    #: tiles drawn uniformly / by weight (the nodata row of the class table)
    nodata_class: int | None = None
    nodata_share: float = 0.0
    nodata_share_uniform: float = 0.0
    nodata_share_weighted: float = 0.0
    #: the config as recorded in the catalog's ``run`` row (also in ``run.json``)
    config_record: dict[str, Any] | None = None
    #: the kNN backend of the uniqueness scores (``auto`` resolved); None without uniqueness
    uniqueness_backend: str | None = None
    #: sampling_method repeat_factor: class value -> r_c over the included tiles (§8)
    repeat_factors: dict[int, float] = field(default_factory=dict)

    @property
    def n_included(self) -> int:
        return self.n_tiles - self.n_excluded

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary (stored in the catalog's ``run.summary``)."""
        return {
            "tiles": self.n_tiles,
            "excluded": self.n_excluded,
            "included": self.n_included,
            "exclusion_counts": self.exclusion_counts,
            "mode": self.mode,
            "sampling_method": self.sampling_method,
            "effective_method": self.effective_method,
            "k": self.k,
            "k_selection": self.k_selection,
            "k_range": list(self.k_range) if self.k_range else None,
            "k_scores": {str(k): v for k, v in self.k_scores.items()},
            "cluster_sizes": {str(k): v for k, v in self.cluster_sizes.items()},
            "ess": self.ess,
            "class_values": self.class_values,
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "uniform_share": self.uniform_share,
            "weighted_share": self.weighted_share,
            "nodata_class": self.nodata_class,
            "nodata_share": self.nodata_share,
            "nodata_share_uniform": self.nodata_share_uniform,
            "nodata_share_weighted": self.nodata_share_weighted,
            "weight_min": self.weight_min,
            "weight_max": self.weight_max,
            "rare_classes": self.rare_classes,
            "warnings": self.warnings,
            "timings_s": self.timings,
            "uniqueness_backend": self.uniqueness_backend,
            "repeat_factors": {str(k): v for k, v in self.repeat_factors.items()},
        }

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the main local output (the CSV)."""
        return run_json_path(self.outputs[0] if self.outputs else None)


# ----------------------------------------------------------------------------- step results


@dataclass(frozen=True)
class Loaded:
    """The input tiles: ``table`` in input order, ``perm`` the order sorted by tile_id (the
    canonical order: ``canon = table.take(perm)``, copied only for the steps that need every
    column; the others gather what they use, :mod:`smt_tools.pipelines._balanced_canon`);
    ``kind`` names the input for messages (:func:`smt_tools.pipelines._nodata.input_kind`);
    ``store`` is where the tiles came from and where the run is recorded."""

    table: TileTable
    perm: np.ndarray
    kind: _nodata.InputKind
    store: TileStore | None = None  # the input's store, open for the run (None: patch records)

    @property
    def n(self) -> int:
        return len(self.table)

    @cached_property
    def canon(self) -> TileTable:
        """The tiles sorted by tile_id: a full copy (the HTML report uses it)."""
        return canon_of.plain_strings(self.table.take(self.perm))

    @cached_property
    def back(self) -> np.ndarray:
        """(n,) int64: the canonical position of each input row (``perm``'s inverse)."""
        back = np.empty(self.n, np.int64)
        back[self.perm] = np.arange(self.n)
        return back

    def column(self, name: str) -> np.ndarray:
        """The frame column ``name`` in canonical order."""
        return np.asarray(self.table.frame[name].to_numpy()[self.perm])


@dataclass(frozen=True)
class Exclusion:
    """§5 on the canonical tiles: reasons {name: (n,) bool}, excluded (n,) bool, the included
    rows (canonical indexes, and ``included_rows``: their input rows), the rare classes boosted
    (§9; empty without a boost), window and valid pixels per tile (n,) int64 and the nodata
    share over all tiles."""

    reasons: dict[str, np.ndarray]
    excluded: np.ndarray
    included_idx: np.ndarray
    included_rows: np.ndarray
    rare: np.ndarray
    window_px: np.ndarray
    valid_px: np.ndarray
    nodata_share: float


@dataclass(frozen=True)
class Composition:
    """§6 over all n canonical tiles: freq_cluster_id (-1 = none), its size (0 = none) and
    freq_cluster_weight = 1 / size (0 = none); ``clustering`` is None when the mode has no
    composition signal."""

    labels: np.ndarray
    sizes: np.ndarray
    freq_cluster_weight: np.ndarray
    clustering: CompositionResult | None


@dataclass(frozen=True)
class Weighing:
    """§8-§9: sampler weights (n,) float64 (0 for excluded tiles), the method actually used,
    class shares drawn uniformly / by weight (C,), the nodata shares (all tiles, uniform,
    weighted), the effective sample size, the warnings so far and (repeat_factor) r_c."""

    weights: np.ndarray
    effective_method: str
    uniform: np.ndarray
    weighted: np.ndarray
    nodata_shares: tuple[float, float, float]
    ess: float
    warnings: list[str]
    repeat_factors: dict[int, float] = field(default_factory=dict)


@dataclass
class BalancedRun:
    """Everything one run computed (canonical order), handed to the writers. ``batches()``
    yields the output table in input order, a batch of input rows at a time; ``out`` is all of
    it (only the map layer and the report need it whole); ``timings`` is the run's timings dict
    (filled as it goes)."""

    loaded: Loaded
    exclusion: Exclusion
    composition: Composition
    uniqueness: np.ndarray | None
    weighing: Weighing
    cfg: BalancedDatasetConfig
    result: BalancedResult
    started: datetime
    timings: dict[str, float]

    def batches(self) -> Iterator[pd.DataFrame]:
        return output_batches(
            self.cfg, self.loaded, self.exclusion, self.composition, self.uniqueness, self.weighing
        )

    @cached_property
    def out(self) -> pd.DataFrame:
        return pd.concat(list(self.batches()), ignore_index=True)


# ----------------------------------------------------------------------------- steps


def load(
    cfg: BalancedDatasetConfig, store: TileStore | None, progress_factory: ProgressFactory
) -> Loaded:
    """Read the input tiles and sort them by tile_id; no tiles, a nodata setting the input
    contradicts or a tile_id listed twice is one clear error."""
    table = _read_input(cfg, store, progress_factory)
    if len(table) == 0:
        raise EmptySelectionError("the input holds no tile; check input")
    kind = _nodata.input_kind(cfg.input)
    mismatch = _nodata.nodata_mismatch(cfg.exclusion, table.nodata_class, kind)
    if mismatch:
        raise ConfigError(mismatch)
    ids = table.frame["tile_id"].to_numpy(np.int64)
    perm = np.argsort(ids)  # ids are unique (checked below): any sort gives this order
    if np.any(ids[perm][1:] == ids[perm][:-1]):
        dup = int(ids[perm][1:][ids[perm][1:] == ids[perm][:-1]][0])
        raise InputDataError(f"input: tile_id {dup} occurs twice; every tile must be listed once")
    return Loaded(table, perm, kind, store)


def _read_input(
    cfg: BalancedDatasetConfig, store: TileStore | None, progress_factory: ProgressFactory
) -> TileTable:
    inp = cfg.input
    if inp.patch_records is not None or inp.patch_records_csv is not None:
        if inp.patch_records is not None:
            records = _inputs._records_frame(inp.patch_records)
            source = "input.patch_records"
        else:
            assert inp.patch_records_csv is not None
            records = _inputs.read_patch_records_csv(inp.patch_records_csv)
            source = str(inp.patch_records_csv)
        plan = _inputs.plan_patch_records(records, source, inp.mask_band)
        with progress_factory("Scanning tiles", len(plan)) as advance:
            return _inputs.run_scan_plan(plan, cfg.exclusion, inp, advance)
    return _inputs.load_input_tiles(inp, cfg.exclusion, store)


def exclude(cfg: BalancedDatasetConfig, loaded: Loaded) -> Exclusion:
    """§5: which tiles are left out and why; every tile excluded is one error naming the
    reasons. Also resolves the rare classes (§9; an id no tile holds is left out, with a
    warning)."""
    table, perm = loaded.table, loaded.perm
    reasons, excluded = tile_exclusions(table, cfg.exclusion)  # per tile: any order
    reasons = {k: v[perm] for k, v in reasons.items()}
    excluded = excluded[perm]
    included_idx = np.flatnonzero(~excluded)
    f = table.frame
    window_px = (f["height"].to_numpy(np.int64) * f["width"].to_numpy(np.int64))[perm]
    valid_px = table.counts.sum(axis=1)[perm]
    nodata_all = nodata_pixel_share(window_px, valid_px, np.ones(loaded.n))
    if included_idx.size == 0:
        raise EmptySelectionError(
            _nodata.all_excluded_message(
                loaded.n, reasons, loaded.kind, table.nodata_class, cfg.exclusion, nodata_all
            )
        )
    rows = perm[included_idx]
    rare = _rare(cfg, table, rows) if cfg.weights.rare_class_boost > 1 else np.zeros(0, np.int64)
    return Exclusion(reasons, excluded, included_idx, rows, rare, window_px, valid_px, nodata_all)


def included_table(loaded: Loaded, ex: Exclusion) -> TileTable:
    """The included tiles in canonical order (a copy of every column, paths as strings)."""
    return canon_of.plain_strings(loaded.table.take(ex.included_rows))


def _rare(cfg: BalancedDatasetConfig, table: TileTable, rows: np.ndarray) -> np.ndarray:
    """The rare classes (§9) of ``table``'s rows ``rows`` (the included tiles)."""
    ids = cfg.weights.rare_class_ids
    if ids is None:  # class pixel totals: integers, exact in any order
        keep = np.zeros(len(table), bool)
        keep[rows] = True
        return rare_classes(canon_of.column_sums(table, keep)[None, :], table.class_values)
    absent = set(_absent_rare(cfg, table))  # left out, with a warning (weigh)
    return np.asarray([c for c in ids if c not in absent], dtype=np.int64)


def _absent_rare(cfg: BalancedDatasetConfig, table: TileTable) -> list[int]:
    """The ``rare_class_ids`` (with a boost) that no tile of ``table`` holds (§9)."""
    if cfg.weights.rare_class_boost <= 1 or not cfg.weights.rare_class_ids:
        return []
    known = set(table.class_values.tolist())
    return [c for c in cfg.weights.rare_class_ids if c not in known]


def compose(cfg: BalancedDatasetConfig, loaded: Loaded, ex: Exclusion) -> Composition:
    """§6: cluster the included tiles' class compositions (when the mode uses them)."""
    n = loaded.n
    if not mode_signals(cfg.mode).composition:
        return Composition(np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n), None)
    cl = cfg.clustering
    clustering = cluster_compositions(
        canon_of.proportions_of(loaded.table, ex.included_rows),
        k_min=cl.k_min,
        k_max=cl.k_max,
        k_selection=cl.k_selection,
        k=cl.k,
        random_state=cl.random_state,
        pseudocount=cl.clr_pseudocount,
        silhouette_sample_size=cl.silhouette_sample_size,
        selection_sample_size=cl.selection_sample_size,
    )
    labels = np.full(n, -1, np.int64)  # after the fits: not held while KMeans runs
    sizes = np.zeros(n, np.int64)
    freq_cluster_weight = np.zeros(n, np.float64)
    labels[ex.included_idx] = clustering.labels
    sizes[ex.included_idx] = clustering.sizes
    freq_cluster_weight[ex.included_idx] = clustering.freq_cluster_weight
    return Composition(labels, sizes, freq_cluster_weight, clustering)


def uniqueness(
    cfg: BalancedDatasetConfig, loaded: Loaded, ex: Exclusion, progress_factory: ProgressFactory
) -> np.ndarray | None:
    """§7: uniqueness of the included tiles, (n,) float64 with NaN for excluded tiles; None
    when the mode has no uniqueness signal."""
    if not mode_signals(cfg.mode).uniqueness:
        return None
    from smt_tools.pipelines.embed import uniqueness_for_tiles

    inc = included_table(loaded, ex)
    u = np.asarray(uniqueness_for_tiles(inc, cfg, progress_factory), dtype=np.float64)
    if u.shape != (len(inc),):
        raise InputDataError(
            f"uniqueness: got {u.shape[0] if u.ndim else 0} scores for {len(inc)} tiles"
        )
    if not np.isfinite(u).all():
        raise InputDataError(
            "uniqueness: some tiles have no score (NaN); rebuild the embedding cache with "
            "`pytorch-smt-tools embed CONFIG --rebuild`"
        )
    uniq_all = np.full(loaded.n, np.nan)
    uniq_all[ex.included_idx] = u
    return uniq_all


def weigh(
    cfg: BalancedDatasetConfig,
    loaded: Loaded,
    ex: Exclusion,
    comp: Composition,
    uniq: np.ndarray | None,
) -> Weighing:
    """§8-§9: combine the signals, boost rare classes, floor and normalise the weights; the
    class and nodata shares they draw and the warnings about the input."""
    table, excluded = loaded.table, ex.excluded
    scored = sampler_weights(cfg, table, ex, comp.clustering, uniq)  # §8-§9
    weights, warnings, factors = scored.weights, list(scored.warnings), scored.repeat_factors
    if absent := _absent_rare(cfg, table):  # §9: a warning, not an error (a subset)
        warnings.append(
            f"weights.rare_class_ids: class {', '.join(map(str, absent))} does not occur in these "
            f"tiles (classes: {', '.join(map(str, sorted(table.class_values.tolist())))}); "
            "nothing is boosted for it"
        )
    counts = canon_of.counts_float(table, loaded.perm)  # canonical order: the same sums
    uniform, weighted = class_shares_uniform_vs_weighted(counts, weights, ~excluded)
    del counts
    nodata_shares = (
        ex.nodata_share,
        nodata_pixel_share(ex.window_px, ex.valid_px, (~excluded).astype(np.float64)),
        nodata_pixel_share(ex.window_px, ex.valid_px, weights),
    )
    warnings += _nodata.nodata_warnings(
        loaded.n, ex.reasons, loaded.kind, table.nodata_class, ex.nodata_share, cfg.exclusion
    )
    back = loaded.back  # --edge pad tiles kept / excluded
    warnings += canon_of.padded_note(table.frame, back, excluded[back])
    ess = effective_sample_size(weights)
    return Weighing(
        weights, scored.effective_method, uniform, weighted, nodata_shares, ess, warnings, factors
    )


def output_batches(
    cfg: BalancedDatasetConfig,
    loaded: Loaded,
    ex: Exclusion,
    comp: Composition,
    uniq: np.ndarray | None,
    w: Weighing,
) -> Iterator[pd.DataFrame]:
    """The balanced table's rows in input order, :data:`~smt_tools.pipelines._balanced_canon.
    BATCH_ROWS` input rows at a time (excluded rows dropped unless ``output.include_excluded``;
    a batch may then be empty)."""
    table, back, batch = loaded.table, loaded.back, canon_of.BATCH_ROWS
    for s in range(0, loaded.n, batch):
        idx = back[s : s + batch]
        part = TileTable(
            table.frame.iloc[s : s + batch],
            table.counts[s : s + batch],
            table.class_values,
            table.nodata_class,
        )
        out = balanced_frame(
            part,
            ex.excluded[idx],
            comp.labels[idx],
            comp.sizes[idx],
            comp.freq_cluster_weight[idx],
            w.weights[idx],
            uniq[idx] if uniq is not None else None,
            flags=exclusion_flags(ex.reasons, idx),
        )
        if not cfg.output.include_excluded:
            out = out.loc[~out["excluded"].to_numpy(bool)].reset_index(drop=True)
        yield out
        del out, part  # the writer has its rows: free them before the next batch is built


def rows_written(cfg: BalancedDatasetConfig, loaded: Loaded, ex: Exclusion) -> int:
    """Rows of the balanced table: every tile, or the included ones."""
    return loaded.n if cfg.output.include_excluded else int(ex.included_idx.size)


def diagnose(
    cfg: BalancedDatasetConfig,
    loaded: Loaded,
    ex: Exclusion,
    comp: Composition,
    w: Weighing,
    *,
    rows_written: int,
    has_uniqueness: bool,
) -> BalancedResult:
    """The run's numbers: exclusion counts, clusters, class shares, weights, nodata."""
    table, excluded, clustering = loaded.table, ex.excluded, comp.clustering
    return BalancedResult(
        n_tiles=loaded.n,
        n_excluded=int(excluded.sum()),
        exclusion_counts={k: int(v.sum()) for k, v in ex.reasons.items()},
        mode=cfg.mode,
        sampling_method=cfg.sampling_method,
        effective_method=w.effective_method,
        k=clustering.k if clustering else None,
        k_selection=cfg.clustering.k_selection,
        k_range=clustering.k_range if clustering else None,
        k_scores=clustering.k_scores if clustering else {},
        cluster_sizes=clustering.cluster_sizes if clustering else {},
        ess=w.ess,
        class_values=[int(v) for v in table.class_values],
        class_names=_inputs.input_class_names(loaded.store),
        uniform_share=[float(v) for v in w.uniform],
        weighted_share=[float(v) for v in w.weighted],
        weight_min=float(w.weights[~excluded].min()),
        weight_max=float(w.weights[~excluded].max()),
        rare_classes=[int(v) for v in ex.rare],
        repeat_factors=w.repeat_factors,
        warnings=w.warnings,
        rows_written=rows_written,
        has_uniqueness=has_uniqueness,
        nodata_class=table.nodata_class,
        nodata_share=w.nodata_shares[0],
        nodata_share_uniform=w.nodata_shares[1],
        nodata_share_weighted=w.nodata_shares[2],
    )
