"""The ``coreset:`` section (select-coreset). docs/algorithms.md §10 gives the meaning of every number."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from smt_tools.choices import (
    DEFAULT_BUDGET_MODE,
    DEFAULT_CORESET_DEVICE,
    DEFAULT_CORESET_METHOD,
    DEFAULT_WEIGHT_FORMULA,
    SPATIAL_METHODS,
    BudgetMode,
    CoresetDevice,
    CoresetMethod,
    WeightFormula,
)
from smt_tools.config._hybrid import HybridConfig
from smt_tools.config._loader import MAX_INT32, MAX_SEED, MAX_TIMEOUT_S, StrictModel
from smt_tools.config._source import CatalogSource, deprecated_keys, warn_deprecated
from smt_tools.config._vector import FORMAT_HELP, VectorFormat, format_for

#: clusters of the fd KMeans (the elbow fits every k of k_min..k_max)
MAX_FD_CLUSTERS = 4_096


class SamplerWeightsConfig(StrictModel):
    """Sampler weights recomputed over the selected tiles (unselected tiles get 0)."""

    formula: WeightFormula = DEFAULT_WEIGHT_FORMULA
    cap: float | None = Field(default=None, gt=0, description="clip weights above this value")


class FdConfig(StrictModel):
    """KMeans for ``fd`` / ``lc_fd``: elbow over k_min..k_max (or a fixed k) on a seeded sample."""

    k: int | None = Field(default=None, ge=1, le=MAX_FD_CLUSTERS)
    k_min: int = Field(default=2, ge=1, le=MAX_FD_CLUSTERS)
    k_max: int = Field(default=10, ge=1, le=MAX_FD_CLUSTERS)
    sample_size: int = Field(default=20_000, ge=100, le=MAX_INT32)
    use_vendi: bool = Field(
        default=False,
        description="choose k where the Vendi score of the first picks stops growing (not elbow)",
    )
    vendi_delta: float = Field(
        default=0.01, ge=0, le=1, description="use_vendi: relative growth counted as levelled off"
    )

    @model_validator(mode="after")
    def _k_range(self) -> FdConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if self.use_vendi and self.k is not None:
            raise ValueError("fd.use_vendi chooses k; give fd.k or fd.use_vendi: true, not both")
        return self


class CoresetOutputConfig(StrictModel):
    csv_path: Path
    geojson_path: Path | None = None
    format: VectorFormat | None = Field(default=None, description=FORMAT_HELP)
    write_catalog_run: bool = True

    @model_validator(mode="after")
    def _map_format(self) -> CoresetOutputConfig:
        if self.geojson_path is not None:
            format_for(self.geojson_path, self.format)
        return self


class CoresetConfig(StrictModel):
    method: CoresetMethod = DEFAULT_CORESET_METHOD
    budget: float = Field(default=0.3, gt=0, le=MAX_INT32)
    budget_mode: BudgetMode = DEFAULT_BUDGET_MODE
    # Input: a balanced CSV, or tiles of the catalog (usually a build-balanced-dataset run).
    input_csv_path: Path | None = None
    catalog: CatalogSource | None = None
    statement_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="older spelling of catalog.statement_timeout_s (no effect on a CSV input)",
    )
    # Embedding cache (from `embed` / build-balanced-dataset), joined by tile_id.
    parquet_path: Path | None = None
    model_id: str | None = Field(
        default=None, description="cache key to use when the cache holds several models"
    )
    spatial_weight: float = Field(default=0.0, ge=0, le=1e6)
    cb_use_spatial: bool = Field(
        default=False,
        description="cb / fa_cb: candidates penalised by proximity to the selected tiles",
    )
    fa_use_spatial: bool = Field(
        default=False, description="fa / fa_cb: the same proximity penalty on the fa score"
    )
    spatial_radius_m: float = Field(
        default=1000.0, gt=0, le=1e7, description="proximity penalty: none at this distance (m)"
    )
    spatial_penalty: float = Field(
        default=1.0, ge=0, le=1e6, description="proximity penalty on top of a selected tile"
    )
    exclude_low_entropy: bool = Field(
        default=True,
        description="false: tiles excluded only for low entropy (exclusion_reason "
        "low_entropy) are candidates again, as in the older tool",
    )
    lc_fd_cutoff_m: float = Field(
        default=0.5,
        ge=0,
        le=MAX_INT32,
        description="fd picks before lc: < 1 = fraction of the budget, else a count",
    )
    fa_cb_lambda: float = Field(default=0.5, ge=0, le=1)
    pca_dim: int | None = Field(
        default=32,
        ge=2,
        le=8_192,
        description="PCA of the embeddings for fd/kcenter; null = full dimension",
    )
    cb_growth: float = Field(
        default=0.02, ge=0, le=1, description="cb adds this fraction of the chosen set per step"
    )
    kcenter_candidates: int = Field(
        default=1024,
        ge=1,
        le=1_048_576,
        description="k-center rounds: farthest tiles examined per round",
    )
    fd: FdConfig = Field(default_factory=FdConfig)
    hybrid: HybridConfig | None = Field(
        default=None, description="method: hybrid: the steps (vector, embedding, entropy)"
    )
    device: CoresetDevice = DEFAULT_CORESET_DEVICE
    sampler_weights: SamplerWeightsConfig = Field(default_factory=SamplerWeightsConfig)
    random_state: int = Field(default=42, ge=0, le=MAX_SEED)
    output: CoresetOutputConfig

    @model_validator(mode="before")
    @classmethod
    def _older_spellings(cls, data: Any) -> Any:
        """``catalog_run_id`` / ``catalog_url`` / ``statement_timeout_s`` (before the
        ``catalog:`` block) and ``fd_use_vendi`` / ``fd_vendi_delta`` (before ``fd:``) still
        work, with one deprecation line each."""
        renames = {"catalog_url": "url", "catalog_run_id": "run_id"}
        if isinstance(data, Mapping) and any(k in data for k in (*renames, "catalog")):
            renames["statement_timeout_s"] = "statement_timeout_s"  # the catalog's, moved too
        data = deprecated_keys(data, "coreset", renames)
        vendi = {"fd_use_vendi": "use_vendi", "fd_vendi_delta": "vendi_delta"}  # older tool
        return deprecated_keys(data, "coreset", vendi, block="fd")

    @model_validator(mode="after")
    def _checks(self) -> CoresetConfig:
        if self.statement_timeout_s is not None:
            warn_deprecated(
                "coreset.statement_timeout_s (it applies to the catalog input only)",
                "coreset.catalog: {statement_timeout_s: ...} or leave it out",
            )
        if (self.input_csv_path is None) == (self.catalog is None):
            raise ValueError(
                "give exactly one input: input_csv_path (a balanced CSV) or catalog "
                "(url or path, and run_id: a build-balanced-dataset run)"
            )
        if self.budget_mode == "fraction" and self.budget > 1:
            raise ValueError(
                f"budget {self.budget:g} with budget_mode: fraction must be in (0, 1]; "
                "use budget_mode: count for a number of tiles"
            )
        if self.budget_mode == "count" and self.budget != int(self.budget):
            raise ValueError(f"budget_mode: count needs a whole number; got {self.budget:g}")
        if (self.method == "hybrid") != (self.hybrid is not None):
            raise ValueError(
                "method: hybrid and a hybrid: {steps: [...]} block go together; "
                + ("add coreset.hybrid.steps" if self.hybrid is None else "set method: hybrid")
            )
        if self.hybrid is not None and self.input_csv_path is not None:
            for i, step in enumerate(self.hybrid.steps):
                if step.table is not None:
                    raise ValueError(
                        f"hybrid.steps[{i}].table {step.table!r} is a PostGIS table: it needs "
                        "the catalog input; use path (a GeoPackage / GeoJSON file) instead"
                    )
        for key, methods in (
            ("cb_use_spatial", ("cb", "fa_cb")),
            ("fa_use_spatial", ("fa", "fa_cb")),
        ):
            if getattr(self, key) and self.method not in methods:
                raise ValueError(
                    f"{key} applies to {' and '.join(methods)}; method is {self.method}: "
                    f"set {key}: false or change the method"
                )
        if self.spatial_weight > 0 and self.method not in SPATIAL_METHODS:
            raise ValueError(
                f"spatial_weight applies to fd, lc_fd and kcenter (methods with a feature space); "
                f"method is {self.method}: set spatial_weight: 0 or change the method"
            )
        return self


class CoresetFile(StrictModel):
    """A YAML file with a top-level ``coreset:`` key."""

    coreset: CoresetConfig
