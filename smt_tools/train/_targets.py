"""Resolve ``_target_`` class paths (Hydra-style) into objects, with one-line errors.

Class paths of the older tool (``pytorch_segmentation_models_trainer...``) for the datasets
this package implements are mapped to ours with a warning (see :mod:`smt_tools.config.train`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from smt_tools.errors import ConfigError, missing_dependency

#: optional packages and the extra that installs them
_EXTRAS = {"albumentations": ("albumentations", "train")}


def normalize_target(path: str, where: str) -> str:
    """Check the syntax of a ``_target_`` and map legacy paths; raise ConfigError if malformed."""
    from smt_tools.config.train import check_target

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


def instantiate(spec: Mapping[str, Any], where: str, **extra: Any) -> Any:
    """Build ``spec['_target_'](**rest, **extra)``; nested ``_target_`` mappings are built too."""
    if "_target_" not in spec:
        raise ConfigError(f"{where}: missing '_target_' (the class path to build)")
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    obj = resolve_target(str(spec["_target_"]), where)
    check_kwargs(obj, kwargs, where)
    built = {
        k: instantiate(v, f"{where}.{k}") if isinstance(v, Mapping) and "_target_" in v else v
        for k, v in kwargs.items()
    }
    try:
        return obj(**built, **extra)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: cannot build {spec['_target_']}: {first}") from None


def build_transforms(augmentation_list: Any, where: str) -> Any:
    """An albumentations ``Compose`` from a list of ``_target_`` dicts (or transform objects).

    Images reach the transforms as float32 (H, W, bands) already scaled to [0, 1], so an
    ``albumentations.Normalize`` without ``max_pixel_value`` gets ``max_pixel_value: 1.0``.
    """
    if augmentation_list is None:
        return None
    if not isinstance(augmentation_list, list | tuple):
        raise ConfigError(f"{where}: augmentation_list must be a list; got {augmentation_list!r}")
    try:
        import albumentations as A
    except ModuleNotFoundError:
        raise missing_dependency(
            "albumentations", "train", f"{where} (augmentation_list)"
        ) from None
    transforms = []
    for i, item in enumerate(augmentation_list):
        here = f"{where}[{i}]"
        if isinstance(item, Mapping):
            spec = dict(item)
            target = normalize_target(str(spec.get("_target_", "")), here)
            if target.split(".")[-1] == "Normalize" and "max_pixel_value" not in spec:
                spec["max_pixel_value"] = 1.0
            spec["_target_"] = target
            transforms.append(instantiate(spec, here))
        else:
            transforms.append(item)
    return A.Compose(transforms)
