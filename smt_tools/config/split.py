"""The ``split:`` section (``pytorch-smt-tools split CONFIG``).

Input is either a balanced CSV (``input_csv_path``, as written by build-balanced-dataset) or the
catalog (``catalog:`` block). See docs/algorithms.md §11 for what the folds and the buffer mean
(§12 for how distances are measured).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from smt_tools.choices import DEFAULT_SPLIT_STRATEGY, SplitStrategy
from smt_tools.config._loader import MAX_SEED, StrictModel
from smt_tools.config._source import CatalogSource
from smt_tools.config._vector import FORMAT_HELP, VectorFormat, format_for

#: Largest buffer / leakage distance accepted (metres): 1000 km.
MAX_BUFFER_M = 1e6
#: Largest spatial block side accepted (metres): 10,000 km.
MAX_BLOCK_M = 1e7


#: the split's ``catalog:`` block is the one every command takes (kept as a name for imports)
SplitCatalogConfig = CatalogSource


class SplitOutputConfig(StrictModel):
    """Where the folds go. ``csv_path`` is required for CSV input and optional for the catalog
    (which always records a run with ``tile_result.fold``); ``geojson_path`` adds a map with a
    QGIS style next to it."""

    csv_path: Path | None = None
    geojson_path: Path | None = None
    format: VectorFormat | None = Field(default=None, description=FORMAT_HELP)

    @model_validator(mode="after")
    def _map_format(self) -> SplitOutputConfig:
        if self.geojson_path is not None:
            format_for(self.geojson_path, self.format)
        return self


class SplitConfig(StrictModel):
    input_csv_path: Path | None = None
    catalog: CatalogSource | None = None
    n_splits: int = Field(default=5, ge=2, le=1_000)
    strategy: SplitStrategy = DEFAULT_SPLIT_STRATEGY
    group_column: str = Field(default="source_image_id", min_length=1)
    buffer_m: float = Field(
        default=0.0, ge=0, le=MAX_BUFFER_M, description="metres (at most 1000 km)"
    )
    block_size_m: float | None = Field(
        default=None,
        gt=0,
        le=MAX_BLOCK_M,
        description="side of the square blocks in metres; required by strategy spatial_blocks "
        "(the blocks are then the groups) and refused by the other strategies",
    )
    random_state: int = Field(default=0, ge=0, le=MAX_SEED)
    holdout: float = Field(default=0.0, ge=0, lt=1)
    output: SplitOutputConfig = Field(default_factory=SplitOutputConfig)

    @model_validator(mode="after")
    def _one_input(self) -> SplitConfig:
        if (self.input_csv_path is None) == (self.catalog is None):
            raise ValueError(
                "give exactly one input: input_csv_path (a balanced CSV) or catalog (url or path, "
                "table, where_clause, run_id)"
            )
        if self.input_csv_path is not None and self.output.csv_path is None:
            raise ValueError("output.csv_path is required when the input is a CSV")
        return self

    @model_validator(mode="after")
    def _blocks(self) -> SplitConfig:
        if self.strategy == "spatial_blocks" and self.block_size_m is None:
            raise ValueError(
                "strategy spatial_blocks needs block_size_m, the side of the square blocks in "
                "metres (e.g. block_size_m: 1000)"
            )
        if self.strategy != "spatial_blocks" and self.block_size_m is not None:
            raise ValueError(
                f"block_size_m is only used by strategy spatial_blocks (strategy is "
                f"{self.strategy}); remove block_size_m or set strategy: spatial_blocks"
            )
        return self


class SplitFile(StrictModel):
    """A YAML file with a top-level ``split:`` key."""

    split: SplitConfig
