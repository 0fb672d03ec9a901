"""The :class:`TileStore` protocol and what goes through it (open one with
:func:`smt_tools.catalog.store.open_store`).

A store is where tiles come from and where runs go: the PostGIS catalog
(:class:`~smt_tools.catalog.postgis_store.PostgisStore`) or a Parquet tile table written by
``catalog ingest --catalog tiles.parquet``
(:class:`~smt_tools.catalog.parquet_store.ParquetStore`, its runs in ``tiles.parquet.runs/``).
Pipelines receive an open store and call its methods; they never build a connection or pick a
backend. :func:`open_store` resolves the reference (``${VAR}`` already expanded by the config
loader, ``$SMT_DATABASE_URL`` when nothing is given) once, opens one connection (PostGIS) or
takes the table's lock (Parquet, for writing), and closes it when the ``with`` block ends,
whatever happened inside.

This module imports no database library: a Parquet run never loads SQLAlchemy or psycopg.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from smt_tools.errors import CatalogError, ConfigError

if TYPE_CHECKING:
    from smt_tools.ingest_params import IngestParams
    from smt_tools.raster.scan import SourceRecord
    from smt_tools.tiletable import TileTable

#: Environment variable holding the default catalog (a PostgreSQL URL or a .parquet path).
ENV_URL = "SMT_DATABASE_URL"


#: Per-tile result columns a run may record (``tile_result`` in PostGIS, a run file in Parquet).
def result_columns(columns: Sequence[str] | None) -> tuple[str, ...]:
    """The :data:`RESULT_COLUMNS` named in ``columns`` in their order (None: all of them)."""
    if columns is None:
        return RESULT_COLUMNS
    unknown = set(columns) - set(RESULT_COLUMNS)
    if unknown:
        raise ValueError(f"not run result columns: {sorted(unknown)}")
    return tuple(c for c in RESULT_COLUMNS if c in columns)


RESULT_COLUMNS: tuple[str, ...] = (
    "sampler_weight",
    "freq_cluster_id",
    "uniqueness_score",
    "excluded",
    "coreset_score",
    "coreset_selected",
    "fold",
    "buffer_excluded_folds",
    "exclusion_reason",  # catalog version 8
    "has_low_entropy",
    "has_high_nodata",
    "coreset_step",  # catalog version 9
)

#: Columns of :meth:`TileStore.list_runs`, on both backends.
RUN_LIST_COLUMNS: tuple[str, ...] = (
    "run_id",
    "command",
    "started_at",
    "finished_at",
    "tool_version",
    "results",
    "map_view",
)

StoreKind = Literal["postgis", "parquet"]


def is_parquet_target(target: str | os.PathLike[str] | None) -> bool:
    """A ``.parquet`` path (a local tile table) rather than a PostgreSQL URL."""
    return target is not None and str(target).lower().endswith(".parquet")


@dataclass(frozen=True)
class StoreRef:
    """A resolved reference to a store: exactly one of ``url`` (PostgreSQL) or ``path``
    (a Parquet tile table). Make one with :func:`store_ref`."""

    url: str | None = None
    path: Path | None = None

    @property
    def kind(self) -> StoreKind:
        return "parquet" if self.path is not None else "postgis"


def store_ref(
    target: str | os.PathLike[str] | StoreRef | None = None,
    *,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    key: str = "--catalog",
) -> StoreRef:
    """Resolve where tiles live, once: ``target`` (a URL or a ``.parquet`` path, as the
    ``--catalog`` option takes it), or ``url`` / ``path`` from a config block, else
    ``$SMT_DATABASE_URL`` (which may also name a ``.parquet`` file). ``key`` names the option
    or config key in the error when nothing is given."""
    if isinstance(target, StoreRef):
        return target
    if url and path:
        raise ConfigError(f"{key}: give url (PostGIS) or path (a Parquet tile table), not both")
    if path:
        return StoreRef(path=Path(path))
    given = str(target) if target else (url or os.environ.get(ENV_URL, "").strip())
    if not given:
        if key.startswith("--"):
            raise CatalogError(
                f"no catalog: pass {key} postgresql://... (or a .parquet tile table) or set "
                f"{ENV_URL}"
            )
        raise CatalogError(
            f"no catalog: set {key}.url (postgresql://...) or {key}.path (a .parquet tile "
            f"table), or {ENV_URL}"
        )
    if is_parquet_target(given):
        return StoreRef(path=Path(given))
    return StoreRef(url=given)


@dataclass(frozen=True)
class WriteStats:
    """What an ingest wrote: rows and seconds spent inside the transaction."""

    tiles_written: int
    sources_written: int
    sources_deleted: int
    classes_added: int
    seconds: float


@dataclass(frozen=True)
class TileQuery:
    """Which tiles to read: ``table`` (PostGIS: ``tile`` or a view with its columns), an SQL
    ``where_clause`` on it (checked before it runs), and ``run_id``: only tiles with a result
    in that run (``included_only``: and not excluded by it)."""

    table: str = "tile"
    where_clause: str | None = None
    run_id: int | None = None
    included_only: bool = False
    statement_timeout_s: float = 60.0


@dataclass(frozen=True)
class RunRecord:
    """A run to record: the command, its config and summary, per-tile ``results`` (column
    ``tile_id`` plus any of :data:`RESULT_COLUMNS`), its times, and a QGIS style for its map
    layer (PostGIS only)."""

    command: str
    config: Mapping[str, Any]
    summary: Mapping[str, Any]
    results: pd.DataFrame
    started_at: datetime
    finished_at: datetime
    map_style: str | None = None


@runtime_checkable
class TileStore(Protocol):
    """What every backend does. ``label`` names the store in messages (passwords hidden)."""

    kind: StoreKind
    label: str

    def read_tiles(self, query: TileQuery = ...) -> TileTable:
        """Tiles as a TileTable (rows by tile id; classes with no pixel in the selection
        dropped); an empty selection is an error naming the filter."""
        ...

    def class_names(self) -> dict[int, tuple[str | None, str | None]]:
        """Class value -> (name, colour) as written by ``catalog ingest --class-names``."""
        ...

    def source_fingerprints(self) -> pd.DataFrame:
        """One row per source image: id, paths, group, the ingest fingerprint, nodata class."""
        ...

    def write_ingest(
        self,
        table: TileTable | None,
        sources: Sequence[SourceRecord],
        params: IngestParams,
        replace_ids: Sequence[int] = (),
        class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
    ) -> WriteStats:
        """Replace ``replace_ids`` and write ``sources`` with their tiles, all or nothing."""
        ...

    def count_rows(self) -> tuple[int, int]:
        """(tiles, source images)."""
        ...

    def record_run(self, run: RunRecord) -> int:
        """Write the run and its per-tile results, all or nothing; return the run id."""
        ...

    def read_run(
        self, run_id: int, columns: Sequence[str] | None = None
    ) -> tuple[str, pd.DataFrame]:
        """(command, results) of a recorded run: ``tile_id`` + the :data:`RESULT_COLUMNS` in
        ``columns`` (None: all), sorted by tile id; an unknown run or one without results is
        an error."""
        ...

    def list_runs(self) -> pd.DataFrame:
        """One row per recorded run, oldest first: run_id, command, started_at, finished_at,
        tool_version, results (per-tile rows), map_view (PostGIS; None in Parquet)."""
        ...

    def run_info(self, run_id: int) -> dict[str, Any]:
        """A run's row of :meth:`list_runs` plus its ``config`` and ``summary``."""
        ...

    def delete_run(self, run_id: int) -> int:
        """Delete a run and its per-tile results (and its map view), all or nothing; return
        the number of per-tile results deleted."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counts for ``catalog stats`` (tiles, source_images, groups, runs, window_pixels,
        valid_pixels, classes: value/name/colour/pixels)."""
        ...

    def buffer_exclusions(
        self,
        tile_ids: np.ndarray,
        fold: np.ndarray,
        buffer_m: float,
        n_splits: int,
        metric_crs: str,
        table: str = "tile",
        *,
        geodesic: bool = False,
    ) -> np.ndarray | None:
        """The split's buffer computed where the tiles live (PostGIS), or None when the store
        cannot (the caller computes it in memory with shapely)."""
        ...

    def vector_overlap(
        self,
        tile_ids: np.ndarray,
        table: str,
        geometry_column: str | None = None,
        where: str | None = None,
    ) -> np.ndarray | None:
        """(n,) float64: the share of each tile that the features of the PostGIS table
        ``table`` passing ``where`` cover (NaN: none meets the tile), or None when the store
        holds no such table (Parquet)."""
        ...

    def close(self) -> None:
        """Release the connection or lock (idempotent)."""
        ...
