"""The ``check_leakage:`` section (``pytorch-smt-tools check-leakage [CONFIG]``).

The same keys as the command's options, plus the ``catalog:`` block every command takes: a
``split`` run recorded in the catalog (PostGIS or a Parquet tile table) is audited where it
lives, with no CSV exported. docs/algorithms.md §11 says what each check means.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from smt_tools.choices import DEFAULT_AUDIT_KNN_BACKEND, AuditKnnBackend
from smt_tools.config._loader import StrictModel
from smt_tools.config._source import CatalogSource
from smt_tools.config.split import MAX_BUFFER_M


class LeakageConfig(StrictModel):
    """What to audit (``folds`` | ``train`` + ``val`` | ``catalog`` with the ``run_id`` of a
    split run) and how."""

    train: Path | None = None
    val: Path | None = None
    folds: Path | None = None
    catalog: CatalogSource | None = None
    embeddings: Path | None = Field(
        default=None, description="embedding cache (Parquet) for the near-duplicate check"
    )
    model_id: str | None = None
    buffer_m: float = Field(default=0.0, ge=0, le=MAX_BUFFER_M, description="metres")
    near_duplicate_threshold: float = Field(default=0.02, gt=0, le=2, description="cosine distance")
    k: int = Field(default=10, ge=1, le=10_000, description="neighbours searched per tile")
    knn_backend: AuditKnnBackend = DEFAULT_AUDIT_KNN_BACKEND
    group_column: str = Field(default="source_image_id", min_length=1)
    report: Path | None = Field(
        default=None, description="map of the leaking tiles: .geojson, .fgb or .gpkg"
    )

    @model_validator(mode="after")
    def _one_input(self) -> LeakageConfig:
        given = [
            name
            for name, on in (
                ("folds", self.folds is not None),
                ("train/val", self.train is not None or self.val is not None),
                ("catalog", self.catalog is not None),
            )
            if on
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one input: folds (a CSV from split), train + val (two CSVs) or "
                f"catalog (with run_id: a split run); found {', '.join(given) or 'none'}"
            )
        if (self.train is None) != (self.val is None):
            raise ValueError("train and val go together; give both")
        if self.catalog is not None and self.catalog.run_id is None:
            raise ValueError(
                "catalog needs run_id: the split run to audit (its folds are in the catalog)"
            )
        return self


class LeakageFile(StrictModel):
    """A YAML file with a top-level ``check_leakage:`` key."""

    check_leakage: LeakageConfig
