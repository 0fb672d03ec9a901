"""``catalog runs list | show | delete``: housekeeping of the runs recorded in a catalog.

Works on both stores (PostGIS: ``run`` + ``tile_result`` + the run's map view and its QGIS
style; a Parquet tile table: the files of ``<table>.runs/``), through the store only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from smt_tools.catalog.store import open_store


@dataclass
class RunsResult:
    """What a ``catalog runs`` command saw or did. ``runs``: the runs listed (or the one shown
    / deleted, with its ``config`` and ``summary`` when shown); ``deleted_results``: per-tile
    results removed by ``delete``."""

    target: str
    kind: str
    action: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    deleted_results: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "catalog": self.target,
            "kind": self.kind,
            "action": self.action,
            "runs": self.runs,
            "deleted_results": self.deleted_results,
        }


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """JSON-ready values (times as ISO text, numpy ints as int)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, pd.Timestamp) or hasattr(value, "isoformat"):
            out[str(key)] = value.isoformat()
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
        else:
            out[str(key)] = value
    return out


def run_list(catalog: str | None = None) -> RunsResult:
    """Every run recorded in ``catalog`` (URL, .parquet, default ``$SMT_DATABASE_URL``)."""
    with open_store(catalog) as store:
        frame = store.list_runs()
        rows = [_plain(r) for r in frame.to_dict("records")]
        return RunsResult(store.label, store.kind, "list", rows)


def run_show(run_id: int, catalog: str | None = None) -> RunsResult:
    """One run: its row, config and summary."""
    with open_store(catalog) as store:
        return RunsResult(store.label, store.kind, "show", [_plain(store.run_info(run_id))])


def run_delete(run_id: int, catalog: str | None = None) -> RunsResult:
    """Delete one run and everything recorded with it (all or nothing)."""
    with open_store(catalog) as store:
        info = store.run_info(run_id)
        deleted = store.delete_run(run_id)
        row = {k: v for k, v in _plain(info).items() if k not in ("config", "summary")}
        return RunsResult(store.label, store.kind, "delete", [row], deleted)
