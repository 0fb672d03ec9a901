"""Shared CLI plumbing: consoles, the one place SmtError becomes a message, progress bars."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
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

from smt_tools.errors import SmtError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class _State:
    debug: bool = False


state = _State()


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run the Typer app in standalone mode (usage errors exit 2); commands use :func:`guard`."""
    try:
        app(args=argv, prog_name="pytorch-smt-tools")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def fail(exc: SmtError) -> int:
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc).replace("\n", " ")
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    return 1


def guard(func: Any) -> Any:
    """Decorator for every command: SmtError -> one line on stderr, exit code 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SmtError as exc:
            raise typer.Exit(fail(exc)) from None

    return wrapper


class _RateColumn(ProgressColumn):
    """Items per second (``12.3 tiles/s``), blank until rich has a speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s")


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "tiles") -> Iterator[Any]:
    """A rich progress bar; yields ``advance(n)``. Hidden when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    # A log (stderr not a terminal) gets the summary only, not frames of a bar.
    with Progress(
        *columns, console=err_console, transient=False, disable=not err_console.is_terminal
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance
