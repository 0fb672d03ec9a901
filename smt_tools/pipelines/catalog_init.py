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
    from smt_tools import catalog as cat

    url = cat.resolve_url(catalog)
    engine = cat.connect(url)
    try:
        report = cat.apply_migrations(engine)
        label = cat.engine_label(engine)
    finally:
        engine.dispose()
    return InitResult(label, report.applied, report.already_applied)
