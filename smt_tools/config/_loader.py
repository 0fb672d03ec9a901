"""YAML loading and pydantic validation with one-line, user-facing messages.

A message looks like ``conf/x.yaml: balanced_dataset.sampling_method: must be one of
rank_max, ...; got 'rank_mx'``. Unknown keys are rejected with a did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from smt_tools.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _dotted(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Walk the model tree along ``loc`` and return the model class that owns the last key."""
    current: type[BaseModel] | None = model
    for item in loc:
        if current is None:
            return None
        if isinstance(item, int):
            continue
        field = current.model_fields.get(str(item))
        if field is None:
            return current if item == loc[-1] else None
        current = _model_from_annotation(field.annotation)
    return current


def _model_from_annotation(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_from_annotation(arg)
        if found is not None:
            return found
    return None


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(source: str, root: type[BaseModel], exc: ValidationError) -> str:
    """Render the first problem of a pydantic error as ``source: dotted.key: problem; got X``."""
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    # Discriminated unions / Literal unions append the member name to loc; keep the path readable.
    key = _dotted(loc) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        owner = _model_at(root, loc[:-1]) if len(loc) > 1 else root
        allowed = sorted(owner.model_fields) if owner is not None else []
        hint = _suggest(str(loc[-1]), allowed)
        allowed_txt = f" (allowed: {', '.join(allowed)})" if allowed and not hint else ""
        return f"{source}: {key}: unknown key{hint}{allowed_txt}"
    if kind == "missing":
        return f"{source}: {key}: required key is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind in {"literal_error", "enum"}:
        expected = err.get("ctx", {}).get("expected", "")
        got = err.get("input")
        hint = _suggest(
            str(got), [e.strip(" '\"") for e in str(expected).replace(" or ", ",").split(",")]
        )
        return f"{source}: {key}: must be {expected}; got {_short(got)}{hint}"
    got = err.get("input")
    if isinstance(got, Mapping):  # a rule across several keys: the message names them
        return f"{source}: {key}: {msg}"
    return f"{source}: {key}: {msg}; got {_short(got)}"


def validate_mapping(data: Any, model: type[M], source: str) -> M:
    """Validate an already-parsed mapping against ``model`` with one-line errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level; got {type(data).__name__}"
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, model, exc)) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; missing files and syntax errors become :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; check the path")
    try:
        with p.open("r", encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Load ``path`` (YAML) and validate it against ``model``.

    Relative paths inside the config stay as written; pipelines resolve them against the
    current working directory, like every other command-line tool.
    """
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty; see conf/examples/ for a complete config")
    return validate_mapping(data, model, str(path))
