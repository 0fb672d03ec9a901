"""Pydantic models for every YAML section, and loading with clear messages.

One module per command section (``balanced``, ``coreset``, ``split``, ``train``); the shared
loader lives in ``_loader``.
"""

from __future__ import annotations

from smt_tools.config._loader import (
    StrictModel,
    format_validation_error,
    load_config,
    read_yaml,
    validate_mapping,
)

__all__ = [
    "StrictModel",
    "format_validation_error",
    "load_config",
    "read_yaml",
    "validate_mapping",
]
