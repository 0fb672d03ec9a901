"""Discoverable configs: the commented YAML template, the JSON Schema and the effective config
of every config-driven command, all generated from the pydantic models (never written by hand,
so they cannot drift from what the loader accepts).

- :func:`render_template`: every key with its default; field descriptions and model docstrings
  become comments, choices and bounds are listed, REQUIRED keys are marked (with an empty
  value), optional keys whose default is ``null`` are commented out.
- :func:`json_schema`: ``model_json_schema()`` of the file model, for editor completion.
- :func:`effective_dump`: a loaded config as plain data, every default filled in.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from smt_tools._version import __version__
from smt_tools.config._loader import MAX_INT32, _model_from_annotation
from smt_tools.errors import ConfigError


@dataclass(frozen=True)
class ConfigCommand:
    """A command that reads a YAML config: its name, file model and the example to copy."""

    name: str
    model_path: str  # "module:Class" (imported on use: the train models stay lazy)
    example: str
    what: str

    @property
    def model(self) -> type[BaseModel]:
        import importlib

        module, cls = self.model_path.split(":")
        found: type[BaseModel] = getattr(importlib.import_module(module), cls)
        return found


#: Every config-driven command, in the order ``--help`` lists them.
CONFIG_COMMANDS: dict[str, ConfigCommand] = {
    c.name: c
    for c in (
        ConfigCommand(
            "build-balanced-dataset",
            "smt_tools.config.balanced:BalancedFile",
            "balanced_train.yaml",
            "sampler weights for every tile",
        ),
        ConfigCommand(
            "embed",
            "smt_tools.config.balanced:BalancedFile",
            "balanced_embeddings.yaml",
            "the DINOv2 embedding cache of a balanced-dataset config",
        ),
        ConfigCommand(
            "select-coreset",
            "smt_tools.config.coreset:CoresetFile",
            "coreset_local.yaml",
            "a coreset of the balanced tiles",
        ),
        ConfigCommand(
            "split", "smt_tools.config.split:SplitFile", "split_kfold.yaml", "leakage-safe folds"
        ),
        ConfigCommand(
            "check-leakage",
            "smt_tools.config.leakage:LeakageFile",
            "check_leakage.yaml",
            "an audit of splits for leakage",
        ),
        ConfigCommand(
            "train",
            "smt_tools.config.train:TrainConfig",
            "weighted_sampler_segmentation.yaml",
            "a segmentation model",
        ),
    )
}

#: Top-level key of a config file -> the command that reads it (for ``config show``).
_SECTION_COMMAND = {
    "balanced_dataset": "build-balanced-dataset",
    "coreset": "select-coreset",
    "split": "split",
    "check_leakage": "check-leakage",
    "train_dataset": "train",
}

#: Examples shown next to REQUIRED keys (dotted key from the file root -> value).
_EXAMPLES: dict[str, str] = {
    "balanced_dataset.output.csv_path": "balanced.csv",
    "coreset.output.csv_path": "coreset.csv",
    "train_dataset._target_": "smt_tools.train.CSVWindowedSegmentationDataset",
    "val_dataset._target_": "smt_tools.train.CSVWindowedSegmentationDataset",
    "model._target_": "smt_tools.train.UNet",
}

#: Keys whose absence means something else than their default (``nodata_class`` not given =
#: the class the tiles were ingested with): commented out in templates, left out of dumps
#: when not given.
_MEANINGFUL_ABSENCE = {("ExclusionConfig", "nodata_class")}

_WIDTH = 96
#: "See :attr:`x`." in docstrings: a reference for code readers, not for config writers
_SPHINX_REF = re.compile(r"\s*See :\w+:`[^`]*`\.?")


def command_spec(name: str) -> ConfigCommand:
    """The :class:`ConfigCommand` called ``name``; ConfigError with the list otherwise."""
    try:
        return CONFIG_COMMANDS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(CONFIG_COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{name!r} is not a config-driven command{hint} (one of {', '.join(CONFIG_COMMANDS)})"
        ) from None


def command_for(data: Any, source: str) -> str:
    """The command a parsed config file is for, from its top-level keys."""
    if isinstance(data, dict):
        for key, command in _SECTION_COMMAND.items():
            if key in data:
                return command
    keys = ", ".join(_SECTION_COMMAND)
    raise ConfigError(
        f"{source}: cannot tell which command this config is for: expected a top-level key "
        f"{keys}; see `pytorch-smt-tools config init COMMAND`"
    )


# ---------------------------------------------------------------------------------------------
# YAML template


def _scalar(value: Any) -> str:
    """``value`` as one line of YAML that reads back as the same value."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, UnionType):
        return get_args(annotation)
    return (annotation,)


def _type_words(annotation: Any) -> str:
    """A few words for the type of a key (``integer``, ``path``, ``list of integers``)."""
    words: list[str] = []
    for arg in _members(annotation):
        origin = get_origin(arg)
        if arg is type(None):
            continue
        if origin is Literal:
            words.append("one of " + " | ".join(str(v) for v in get_args(arg)))
        elif origin in (list, tuple):
            inner = [a for a in get_args(arg) if a is not Ellipsis]
            model = _model_from_annotation(arg)
            if model is not None:
                keys = ", ".join(f.alias or n for n, f in model.model_fields.items())
                words.append(f"list of {{{keys}}}")
            elif origin is tuple and inner:
                words.append(f"[{', '.join(_type_words(a) for a in inner)}]")
            elif inner:
                words.append(f"list of {_type_words(inner[0])}s")
            else:
                words.append("list")
        elif arg is bool:
            words.append("true/false")
        elif arg is int:
            words.append("integer")
        elif arg is float:
            words.append("number")
        elif arg is str:
            words.append("text")
        elif arg is Path:
            words.append("path")
        elif origin is dict or arg is dict:
            words.append("mapping")
        elif get_origin(arg) is not None:  # Annotated[...] items of a list
            words.append(_type_words(get_args(arg)[0]))
        else:
            words.append(getattr(arg, "__name__", str(arg)))
    return " or ".join(words)


_BOUND_ATTRS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(field: FieldInfo) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for attr, op in _BOUND_ATTRS:
            value = getattr(meta, attr, None)
            if value is None or (op.startswith("<") and value >= MAX_INT32):
                continue
            whole = isinstance(value, float) and value.is_integer() and abs(value) < 1e15
            parts.append(f"{op} {int(value) if whole else value}")
        unit = "characters" if str in _members(field.annotation) else "items"
        for attr, word in (("min_length", "at least"), ("max_length", "at most")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(
                    "not empty" if (word, value) == ("at least", 1) else f"{word} {value} {unit}"
                )
    return ", ".join(parts)


def _field_comment(
    field: FieldInfo, required: bool, example: str | None, kind_always: bool = False
) -> str:
    parts: list[str] = []
    if required:
        parts.append("REQUIRED" + (f", e.g. {example}" if example else ""))
    kind = _type_words(field.annotation)
    bounds = _bounds(field)
    if "one of" in kind or bounds or required or kind_always:
        parts.append(f"{kind} {bounds}".strip())
    if field.description:
        parts.append(field.description)
    return "; ".join(parts)


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring on one line ('' when it has none)."""
    return _SPHINX_REF.sub("", inspect.cleandoc(model.__dict__.get("__doc__") or ""))


def _comment_lines(text: str, indent: str) -> list[str]:
    """``text`` as wrapped comment lines; paragraphs and ``- `` list items keep their shape."""
    items: list[str] = []
    fresh = True
    for raw in text.replace("``", "`").splitlines():
        line = raw.strip()
        if not line:
            fresh = True
        elif fresh or line.startswith("- "):
            items.append(line)
            fresh = False
        else:
            items[-1] += " " + line
    width = max(40, _WIDTH - len(indent) - 2)
    out: list[str] = []
    for item in items:
        hang = "  " if item.startswith("- ") else ""
        out += [f"{indent}# {w}" for w in textwrap.wrap(item, width, subsequent_indent=hang)]
    return out


def _with_comment(line: str, comment: str, indent: str) -> list[str]:
    """``line  # comment`` when it fits in the width, else the comment above the line."""
    comment = comment.replace("``", "`")
    if not comment:
        return [line]
    inline = f"{line}  # {comment}"
    if len(inline) <= _WIDTH:
        return [inline]
    return [*_comment_lines(comment, indent), line]


def _is_block(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a nested block (``Model`` or ``Model | None``), not of a list of models."""
    for arg in _members(field.annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _render_value_block(value: Any, indent: str) -> list[str]:
    """Plain data (a default like ``{_target_: torch.optim.AdamW, lr: 0.001}``) as YAML lines."""
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, width=_WIDTH)
    return [indent + line for line in text.rstrip("\n").splitlines()]


def _render_model(model: type[BaseModel], indent: str, prefix: str) -> list[str]:
    lines: list[str] = []
    if model.model_config.get("extra") == "allow":
        lines += _comment_lines(
            "... plus the keyword arguments of the `_target_` class (checked against its "
            "constructor when the config is loaded)",
            indent,
        )
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = f"{prefix}{key}"
        required = field.is_required()
        block = _is_block(field)
        if block is not None:
            lines += _render_block(model, name, field, block, indent, dotted)
            continue
        if required:
            comment = _field_comment(field, True, _EXAMPLES.get(dotted))
            lines += _with_comment(f"{indent}{key}:", comment, indent)
            continue
        default = field.get_default(call_default_factory=True)
        comment = _field_comment(field, False, None, kind_always=default is None)
        if default is None or (model.__name__, name) in _MEANINGFUL_ABSENCE:
            lines += _with_comment(f"{indent}# {key}: {_scalar(default)}", comment, indent)
            continue
        if isinstance(default, dict) and default:
            lines += _with_comment(f"{indent}{key}:", comment, indent)
            lines += _render_value_block(default, indent + "  ")
            continue
        lines += _with_comment(f"{indent}{key}: {_scalar(default)}", comment, indent)
    return lines


def _render_block(
    owner: type[BaseModel],
    name: str,
    field: FieldInfo,
    block: type[BaseModel],
    indent: str,
    dotted: str,
) -> list[str]:
    key = field.alias or name
    required = field.is_required()
    head = field.description or _doc(block)
    if required:
        head = "REQUIRED block.\n\n" + head
    lines = [""] if not indent else []
    lines += _comment_lines(head.strip(), indent)
    if required:
        return [*lines, f"{indent}{key}:", *_render_model(block, indent + "  ", dotted + ".")]
    default = field.get_default(call_default_factory=True)
    if default is None:  # an optional block, off by default: shown commented out
        body = [f"{indent}{key}:", *_render_model(block, indent + "  ", dotted + ".")]
        lines.append(f"{indent}# (optional block, off by default: uncomment to use)")
        return lines + [f"{indent}# {line[len(indent) :]}" for line in body]
    dumped = default.model_dump(mode="json", by_alias=True, exclude_unset=False)
    if block.model_config.get("extra") == "allow":  # a `_target_` spec: its value, as is
        return [*lines, f"{indent}{key}:", *_render_value_block(dumped, indent + "  ")]
    return [*lines, f"{indent}{key}:", *_render_model(block, indent + "  ", dotted + ".")]


def render_template(command: str) -> str:
    """The commented YAML template of ``command``: every key with its default."""
    spec = command_spec(command)
    model = spec.model
    head = [
        f"# {spec.name} config ({spec.what}), smt-tools {__version__}:",
        "# every key with its default. Fill in the REQUIRED keys; keys commented out are",
        "# optional and off (null) by default: uncomment to set them. Keys left at their",
        "# default may be deleted. A worked example: conf/examples/" + spec.example,
        f"# Check it:  pytorch-smt-tools {spec.name} THIS.yaml --dry-run",
        f"# Completion in editors: pytorch-smt-tools config schema {spec.name}",
    ]
    body = _render_model(model, "", "")
    while body and body[0] == "":
        body.pop(0)
    return "\n".join([*head, *body]) + "\n"


# ---------------------------------------------------------------------------------------------
# JSON Schema and effective config


def json_schema(command: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``command``'s config file, for editor completion."""
    spec = command_spec(command)
    schema = spec.model.model_json_schema(by_alias=True, mode="validation")
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"pytorch-smt-tools {spec.name} config",
    }
    out.update({k: v for k, v in schema.items() if k != "title"})
    return out


def effective_dump(cfg: BaseModel) -> dict[str, Any]:
    """``cfg`` as plain data (YAML/JSON types), every default filled in; keys whose absence
    has a meaning of its own (``exclusion.nodata_class``) are left out when not given."""
    data = cfg.model_dump(mode="json", by_alias=True)
    _drop_meaningful_absence(cfg, data)
    return data


def _drop_meaningful_absence(obj: BaseModel, data: dict[str, Any]) -> None:
    for name, field in type(obj).model_fields.items():
        key = field.alias or name
        if (type(obj).__name__, name) in _MEANINGFUL_ABSENCE and name not in obj.model_fields_set:
            data.pop(key, None)
            continue
        value = getattr(obj, name)
        if isinstance(value, BaseModel) and isinstance(data.get(key), dict):
            _drop_meaningful_absence(value, data[key])
        elif isinstance(value, list):
            for item, dumped in zip(value, data.get(key) or [], strict=False):
                if isinstance(item, BaseModel) and isinstance(dumped, dict):
                    _drop_meaningful_absence(item, dumped)


class _Dumper(yaml.SafeDumper):
    """Blocks for mappings, one line for lists of plain values (``bands: [1, 2, 3]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML (key order kept) that reads back as the same data."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
