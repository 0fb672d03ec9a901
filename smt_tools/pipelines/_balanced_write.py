"""The last step of build-balanced-dataset: stage every output, then move them in together.

CSV, GeoJSON + QGIS style, report folder (PNGs, optional ``report.html``) and the catalog run
are written from one :class:`~smt_tools.pipelines._balanced_steps.BalancedRun`; a failure
removes the staged files and leaves earlier outputs untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from smt_tools._version import __version__
from smt_tools.atomic import StagedOutputs, reraise_output_error
from smt_tools.config.balanced import BalancedDatasetConfig
from smt_tools.curation.exclusion import exclusion_flags
from smt_tools.export.csv_out import write_balanced_tables
from smt_tools.export.qgis_style import qml_text
from smt_tools.pipelines import _inputs, _nodata
from smt_tools.pipelines._balanced_steps import BalancedRun
from smt_tools.pipelines._config_record import balanced_config_record
from smt_tools.progress import ProgressFactory

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
    "exclusion_reason",
    "has_low_entropy",
    "has_high_nodata",
    "nodata_ratio",
)


def write(cfg: BalancedDatasetConfig, run: BalancedRun, progress_factory: ProgressFactory) -> None:
    """Stage the run's outputs and move them in together (``run.result.outputs``); on any
    failure the staged files are removed and a disk error becomes one line naming the output."""
    staging = StagedOutputs()
    steps = 1 + sum(
        (
            cfg.output.geojson_path is not None,
            cfg.output.report_dir is not None,
            run.loaded.store is not None and cfg.output.write_catalog_run,
        )
    )
    try:
        rows = run.result.rows_written
        with progress_factory("Writing outputs", steps * rows) as advance:
            _stage(cfg, run, staging, advance)
        run.result.outputs = staging.commit()
    except BaseException as exc:
        staging.cleanup()
        reraise_output_error(exc)  # disk full etc.: one line naming the output
        raise


def _stage(
    cfg: BalancedDatasetConfig,
    run: BalancedRun,
    staging: StagedOutputs,
    advance: Callable[[int], None],
) -> None:
    """Stage the CSV / Parquet table, GeoJSON + style, report and catalog run of one run."""
    timings, rows = run.timings, run.result.rows_written
    t = time.perf_counter()
    csv_path, parquet_path = cfg.output.csv_path, cfg.output.parquet_path
    write_balanced_tables(  # batch by batch: the whole table is never built for these
        run.batches(),
        staging.file(csv_path) if csv_path is not None else None,
        staging.file(parquet_path) if parquet_path is not None else None,
    )
    timings["write_csv"] = time.perf_counter() - t
    advance(rows)
    if cfg.output.geojson_path is not None:
        t = time.perf_counter()
        _stage_vector(cfg, run, staging)
        timings["write_geojson"] = time.perf_counter() - t
        advance(rows)
    if cfg.output.report_dir is not None:
        _stage_report(cfg, run, staging)
        advance(rows)
    if run.loaded.store is not None and cfg.output.write_catalog_run:
        t = time.perf_counter()
        run.result.run_id = _record_run(cfg, run)
        timings["catalog_run"] = time.perf_counter() - t
        advance(rows)


def _stage_vector(cfg: BalancedDatasetConfig, run: BalancedRun, staging: StagedOutputs) -> None:
    from smt_tools.export.vector import write_vector

    assert cfg.output.geojson_path is not None
    result = run.result
    props = list(GEOJSON_PROPERTIES) + (["uniqueness_score"] if result.has_uniqueness else [])
    written = write_vector(
        run.out,
        cfg.output.geojson_path,
        props,
        qml_text(),
        fmt=cfg.output.format,
        staging=staging,
    )
    if written.note:  # tiles without a CRS (pixel space) are left out of the layer
        result.warnings.append(written.note)


def _stage_report(cfg: BalancedDatasetConfig, run: BalancedRun, staging: StagedOutputs) -> None:
    from smt_tools.export.report import ReportData, write_report

    assert cfg.output.report_dir is not None
    out, result, w = run.out, run.result, run.weighing
    t = time.perf_counter()
    tmp_dir = staging.folder(cfg.output.report_dir)
    colours = _inputs.input_class_colours(run.loaded.store)  # classes.csv colours, if any
    files = write_report(
        tmp_dir,
        ReportData(
            class_values=run.loaded.table.class_values,
            class_colours=colours,
            uniform_share=w.uniform,
            weighted_share=w.weighted,
            class_names=result.class_names,
            nodata_label=_nodata_label(run),
            nodata_share=(result.nodata_share_uniform, result.nodata_share_weighted),
            weights=out["sampler_weight"].to_numpy(np.float64),
            excluded=out["excluded"].to_numpy(bool),
            footprints=out[["minx", "miny", "maxx", "maxy", "crs"]],
            uniqueness=out["uniqueness_score"].to_numpy(np.float64)
            if result.has_uniqueness
            else None,
        ),
    )
    run.timings["report"] = time.perf_counter() - t
    if cfg.output.html_report:
        t = time.perf_counter()
        files.append(_write_html(cfg, run, tmp_dir, colours, [f.name for f in files]))
        run.timings["html_report"] = time.perf_counter() - t
    staging.add_folder_files(tmp_dir, cfg.output.report_dir, files)


def _nodata_label(run: BalancedRun) -> str | None:
    """The class table's nodata row label, when there is nodata to show."""
    result = run.result
    if result.nodata_class is not None or result.nodata_share > 0:
        return _nodata.nodata_label(result.nodata_class)
    return None


def _write_html(
    cfg: BalancedDatasetConfig,
    run: BalancedRun,
    tmp_dir: Path,
    colours: dict[int, str],
    pngs: list[str],
) -> Path:
    """Write ``report.html`` (canonical tile order) into the staged report folder."""
    from smt_tools.export.html_report import HtmlReportData, write_html_report

    canon, result = run.loaded.canon, run.result
    data = HtmlReportData(
        summary=result.summary(),
        tiles=canon.frame,
        counts=canon.counts,
        class_values=canon.class_values,
        labels=run.composition.labels,
        weights=run.weighing.weights,
        excluded=run.exclusion.excluded,
        reasons=run.exclusion.reasons,
        uniform_share=run.weighing.uniform,
        weighted_share=run.weighing.weighted,
        class_names=result.class_names,
        class_colours=colours,
        nodata_class=result.nodata_class,
        nodata_label=_nodata_label(run),
        nodata_share=(result.nodata_share_uniform, result.nodata_share_weighted),
        uniqueness=run.uniqueness,
        subtitle=f"{result.n_tiles:,} tiles → {cfg.output.table_path} (smt-tools {__version__})",
        pngs=pngs,
    )
    return write_html_report(tmp_dir / "report.html", data)


def _record_run(cfg: BalancedDatasetConfig, run: BalancedRun) -> int:
    """Record the run and its per-tile results in the input's store (all or nothing)."""
    from smt_tools.catalog.store import RunRecord

    results = pd.DataFrame(
        {
            "tile_id": run.loaded.column("tile_id").astype(np.int64),
            "sampler_weight": run.weighing.weights,
            "freq_cluster_id": run.composition.labels,
            "excluded": run.exclusion.excluded,
            **exclusion_flags(run.exclusion.reasons),  # exclusion_reason, has_low_entropy, ...
        }
    )
    if run.uniqueness is not None:
        results["uniqueness_score"] = run.uniqueness
    summary = run.result.summary()
    summary["timings_s"] = dict(run.timings)
    summary["version"] = __version__
    assert run.loaded.store is not None
    return run.loaded.store.record_run(
        RunRecord(
            "build-balanced-dataset",
            balanced_config_record(cfg),
            summary,
            results,
            run.started,
            datetime.now(timezone.utc),
            map_style=qml_text(),
        )
    )
