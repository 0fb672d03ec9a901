"""YAML loading and pydantic validation with one-line, user-facing messages.

A message looks like ``conf/x.yaml: balanced_dataset.sampling_method: must be one of
rank_max, ...; got 'rank_mx'``. Unknown keys are rejected with a did-you-mean.

``--set KEY=VALUE`` overrides (:func:`apply_overrides`) are applied to the parsed YAML before
validation, so a bad value names its key like any other.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from smt_tools.config._aliases import alias_override, apply_aliases
from smt_tools.errors import ConfigError, SmtDeprecationWarning

M = TypeVar("M", bound=BaseModel)

#: Keys whose values are never echoed in messages (they may carry a password).
_SECRET_KEY = re.compile(r"(password|passwd|dsn|url|secret|token)[^.]*$", re.IGNORECASE)

#: Upper bounds shared by the config sections (a larger value would allocate or hang, or is
#: beyond what the library underneath accepts).
MAX_INT32 = 2**31 - 1  # counts, offsets, ids of mask values
MAX_DB_ID = 2**63 - 1  # bigint ids in the catalog
MAX_SEED = 2**32 - 1  # numpy / scikit-learn seeds
MAX_SIDE = 65_536  # window / patch / crop side in pixels
MAX_WORKERS = 1_024  # processes, threads, loader workers
MAX_TIMEOUT_S = 86_400.0  # statement timeouts: one day


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on
    assignment, and float values must be finite (``.inf`` / ``.nan`` are rejected)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_exponents(cls, data: Any) -> Any:
        """YAML 1.1 reads ``1e10`` (no dot) as text; a number field takes it as the number,
        and an int field takes a whole float (``1.0e+30``) as an int, so the field's own range
        check names the key (``patch_size: must be <= 65536``)."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            value = out.get(name)
            if not _numeric(field.annotation) or isinstance(value, bool):
                continue
            if isinstance(value, str) and _EXPONENT.match(value):
                value = out[name] = float(value)
            if isinstance(value, float) and value.is_integer() and _int_only(field.annotation):
                out[name] = int(value)  # 1e30 for an int key: its range check, not "unparsable"
        return out


#: pydantic appends the union member it tried to ``loc`` (``weight_floor.float``,
#: ``k.function-after[...]``); these are not keys the user wrote.
_MEMBER_TAG = re.compile(r"^(int|float|str|bool|none|.*[\[(].*)$")


_EXPONENT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+\s*$")


def _numeric(annotation: Any) -> bool:
    """True for ``int``/``float`` fields (optionally ``| None`` or ``| Literal[...]``)."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) not in (Union, UnionType):
        return False
    args = get_args(annotation)
    if str in args:
        return False
    return any(a in (int, float) for a in args) and all(
        a in (int, float, type(None)) or get_origin(a) is Literal for a in args
    )


def _int_only(annotation: Any) -> bool:
    """True for an ``int`` field that takes no float (``int``, ``int | None``)."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return int in args and float not in args


def _user_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return tuple(x for x in loc if isinstance(x, int) or not _MEMBER_TAG.match(str(x)))


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


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() or abs(value) >= 1e16 else str(int(value))
    return str(value)


_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _number_problem(kind: str, err: Any) -> str | None:
    """A short ``must be ...`` for pydantic's number errors (None: keep pydantic's text)."""
    ctx = err.get("ctx") or {}
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        return f"must be {op} {_num(ctx.get(name))}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "int_from_float":
        return "must be a whole number"
    if kind == "int_parsing":
        got = err.get("input")
        try:
            as_float = float(got)
        except (TypeError, ValueError):
            return "must be a whole number"
        if as_float.is_integer() and abs(as_float) < 1e18:
            return f"must be a whole number written with digits (e.g. {int(as_float)})"
        return "must be a whole number written with digits"
    if kind in {"float_parsing", "float_type", "int_type"}:
        return "must be a number"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be true or false"
    return None


def format_validation_error(source: str, root: type[BaseModel], exc: ValidationError) -> str:
    """Render the first problem of a pydantic error as ``source: dotted.key: problem; got X``."""
    err = exc.errors()[0]
    loc = _user_loc(tuple(err.get("loc", ())))
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
    if err.get("input") is None and loc and _required_field(root, loc):
        return f"{source}: {key}: required key has no value; fill it in"
    msg = _number_problem(kind, err) or str(err.get("msg", "invalid value"))
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
    if _SECRET_KEY.search(key):  # never echo a password, DSN or URL value (issue 11 B13)
        return f"{source}: {key}: {msg} (value not shown: it may hold a password)"
    return f"{source}: {key}: {msg}; got {_short(got)}"


def _field_named(model: type[BaseModel], key: str) -> Any:
    """The field of ``model`` written as ``key`` in YAML (its alias or its name), or None."""
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _required_field(root: type[BaseModel], loc: tuple[int | str, ...]) -> bool:
    owner = _model_at(root, loc[:-1]) if len(loc) > 1 else root
    if owner is None or isinstance(loc[-1], int):
        return False
    field = _field_named(owner, str(loc[-1]))
    return field is not None and field.is_required()


def validate_mapping(data: Any, model: type[M], source: str, overrides: Sequence[str] = ()) -> M:
    """Validate an already-parsed mapping against ``model`` with one-line errors.

    ``overrides`` (``["clustering.k_max=12", ...]``, see :func:`apply_overrides`) are applied
    first; an error on an overridden key names the ``--set`` that caused it.
    """
    applied: dict[tuple[int | str, ...], str] = {}
    with warnings.catch_warnings(record=True) as renamed:  # older spellings: read as today's
        warnings.simplefilter("always", SmtDeprecationWarning)
        data = apply_aliases(data, source)
        if overrides:
            data, applied = apply_overrides(data, overrides, model, source)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level; got {type(data).__name__}"
        )
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", SmtDeprecationWarning)
            validated = model.model_validate(dict(data))
    except ValidationError as exc:
        loc = _user_loc(tuple(exc.errors()[0].get("loc", ())))
        for parts, typed in applied.items():
            if loc[: len(parts)] == parts or (loc and parts[: len(loc)] == loc):
                source = f"{source} (--set {typed})"
                break
        raise ConfigError(format_validation_error(source, model, exc)) from None
    for w in renamed:  # the lines already name the file (smt_tools.config._aliases)
        warnings.warn(str(w.message), SmtDeprecationWarning, stacklevel=2)
    for w in seen:  # older spellings: one line each, only for a config that is valid
        if issubclass(w.category, SmtDeprecationWarning):
            warnings.warn(f"{source}: {w.message}", SmtDeprecationWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return validated


_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|\d+))*$")


def parse_override(item: str) -> tuple[str, Any]:
    """``"clustering.k_max=12"`` -> ``("clustering.k_max", 12)``: the value is read as YAML
    (``12`` an int, ``0.5`` a float, ``true`` a bool, ``null`` or nothing None, ``[1, 2]`` a
    list, anything else text). Raises :class:`ConfigError` for a malformed item."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        shown = key if sep else _short(item)
        raise ConfigError(
            f"--set {shown}: expected KEY=VALUE with a dotted key of the config, "
            "e.g. --set clustering.k_max=12"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"--set {key}: the value is not valid YAML ({problem}); quote it, "
            f"e.g. --set '{key}=\"text\"'"
        ) from None
    return key, value


def _single_section(model: type[BaseModel]) -> str | None:
    """``balanced_dataset`` for a file model with one top-level section, else None."""
    fields = list(model.model_fields.items())
    if len(fields) != 1:
        return None
    name, field = fields[0]
    annotation = field.annotation
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return field.alias or name if is_model else None


def _check_override_key(model: type[BaseModel], parts: list[int | str], typed: str) -> None:
    """Refuse a key that is not in the model tree (a did-you-mean, like unknown YAML keys)."""
    current: type[BaseModel] | None = model
    for i, part in enumerate(parts):
        if isinstance(part, int):
            continue  # a list index: the items' model continues below
        if current is None:
            return  # free-form below (a dict, a list of mappings)
        field = _field_named(current, part)
        if field is None:
            if current.model_config.get("extra") == "allow":
                return  # constructor keys of a ``_target_`` class
            allowed = sorted(f.alias or n for n, f in current.model_fields.items())
            hint = _suggest(part, allowed)
            which = f" {part!r}" if i < len(parts) - 1 else ""
            allowed_txt = f" (allowed: {', '.join(allowed)})" if not hint else ""
            raise ConfigError(f"--set {typed}: unknown key{which}{hint}{allowed_txt}")
        current = _model_from_annotation(field.annotation)


def _set_in(data: dict[str, Any], parts: list[int | str], value: Any, typed: str) -> None:
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = _dotted(tuple(parts[: i + 1]))
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise ConfigError(
                    f"--set {typed}: {_dotted(tuple(parts[:i]))} is a list of {len(node)} "
                    f"items; give an index 0..{len(node) - 1}"
                )
            if last:
                node[part] = value
                return
            child = node[part]
        else:
            key = str(part)
            if last:
                node[key] = value
                return
            child = node.get(key)
            if child is None:
                child = node[key] = {}
        if not isinstance(child, dict | list):
            shown = "a value" if _SECRET_KEY.search(where) else _short(child)
            raise ConfigError(
                f"--set {typed}: {where} is {shown}, not a block of keys; set {where} itself"
            )
        node = child


def apply_overrides(
    data: Any, overrides: Sequence[str], model: type[BaseModel], source: str = "config"
) -> tuple[Any, dict[tuple[int | str, ...], str]]:
    """Apply ``--set KEY=VALUE`` items to parsed YAML ``data`` (a copy; ``data`` is untouched).

    Keys are dotted (``clustering.k_max``, list items by index: ``augmentation_list.0.p``);
    in a file with one top-level section (``balanced_dataset:``) the section may be left out.
    Missing blocks are created. Returns the new data and ``{full key path: key as typed}``.
    Raises :class:`ConfigError` for a malformed item or a key the model does not know.
    An older spelling of a key or value (:mod:`smt_tools.config._aliases`) is read as today's.
    """
    if data is not None and not isinstance(data, Mapping):
        return data, {}
    out: dict[str, Any] = copy.deepcopy(dict(data or {}))
    section = _single_section(model)
    applied: dict[tuple[int | str, ...], str] = {}
    for item in overrides:
        typed, value = parse_override(item)
        parts: list[int | str] = [int(p) if p.isdigit() else p for p in typed.split(".")]
        if section is not None and parts[0] != section:
            parts.insert(0, section)
        parts, value = alias_override(parts, value, f"{source} (--set {typed})", out)
        _check_override_key(model, parts, typed)
        _set_in(out, parts, value, typed)
        applied[tuple(parts)] = typed
    return out, applied


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: str, key: str) -> str:
    """``value`` with ``${VAR}`` / ``$VAR`` replaced from the environment (as ``input.dsn`` is
    read by the commands); an unset variable raises :class:`ConfigError` naming ``key``."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        found = os.environ.get(name)
        if found is None:
            raise ConfigError(
                f"{key}: environment variable {name} is not set; export it or write the "
                "value into the config"
            )
        return found

    return _ENV.sub(sub, value)


def expand_env_optional(value: str | None, key: str) -> str | None:
    """:func:`expand_env` of ``value``, or None (a catalog URL left to ``$SMT_DATABASE_URL``)."""
    return None if value is None else expand_env(value, key)


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


def load_config(path: str | Path, model: type[M], overrides: Sequence[str] = ()) -> M:
    """Load ``path`` (YAML), apply ``--set`` ``overrides`` and validate it against ``model``.

    Relative paths inside the config stay as written; pipelines resolve them against the
    current working directory, like every other command-line tool.
    """
    data = read_yaml(path)
    if data is None and not overrides:
        raise ConfigError(f"{path}: the file is empty; see conf/examples/ for a complete config")
    return validate_mapping(data, model, str(path), overrides)
