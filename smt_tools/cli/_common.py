"""Shared CLI plumbing: consoles, the one place SmtError becomes a message, progress bars."""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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


#: Exit codes of every command: 0 ok, 1 error (one line on stderr), 2 usage (click's message).
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: ``check-leakage``: the audit ran and found leakage (1 stays "could not audit").
EXIT_LEAK = 3


@dataclass
class _State:
    debug: bool = False
    quiet: bool = False
    verbose: bool = False
    #: exit code a command asks for after a complete run (e.g. EXIT_LEAK), see :func:`exit_after`
    exit_code: int = 0


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
    from smt_tools.raster.paths import redact  # never print a URL's password or signature

    message = redact(str(exc).replace("\n", " "))
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    return EXIT_ERROR


def exit_after(code: int) -> None:
    """Ask :func:`guard` to exit with ``code`` once the summary (and ``--json``) is written."""
    state.exit_code = int(code)


def warn(line: str) -> None:
    """``warning: ...`` on stderr (shown with ``-q`` too)."""
    err_console.print(f"warning: {line}", markup=False, soft_wrap=True)


def detail(line: str) -> None:
    """A line only ``-v/--verbose`` shows (timings, paths)."""
    if state.verbose:
        err_console.print(line, markup=False, soft_wrap=True, style="dim")


_JSON_HELP = (
    "Also write the run record (command, exit code, config, input fingerprints and the "
    "printed summary) as JSON to this file."
)
#: Options :func:`guard` adds to every command: (parameter name, annotation, typer default).
_COMMON_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("json_out", Path | None, typer.Option(None, "--json", metavar="PATH", help=_JSON_HELP)),
    (
        "quiet",
        bool,
        typer.Option(False, "--quiet", "-q", help="Print errors and warnings only."),
    ),
    (
        "verbose",
        bool,
        typer.Option(False, "--verbose", "-v", help="Also print timings and the files written."),
    ),
)


def _command_name(ctx: Any) -> str:
    """``catalog ingest``: the command's names below the program name."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def _input_paths(kwargs: dict[str, Any], outputs: frozenset[str]) -> list[Path]:
    """Path arguments of the command that are existing files (not its outputs)."""
    return [
        Path(v)
        for k, v in kwargs.items()
        if k not in outputs and isinstance(v, Path) and v.is_file()
    ]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Our own warnings (older config spellings) as one ``warning:`` line; others as Python
    shows them."""
    from smt_tools.errors import SmtDeprecationWarning

    if issubclass(category, SmtDeprecationWarning):
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _configure(quiet: bool, verbose: bool) -> None:
    if quiet and verbose:
        raise typer.BadParameter("give either -q/--quiet or -v/--verbose, not both")
    warnings.showwarning = _show_warning
    state.quiet, state.verbose, state.exit_code = quiet, verbose, 0
    console.quiet = quiet


def _summary_of(result: Any) -> dict[str, Any] | None:
    summary = getattr(result, "summary", None)
    if callable(summary):
        out = summary()
        return dict(out) if out is not None else None
    return None


def _finish(
    result: Any,
    *,
    command: str,
    started: Any,
    json_out: Path | None,
    inputs: list[Path],
) -> None:
    """Write ``--json`` and the ``run.json`` beside local outputs of a completed run."""
    from datetime import datetime, timezone

    from smt_tools.export import run_record as rr

    config = getattr(result, "config_record", None)
    paths = [*inputs, *(rr.config_input_paths(config) if config else [])]
    record = rr.run_record(
        command=command,
        started_at=started,
        finished_at=datetime.now(timezone.utc),
        summary=_summary_of(result),
        config=config,
        inputs=rr.fingerprints(paths),
        run_id=getattr(result, "run_id", None),
        exit_code=state.exit_code,
    )
    where = getattr(result, "run_json_path", None)
    target = where() if callable(where) else None
    if target is not None:
        detail(f"run record: {rr.write_json(target, record)}")
    if json_out is not None:
        detail(f"summary JSON: {rr.write_json(json_out, record)}")
    timings = record["summary"].get("timings_s") or record["summary"].get("timings")
    if isinstance(timings, dict) and timings:
        parts = [f"{k} {v:.2f} s" for k, v in timings.items() if isinstance(v, (int, float))]
        detail("timings: " + ", ".join(parts))


def guard(func: Any = None, *, outputs: tuple[str, ...] = ()) -> Any:
    """Decorator for every command.

    - adds ``--json PATH``, ``-q/--quiet`` and ``-v/--verbose`` to the command's options;
    - ``SmtError`` -> one line on stderr, exit code 1 (and a ``--json`` record with the error);
    - a command returns its pipeline's result object: its ``summary()`` goes to ``--json`` and,
      where the result names one (``run_json_path()``), to a run record beside the outputs;
      the command's ``config_record``, ``run_id`` and the input files (its Path arguments that
      exist, except ``outputs``, plus the files its config names) are recorded too;
    - then exits with the code a command asked for with :func:`exit_after` (e.g. ``EXIT_LEAK``).
    """
    if func is None:
        return lambda f: guard(f, outputs=outputs)
    import functools
    import inspect
    import typing

    skip = frozenset(outputs)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from datetime import datetime, timezone

        ctx = kwargs.pop("smt_ctx", None)
        json_out = kwargs.pop("json_out", None)
        _configure(bool(kwargs.pop("quiet", False)), bool(kwargs.pop("verbose", False)))
        if json_out is not None and Path(json_out).is_dir():
            raise typer.BadParameter(
                f"{json_out} is a folder; give a file name, e.g. {Path(json_out) / 'summary.json'}",
                param_hint="'--json'",
            )
        command = _command_name(ctx)
        started = datetime.now(timezone.utc)
        inputs = _input_paths(kwargs, skip)
        try:
            result = func(*args, **kwargs)
            _finish(result, command=command, started=started, json_out=json_out, inputs=inputs)
        except SmtError as exc:
            code = fail(exc)
            if json_out is not None:
                _write_error_record(json_out, command, started, exc, code)
            raise typer.Exit(code) from None
        finally:
            console.quiet = False  # the console outlives the command (tests, embedding apps)
        if state.exit_code:
            raise typer.Exit(state.exit_code)
        return result

    sig = inspect.signature(func, eval_str=True)
    hints = typing.get_type_hints(func)
    params = list(sig.parameters.values())
    names = {p.name for p in params}
    for name, annotation, default in (("smt_ctx", typer.Context, None), *_COMMON_OPTIONS):
        if name in names:  # another decorator already added it
            continue
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
        hints[name] = annotation
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = hints
    return wrapper


def _write_error_record(
    json_out: Path, command: str, started: Any, exc: SmtError, code: int
) -> None:
    from datetime import datetime, timezone

    from smt_tools.export import run_record as rr

    record = rr.run_record(
        command=command,
        started_at=started,
        finished_at=datetime.now(timezone.utc),
        summary=None,
        exit_code=code,
        error=str(exc).replace("\n", " "),
    )
    try:
        rr.write_json(json_out, record)
    except SmtError as write_exc:  # the error above stays the one reported
        fail(write_exc)


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
        *columns,
        console=err_console,
        transient=False,
        disable=state.quiet or not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance
