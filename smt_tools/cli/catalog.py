"""``catalog init | ingest | stats``: the PostGIS tile catalog (or a local Parquet tile table)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from smt_tools.choices import DEFAULT_EDGE_POLICY, EdgePolicy
from smt_tools.cli._common import console, err_console, guard, progress_bar
from smt_tools.cli._config_opts import scheduler_option
from smt_tools.cli._tables import print_class_table

if TYPE_CHECKING:
    from smt_tools.pipelines.ingest import IngestResult

_CATALOG_HELP = (
    "postgresql://user@host:5432/db URL, or a .parquet file for a local tile table "
    "(default: $SMT_DATABASE_URL)."
)


#: Most rows of the class-share table an ingest prints (the largest classes; `catalog stats`
#: lists all).
MAX_CLASS_ROWS = 24


def print_ingest_report(result: IngestResult) -> None:
    """The nodata line and the class-share table of the tiles an ingest wrote (80 columns)."""
    s = result.scanned
    if result.nodata_class is None:
        line = "nodata: none (every mask value is a class)"
    elif s.mask_pixels:
        line = f"nodata: class {result.nodata_class} = {100 * s.nodata_share:.2f} % of mask pixels"
    else:
        line = f"nodata: class {result.nodata_class}"
    console.print(line, markup=False, soft_wrap=True)
    if not s.tiles:
        return
    rows = sorted(s.classes, key=lambda c: -c.pixels)[:MAX_CLASS_ROWS]
    hidden = len(s.classes) - len(rows)
    rows.sort(key=lambda c: c.class_value)
    excluded = "" if result.nodata_class is None else " (nodata excluded)"
    console.print(  # not a table title: rich wraps a title to the (narrow) table's width
        f"Class shares of the {s.tiles:,} tiles written{excluded}:", markup=False, soft_wrap=True
    )
    print_class_table(
        console,
        None,
        [c.class_value for c in rows],
        {c.class_value: c.name for c in rows if c.name},
        ["pixels", "share"],
        [[f"{c.pixels:,}", f"{100 * c.share:.2f} %"] for c in rows],
    )
    if hidden:
        rest = sum(c.share for c in s.classes) - sum(c.share for c in rows)
        console.print(
            f"... and {hidden} smaller classes, {100 * rest:.2f} % together "
            "(`catalog stats` lists all)",
            markup=False,
            soft_wrap=True,
        )


@guard
def init(
    catalog: str | None = typer.Option(
        None, "--catalog", help="postgresql:// URL (default: $SMT_DATABASE_URL)."
    ),
) -> object:
    """Create or upgrade the catalog schema (idempotent; records applied migrations)."""
    from smt_tools.pipelines.catalog_init import run_catalog_init

    result = run_catalog_init(catalog)
    for name in result.already_applied:
        console.print(f"already applied  {name}", soft_wrap=True)
    for name in result.applied:
        console.print(f"applied          {name}", soft_wrap=True)
    state = "up to date" if not result.applied else f"{len(result.applied)} migration(s) applied"
    console.print(f"Catalog {result.target}: {state}", soft_wrap=True)
    return result


@guard
def ingest(
    pairs_csv: Path = typer.Argument(
        ..., help="CSV with columns image, mask[, group] (paths relative to the CSV)."
    ),
    patch_size: int = typer.Option(256, "--patch-size", min=1, help="Tile size in pixels."),
    stride: int | None = typer.Option(
        None, "--stride", min=1, help="Step between tiles (default: the patch size)."
    ),
    edge: EdgePolicy = typer.Option(
        DEFAULT_EDGE_POLICY,
        "--edge",
        help="Partial tiles at the right/bottom edge: drop, shift or pad.",
    ),
    nodata_class: str | None = typer.Option(
        None,
        "--nodata-class",
        help="Mask value that means nodata (default none: every mask value, 0 included, "
        "is a class; -1 = none).",
    ),
    mask_band: int | None = typer.Option(
        None, "--mask-band", min=1, help="1-based band of multi-band masks holding the classes."
    ),
    allow_new_classes: bool = typer.Option(
        False,
        "--allow-new-classes",
        help="Accept class values the catalog does not list yet (refused by default).",
    ),
    black_tolerance: float = typer.Option(
        0.0, "--black-tolerance", min=0.0, help="Image value <= this (all bands) is black."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Scan processes; 0 = one per core."),
    class_names: Path | None = typer.Option(
        None, "--class-names", help="CSV class_value,name[,colour] for catalog_class."
    ),
    catalog: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
    scheduler: str | None = scheduler_option(),
) -> object:
    """Scan image/mask pairs into tiles (incremental: unchanged images are skipped)."""
    from smt_tools.errors import ConfigError
    from smt_tools.pipelines.ingest import parse_nodata_class, run_ingest

    try:
        nodata = parse_nodata_class(nodata_class)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--nodata-class'") from None
    result = run_ingest(
        pairs_csv,
        catalog=catalog,
        patch_size=patch_size,
        stride=stride,
        edge=edge,
        nodata_class=nodata,
        mask_band=mask_band,
        allow_new_classes=allow_new_classes,
        black_tolerance=black_tolerance,
        workers=workers,
        class_names_csv=class_names,
        progress_factory=lambda desc, total: progress_bar(desc, total, "tiles"),
        scheduler=scheduler,
    )
    _print_ingest_summary(result)
    return result


@guard
def stats(
    catalog: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
) -> object:
    """Tiles, source images and class pixel shares."""
    from smt_tools.pipelines.catalog_stats import run_catalog_stats

    s = run_catalog_stats(catalog)
    runs = "" if s.runs is None else f", {s.runs} runs"
    console.print(
        f"{s.target}: {s.tiles} tiles, {s.source_images} source images, {s.groups} groups{runs}; "
        f"nodata {100 * s.nodata_share:.2f} % of window pixels",
        soft_wrap=True,
    )
    print_class_table(  # names move to a legend when they would not fit 80 columns
        console,
        None,
        [c.class_value for c in s.classes],
        {c.class_value: c.name for c in s.classes if c.name},
        ["pixels", "share"],
        [[f"{c.pixels:,}", f"{100 * c.share:.2f} %"] for c in s.classes],
    )
    return s


def _print_ingest_summary(result: IngestResult) -> None:
    """Images and tiles counted, speed, the class-share report, then info and warning lines."""
    console.print(
        f"Images: {result.images_total} listed, {result.images_scanned} scanned "
        f"({result.images_new} new, {result.images_replaced} changed), "
        f"{result.images_skipped} unchanged skipped",
        soft_wrap=True,
    )
    where = "" if result.scanned_on == "local" else f" on {result.scanned_on}"
    speed = (
        f"scan {result.tiles_per_second:,.0f} tiles/s{where}, write {result.write_seconds:.1f} s"
        if result.tiles_written
        else "nothing changed"
    )
    console.print(
        f"Tiles written: {result.tiles_written} in {result.elapsed_seconds:.1f} s ({speed}); "
        f"{result.target} now holds {result.tiles_in_catalog} tiles of "
        f"{result.sources_in_catalog} source images",
        soft_wrap=True,
    )
    print_ingest_report(result)
    for line in result.tiling.info_lines():  # padded tiles (--edge pad)
        console.print(line, markup=False, soft_wrap=True)
    for line in result.warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
    for line in result.tiling.warning_lines():  # small images skipped, low drop coverage
        err_console.print(line, markup=False, soft_wrap=True)


_RUN_ID = typer.Argument(..., min=1, help="The run id (see `catalog runs list`).")


@guard
def runs_list(catalog: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP)) -> object:
    """The runs recorded in the catalog: id, command, when, how many per-tile results."""
    from rich.table import Table

    from smt_tools.pipelines.catalog_runs import run_list

    result = run_list(catalog)
    table = Table(title=f"Runs in {result.target}", title_justify="left")
    for name in ("run", "command", "finished", "results", "map view"):
        table.add_column(name, justify="right" if name in ("run", "results") else "left")
    for r in result.runs:
        finished = str(r["finished_at"] or "")[:19].replace("T", " ")
        view = r["map_view"] or ""
        table.add_row(str(r["run_id"]), r["command"], finished, f"{r['results']:,}", view)
    console.print(table)
    n = len(result.runs)
    console.print(f"{n} run{'' if n == 1 else 's'}", soft_wrap=True)
    return result


@guard
def runs_show(
    run_id: int = _RUN_ID,
    catalog: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
) -> object:
    """One run: command, times, version, per-tile results, its summary and config (JSON)."""
    import json

    from smt_tools.pipelines.catalog_runs import run_show

    result = run_show(run_id, catalog)
    console.print_json(json.dumps(result.runs[0], default=str))
    return result


@guard
def runs_delete(
    run_id: int = _RUN_ID,
    catalog: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> object:
    """Delete a run with its per-tile results (and its map view and QGIS style), all or nothing."""
    from smt_tools.pipelines.catalog_runs import run_delete, run_show

    shown = run_show(run_id, catalog).runs[0]  # an unknown run: one line, nothing asked
    what = f"run {run_id} ({shown['command']}, {shown['results']:,} tile results)"
    if not yes and not typer.confirm(f"Delete {what}?", default=False, err=True):
        err_console.print("Nothing deleted.")
        raise typer.Exit(1)
    result = run_delete(run_id, catalog)
    console.print(f"Deleted {what} from {result.target}", soft_wrap=True)
    return result


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="catalog",
        help="Tile catalog: init the PostGIS schema, ingest image/mask pairs, show stats, manage runs.",
        no_args_is_help=True,
    )
    app.add_typer(sub, name="catalog")
    sub.command("init")(init)
    sub.command("ingest")(ingest)
    sub.command("stats")(stats)
    runs = typer.Typer(help="Recorded runs: list, show, delete.", no_args_is_help=True)
    sub.add_typer(runs, name="runs")
    runs.command("list")(runs_list)
    runs.command("show")(runs_show)
    runs.command("delete")(runs_delete)
