"""``embed CONFIG [--rebuild]``: fill the DINOv2 embedding cache of a balanced-dataset config;
``embed-import OLD.parquet``: convert an older embedding cache into ours."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from smt_tools.cli._common import console, err_console, guard, state
from smt_tools.cli._config_opts import dry_run, dry_run_option, scheduler_option, set_option


class _RateColumn(ProgressColumn):
    """images/s of the running task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- images/s" if speed is None else f"{speed:,.1f} images/s")


@contextmanager
def _image_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False, disable=state.quiet) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def register(app: typer.Typer) -> None:
    @app.command("embed")
    @guard
    def embed(
        config: Path = typer.Argument(
            ..., help="YAML file with a top-level balanced_dataset: section."
        ),
        rebuild: bool = typer.Option(
            False,
            "--rebuild",
            help="Delete a cache built by another model or preprocessing and start over.",
        ),
        overrides: list[str] = set_option(),
        dry_run_: bool = dry_run_option(),
        scheduler: str | None = scheduler_option(),
    ) -> object:
        """Compute DINOv2 embeddings of the included tiles into embeddings.parquet_path.

        Cached tiles are reused (joined by tile id, model and preprocessing); only missing ones
        are computed, in chunks, so an interrupted run resumes where it stopped.
        """
        from smt_tools.config import load_config
        from smt_tools.config.balanced import BalancedFile
        from smt_tools.pipelines.embed import run_embed

        cfg = load_config(config, BalancedFile, overrides).balanced_dataset
        if dry_run_:
            from smt_tools.pipelines.plan import plan_embed

            return dry_run(plan_embed, cfg, config, scheduler)
        r = run_embed(
            cfg,
            rebuild=rebuild,
            progress_factory=_image_progress,
            config_path=config,
            scheduler=scheduler,
        )
        rate = f" at {r.images_per_s:,.1f} images/s on {r.device}" if r.n_computed else ""
        console.print(
            f"Tiles: {r.n_tiles} included; {r.n_cached} cached, {r.n_computed} computed{rate}",
            soft_wrap=True,
        )
        console.print(
            f"Model: {r.model_id} ({r.dim}-d CLS), preprocessing {r.preprocess_hash}",
            soft_wrap=True,
        )
        console.print(
            f"Cache: {r.cache_path} ({r.cache_rows} rows) in {r.seconds:.1f} s", soft_wrap=True
        )
        return r

    _register_import(app)


def _register_import(app: typer.Typer) -> None:
    @app.command("embed-import")
    @guard(outputs=("out",))
    def embed_import(
        old: Path = typer.Argument(
            ..., help="An older embedding cache (.parquet): window columns + embeddings."
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="Our cache to write (default: embeddings.parquet_path of --config, else "
            "OLD's name with .smt.parquet).",
        ),
        model_id: str | None = typer.Option(
            None,
            "--model-id",
            help="The model the vectors came from (hub id or folder; default: dino_model of "
            "--config, else facebook/dinov2-base).",
        ),
        balanced_config: Path | None = typer.Option(
            None,
            "--config",
            help="A balanced-dataset YAML whose embeddings: section (dino_model, bands, scale, "
            "parquet_path) the imported rows should match.",
        ),
    ) -> object:
        """Convert an older embedding cache into ours, keyed by tile id (as ingest computes it),
        model and preprocessing, so `embed` and build-balanced-dataset reuse the vectors.
        """
        from smt_tools.config.balanced import EmbeddingsConfig
        from smt_tools.embeddings.import_old import default_out, import_old_cache

        ecfg = EmbeddingsConfig()
        if balanced_config is not None:
            from smt_tools.config import load_config
            from smt_tools.config.balanced import BalancedFile

            ecfg = load_config(balanced_config, BalancedFile, []).balanced_dataset.embeddings
        target = out or ecfg.parquet_path or default_out(old)
        r = import_old_cache(
            old, target, dino_model=model_id or ecfg.dino_model, bands=ecfg.bands, scale=ecfg.scale
        )
        console.print(
            f"Imported: {r.n_rows} embeddings ({r.dim}-d, from {r.embedding_columns}) of {old}",
            soft_wrap=True,
        )
        console.print(f"Model: {r.model_id}, preprocessing {r.preprocess_hash}", soft_wrap=True)
        console.print(f"Cache: {r.cache_path} ({r.cache_rows} rows) in {r.seconds:.1f} s")
        return r
