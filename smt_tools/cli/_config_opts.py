"""``--set KEY=VALUE`` and ``--dry-run``, shared by every command that reads a YAML config.

A command adds the two options with :func:`set_option` / :func:`dry_run_option`, passes the
``--set`` items to its loader (``load_config(path, Model, overrides)``), and after the config
is complete calls :func:`dry_run` with its plan function when ``--dry-run`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from smt_tools.cli._common import console

if TYPE_CHECKING:
    from smt_tools.pipelines.plan import Plan

_SET_HELP = (
    "Override a config key before validation, e.g. --set clustering.k_max=12 (repeatable; "
    "dotted keys, the top-level section may be left out; values are read as YAML)."
)
_DRY_RUN_HELP = (
    "Check the config, the inputs, that the outputs are writable and the catalog reachable; "
    "print the plan and exit without computing or writing anything."
)


def _check_items(values: list[str] | None) -> list[str]:
    from smt_tools.config._loader import parse_override
    from smt_tools.errors import ConfigError

    for item in values or []:
        try:
            parse_override(item)
        except ConfigError as exc:
            raise typer.BadParameter(
                str(exc).removeprefix("--set "), param_hint="'--set'"
            ) from None
    return list(values or [])


def set_option() -> Any:
    """The repeatable ``--set KEY=VALUE`` option (malformed items: usage error, exit 2)."""
    return typer.Option([], "--set", metavar="KEY=VALUE", callback=_check_items, help=_SET_HELP)


_SCHEDULER_HELP = (
    "Run the work on a Dask cluster: tcp://host:8786, a scheduler .json file, or local[:N] "
    "for N local worker processes (default: $SMT_DASK_SCHEDULER; unset: this machine's process "
    "pool). Needs smt-tools[dask]."
)


def scheduler_option() -> Any:
    """``--scheduler``: the Dask scheduler to run on (see smt_tools.dask_cluster)."""
    return typer.Option(None, "--scheduler", help=_SCHEDULER_HELP)


def dry_run_option() -> Any:
    """The ``--dry-run`` flag."""
    return typer.Option(False, "--dry-run", help=_DRY_RUN_HELP)


def print_plan(plan: Plan) -> None:
    """The plan, one line per item, then the checks that passed."""

    def say(text: str) -> None:
        console.print(text, markup=False, soft_wrap=True)

    say(f"Dry run of {plan.command} with {plan.config}: nothing computed or written")
    say(f"  mode     {plan.mode}")
    for key, text in plan.inputs:
        say(f"  input    {key}: {text}")
    for key, text in plan.outputs:
        say(f"  output   {key}: {text}")
    for key, text in plan.settings:
        say(f"  setting  {key}: {text}")
    say(f"Checks passed: {plan.checks()}.")


def dry_run(plan_of: Callable[..., Plan], *args: Any) -> Plan:
    """Build the plan (its checks raise one-line errors), print it, and return it."""
    plan = plan_of(*args)
    print_plan(plan)
    return plan
