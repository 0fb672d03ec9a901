"""The config as recorded with a run (``run.config`` in the catalog, the run record) or shown
(``config show``): secrets redacted wherever they sit (``password`` keys, the password inside
``dsn`` / ``url`` values: the PostgreSQL block, every ``catalog:`` block)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from smt_tools.config.balanced import BalancedDatasetConfig

#: keys whose value may be a database URL with a password in it
URL_KEYS = frozenset({"dsn", "url"})


def redact_secrets(node: Any) -> None:
    """Replace, in place and at any depth, ``password`` values by ``***`` and the password
    inside ``dsn`` / ``url`` values by ``***``."""
    from smt_tools.catalog import redact

    if isinstance(node, list):
        for item in node:
            redact_secrets(item)
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "password" and value:
            node[key] = "***"
        elif key in URL_KEYS and isinstance(value, str):
            node[key] = redact(value)
        else:
            redact_secrets(value)


def config_record(section: str, cfg: BaseModel) -> dict[str, Any]:
    """``{section: cfg}`` as JSON types with every secret redacted."""
    data = {section: cfg.model_dump(mode="json")}
    redact_secrets(data)
    return data


def balanced_config_record(cfg: BalancedDatasetConfig) -> dict[str, Any]:
    """``{"balanced_dataset": ...}``, secrets redacted (build-balanced-dataset and embed)."""
    return config_record("balanced_dataset", cfg)
