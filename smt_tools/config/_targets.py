"""``_target_`` class paths (Hydra-style) in YAML: syntax check, the older tool's paths mapped,
the import of the named object and the check of its keyword arguments, with one-line errors.

Used by :mod:`smt_tools.config.train` (every ``_target_`` is imported when the config loads) and
by :mod:`smt_tools.train._targets` (which builds the objects). Imports nothing above ``config``:
the named modules are imported by name, at load time.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from smt_tools.errors import ConfigError, missing_dependency

_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_LEGACY_PREFIX = "pytorch_segmentation_models_trainer."
_LEGACY = {
    f"{_LEGACY_PREFIX}dataset_loader.dataset.{n}": f"smt_tools.train.{n}"
    for n in ("CSVWindowedSegmentationDataset", "RandomCropSegmentationDataset")
}


def check_target(value: Any) -> str:
    """Syntax check of a ``_target_`` string; legacy dataset paths are mapped (with a warning)."""
    if not isinstance(value, str) or not _PATH_RE.match(value):
        raise ValueError(
            "must be a dotted class path like 'smt_tools.train.CSVWindowedSegmentationDataset'"
        )
    if value in _LEGACY:
        warnings.warn(
            f"_target_ {value} is the older tool's class path; using {_LEGACY[value]}",
            UserWarning,
            stacklevel=2,
        )
        return _LEGACY[value]
    if value.startswith(_LEGACY_PREFIX):
        raise ValueError(
            "belongs to pytorch_segmentation_models_trainer, which smt-tools does not wrap; use "
            "smt_tools.train.CSVWindowedSegmentationDataset or "
            "smt_tools.train.RandomCropSegmentationDataset"
        )
    return value


#: optional packages and the extra that installs them
_EXTRAS = {"albumentations": ("albumentations", "train")}


def normalize_target(path: str, where: str) -> str:
    """Check the syntax of a ``_target_`` and map legacy paths; raise ConfigError if malformed."""
    try:
        return check_target(path)
    except ValueError as exc:
        raise ConfigError(f"{where}._target_: {exc}; got {path!r}") from None


def resolve_target(path: str, where: str) -> Any:
    """Import the object named by ``path`` (``package.module.Name``), one-line errors."""
    path = normalize_target(path, where)
    parts = path.split(".")
    obj: Any = None
    # Try the longest importable module prefix (handles nested attributes like a.b.C.D).
    last_error: Exception | None = None
    # a target may import albumentations: no update check against PyPI on that import
    # (offline runs would print a 'version info' warning)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for cut in range(len(parts) - 1, 0, -1):
        mod_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            last_error = exc
            root = (exc.name or "").split(".")[0]
            if root in _EXTRAS and root == parts[0]:
                package, extra = _EXTRAS[root]
                raise missing_dependency(package, extra, f"{where}._target_ {path}") from None
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            public = [n for n in dir(obj) if not n.startswith("_")]
            import difflib

            close = difflib.get_close_matches(parts[cut], public, n=1, cutoff=0.6)
            hint = f"; did you mean '{mod_name}.{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}._target_: module {mod_name} has no attribute {'.'.join(parts[cut:])!r}"
                f"{hint}"
            ) from None
        return obj
    raise ConfigError(
        f"{where}._target_: cannot import {path!r} ({last_error}); check the class path"
    )


def check_kwargs(obj: Any, kwargs: Mapping[str, Any], where: str, skip: int = 0) -> None:
    """Raise ConfigError if ``kwargs`` has a key ``obj``'s constructor does not accept."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in kwargs:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(allowed)})"
            raise ConfigError(
                f"{where}.{key}: unknown parameter of {getattr(obj, '__name__', obj)}{hint}"
            )
