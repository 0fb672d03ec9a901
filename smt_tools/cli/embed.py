"""``embed CONFIG [--rebuild]``: fill the DINOv2 embedding cache of a balanced-dataset config."""

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

            return dry_run(plan_embed, cfg, config)
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
