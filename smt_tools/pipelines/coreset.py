"""select-coreset: load -> features -> select -> weigh -> diagnose -> write.

The math lives in :mod:`smt_tools.coreset` (docs/algorithms.md §10); this module reads the input
table and the embedding cache, calls it, and writes the outputs: the full input table plus
``coreset_score``, ``coreset_selected`` and a recomputed ``sampler_weight`` (0 for tiles not
selected), an optional GeoJSON + QGIS style, and a catalog run when the input is the catalog.
Outputs are staged and moved into place together, so a failed run leaves earlier files as they were.
The readers live in :mod:`smt_tools.pipelines._coreset_input`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.config.coreset import CoresetConfig
from smt_tools.coreset import (
    EMBEDDING_METHODS,
    CoresetParams,
    CoresetSelection,
    coreset_sampler_weights,
    select_coreset,
)
from smt_tools.curation.diagnostics import effective_sample_size
from smt_tools.curation.exclusion import FLAG_COLUMNS
from smt_tools.errors import EmptySelectionError, InputDataError
from smt_tools.export.qgis_style import coreset_qml, score_breaks
from smt_tools.export.run_record import run_json_path
from smt_tools.pipelines._coreset_csv import write_coreset_csv
from smt_tools.pipelines._coreset_input import (
    BOUNDS_COLUMNS,
    REQUIRED_COLUMNS,
    CoresetInput,
    load_embeddings,
    projected_centroids,
    read_balanced_csv,
    read_catalog_tiles,
    readmit_low_entropy,
    selection_errors,
)
from smt_tools.pipelines._coreset_spatial import spatial_inputs
from smt_tools.pipelines._coreset_vendi import measure_diversity
from smt_tools.pipelines._sources import open_source
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.tiletable import entropy_from_counts

if TYPE_CHECKING:
    from smt_tools.atomic import StagedOutputs
    from smt_tools.catalog.store import TileStore

__all__ = [
    "BOUNDS_COLUMNS",
    "GEOJSON_PROPERTIES",
    "REQUIRED_COLUMNS",
    "CoresetInput",
    "CoresetResult",
    "load_embeddings",
    "projected_centroids",
    "read_balanced_csv",
    "read_catalog_tiles",
    "run_coreset",
]

#: GeoJSON feature properties (those present in the table).
GEOJSON_PROPERTIES: tuple[str, ...] = (
    "tile_id",
    "image_path",
    "mask_path",
    "row_off",
    "col_off",
    "patch_size",
    "coreset_score",
    "coreset_selected",
    "sampler_weight",
    "coreset_step",
    "excluded",
    "exclusion_reason",
    "has_low_entropy",
    "has_high_nodata",
)
STEPS = 5


@dataclass
class CoresetResult:
    """Numbers of one run (shares are fractions; timings in seconds)."""

    method: str
    device: str
    n_tiles: int
    n_included: int
    budget: int
    class_values: list[int]
    pool_class_shares: list[float]
    selected_class_shares: list[float]
    weighted_class_shares: list[float]
    pool_source_images: int | None
    selected_source_images: int | None
    pool_mean_uniqueness: float | None
    selected_mean_uniqueness: float | None
    ess: float
    info: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)
    run_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the config as recorded in the catalog's ``run`` row (also in ``run.json``)
    config_record: dict[str, Any] | None = None
    #: one line each, printed as ``warning: ...`` (the map layer's notes)
    warnings: list[str] = field(default_factory=list)
    #: Vendi scores (§10) of the included and the selected tiles' embeddings (None: none)
    pool_vendi: float | None = None
    selected_vendi: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (stored in the catalog run)."""
        return {
            "method": self.method,
            "device": self.device,
            "n_tiles": self.n_tiles,
            "n_included": self.n_included,
            "budget": self.budget,
            "class_values": self.class_values,
            "pool_class_shares": self.pool_class_shares,
            "selected_class_shares": self.selected_class_shares,
            "weighted_class_shares": self.weighted_class_shares,
            "pool_source_images": self.pool_source_images,
            "selected_source_images": self.selected_source_images,
            "pool_mean_uniqueness": self.pool_mean_uniqueness,
            "selected_mean_uniqueness": self.selected_mean_uniqueness,
            "ess": self.ess,
            "info": self.info,
            "timings": self.timings,
            "warnings": self.warnings,
            "pool_vendi": self.pool_vendi,
            "selected_vendi": self.selected_vendi,
        }

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the main local output (the CSV)."""
        return run_json_path(self.outputs[0] if self.outputs else None)


def _shares(counts: np.ndarray) -> list[float]:
    tot = counts.sum(axis=0).astype(np.float64)
    s = float(tot.sum())
    return [float(v) for v in (tot / s if s > 0 else tot)]


def _mean_or_none(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else None


def _params(cfg: CoresetConfig, device: str) -> CoresetParams:
    return CoresetParams(
        method=cfg.method,
        budget=cfg.budget,
        budget_mode=cfg.budget_mode,
        spatial_weight=cfg.spatial_weight,
        lc_fd_cutoff_m=cfg.lc_fd_cutoff_m,
        fa_cb_lambda=cfg.fa_cb_lambda,
        cb_growth=cfg.cb_growth,
        kcenter_candidates=cfg.kcenter_candidates,
        pca_dim=cfg.pca_dim,
        fd_k=cfg.fd.k,
        fd_k_min=cfg.fd.k_min,
        fd_k_max=cfg.fd.k_max,
        fd_sample_size=cfg.fd.sample_size,
        fd_use_vendi=cfg.fd.use_vendi,
        fd_vendi_delta=cfg.fd.vendi_delta,
        random_state=cfg.random_state,
        device="cuda" if device == "cuda" else "cpu",
    )


def _config_for_record(cfg: CoresetConfig) -> dict[str, Any]:
    """The config as recorded in the catalog's ``run`` row: secrets redacted."""
    from smt_tools.pipelines._config_record import config_record

    return config_record("coreset", cfg)


# ----------------------------------------------------------------------------- steps


@dataclass
class CoresetRun:
    """One run's state, step by step (rows in input order): the input, the candidates
    (``eligible`` (n,) bool: not excluded), the selection, the sampler weights (n,) float64
    (0 for tiles not selected), the output table and the run's numbers."""

    cfg: CoresetConfig
    data: CoresetInput
    eligible: np.ndarray
    started: datetime
    timings: dict[str, float]
    selection: CoresetSelection | None = None
    weights: np.ndarray | None = None
    out: pd.DataFrame | None = None
    result: CoresetResult | None = None
    #: (n, D) embeddings given by the caller (the Python API); None: the embedding cache
    embeddings: np.ndarray | None = None


def _load(cfg: CoresetConfig, store: TileStore | None) -> CoresetInput:
    """The input table: the catalog (a run) or a balanced CSV; one clear line when nothing is
    left."""
    if store is not None:
        assert cfg.catalog is not None
        data = read_catalog_tiles(store, cfg.catalog)
    else:
        data = read_balanced_csv(Path(cfg.input_csv_path or ""))
        if "exclusion_reason" in data.frame.columns:  # an empty CSV field: an included tile
            data.frame["exclusion_reason"] = data.frame["exclusion_reason"].fillna("")
    return prepare_input(cfg, data)


def prepare_input(cfg: CoresetConfig, data: CoresetInput) -> CoresetInput:
    """The input as select-coreset selects from it (low-entropy tiles readmitted when the
    config says so); one clear line when nothing is left."""
    if not cfg.exclude_low_entropy:
        readmit_low_entropy(data)
    if not (~data.excluded).any():
        raise EmptySelectionError(f"{data.source}: every tile is excluded; nothing to select from")
    return data


def _features(run: CoresetRun) -> tuple[np.ndarray | None, Any]:
    """(embeddings (n, D) or None, tile positions: :func:`spatial_inputs`) the method needs."""
    cfg, frame = run.cfg, run.data.frame
    embeddings = run.embeddings if cfg.method in EMBEDDING_METHODS else None
    if cfg.method in EMBEDDING_METHODS and embeddings is None:
        tile_ids = frame["tile_id"].to_numpy(dtype=np.int64)
        embeddings = load_embeddings(cfg, tile_ids, run.eligible)
    return embeddings, spatial_inputs(cfg, frame, run.data.source)


def _select(
    run: CoresetRun, device: str, embeddings: np.ndarray | None, centroids: Any
) -> CoresetSelection:
    """§10: score and select; a ValueError of the math is one config line naming the input."""
    if run.cfg.method == "hybrid":  # the steps of coreset.hybrid
        from smt_tools.pipelines._coreset_hybrid import select_hybrid_run

        return select_hybrid_run(
            run.cfg, run.data, run.eligible, _params(run.cfg, device), run.embeddings
        )
    data = run.data
    with selection_errors(data.source):
        return select_coreset(
            _params(run.cfg, device),
            tile_ids=data.frame["tile_id"].to_numpy(dtype=np.int64),
            eligible=run.eligible,
            counts=data.counts,
            class_entropy=entropy_from_counts(data.counts),
            embeddings=embeddings,
            centroids_xy=centroids,
        )


def _weigh(run: CoresetRun) -> None:
    """Sampler weights of the selected tiles; the output table (input + score columns)."""
    assert run.selection is not None
    sel, data = run.selection, run.data
    # proportions of the selected tiles only (the weights of the others are 0)
    c = data.counts[sel.selected]
    valid = c.sum(axis=1, keepdims=True).astype(np.float64)
    p = np.where(valid > 0, c / np.where(valid > 0, valid, 1.0), 0.0)
    run.weights = np.zeros(len(sel.selected), dtype=np.float64)
    run.weights[sel.selected] = coreset_sampler_weights(
        p, np.ones(len(p), dtype=bool), run.cfg.sampler_weights.formula, run.cfg.sampler_weights.cap
    )
    out = data.frame.copy(deep=False)
    out["coreset_score"] = sel.scores
    out["coreset_selected"] = sel.selected
    out["sampler_weight"] = run.weights
    if sel.step is not None:  # method hybrid: the step that picked each tile
        out["coreset_step"] = sel.step
    run.out = out


def _diagnose(run: CoresetRun, device: str) -> CoresetResult:
    """Summary numbers: the selected subset against the pool of included tiles."""
    assert run.selection is not None and run.weights is not None
    sel, data, weights, eligible = run.selection, run.data, run.weights, run.eligible
    frame = data.frame
    uniq = (
        pd.to_numeric(frame["uniqueness_score"], errors="coerce").to_numpy(dtype=np.float64)
        if "uniqueness_score" in frame.columns
        else np.full(len(frame), np.nan)
    )
    src = frame["source_image_id"].to_numpy() if "source_image_id" in frame.columns else None
    valid = data.counts.sum(axis=1).astype(np.float64)
    wsum = float((weights * valid).sum())
    weighted = (weights[:, None] * data.counts).sum(axis=0) / wsum if wsum > 0 else None
    return CoresetResult(
        method=run.cfg.method,
        device=device,
        n_tiles=len(frame),
        n_included=int(eligible.sum()),
        budget=sel.budget,
        class_values=[int(v) for v in data.class_values],
        pool_class_shares=_shares(data.counts[eligible]),
        selected_class_shares=_shares(data.counts[sel.selected]),
        weighted_class_shares=[float(v) for v in weighted] if weighted is not None else [],
        pool_source_images=int(np.unique(src[eligible]).size) if src is not None else None,
        selected_source_images=int(np.unique(src[sel.selected]).size) if src is not None else None,
        pool_mean_uniqueness=_mean_or_none(uniq[eligible]),
        selected_mean_uniqueness=_mean_or_none(uniq[sel.selected]),
        ess=effective_sample_size(weights),
        info=sel.info,
        timings=run.timings,
    )


def _write(run: CoresetRun, config_record: dict[str, Any]) -> None:
    """Stage the CSV, GeoJSON + style and catalog run; move them in together."""
    from smt_tools.atomic import StagedOutputs, reraise_output_error

    assert run.selection is not None and run.out is not None and run.result is not None
    cfg, sel, out = run.cfg, run.selection, run.out
    t = time.perf_counter()
    staging = StagedOutputs()
    # selected tiles coloured by score class (quantiles of the selected scores)
    map_style = coreset_qml(score_breaks(sel.scores[sel.selected]))
    try:
        data = run.data
        write_coreset_csv(
            out,
            staging.file(Path(cfg.output.csv_path)),
            data.counts,
            data.class_values,
            data.json_after,
        )
        if cfg.output.geojson_path is not None:
            _stage_vector(run, staging, map_style)
        if run.data.store is not None and cfg.output.write_catalog_run:
            run.timings["write"] = time.perf_counter() - t
            run.result.run_id = _record_run(run, config_record, map_style)
        run.result.outputs = staging.commit()
    except BaseException as exc:
        staging.cleanup()
        reraise_output_error(exc)  # disk full etc.: one line naming the output
        raise
    run.timings["write"] = time.perf_counter() - t


def _stage_vector(run: CoresetRun, staging: StagedOutputs, map_style: str) -> None:
    from smt_tools.export.vector import write_vector

    assert run.out is not None and run.cfg.output.geojson_path is not None
    out = run.out
    missing = [c for c in BOUNDS_COLUMNS if c not in out.columns]
    if missing:
        raise InputDataError(
            f"{run.data.source}: output.geojson_path needs column(s) {', '.join(missing)}"
        )
    props = [c for c in GEOJSON_PROPERTIES if c in out.columns]
    written = write_vector(
        out,
        Path(run.cfg.output.geojson_path),
        props,
        map_style,
        fmt=run.cfg.output.format,
        staging=staging,
    )
    if written.note and run.result is not None:  # FlatGeobuf instead, tiles without a CRS
        run.result.warnings.append(written.note)


def _record_run(run: CoresetRun, config_record: dict[str, Any], map_style: str) -> int:
    from smt_tools.catalog.store import RunRecord

    assert run.selection is not None and run.result is not None
    results = pd.DataFrame(
        {
            "tile_id": run.data.frame["tile_id"].to_numpy(dtype=np.int64),
            "sampler_weight": run.weights,
            "excluded": run.data.excluded,
            "coreset_score": run.selection.scores,
            "coreset_selected": run.selection.selected,
        }
    )
    if run.selection.step is not None:
        results["coreset_step"] = run.selection.step
    for col in FLAG_COLUMNS:  # why a tile was excluded, as the input run recorded it
        if col in run.data.frame.columns:
            results[col] = run.data.frame[col].to_numpy()
    assert run.data.store is not None
    return run.data.store.record_run(
        RunRecord(
            "select-coreset",
            config_record,
            run.result.summary(),
            results,
            run.started,
            datetime.now(timezone.utc),
            map_style=map_style,
        )
    )


# ----------------------------------------------------------------------------- pipeline


def run_coreset(
    cfg: CoresetConfig,
    progress_factory: ProgressFactory | None = None,
    config_dump: dict[str, Any] | None = None,
    config_path: str | Path | None = None,
) -> CoresetResult:
    """Run select-coreset for ``cfg`` (the ``coreset:`` section) and write its outputs.

    ``config_path`` (the YAML file) is checked not to be an output."""
    from smt_tools.coreset.gpu import resolve_device
    from smt_tools.pipelines._preflight import preflight_coreset

    preflight_coreset(cfg, config_path)  # outputs writable and not inputs, before any work

    factory = progress_factory or no_progress
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device)
    config_record = config_dump or _config_for_record(cfg)
    # the catalog (when it is the input) stays open for the run: one connection
    with (
        open_source(cfg.catalog, "coreset.catalog") as store,
        factory(f"select-coreset ({cfg.method})", STEPS) as advance,
    ):
        t = time.perf_counter()
        data = _load(cfg, store)
        timings["load"] = time.perf_counter() - t
        advance(1)
        run = compute_coreset(cfg, data, device, advance, started=started, timings=timings)
        _write(run, config_record)
        advance(1)
    return finish_coreset(run, config_record)


def compute_coreset(
    cfg: CoresetConfig,
    data: CoresetInput,
    device: str,
    advance: Callable[[int], None],
    *,
    started: datetime,
    timings: dict[str, float],
    embeddings: np.ndarray | None = None,
) -> CoresetRun:
    """Every step after loading but the writing: features, selection, weights, numbers
    (``run.out`` is the output table). ``embeddings`` (n, D), row-aligned with ``data``,
    replace the embedding cache (the Python API); ``advance(1)`` after each step."""
    run = CoresetRun(cfg, data, ~data.excluded, started, timings, embeddings=embeddings)
    t = time.perf_counter()
    emb, centroids = _features(run)
    timings["embeddings"] = time.perf_counter() - t
    advance(1)

    t = time.perf_counter()
    run.selection = _select(run, device, emb, centroids)
    timings["select"] = time.perf_counter() - t
    advance(1)

    t = time.perf_counter()
    _weigh(run)
    timings["weights"] = time.perf_counter() - t
    advance(1)
    run.result = _diagnose(run, device)
    run.result.warnings.extend(run.selection.info.pop("warnings", []))  # hybrid: map layers
    emb = emb if emb is not None else run.embeddings
    div = measure_diversity(cfg, data.frame, run.eligible, run.selection.selected, emb)
    run.result.pool_vendi, run.result.selected_vendi = div.pool, div.selected
    run.result.warnings.extend(div.warnings)  # Vendi scores of pool and selection
    timings["vendi"] = div.seconds
    return run


def finish_coreset(run: CoresetRun, config_record: dict[str, Any]) -> CoresetResult:
    """The run's numbers, completed (a non-finite ESS reads 0; the config record)."""
    assert run.result is not None
    result = run.result
    if not math.isfinite(result.ess):
        result.ess = 0.0
    result.config_record = config_record
    return result
