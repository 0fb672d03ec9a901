"""``catalog init``: apply the SQL migrations to the catalog (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InitResult:
    target: str  # redacted URL
    applied: list[str]
    already_applied: list[str]

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``)."""
        return {
            "target": self.target,
            "applied": list(self.applied),
            "already_applied": list(self.already_applied),
            "up_to_date": not self.applied,
        }


def run_catalog_init(catalog: str | None = None) -> InitResult:
    """Apply every migration of ``smt_tools/migrations/`` not yet recorded in ``schema_migrations``."""
    from smt_tools.catalog.postgis_store import PostgisStore
    from smt_tools.catalog.store import open_store, store_ref
    from smt_tools.errors import ConfigError

    ref = store_ref(catalog)
    if ref.path is not None:
        raise ConfigError(
            f"{ref.path}: a Parquet tile table has no schema to migrate; `pytorch-smt-tools "
            f"catalog ingest PAIRS_CSV --catalog {ref.path}` creates it"
        )
    with open_store(ref, create=True) as store:  # migrations run on an empty database
        assert isinstance(store, PostgisStore)
        report = store.apply_migrations()
        label = store.label
    return InitResult(label, report.applied, report.already_applied)
