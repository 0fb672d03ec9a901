"""``split`` and ``check-leakage``: leakage-safe folds and their audit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from smt_tools.choices import DEFAULT_AUDIT_KNN_BACKEND, AuditKnnBackend
from smt_tools.cli._common import EXIT_LEAK, console, err_console, exit_after, guard
from smt_tools.cli._config_opts import dry_run, dry_run_option, set_option
from smt_tools.cli._tables import number_column, print_matrix, text_column

if TYPE_CHECKING:
    from smt_tools.pipelines.leakage import LeakageResult
    from smt_tools.pipelines.split import SplitResult


@guard
def split(
    config: Path = typer.Argument(..., help="YAML file with a top-level `split:` section."),
    overrides: list[str] = set_option(),
    dry_run_: bool = dry_run_option(),
) -> object:
    """Group k-fold by source image (optionally pixel-stratified), with a spatial buffer.

    Adds `fold` (-1 = holdout test) and `buffer_excluded_folds` to the CSV (and `block_id` with
    strategy spatial_blocks: square blocks of block_size_m metres as the groups), or records
    tile_result.fold rows in the catalog.
    """
    from smt_tools.config import load_config
    from smt_tools.config.split import SplitFile
    from smt_tools.pipelines.split import run_split

    start = time.perf_counter()
    cfg = load_config(config, SplitFile, overrides).split
    if dry_run_:
        from smt_tools.pipelines.plan import plan_split

        return dry_run(plan_split, cfg, config)
    result = run_split(cfg, config_path=config)
    _print_split_summary(result, start)
    return result


@guard(outputs=("report",))
def check_leakage(
    config: Path | None = typer.Argument(
        None,
        help="Optional YAML with a top-level `check_leakage:` section (the options below as "
        "keys, plus a `catalog:` block); options given here win.",
    ),
    train: Path | None = typer.Option(None, "--train", help="CSV of training tiles."),
    val: Path | None = typer.Option(None, "--val", help="CSV of validation tiles."),
    folds: Path | None = typer.Option(
        None, "--folds", help="CSV with a `fold` column (from `split`), instead of --train/--val."
    ),
    catalog_ref: str | None = typer.Option(
        None,
        "--catalog",
        help="Audit a split run where it is recorded: a postgresql:// URL or a .parquet tile "
        "table (with --run-id; default $SMT_DATABASE_URL).",
    ),
    run_id: int | None = typer.Option(
        None, "--run-id", min=1, help="The split run to audit (with --catalog)."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Embedding cache (Parquet) for the near-duplicate check."
    ),
    model_id: str | None = typer.Option(
        None, "--model-id", help="Model of the embeddings when the cache holds several."
    ),
    buffer_m: float | None = typer.Option(
        None,
        "--buffer-m",
        min=0.0,
        help="Tiles of different splits closer than this (metres) leak; 0 (default) = overlaps.",
    ),
    near_duplicate_threshold: float | None = typer.Option(
        None,
        "--near-duplicate-threshold",
        help="Cosine distance below which two embeddings are near-duplicates (default 0.02).",
    ),
    k: int | None = typer.Option(
        None, "--k", min=1, help="Neighbours searched per tile for near-duplicates (default 10)."
    ),
    knn_backend: AuditKnnBackend | None = typer.Option(
        None,
        "--knn-backend",
        help="kNN backend of the near-duplicate check: sklearn, faiss, torch (exact; GPU when "
        f"torch sees one), hnsw (approximate) or auto (default {DEFAULT_AUDIT_KNN_BACKEND}).",
    ),
    group_column: str | None = typer.Option(
        None, "--group-column", help="Column that groups tiles (default source_image_id)."
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write a map of the leaking tiles with a QGIS style: .geojson or .fgb (+ .qml "
        "beside it) or .gpkg (style inside).",
    ),
    overrides: list[str] = set_option(),
    dry_run_: bool = dry_run_option(),
) -> object:
    """Audit splits: shared source images, overlapping/near tiles, near-duplicate embeddings, and the crop-level-split smell.

    Exit code 0: no leakage; 3: leakage found (the table says where); 1: the audit could not run (bad input, one line on stderr); 2: usage error.
    """
    from smt_tools.config.leakage import LeakageConfig
    from smt_tools.pipelines.leakage import run_check_leakage

    # the options named like the config's keys (catalog comes as --catalog / --run-id)
    given = {k: v for k, v in locals().items() if k in LeakageConfig.model_fields}
    settings = _leakage_settings(config, overrides, given, catalog_ref, run_id)
    if dry_run_:
        from smt_tools.pipelines.plan import plan_leakage

        return dry_run(plan_leakage, settings, config)
    result = run_check_leakage(**settings)
    _print_leakage_summary(result)
    if result.has_leak:
        err_console.print(f"Leakage found: see the table above (exit code {EXIT_LEAK}).")
        exit_after(EXIT_LEAK)
    else:
        console.print("No leakage found.")
    return result


def _leakage_settings(
    config: Path | None,
    overrides: list[str],
    given: dict[str, Any],
    catalog: str | None,
    run_id: int | None,
) -> dict[str, Any]:
    """The audit's settings: an option given on the command line, else the config's key, else
    the default; ``--catalog`` / ``--run-id`` fill the ``catalog:`` block."""
    from smt_tools.config import load_config
    from smt_tools.config.leakage import LeakageConfig, LeakageFile

    data: dict[str, Any] = {}
    if config is not None:
        cfg = load_config(config, LeakageFile, overrides).check_leakage
        data = cfg.model_dump(exclude_unset=True)
        if cfg.catalog is not None:
            data["catalog"] = cfg.catalog
    elif overrides:
        raise typer.BadParameter("--set needs a CONFIG file", param_hint="'--set'")
    data.update({k: v for k, v in given.items() if v is not None})
    if catalog is not None or run_id is not None:
        block = data["catalog"].model_dump(exclude_unset=True) if "catalog" in data else {}
        if catalog is not None:
            block.pop("url", None)
            block.pop("path", None)
            block["path" if catalog.lower().endswith(".parquet") else "url"] = catalog
        if run_id is not None:
            block["run_id"] = run_id
        data["catalog"] = block
    if "catalog" in data:  # the block's own checks (one input, a run id), one line
        from smt_tools.config import validate_mapping

        checked = validate_mapping({"check_leakage": data}, LeakageFile, "check-leakage")
        data["catalog"] = checked.check_leakage.catalog
    defaults = LeakageConfig.model_fields
    out = {k: data.get(k, defaults[k].default) for k in defaults}
    out["k_neighbors"] = out.pop("k")
    return out


def _print_split_summary(result: SplitResult, start: float) -> None:
    """Fold sizes, class shares per fold, what was written, how distances were measured."""
    # fold sizes, then class shares with one column per fold: every value stays whole in
    # an 80-column log, whatever the number of classes (the share table is split in parts
    # when the folds do not fit side by side)
    by = result.group_column
    if result.blocks is not None:
        by = f"{result.blocks.n_blocks} blocks of {result.blocks.block_size_m:g} m"
    table = Table(
        title=f"{result.n_splits} folds ({result.strategy}, by {by})", title_justify="left"
    )
    text_column(table, "fold", justify="right")
    for header in ("tiles", "groups" if result.blocks is None else "blocks"):
        number_column(table, header)
    text_column(table, "buffer-dropped train tiles", justify="right")
    names = ["test" if f.fold < 0 else str(f.fold) for f in result.folds]
    for name, f in zip(names, result.folds, strict=True):
        table.add_row(name, str(f.tiles), str(f.groups), str(f.buffer_dropped))
    console.print(table)
    if result.class_values:
        print_matrix(
            console,
            "Class pixel share per fold",
            "class",
            [str(v) for v in result.class_values],
            [*(f"fold {n}" if n != "test" else n for n in names), "global"],
            [
                [*(f"{f.shares[i]:.3f}" for f in result.folds), f"{g:.3f}"]
                for i, g in enumerate(result.global_share)
            ],
        )
    where = [str(p) for p in (result.csv_path, result.geojson_path) if p is not None]
    if result.run_id is not None:
        where.append(f"catalog run {result.run_id}")
    dev = (
        f"largest class-share deviation from global {result.max_deviation:.4f}; "
        if result.class_values
        else ""
    )
    groups = f"{result.n_groups} groups"
    if result.blocks is not None:
        groups = f"{result.blocks.describe()} (column block_id)"
    console.print(
        f"Split {result.n_tiles} tiles from {groups}; {dev}"
        f"wrote {', '.join(where)} in {time.perf_counter() - start:.1f} s",
        soft_wrap=True,
    )
    # how distances were measured, on its own unwrapped line (also in the run summary)
    console.print(f"{result.buffer_line()} ({result.backend})", markup=False, soft_wrap=True)
    for line in result.warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)


def _print_leakage_summary(result: LeakageResult) -> None:
    """The table of the four checks, one line per check, the spatial method and the report."""
    counts = ", ".join(f"{name}: {n}" for name, n in result.label_tiles.items())
    # a narrow table (fits 80 columns); details and example tile ids follow, one unwrapped
    # line per check, so no id or number is ever cut
    table = Table(title=f"Leakage audit ({counts} tiles)", title_justify="left")
    text_column(table, "check")
    text_column(table, "result")
    number_column(table, "tiles")
    number_column(table, "groups/pairs")
    labels = {
        "source_image": "(a) source image in >1 split",
        "spatial": "(b) footprints overlap / within buffer",
        "near_duplicate": "(c) embedding near-duplicates",
        "crop_level": "(d) crop-level split smell",
    }
    by_check = {f.check: f for f in result.audit.findings}
    skipped = {
        "spatial": result.spatial_skipped or "no footprint columns",
        "near_duplicate": "no --embeddings given",
    }
    lines: list[str] = []
    for check, label in labels.items():
        f = by_check.get(check)
        if f is None:
            table.add_row(label, "skipped", "", "")
            lines.append(f"skipped {check}: {skipped.get(check, '')}".rstrip(": "))
            continue
        status = (
            "[bold red]LEAK[/]"
            if f.leak
            else ("[yellow]WARNING[/]" if f.warning else "[green]ok[/]")
        )
        table.add_row(label, status, str(f.n_tiles), str(f.n_items))
        kind = "LEAK" if f.leak else ("WARNING" if f.warning else "ok")
        examples = (
            f"; example tile ids: {', '.join(str(t) for t in f.examples)}"
            if len(f.examples)
            else ""
        )
        lines.append(f"{kind} {check}: {f.detail}{examples}")
    console.print(table)
    for line in lines:  # one unwrapped line per check, easy to grep in logs
        console.print(line, markup=False, soft_wrap=True)
    if result.method is not None and result.method.kind != "none":
        console.print(
            f"Spatial check: buffer {result.buffer_m:g} m, {result.method.describe()}",
            markup=False,
            soft_wrap=True,
        )
    for line in result.warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
    if result.report_path is not None:
        console.print(
            f"Wrote {len(result.audit.leaking_rows)} leaking tiles to {result.report_path}",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("split")(split)
    app.command("check-leakage")(check_leakage)
