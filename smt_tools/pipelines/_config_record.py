"""The config as recorded with a run (``run.config`` in the catalog, the run record): secrets
redacted. Shared by build-balanced-dataset and embed."""

from __future__ import annotations

from typing import Any

from smt_tools.config.balanced import BalancedDatasetConfig


def balanced_config_record(cfg: BalancedDatasetConfig) -> dict[str, Any]:
    """``{"balanced_dataset": ...}`` as JSON types; ``input.password`` and the password in
    ``input.dsn`` replaced by ``***``."""
    from smt_tools.catalog import redact

    data = cfg.model_dump(mode="json")
    inp = data.get("input", {})
    if inp.get("password"):
        inp["password"] = "***"
    if inp.get("dsn"):
        inp["dsn"] = redact(str(inp["dsn"]))
    return {"balanced_dataset": data}
