"""The ``pytorch-smt-tools`` command line (Typer).

Each command: parse arguments, load config, call ONE pipeline, print a short summary and
return the pipeline's result (its ``summary()`` feeds ``--json`` and ``run.json``).
``SmtError`` is caught in one place (:func:`smt_tools.cli._common.guard`): one line on stderr,
exit code 1, traceback with ``--debug``. Usage errors, bad choice values included, exit 2
(click's usage message); ``check-leakage`` exits 3 when it finds leakage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from smt_tools._version import __version__
from smt_tools.cli._common import console, state

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="pytorch-smt-tools",
    help="Curated, class-balanced, leakage-safe segmentation training sets from large rasters.\n\n"
    "Exit codes: 0 ok, 1 error, 2 usage error, 3 leakage found (check-leakage).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"smt-tools {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug


def _register() -> None:
    # Imported here so `--help` stays fast and each command module owns its options.
    from smt_tools.cli import compare, demo

    demo.register(app)
    for name in ("doctor", "catalog", "balanced", "embed", "coreset", "split", "train", "config"):
        try:
            module = __import__(f"smt_tools.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"smt_tools.cli.{name}":
                raise
            continue
        module.register(app)
    compare.register(app)


_register()


def spelled_out(args: list[str]) -> list[str]:
    """``embed import OLD.parquet`` (two words, as the older tool's users say it) is the
    ``embed-import`` command; global options may come before it."""
    for i, word in enumerate(args):
        if not word.startswith("-"):
            if word == "embed" and args[i + 1 : i + 2] == ["import"]:
                return [*args[:i], "embed-import", *args[i + 2 :]]
            break
    return args


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from smt_tools.cli._common import run_app

    sys.exit(run_app(app, spelled_out(list(sys.argv[1:] if argv is None else argv))))
