"""Build objects from ``_target_`` specs (Hydra-style), with one-line errors.

The class paths themselves (syntax, the older tool's paths mapped with a warning, import, keyword
check) are resolved by :mod:`smt_tools.config._targets`, which the config loader uses too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from smt_tools.config._targets import check_kwargs, normalize_target, resolve_target
from smt_tools.errors import ConfigError, missing_dependency

__all__ = ["build_transforms", "check_kwargs", "instantiate", "normalize_target", "resolve_target"]


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
    # no update check against PyPI on import (offline runs print no 'version info' warning)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
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
