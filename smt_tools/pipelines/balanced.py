"""build-balanced-dataset: tiles -> exclusion -> composition [-> uniqueness] -> weights -> outputs.

Every number follows docs/algorithms.md §5-§9. The work runs on the tiles sorted by ``tile_id`` (the
canonical order), so results do not depend on input row order; outputs keep the input order.
Nothing is written until every number is computed; outputs are staged beside their targets and
moved into place together at the end, so a failed run leaves earlier outputs untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools import __version__
from smt_tools.atomic import StagedOutputs, reraise_output_error
from smt_tools.choices import mode_signals, resolve_sampling_method
from smt_tools.config.balanced import BalancedDatasetConfig
from smt_tools.curation.composition import CompositionResult, cluster_compositions
from smt_tools.curation.diagnostics import (
    class_shares_uniform_vs_weighted,
    effective_sample_size,
    nodata_pixel_share,
)
from smt_tools.curation.exclusion import tile_exclusions
from smt_tools.curation.ranking import combine
from smt_tools.curation.weights import final_weights, rare_class_boost, rare_classes
from smt_tools.errors import ConfigError, EmptySelectionError, InputDataError
from smt_tools.export.csv_out import balanced_frame, write_balanced_csv
from smt_tools.export.qgis_style import qml_text
from smt_tools.pipelines import _inputs, _nodata
from smt_tools.pipelines._config_record import balanced_config_record
from smt_tools.pipelines._tiling_report import padded_tiles_note
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.tiletable import TileTable

#: GeoJSON feature properties (``uniqueness_score`` is added when present).
GEOJSON_PROPERTIES: tuple[str, ...] = (
    "tile_id",
    "image_path",
    "mask_path",
    "row_off",
    "col_off",
    "patch_size",
    "sampler_weight",
    "freq_cluster_id",
    "excluded",
    "nodata_ratio",
)


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
        }

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the main local output (the CSV)."""
        if not self.outputs:
            return None
        from smt_tools.export.run_record import run_json_path

        return run_json_path(self.outputs[0])


def _validate_before_work(cfg: BalancedDatasetConfig) -> None:
    out = cfg.output
    paths = [p for p in (out.csv_path, out.geojson_path) if p is not None]
    if out.geojson_path is not None and out.csv_path == out.geojson_path:
        raise ConfigError("output.geojson_path must differ from output.csv_path")
    for p in paths:
        if p.exists() and p.is_dir():
            raise ConfigError(f"output: {p} is a folder; give a file path")
    if out.report_dir is not None and out.report_dir.exists() and not out.report_dir.is_dir():
        raise ConfigError(f"output.report_dir: {out.report_dir} exists and is not a folder")
    try:  # the rule the config checks; a config built without validation meets it here
        resolve_sampling_method(cfg.sampling_method, mode_signals(cfg.mode))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _load(cfg: BalancedDatasetConfig, progress_factory: ProgressFactory) -> TileTable:
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
    return _inputs.load_input_tiles(inp, cfg.exclusion)


def _uniqueness(
    table: TileTable, cfg: BalancedDatasetConfig, progress_factory: ProgressFactory
) -> np.ndarray:
    from smt_tools.pipelines.embed import uniqueness_for_tiles

    u = np.asarray(uniqueness_for_tiles(table, cfg, progress_factory), dtype=np.float64)
    if u.shape != (len(table),):
        raise InputDataError(
            f"uniqueness: got {u.shape[0] if u.ndim else 0} scores for {len(table)} tiles"
        )
    if not np.isfinite(u).all():
        raise InputDataError(
            "uniqueness: some tiles have no score (NaN); rebuild the embedding cache with "
            "`pytorch-smt-tools embed CONFIG --rebuild`"
        )
    return u


def _rare(cfg: BalancedDatasetConfig, table: TileTable) -> np.ndarray:
    ids = cfg.weights.rare_class_ids
    if ids is None:
        return rare_classes(table.counts, table.class_values)
    known = set(table.class_values.tolist())
    unknown = [c for c in ids if c not in known]
    if unknown:
        raise ConfigError(
            f"weights.rare_class_ids: class {unknown[0]} does not occur in the tiles "
            f"(classes: {', '.join(str(v) for v in sorted(known))})"
        )
    return np.asarray(ids, dtype=np.int64)


def run_balanced(
    cfg: BalancedDatasetConfig,
    progress_factory: ProgressFactory | None = None,
    config_path: str | Path | None = None,
) -> BalancedResult:
    """Run build-balanced-dataset for a validated config; return the run's numbers.

    ``progress_factory(description, total)`` opens a progress context yielding ``advance(n)``.
    ``config_path`` (the YAML file) is checked not to be an output.
    """
    progress_factory = progress_factory or no_progress
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _validate_before_work(cfg)
    from smt_tools.pipelines._preflight import preflight_balanced

    preflight_balanced(cfg, config_path)  # outputs writable and not inputs, before any work

    table = _load(cfg, progress_factory)
    if len(table) == 0:
        raise EmptySelectionError("the input holds no tile; check input")
    kind = _nodata.input_kind(cfg.input)
    mismatch = _nodata.nodata_mismatch(cfg.exclusion, table.nodata_class, kind)
    if mismatch:
        raise ConfigError(mismatch)
    ids = table.frame["tile_id"].to_numpy(np.int64)
    perm = np.argsort(ids, kind="stable")
    if np.any(ids[perm][1:] == ids[perm][:-1]):
        dup = int(ids[perm][1:][ids[perm][1:] == ids[perm][:-1]][0])
        raise InputDataError(f"input: tile_id {dup} occurs twice; every tile must be listed once")
    canon = table.take(perm)
    timings["load"] = time.perf_counter() - t0

    # --- exclusion (§5) ----------------------------------------------------------------
    t = time.perf_counter()
    reasons, excluded = tile_exclusions(canon, cfg.exclusion)
    included_idx = np.flatnonzero(~excluded)
    window_px = (canon.frame["height"] * canon.frame["width"]).to_numpy(np.int64)
    valid_px = canon.counts.sum(axis=1)
    nodata_all = nodata_pixel_share(window_px, valid_px, np.ones(len(canon)))
    if included_idx.size == 0:
        raise EmptySelectionError(
            _nodata.all_excluded_message(
                len(canon), reasons, kind, canon.nodata_class, cfg.exclusion, nodata_all
            )
        )
    inc = canon.take(included_idx)
    rare = _rare(cfg, inc) if cfg.weights.rare_class_boost > 1 else np.zeros(0, np.int64)

    # --- composition (§6) --------------------------------------------------------------
    n = len(canon)
    labels = np.full(n, -1, np.int64)
    sizes = np.zeros(n, np.int64)
    cweight = np.zeros(n, np.float64)
    comp: np.ndarray | None = None
    clustering: CompositionResult | None = None
    if mode_signals(cfg.mode).composition:
        cl = cfg.clustering
        clustering = cluster_compositions(
            inc.proportions(),
            k_min=cl.k_min,
            k_max=cl.k_max,
            k_selection=cl.k_selection,
            k=cl.k,
            random_state=cl.random_state,
            pseudocount=cl.clr_pseudocount,
            silhouette_sample_size=cl.silhouette_sample_size,
            selection_sample_size=cl.selection_sample_size,
        )
        comp = clustering.comp
        labels[included_idx] = clustering.labels
        sizes[included_idx] = clustering.sizes
        cweight[included_idx] = clustering.comp
    timings["cluster"] = time.perf_counter() - t

    # --- uniqueness (§7) ---------------------------------------------------------------
    uniq_all: np.ndarray | None = None
    uniq: np.ndarray | None = None
    if mode_signals(cfg.mode).uniqueness:
        t = time.perf_counter()
        uniq = _uniqueness(inc, cfg, progress_factory)
        uniq_all = np.full(n, np.nan)
        uniq_all[included_idx] = uniq
        timings["uniqueness"] = time.perf_counter() - t

    # --- combination + weights (§8, §9) ------------------------------------------------
    t = time.perf_counter()
    combined = combine(cfg.sampling_method, comp, uniq)
    warnings = [combined.fallback] if combined.fallback else []
    boost = (
        rare_class_boost(inc.proportions(), inc.class_values, rare, cfg.weights.rare_class_boost)
        if rare.size
        else None
    )
    weights = final_weights(
        combined.score, ~excluded, boost=boost, weight_floor=cfg.weights.weight_floor
    )
    uniform, weighted = class_shares_uniform_vs_weighted(canon.counts, weights, ~excluded)
    nodata_shares = (
        nodata_all,
        nodata_pixel_share(window_px, valid_px, (~excluded).astype(np.float64)),
        nodata_pixel_share(window_px, valid_px, weights),
    )
    warnings += _nodata.nodata_warnings(
        n, reasons, kind, canon.nodata_class, nodata_shares[0], cfg.exclusion
    )
    warnings += padded_tiles_note(canon.frame, excluded)  # --edge pad tiles kept / excluded
    ess = effective_sample_size(weights)
    timings["weights"] = time.perf_counter() - t

    # --- back to input order ------------------------------------------------------------
    t = time.perf_counter()
    back = np.empty(n, np.int64)
    back[perm] = np.arange(n)

    def orig(a: np.ndarray) -> np.ndarray:
        return a[back]

    out = balanced_frame(
        table,
        orig(excluded),
        orig(labels),
        orig(sizes),
        orig(cweight),
        orig(weights),
        orig(uniq_all) if uniq_all is not None else None,
    )
    if not cfg.output.include_excluded:
        out = out.loc[~out["excluded"].to_numpy(bool)].reset_index(drop=True)
    timings["prepare"] = time.perf_counter() - t

    result = BalancedResult(
        n_tiles=n,
        n_excluded=int(excluded.sum()),
        exclusion_counts={k: int(v.sum()) for k, v in reasons.items()},
        mode=cfg.mode,
        sampling_method=cfg.sampling_method,
        effective_method=combined.effective_method,
        k=clustering.k if clustering else None,
        k_selection=cfg.clustering.k_selection,
        k_range=clustering.k_range if clustering else None,
        k_scores=clustering.k_scores if clustering else {},
        cluster_sizes=clustering.cluster_sizes if clustering else {},
        ess=ess,
        class_values=[int(v) for v in canon.class_values],
        class_names=_inputs.input_class_names(cfg.input),
        uniform_share=[float(v) for v in uniform],
        weighted_share=[float(v) for v in weighted],
        weight_min=float(weights[~excluded].min()),
        weight_max=float(weights[~excluded].max()),
        rare_classes=[int(v) for v in rare],
        warnings=warnings,
        rows_written=len(out),
        has_uniqueness=uniq is not None,
        nodata_class=canon.nodata_class,
        nodata_share=nodata_shares[0],
        nodata_share_uniform=nodata_shares[1],
        nodata_share_weighted=nodata_shares[2],
    )

    # --- outputs (staged, then moved in together) ----------------------------------------
    staging = StagedOutputs()
    steps = 1 + sum(
        (
            cfg.output.geojson_path is not None,
            cfg.output.report_dir is not None,
            cfg.input.uses_postgres and cfg.output.write_catalog_run,
        )
    )
    try:
        with progress_factory("Writing outputs", steps * len(out)) as advance:
            _write_outputs(
                cfg, out, canon, staging, result, timings, advance,
                uniform=uniform, weighted=weighted, excluded=excluded, labels=labels,
                weights=weights, uniq_all=uniq_all, started=started, reasons=reasons,
            )  # fmt: skip
        result.outputs = staging.commit()
    except BaseException as exc:
        staging.cleanup()
        reraise_output_error(exc)  # disk full etc.: one line naming the output
        raise
    timings["total"] = time.perf_counter() - t0
    result.timings = timings
    result.config_record = balanced_config_record(cfg)
    return result


def _write_outputs(
    cfg: BalancedDatasetConfig,
    out: pd.DataFrame,
    canon: TileTable,
    staging: StagedOutputs,
    result: BalancedResult,
    timings: dict[str, float],
    advance: Callable[[int], None],
    *,
    uniform: np.ndarray,
    weighted: np.ndarray,
    excluded: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    uniq_all: np.ndarray | None,
    started: datetime,
    reasons: dict[str, np.ndarray] | None = None,
) -> None:
    """Stage the CSV, GeoJSON + style, report and catalog run of one run (moved in by the caller)."""
    t = time.perf_counter()
    write_balanced_csv(out, staging.file(cfg.output.csv_path))
    timings["write_csv"] = time.perf_counter() - t
    advance(len(out))
    if cfg.output.geojson_path is not None:
        from smt_tools.export.vector import write_vector

        t = time.perf_counter()
        props = list(GEOJSON_PROPERTIES) + (["uniqueness_score"] if result.has_uniqueness else [])
        written = write_vector(
            out,
            cfg.output.geojson_path,
            props,
            qml_text(),
            fmt=cfg.output.format,
            staging=staging,
        )
        if written.note:  # tiles without a CRS (pixel space) are left out of the layer
            result.warnings.append(written.note)
        timings["write_geojson"] = time.perf_counter() - t
        advance(len(out))
    if cfg.output.report_dir is not None:
        from smt_tools.export.report import ReportData, write_report

        t = time.perf_counter()
        tmp_dir = staging.folder(cfg.output.report_dir)
        colours = _inputs.input_class_colours(cfg.input)  # classes.csv colours, if any
        files = write_report(
            tmp_dir,
            ReportData(
                class_values=canon.class_values,
                class_colours=colours,
                uniform_share=uniform,
                weighted_share=weighted,
                class_names=result.class_names,
                nodata_label=_nodata.nodata_label(result.nodata_class)
                if result.nodata_class is not None or result.nodata_share > 0
                else None,
                nodata_share=(result.nodata_share_uniform, result.nodata_share_weighted),
                weights=out["sampler_weight"].to_numpy(np.float64),
                excluded=out["excluded"].to_numpy(bool),
                footprints=out[["minx", "miny", "maxx", "maxy", "crs"]],
                uniqueness=out["uniqueness_score"].to_numpy(np.float64)
                if result.has_uniqueness
                else None,
            ),
        )
        timings["report"] = time.perf_counter() - t
        if cfg.output.html_report:
            t = time.perf_counter()
            files.append(
                _write_html(cfg, tmp_dir, canon, result, colours, uniform, weighted, excluded,
                            labels, weights, uniq_all, reasons or {}, [f.name for f in files])
            )  # fmt: skip
            timings["html_report"] = time.perf_counter() - t
        staging.add_folder_files(tmp_dir, cfg.output.report_dir, files)
        advance(len(out))
    if cfg.input.uses_postgres and cfg.output.write_catalog_run:
        t = time.perf_counter()
        result.run_id = _record_run(
            cfg, canon, excluded, labels, weights, uniq_all, result, started, timings
        )
        timings["catalog_run"] = time.perf_counter() - t
        advance(len(out))


def _write_html(
    cfg: BalancedDatasetConfig,
    tmp_dir: Path,
    canon: TileTable,
    result: BalancedResult,
    colours: dict[int, str],
    uniform: np.ndarray,
    weighted: np.ndarray,
    excluded: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    uniq_all: np.ndarray | None,
    reasons: dict[str, np.ndarray],
    pngs: list[str],
) -> Path:
    """Write ``report.html`` (canonical tile order) into the staged report folder."""
    from smt_tools.export.html_report import HtmlReportData, write_html_report

    show_nodata = result.nodata_class is not None or result.nodata_share > 0
    data = HtmlReportData(
        summary=result.summary(),
        tiles=canon.frame,
        counts=canon.counts,
        class_values=canon.class_values,
        labels=labels,
        weights=weights,
        excluded=excluded,
        reasons=reasons,
        uniform_share=uniform,
        weighted_share=weighted,
        class_names=result.class_names,
        class_colours=colours,
        nodata_class=result.nodata_class,
        nodata_label=_nodata.nodata_label(result.nodata_class) if show_nodata else None,
        nodata_share=(result.nodata_share_uniform, result.nodata_share_weighted),
        uniqueness=uniq_all,
        subtitle=f"{result.n_tiles:,} tiles → {cfg.output.csv_path} (smt-tools {__version__})",
        pngs=pngs,
    )
    return write_html_report(tmp_dir / "report.html", data)


def _record_run(
    cfg: BalancedDatasetConfig,
    canon: TileTable,
    excluded: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    uniq_all: np.ndarray | None,
    result: BalancedResult,
    started: datetime,
    timings: dict[str, float],
) -> int:
    from smt_tools import catalog

    results = pd.DataFrame(
        {
            "tile_id": canon.frame["tile_id"].to_numpy(np.int64),
            "sampler_weight": weights,
            "freq_cluster_id": labels,
            "excluded": excluded,
        }
    )
    if uniq_all is not None:
        results["uniqueness_score"] = uniq_all
    summary = result.summary()
    summary["timings_s"] = dict(timings)
    summary["version"] = __version__
    engine = catalog.connect(_inputs.catalog_url(cfg.input))
    try:
        return catalog.record_run(
            engine,
            "build-balanced-dataset",
            balanced_config_record(cfg),
            summary,
            results,
            started,
            datetime.now(timezone.utc),
            map_style=qml_text(),
        )
    finally:
        engine.dispose()
