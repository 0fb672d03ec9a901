"""``config init | show | schema``: discover the YAML configs of the config-driven commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from smt_tools.cli._common import err_console, guard
from smt_tools.cli._config_opts import set_option

#: The commands that read a YAML config (smt_tools.config.template.CONFIG_COMMANDS).
Command = Literal[
    "build-balanced-dataset", "embed", "select-coreset", "split", "check-leakage", "train"
]

_COMMAND_HELP = "The command whose config it is."
_FORCE_HELP = "Overwrite PATH when it exists."


def _emit(text: str, path: Path | None, force: bool) -> None:
    """``text`` to stdout, or atomically to ``path`` (an existing file only with ``--force``)."""
    if path is None:
        typer.echo(text, nl=False)
        return
    from smt_tools.atomic import atomic_path
    from smt_tools.errors import OutputError

    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file path")
    if path.exists() and not force:
        raise OutputError(f"{path} exists; pass --force to overwrite it, or give another path")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    err_console.print(f"Wrote {path}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(
        help="Discover the YAML configs: a commented template, the effective values, a JSON "
        "Schema for editors.",
        no_args_is_help=True,
    )
    app.add_typer(config_app, name="config")

    @config_app.command("init")
    @guard
    def init(
        command: Command = typer.Argument(..., help=_COMMAND_HELP),
        path: Path | None = typer.Argument(None, help="Write here instead of to stdout."),
        force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    ) -> None:
        """A commented YAML template: every key with its default, REQUIRED keys marked."""
        from smt_tools.config.template import render_template

        _emit(render_template(command), path, force)

    @config_app.command("schema")
    @guard
    def schema(
        command: Command = typer.Argument(..., help=_COMMAND_HELP),
        path: Path | None = typer.Argument(None, help="Write here instead of to stdout."),
        force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    ) -> None:
        """The JSON Schema of the config, for completion and checks in editors.

        With the YAML extension of VS Code (yaml-language-server), put
        `# yaml-language-server: $schema=PATH` on the first line of the config.
        """
        import json

        from smt_tools.config.template import json_schema

        _emit(json.dumps(json_schema(command), indent=2) + "\n", path, force)

    @config_app.command("show")
    @guard
    def show(
        config: Path = typer.Argument(..., help="A YAML config of any config-driven command."),
        overrides: list[str] = set_option(),
    ) -> None:
        """The effective config: defaults filled in, --set applied, ${VAR} expanded where the
        command expands it, passwords shown as ***."""
        from smt_tools.config._loader import read_yaml
        from smt_tools.config.template import command_for, dump_yaml
        from smt_tools.pipelines.plan import effective_config

        data = read_yaml(config)
        command = command_for(data, str(config))
        cfg = _load(command, config, overrides)
        text = dump_yaml(effective_config(cfg, str(config)))
        typer.echo(f"# effective {command} config of {config}\n{text}", nl=False)


def _load(command: str, config: Path, overrides: list[str]) -> Any:
    if command == "train":
        import warnings

        from smt_tools.config.train import load_train_config

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            cfg = load_train_config(config, check_imports=False, overrides=overrides)
        for w in caught:
            err_console.print(f"warning: {w.message}", markup=False, soft_wrap=True)
        return cfg
    from smt_tools.config import load_config
    from smt_tools.config.template import command_spec

    return load_config(config, command_spec(command).model, overrides)
