"""The ``balanced_dataset:`` section (build-balanced-dataset, embed).

Key names follow the documented config users already know; docs/algorithms.md gives the meaning
of every number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from smt_tools.choices import (
    DEFAULT_K_SELECTION,
    DEFAULT_KNN_BACKEND,
    DEFAULT_KNN_PRECISION,
    DEFAULT_MODE,
    DEFAULT_SAMPLING_METHOD,
    KnnBackend,
    KnnPrecision,
    KSelection,
    Mode,
    SamplingMethod,
    mode_signals,
    resolve_sampling_method,
)
from smt_tools.config._loader import (
    MAX_INT32,
    MAX_SEED,
    MAX_SIDE,
    MAX_TIMEOUT_S,
    MAX_WORKERS,
    StrictModel,
)
from smt_tools.config._source import CatalogSource, TableColumns
from smt_tools.config._vector import FORMAT_HELP, VectorFormat, format_for

#: the largest band number a mask_band setting accepts (GDAL's own limit is 65,536)
MAX_MASK_BAND = 65_536


class PatchRecord(StrictModel):
    """One window of one image/mask pair (as in the documented ``patch_records`` list)."""

    image_path: str
    mask_path: str
    row_off: int = Field(ge=0, le=MAX_INT32)
    col_off: int = Field(ge=0, le=MAX_INT32)
    patch_size: int = Field(gt=0, le=MAX_SIDE)


class InputConfig(TableColumns):
    """Where the tiles come from: exactly one of the four sources.

    - ``patch_records``: inline list (documented shape);
    - ``patch_records_csv``: CSV with image_path, mask_path, row_off, col_off, patch_size;
    - ``tiles``: a Parquet tile table written by ``catalog ingest --catalog x.parquet``;
    - the PostgreSQL block (``host/port/database/user/password/table/where_clause`` or ``dsn``);
    - ``catalog``: the block every command takes (``url`` or ``path``, ``table``,
      ``where_clause``, ``run_id``), PostGIS or a Parquet tile table.
    """

    patch_records: list[PatchRecord] | None = None
    patch_records_csv: Path | None = None
    tiles: Path | None = None
    catalog: CatalogSource | None = None
    # PostgreSQL block
    dsn: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536)
    database: str | None = None
    user: str | None = None
    password: str | None = None
    table: str = "tile"
    where_clause: str | None = None
    statement_timeout_s: float = Field(default=60.0, gt=0, le=MAX_TIMEOUT_S)
    # Scanning patch records that carry no statistics
    scan_workers: int = Field(
        default=0, ge=0, le=MAX_WORKERS, description="scan processes; 0 = one per core"
    )
    mask_band: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MASK_BAND,
        description="1-based band of multi-band masks (patch records; None: one-band masks)",
    )

    @property
    def uses_postgres(self) -> bool:
        return any(v is not None for v in (self.dsn, self.host, self.database))

    @model_validator(mode="after")
    def _exactly_one_source(self) -> InputConfig:
        sources = [
            name
            for name, present in (
                ("patch_records", self.patch_records is not None),
                ("patch_records_csv", self.patch_records_csv is not None),
                ("tiles", self.tiles is not None),
                ("catalog", self.catalog is not None),
                ("postgres (host/database/dsn)", self.uses_postgres),
            )
            if present
        ]
        if len(sources) != 1:
            got = ", ".join(sources) if sources else "none"
            raise ValueError(
                "give exactly one input source: patch_records, patch_records_csv, tiles, "
                f"catalog, or a PostgreSQL block (host/database or dsn); found {got}"
            )
        if self.catalog is not None and (self.where_clause is not None or self.table != "tile"):
            raise ValueError(
                "with input.catalog, write table and where_clause inside it "
                "(input.catalog.where_clause); remove input.table / input.where_clause"
            )
        if self.patch_records is not None and not self.patch_records:
            raise ValueError("patch_records is empty; list at least one patch")
        if self.column_mapping() is not None and not self.uses_postgres:
            raise ValueError(
                "the *_column keys map the PostgreSQL block's table (host/database or dsn); "
                "with input.catalog write them inside it (input.catalog.image_path_column)"
            )
        from_catalog = self.tiles is not None or self.catalog is not None or self.uses_postgres
        if self.mask_band is not None and from_catalog:
            raise ValueError(
                "mask_band applies to patch records; a tile table or catalog keeps the band "
                "chosen at ingest (catalog ingest --mask-band): remove input.mask_band"
            )
        return self


#: composition clusters: the elbow fits every k of k_min..k_max, so more would hang
MAX_CLUSTERS = 1_024


class ClusteringConfig(StrictModel):
    k_min: int = Field(default=4, ge=1, le=MAX_CLUSTERS)
    k_max: int = Field(default=16, ge=1, le=MAX_CLUSTERS)
    k_selection: KSelection = DEFAULT_K_SELECTION
    k: int | None = Field(
        default=None, ge=1, le=MAX_CLUSTERS, description="number of clusters for k_selection: fixed"
    )
    random_state: int = Field(default=42, ge=0, le=MAX_SEED)
    clr_pseudocount: float = Field(default=1e-6, gt=0, le=1)
    silhouette_sample_size: int = Field(default=10_000, ge=100, le=100_000)
    selection_sample_size: int | None = Field(
        default=20_000,
        ge=100,
        le=MAX_INT32,
        description="above this many included tiles, the fits that choose k run on a seeded "
        "sample of this size; the chosen k is then fitted on all tiles (null: always all)",
    )

    @model_validator(mode="after")
    def _k_range(self) -> ClusteringConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if self.k_selection == "fixed" and self.k is None:
            raise ValueError("k_selection: fixed needs clustering.k")
        return self


#: hnsw defaults: recall@5 >= 0.95 in <= 60 s on 2 cores for 155k x 768 (BENCHMARKS.md); the
#: library functions in smt_tools.curation.uniqueness use the same values.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF = 48
#: approximate searches (hnsw, pca_dim): the share of tiles, highest approximate scores first,
#: whose neighbours are recomputed exactly (docs/algorithms.md §7, "the tail pass")
TAIL_FRACTION = 0.03


class UniquenessConfig(StrictModel):
    k_neighbors: int = Field(default=5, ge=1, le=1_024)
    backend: KnnBackend = Field(
        default=DEFAULT_KNN_BACKEND,
        description="auto: torch on a GPU, else hnsw / faiss / sklearn (the first installed)",
    )
    precision: KnnPrecision = Field(
        default=DEFAULT_KNN_PRECISION,
        description="torch backend on a GPU: fp32, or tf32/bf16 matmul re-ranked in fp32",
    )
    # hnsw defaults meet recall@5 >= 0.95 in <= 60 s on 2 cores for 155k x 768 (BENCHMARKS.md)
    M: int = Field(default=HNSW_M, ge=4, le=256, description="hnsw graph degree")
    ef_construction: int = Field(default=HNSW_EF_CONSTRUCTION, ge=8, le=8_192)
    ef: int = Field(
        default=HNSW_EF, ge=1, le=8_192, description="hnsw query breadth (>= k_neighbors + 1)"
    )
    tail_fraction: float = Field(
        default=TAIL_FRACTION,
        ge=0,
        le=1,
        description="approximate searches: share of tiles, most unique first, whose neighbours "
        "are recomputed exactly (0: off)",
    )
    pca_dim: int | None = Field(
        default=None, ge=2, le=8_192, description="optional seeded PCA before search"
    )
    num_threads: int = Field(
        default=0, ge=0, le=MAX_WORKERS, description="search threads; 0 = one per core"
    )


#: GDAL's own limit on the number of bands of a raster
MAX_BANDS = 65_535


class EmbeddingsConfig(StrictModel):
    dino_model: str = "facebook/dinov2-base"
    batch_size: int = Field(default=32, ge=1, le=4_096)
    num_workers: int = Field(
        default=4,
        ge=0,
        le=MAX_WORKERS,
        description="DataLoader reader processes; 0 = read in the main process (torch's meaning)",
    )
    use_gpu: bool = False
    parquet_path: Path | None = None
    bands: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, max_length=3)
    scale: tuple[float, float] | None = Field(
        default=None, description="[min, max] radiometric range of the whole dataset"
    )

    @field_validator("bands")
    @classmethod
    def _bands_positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("bands are 1-based band indexes (rasterio convention)")
        if any(b > MAX_BANDS for b in v):
            raise ValueError(f"band indexes must be <= {MAX_BANDS}")
        if len(v) == 2:
            raise ValueError("give 1 band (repeated to RGB) or 3 bands")
        return v

    @field_validator("scale")
    @classmethod
    def _scale_order(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError("scale must be [min, max] with min < max")
        return v


#: mask values are 0..65535 (smt_tools.raster.maskcheck.MAX_CLASS_VALUE)
MAX_CLASS_VALUE = 65_535


class ExclusionConfig(StrictModel):
    """Which tiles are left out (docs/algorithms.md §5).

    ``nodata_class``: the mask value that is not a class. ``null`` and ``-1`` both mean none
    (every mask value is a class). Not given: tile tables and the catalog use the class they
    were ingested with; patch records (scanned on the fly) use none. See :attr:`nodata_given`.
    """

    exclude_border_nodata: bool = True
    exclude_black_border: bool = True
    nodata_class: int | None = Field(default=None, ge=-1, le=MAX_CLASS_VALUE)
    black_border_tolerance: int = Field(default=0, ge=0, le=MAX_INT32)
    min_entropy: float | None = Field(default=None, ge=0)
    max_nodata_ratio: float = Field(default=1.0, ge=0, le=1)

    @field_validator("nodata_class")
    @classmethod
    def _minus_one_is_none(cls, v: int | None) -> int | None:
        return None if v is not None and v < 0 else v

    @property
    def nodata_given(self) -> bool:
        """True when the config names ``nodata_class`` (a value, ``null`` or ``-1``)."""
        return "nodata_class" in self.model_fields_set


class WeightsConfig(StrictModel):
    weight_floor: float | Literal["auto"] = 0.05
    rare_class_boost: float = Field(
        default=1.0, ge=1.0, le=1_000.0, description="multiplier; 1 = off"
    )
    rare_class_ids: list[Annotated[int, Field(ge=0, le=MAX_CLASS_VALUE)]] | None = None
    # docs/algorithms.md §8 (repeat_factor) and §9 (temperature)
    temperature: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="alpha in (0, 1]: weights scaled to max 1 are raised to alpha before the "
        "floor (1 = unchanged, 0.5 = square root); every sampling_method",
    )
    repeat_threshold: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="sampling_method repeat_factor: t in r_c = max(1, sqrt(t / f_c)), f_c = "
        "share of included tiles holding class c",
    )
    repeat_min_pixels: int = Field(
        default=1,
        ge=1,
        le=MAX_INT32,
        description="sampling_method repeat_factor: a class is present in a tile when it has "
        "at least this many pixels there",
    )

    @field_validator("weight_floor", mode="before")
    @classmethod
    def _floor_text(cls, v: object) -> object:
        if isinstance(v, str) and v != "auto":
            try:
                return float(v)
            except ValueError:
                raise ValueError("weight_floor must be in [0, 1] or 'auto'") from None
        return v

    @field_validator("weight_floor")
    @classmethod
    def _floor_range(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 <= float(v) <= 1:
            raise ValueError("weight_floor must be in [0, 1] or 'auto'")
        return v


class OutputConfig(StrictModel):
    """The balanced table as CSV (``csv_path``) and/or Parquet (``parquet_path``: the same
    columns, typed, compressed; the format for millions of tiles, read by ``train`` and
    ``select-coreset`` like the CSV): at least one."""

    csv_path: Path | None = None
    parquet_path: Path | None = Field(
        default=None, description="the balanced table as Parquet (same columns as the CSV)"
    )
    geojson_path: Path | None = None
    format: VectorFormat | None = Field(default=None, description=FORMAT_HELP)
    report_dir: Path | None = None
    html_report: bool = Field(
        default=True,
        description="with report_dir: also write report_dir/report.html (tables, thumbnails)",
    )
    include_excluded: bool = True
    write_catalog_run: bool = True

    @model_validator(mode="after")
    def _map_format(self) -> OutputConfig:
        if self.csv_path is None and self.parquet_path is None:
            raise ValueError("give csv_path or parquet_path (or both): where the table goes")
        if self.geojson_path is not None:
            format_for(self.geojson_path, self.format)
        return self

    @property
    def table_path(self) -> Path:
        """The main table output: the CSV, else the Parquet file."""
        path = self.csv_path or self.parquet_path
        assert path is not None
        return path


class BalancedDatasetConfig(StrictModel):
    mode: Mode = DEFAULT_MODE
    sampling_method: SamplingMethod = DEFAULT_SAMPLING_METHOD
    input: InputConfig
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    uniqueness: UniquenessConfig = Field(default_factory=UniquenessConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    exclusion: ExclusionConfig = Field(default_factory=ExclusionConfig)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    output: OutputConfig

    @model_validator(mode="after")
    def _mode_method(self) -> BalancedDatasetConfig:
        resolve_sampling_method(self.sampling_method, mode_signals(self.mode))  # ValueError: fix
        return self


class BalancedFile(StrictModel):
    """A YAML file with a top-level ``balanced_dataset:`` key."""

    balanced_dataset: BalancedDatasetConfig
