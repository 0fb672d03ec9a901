"""build-balanced-dataset: load -> exclude -> compose [-> uniqueness] -> weigh -> diagnose -> write.

Every number follows docs/algorithms.md §5-§9. The work runs on the tiles sorted by ``tile_id`` (the
canonical order), so results do not depend on input row order; outputs keep the input order.
Nothing is written until every number is computed; outputs are staged beside their targets and
moved into place together at the end, so a failed run leaves earlier outputs untouched.

The steps live in :mod:`smt_tools.pipelines._balanced_steps` (each takes the config and the typed
results of the steps before it) and :mod:`smt_tools.pipelines._balanced_write`; this module says
in which order they run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smt_tools.choices import mode_signals, resolve_sampling_method
from smt_tools.config.balanced import BalancedDatasetConfig
from smt_tools.errors import ConfigError
from smt_tools.pipelines import _balanced_steps as steps
from smt_tools.pipelines import _inputs
from smt_tools.pipelines._balanced_steps import BalancedResult, BalancedRun
from smt_tools.pipelines._balanced_write import GEOJSON_PROPERTIES, write
from smt_tools.pipelines._config_record import balanced_config_record
from smt_tools.progress import ProgressFactory, no_progress

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileStore

__all__ = [
    "GEOJSON_PROPERTIES",
    "BalancedResult",
    "BalancedRun",
    "compute_balanced",
    "finish_balanced",
    "run_balanced",
]


def _validate_before_work(cfg: BalancedDatasetConfig) -> None:
    out = cfg.output
    paths = [p for p in (out.csv_path, out.parquet_path, out.geojson_path) if p is not None]
    if len(set(paths)) < len(paths):
        raise ConfigError("output.csv_path, parquet_path and geojson_path must be different files")
    for p in paths:
        if p.exists() and p.is_dir():
            raise ConfigError(f"output: {p} is a folder; give a file path")
    if out.report_dir is not None and out.report_dir.exists() and not out.report_dir.is_dir():
        raise ConfigError(f"output.report_dir: {out.report_dir} exists and is not a folder")
    try:  # the rule the config checks; a config built without validation meets it here
        resolve_sampling_method(cfg.sampling_method, mode_signals(cfg.mode))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


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
    t0 = time.perf_counter()
    _validate_before_work(cfg)
    from smt_tools.pipelines._preflight import preflight_balanced

    preflight_balanced(cfg, config_path)  # outputs writable and not inputs, before any work

    # the input's store (catalog or tile table) stays open for the run: one connection
    with _inputs.open_input(cfg.input) as store:
        run = compute_balanced(cfg, store, progress_factory, started=started, t0=t0)
        return finish_balanced(run, progress_factory, t0)


#: the uniqueness step: (cfg, loaded, exclusion, progress_factory) -> (n,) scores or None
UniquenessStep = Callable[
    [BalancedDatasetConfig, steps.Loaded, steps.Exclusion, ProgressFactory], np.ndarray | None
]


def compute_balanced(
    cfg: BalancedDatasetConfig,
    store: TileStore | None,
    progress_factory: ProgressFactory,
    *,
    started: datetime,
    t0: float,
    uniqueness: UniquenessStep = steps.uniqueness,
) -> BalancedRun:
    """Every step but the writing, in order, with the input's store open: the run's numbers
    and its output table (``run.out``). ``uniqueness`` is the §7 step (the Python API passes
    one that scores given embeddings instead of the cache's)."""
    timings: dict[str, float] = {}
    loaded = steps.load(cfg, store, progress_factory)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    exclusion = steps.exclude(cfg, loaded)  # §5
    timings["exclusion"] = time.perf_counter() - t
    composition = steps.compose(cfg, loaded, exclusion)  # §6
    timings["cluster"] = time.perf_counter() - t  # exclusion + composition
    timings["composition"] = timings["cluster"] - timings["exclusion"]

    uniq = None
    if mode_signals(cfg.mode).uniqueness:  # §7
        t = time.perf_counter()
        uniq = uniqueness(cfg, loaded, exclusion, progress_factory)
        timings["uniqueness"] = time.perf_counter() - t

    t = time.perf_counter()
    weighing = steps.weigh(cfg, loaded, exclusion, composition, uniq)  # §8, §9
    timings["weights"] = time.perf_counter() - t

    t = time.perf_counter()
    result = steps.diagnose(
        cfg,
        loaded,
        exclusion,
        composition,
        weighing,
        rows_written=steps.rows_written(cfg, loaded, exclusion),
        has_uniqueness=uniq is not None,
    )
    timings["diagnostics"] = time.perf_counter() - t
    if uniq is not None:  # the kNN backend used: uniqueness.backend with auto resolved
        from smt_tools.curation.uniqueness import resolve_backend

        result.uniqueness_backend = resolve_backend(cfg.uniqueness.backend)
    return BalancedRun(
        loaded, exclusion, composition, uniq, weighing, cfg, result, started, timings
    )


def finish_balanced(
    run: BalancedRun, progress_factory: ProgressFactory, t0: float, *, write_outputs: bool = True
) -> BalancedResult:
    """Write the outputs of ``run`` (staged, then moved in together; skipped without
    ``write_outputs``) and complete its numbers (timings, config record)."""
    if write_outputs:
        write(run.cfg, run, progress_factory)
    run.timings["total"] = time.perf_counter() - t0
    result = run.result
    result.timings = run.timings
    result.config_record = balanced_config_record(run.cfg)
    return result
