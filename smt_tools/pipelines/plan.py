"""``--dry-run`` and ``config show``: what a command would read and write, checked, with nothing
computed or written.

A plan checks what the real run checks before its first tile: the config (already validated
by the loader), every input exists (patch records: files, image/mask agreement and windows, as
the scan would), every output is writable and is not an input (the same pre-flight as the
run), and the catalog is reachable with its schema applied when the config uses one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smt_tools.choices import mode_signals
from smt_tools.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from smt_tools.catalog.store import StoreRef
    from smt_tools.config._source import CatalogSource
    from smt_tools.config.balanced import BalancedDatasetConfig
    from smt_tools.config.coreset import CoresetConfig
    from smt_tools.config.split import SplitConfig
    from smt_tools.config.train import DatasetConfig, TrainConfig

PathLike = str | os.PathLike[str] | None


@dataclass
class Plan:
    """What a run would do. Each entry is ``(key, description)``."""

    command: str
    config: str
    mode: str
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)
    #: the catalog reached (redacted URL), None when the config uses none
    database: str | None = None

    def checks(self) -> str:
        done = ["the config is valid", "inputs exist", "outputs are writable"]
        if self.database is not None:
            done.append("the catalog is reachable")
        return ", ".join(done[:-1]) + " and " + done[-1]

    def summary(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``--json``)."""
        return {
            "dry_run": True,
            "command": self.command,
            "config": self.config,
            "mode": self.mode,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "settings": dict(self.settings),
            "database": self.database,
        }


# --- shared checks -----------------------------------------------------------------------------


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _input_file(label: str, path: str | os.PathLike[str]) -> str:
    """``path (size)``; ConfigError when a local input file is missing."""
    from smt_tools.raster.paths import is_gdal_path

    if is_gdal_path(path):
        return f"{path} (remote: opened when the run starts)"
    p = Path(path)
    if not p.is_file():
        where = "" if p.is_absolute() else f" (relative paths are read from {Path.cwd()})"
        raise ConfigError(f"{label}: file not found: {p}{where}; check the path")
    return f"{p} ({_size(p)})"


def _input_dir(label: str, path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{label}: folder not found: {p}; check the path")
    return f"{p} (folder)"


def _output(path: str | os.PathLike[str], extra: str = "") -> str:
    p = Path(path)
    state = "exists: replaced" if p.exists() else "new"
    return f"{p} ({state}{extra})"


def _reach(ref: StoreRef) -> str:
    """Open the store once (PostGIS: connect and check the schema; Parquet: read the table's
    metadata); its label (passwords hidden)."""
    from smt_tools.catalog.store import open_store

    with open_store(ref) as store:
        store.class_names()
        return store.label


def _catalog_source(plan: Plan, src: CatalogSource, key: str) -> None:
    """The ``catalog:`` block of ``key``: filter checked, store reached, what is read."""
    from smt_tools.catalog.where import check_where_clause
    from smt_tools.pipelines._sources import source_ref

    if src.where_clause is not None:
        check_where_clause(src.where_clause)
    plan.database = _reach(source_ref(src, key))
    run = f", tiles of run {src.run_id}" if src.run_id is not None else ""
    where = f" where {src.where_clause}" if src.where_clause else ""
    table = f" table {src.table}" if src.path is None else ""
    plan.inputs.append((key, f"{plan.database}{table}{where}{run}"))


def _geojson(plan: Plan, key: str, path: PathLike) -> None:
    if path is not None:
        qml = Path(path).with_suffix(".qml")
        plan.outputs.append((key, _output(path, f"; QGIS style {qml}")))


def _on(flag: bool) -> str:
    return "on" if flag else "off"


# --- build-balanced-dataset / embed --------------------------------------------------------


def _balanced_input(plan: Plan, cfg: BalancedDatasetConfig) -> None:
    from smt_tools.pipelines import _inputs, _user_table

    inp = cfg.input
    if inp.patch_records is not None or inp.patch_records_csv is not None:
        if inp.patch_records is not None:
            records = _inputs._records_frame(inp.patch_records)
            key, source = "input.patch_records", "input.patch_records"
        else:
            assert inp.patch_records_csv is not None
            _input_file("input.patch_records_csv", inp.patch_records_csv)
            records = _inputs.read_patch_records_csv(inp.patch_records_csv)
            key, source = "input.patch_records_csv", str(inp.patch_records_csv)
        scan = _inputs.plan_patch_records(records, source, inp.mask_band)
        where = "inline" if inp.patch_records is not None else f"in {inp.patch_records_csv}"
        plan.inputs.append(
            (
                key,
                f"{len(records)} windows {where} over {len(scan.sources)} image/mask pairs "
                "(files, sizes and windows checked; scanned when the run starts)",
            )
        )
    elif (user_table := _user_table.user_table_of(inp)) is not None:
        plan.database, text = _user_table.describe_user_table(user_table)
        plan.inputs.append((user_table.key, text))
    elif inp.catalog is not None:
        _catalog_source(plan, inp.catalog, "input.catalog")
    elif inp.tiles is not None:
        from smt_tools.catalog.store import StoreRef, open_store

        text = _input_file("input.tiles", inp.tiles)
        with open_store(StoreRef(path=Path(inp.tiles))) as store:
            store.class_names()  # a tile table, in a format this version reads
            rows = store.count_rows()[0]
        plan.inputs.append(("input.tiles", f"{text}, {rows:,} tiles"))
    else:
        from smt_tools.catalog.store import store_ref
        from smt_tools.catalog.where import check_where_clause

        if inp.where_clause is not None:
            check_where_clause(inp.where_clause)
        plan.database = _reach(store_ref(url=_inputs.catalog_url(inp), key="input.dsn"))
        where = f" where {inp.where_clause}" if inp.where_clause else ""
        plan.inputs.append(("input (catalog)", f"{plan.database} table {inp.table}{where}"))


def plan_balanced(
    cfg: BalancedDatasetConfig, config_path: PathLike, command: str = "build-balanced-dataset"
) -> Plan:
    """The dry run of build-balanced-dataset."""
    from smt_tools.pipelines._preflight import preflight_balanced
    from smt_tools.pipelines.balanced import _validate_before_work

    _validate_before_work(cfg)
    preflight_balanced(cfg, config_path)
    plan = Plan(command, str(config_path), f"{cfg.mode}, sampling_method {cfg.sampling_method}")
    _balanced_input(plan, cfg)
    out = cfg.output
    for key, path in (("output.csv_path", out.csv_path), ("output.parquet_path", out.parquet_path)):
        if path is not None:
            plan.outputs.append((key, _output(path)))
    _geojson(plan, "output.geojson_path", out.geojson_path)
    if out.report_dir is not None:
        plan.outputs.append(("output.report_dir", _output(out.report_dir)))
    inp = cfg.input
    scanned = inp.patch_records is not None or inp.patch_records_csv is not None
    if not scanned and out.write_catalog_run:
        table = inp.tiles or (inp.catalog.path if inp.catalog is not None else None)
        where = "in the catalog" if table is None else f"in {table}.runs/"
        plan.outputs.append(("catalog run", f"a run and one result per tile, {where}"))
    if mode_signals(cfg.mode).uniqueness:
        emb = cfg.embeddings
        cache = emb.parquet_path
        state = "none: computed in memory" if cache is None else _cache_state(cache)
        plan.settings.append(("embeddings", f"{emb.dino_model}, cache {state}"))
        un = cfg.uniqueness
        backend: str = un.backend
        if backend == "auto":  # what auto picks on this machine (the run's summary says too)
            from smt_tools.curation.uniqueness import resolve_backend

            backend = f"auto ({resolve_backend('auto')} here)"
        plan.settings.append(("uniqueness", f"{backend}, k_neighbors {un.k_neighbors}"))
    if mode_signals(cfg.mode).composition:
        cl = cfg.clustering
        k = f"k {cl.k} (fixed)" if cl.k_selection == "fixed" else f"k {cl.k_min}..{cl.k_max}"
        how = "" if cl.k_selection == "fixed" else f" by {cl.k_selection}"
        plan.settings.append(("clustering", f"{k}{how}, random_state {cl.random_state}"))
    ex = cfg.exclusion
    nodata = (
        (f"nodata_class {ex.nodata_class}" if ex.nodata_class is not None else "no nodata class")
        if ex.nodata_given
        else "nodata_class from the input"
    )
    plan.settings.append(
        (
            "exclusion",
            f"border nodata {_on(ex.exclude_border_nodata)}, black border "
            f"{_on(ex.exclude_black_border)}, {nodata}, max_nodata_ratio {ex.max_nodata_ratio:g}",
        )
    )
    w = cfg.weights
    repeat = ""
    if cfg.sampling_method == "repeat_factor":
        repeat = f", repeat_threshold {w.repeat_threshold:g}, min_pixels {w.repeat_min_pixels}"
    plan.settings.append(
        (
            "weights",
            f"weight_floor {w.weight_floor}, rare_class_boost {w.rare_class_boost:g}, "
            f"temperature {w.temperature:g}{repeat}",
        )
    )
    return plan


def _cache_state(path: Path) -> str:
    return f"{path} (exists: reused, missing tiles added)" if path.exists() else f"{path} (new)"


def plan_embed(
    cfg: BalancedDatasetConfig, config_path: PathLike, scheduler: str | None = None
) -> Plan:
    """The dry run of embed (``scheduler``: ``--scheduler``, else $SMT_DASK_SCHEDULER)."""
    from smt_tools.dask_cluster import resolve_scheduler
    from smt_tools.pipelines._preflight import preflight_embed

    emb = cfg.embeddings
    if emb.parquet_path is None:
        raise ConfigError(
            "embed needs embeddings.parquet_path (the cache file to fill); add it to the config"
        )
    preflight_embed(cfg, config_path)
    plan = Plan("embed", str(config_path), "DINOv2 CLS embeddings of the included tiles")
    _balanced_input(plan, cfg)
    plan.outputs.append(("embeddings.parquet_path", _cache_state(emb.parquet_path)))
    plan.settings.append(("embeddings.dino_model", emb.dino_model))
    plan.settings.append(
        (
            "embeddings",
            f"batch_size {emb.batch_size}, num_workers {emb.num_workers}, use_gpu "
            f"{str(emb.use_gpu).lower()}, bands {emb.bands}",
        )
    )
    where = resolve_scheduler(scheduler)
    plan.settings.append(
        ("run on", f"the Dask cluster {where}" if where else "this machine (no --scheduler)")
    )
    return plan


# --- select-coreset ------------------------------------------------------------------------------


def plan_coreset(cfg: CoresetConfig, config_path: PathLike) -> Plan:
    """The dry run of select-coreset."""
    from smt_tools.coreset import EMBEDDING_METHODS
    from smt_tools.pipelines._preflight import preflight_coreset

    preflight_coreset(cfg, config_path)
    if cfg.method in EMBEDDING_METHODS and cfg.parquet_path is None:
        raise ConfigError(
            f"coreset.method {cfg.method} needs tile embeddings: set coreset.parquet_path to the "
            "embedding cache (fill it with `pytorch-smt-tools embed CONFIG`)"
        )
    budget = (
        f"{cfg.budget:.0%} of the included tiles"
        if cfg.budget_mode == "fraction"
        else f"{int(cfg.budget):,} tiles"
    )
    plan = Plan("select-coreset", str(config_path), f"{cfg.method}, budget {budget}")
    if cfg.input_csv_path is not None:
        plan.inputs.append(("input_csv_path", _input_file("input_csv_path", cfg.input_csv_path)))
    else:
        assert cfg.catalog is not None
        _catalog_source(plan, cfg.catalog, "coreset.catalog")
    if cfg.parquet_path is not None and cfg.method in EMBEDDING_METHODS:
        plan.inputs.append(("parquet_path", _input_file("parquet_path", cfg.parquet_path)))
    plan.outputs.append(("output.csv_path", _output(cfg.output.csv_path)))
    _geojson(plan, "output.geojson_path", cfg.output.geojson_path)
    if cfg.catalog is not None and cfg.output.write_catalog_run:
        plan.outputs.append(("catalog run", "a run and one result per tile, in the catalog"))
    sw = cfg.sampler_weights
    cap = f", cap {sw.cap:g}" if sw.cap is not None else ""
    plan.settings.append(("device", cfg.device))
    plan.settings.append(("sampler_weights", f"{sw.formula}{cap}"))
    if cfg.method in ("fd", "lc_fd"):
        fd = cfg.fd
        k = f"k {fd.k}" if fd.k is not None else f"k {fd.k_min}..{fd.k_max} by elbow"
        plan.settings.append(("fd", k))
    if cfg.spatial_weight > 0:
        plan.settings.append(("spatial_weight", f"{cfg.spatial_weight:g}"))
    if cfg.hybrid is not None:
        _hybrid_plan(plan, cfg)
    plan.settings.append(("random_state", str(cfg.random_state)))
    return plan


def _hybrid_plan(plan: Plan, cfg: CoresetConfig) -> None:
    """method hybrid: each step (its share of the budget) and the map layers it reads."""
    assert cfg.hybrid is not None
    for i, step in enumerate(cfg.hybrid.steps):
        share = f"{step.share:.0%} of the budget" if step.share is not None else "the rest"
        what = {"vector": "tiles the map layer covers", "entropy": "by label complexity"}.get(
            step.type, f"{step.method} among tiles of classes {step.classes}"
        )
        plan.settings.append((f"step {step.label}", f"{share}, {what}"))
        if step.path is not None:
            key = f"hybrid.steps[{i}].path"
            plan.inputs.append((key, _input_file(key, step.path)))
        if step.type == "embedding" and cfg.parquet_path is None:
            raise ConfigError(
                f"coreset.hybrid.steps[{i}]: an embedding step needs tile embeddings: set "
                "coreset.parquet_path to the embedding cache (fill it with `pytorch-smt-tools "
                "embed CONFIG`)"
            )
    if cfg.parquet_path is not None and any(s.type == "embedding" for s in cfg.hybrid.steps):
        plan.inputs.append(("parquet_path", _input_file("parquet_path", cfg.parquet_path)))


# --- split -------------------------------------------------------------------------------------


def plan_split(cfg: SplitConfig, config_path: PathLike) -> Plan:
    """The dry run of split."""
    from smt_tools.pipelines._preflight import preflight_split

    preflight_split(cfg, config_path)
    by = cfg.group_column
    if cfg.strategy == "spatial_blocks":
        by = f"blocks of {cfg.block_size_m:g} m"
    mode = f"{cfg.n_splits} folds, {cfg.strategy} by {by}"
    plan = Plan("split", str(config_path), mode)
    if cfg.input_csv_path is not None:
        plan.inputs.append(("input_csv_path", _input_file("input_csv_path", cfg.input_csv_path)))
    else:
        assert cfg.catalog is not None
        _catalog_source(plan, cfg.catalog, "split.catalog")
        plan.outputs.append(("catalog run", "a run and the fold of each tile, in the catalog"))
    if cfg.output.csv_path is not None:
        plan.outputs.append(("output.csv_path", _output(cfg.output.csv_path)))
    _geojson(plan, "output.geojson_path", cfg.output.geojson_path)
    plan.settings.append(("buffer_m", f"{cfg.buffer_m:g}"))
    plan.settings.append(("holdout", f"{cfg.holdout:g}"))
    plan.settings.append(("random_state", str(cfg.random_state)))
    return plan


# --- check-leakage -----------------------------------------------------------------------------


def plan_leakage(settings: dict[str, Any], config_path: PathLike) -> Plan:
    """The dry run of check-leakage (``settings``: the keyword arguments of the audit)."""
    from smt_tools.pipelines._preflight import preflight_leakage

    files = [(k, settings[k]) for k in ("train", "val", "folds", "embeddings") if settings[k]]
    preflight_leakage(settings["report"], files)
    plan = Plan("check-leakage", str(config_path or "options"), "audit of a split")
    for key, path in files:
        plan.inputs.append((key, _input_file(key, path)))
    if settings["catalog"] is not None:
        _catalog_source(plan, settings["catalog"], "check_leakage.catalog")
    if settings["report"] is not None:
        _geojson(plan, "report", settings["report"])
    plan.settings.append(("buffer_m", f"{settings['buffer_m']:g}"))
    plan.settings.append(
        ("near duplicates", f"below {settings['near_duplicate_threshold']:g} (cosine distance)")
    )
    return plan


# --- train -------------------------------------------------------------------------------------


def _dataset_inputs(plan: Plan, label: str, ds: DatasetConfig) -> None:
    for key, value in ds.kwargs.items():
        if not isinstance(value, str | os.PathLike):
            continue
        name = f"{label}.{key}"
        if key.endswith("_dir"):
            plan.inputs.append((name, _input_dir(name, value)))
        elif "path" in key or "csv" in key:
            plan.inputs.append((name, _input_file(name, value)))


def plan_train(cfg: TrainConfig, config_path: PathLike) -> Plan:
    """The dry run of train (the config loader has already imported every ``_target_``)."""
    from smt_tools.pipelines._preflight import preflight_train

    preflight_train(cfg, config_path)
    steps = f", {cfg.steps_per_epoch} steps each" if cfg.steps_per_epoch else ""
    plan = Plan("train", str(config_path), f"{cfg.epochs} epoch(s){steps} on device {cfg.device}")
    _dataset_inputs(plan, "train_dataset", cfg.train_dataset)
    if cfg.val_dataset is not None:
        _dataset_inputs(plan, "val_dataset", cfg.val_dataset)
    out = Path(cfg.output_dir)
    plan.outputs.append(
        ("output_dir", _output(out, "; best.pt, last.pt, metrics.csv, metrics.png"))
    )
    loader = cfg.train_dataset.data_loader
    sampler = "weighted sampler" if loader.weighted_sampler else "uniform sampling"
    plan.settings.append(("train_dataset", f"{cfg.train_dataset.target}, {sampler}"))
    if cfg.val_dataset is not None:
        val = f"val_dataset {cfg.val_dataset.target}"
    elif cfg.val_fold is not None:
        val = f"val_fold {cfg.val_fold} of the train CSV"
    else:
        val = f"val_groups {', '.join(cfg.val_groups or [])} of the train CSV"
    plan.settings.append(("validation", val))
    plan.settings.append(("model", cfg.model.target))
    plan.settings.append(("loss", cfg.loss.target))
    lr = cfg.optimizer.kwargs.get("lr")
    plan.settings.append(
        ("optimizer", cfg.optimizer.target + (f", lr {lr}" if lr is not None else ""))
    )
    plan.settings.append(("batch_size", str(loader.batch_size)))
    return plan


# --- config show ---------------------------------------------------------------------------------

#: Keys the commands read with ``${VAR}`` expanded (``config._loader.expand_env``).
_ENV_EXPANDED: tuple[tuple[str, ...], ...] = (
    ("balanced_dataset", "input", "dsn"),
    *(
        (*section, "catalog", key)
        for section in (("balanced_dataset", "input"), ("coreset",), ("split",), ("check_leakage",))
        for key in ("url", "path")
    ),
)


def effective_config(cfg: BaseModel, source: str) -> dict[str, Any]:
    """``cfg`` as the command uses it: every default filled in, ``${VAR}`` expanded where the
    command expands it, passwords (``password`` keys, DSN/URL passwords) replaced by ``***``.
    ``source`` (the file) names an unset variable's key in the error."""
    from smt_tools.config._loader import expand_env
    from smt_tools.config.template import effective_dump

    data = effective_dump(cfg)
    for path in _ENV_EXPANDED:
        node: Any = data
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            node[path[-1]] = expand_env(node[path[-1]], f"{source}: {'.'.join(path)}")
    from smt_tools.pipelines._config_record import redact_secrets

    redact_secrets(data)
    return data
