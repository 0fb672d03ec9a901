"""The PostGIS backend of :class:`~smt_tools.catalog.store.TileStore`: one connection per run.

Every method runs on the store's engine, which holds at most one connection (opened once,
checked once, reused by every statement, closed by :meth:`PostgisStore.close`). The SQL lives in
the modules it always lived in (``queries``, ``bulk``, ``runs``, ``spatial``, ``migrate``);
this class is the one door to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import event

from smt_tools.catalog import bulk, queries
from smt_tools.catalog.engine import connect, engine_label
from smt_tools.catalog.migrate import MigrationReport, apply_migrations, require_schema
from smt_tools.catalog.store_types import RunRecord, StoreKind, TileQuery, WriteStats

if TYPE_CHECKING:
    from smt_tools.ingest_params import IngestParams
    from smt_tools.raster.scan import SourceRecord
    from smt_tools.tiletable import TileTable


class PostgisStore:
    """Tiles, classes and runs in a PostGIS catalog (the schema of ``catalog init``).

    ``engine`` is public for queries from Python (the ORM models of ``smt_tools.catalog``,
    ``pandas.read_sql``); ``connections_opened`` counts the server connections it made.
    """

    kind: StoreKind = "postgis"

    def __init__(self, url: str, *, check_schema: bool = True) -> None:
        self.engine = connect(url, single=True)
        self.label = engine_label(self.engine)
        self.connections_opened = 0
        self._closed = False
        event.listen(self.engine, "connect", self._count)
        self.connections_opened = 1  # connect() made and checked the first one
        if check_schema:
            try:
                require_schema(self.engine)
            except BaseException:
                self.close()
                raise

    def _count(self, _dbapi: Any, _record: Any) -> None:
        self.connections_opened += 1

    # --- tiles ---------------------------------------------------------------------------

    def read_tiles(self, query: TileQuery = TileQuery(), categorical: bool = False) -> TileTable:
        return queries.load_tiles(
            self.engine,
            table=query.table,
            where_clause=query.where_clause,
            statement_timeout_s=query.statement_timeout_s,
            run_id=query.run_id,
            run_included_only=query.included_only,
            categorical=categorical,
        )

    def read_tiles_batched(self, query: TileQuery = TileQuery()) -> TileTable:
        """:meth:`read_tiles` for millions of tiles: the per-image text columns (group_id,
        image_path, mask_path, crs) categorical, as the Parquet store's batched read gives."""
        return self.read_tiles(query, categorical=True)

    def class_names(self) -> dict[int, tuple[str | None, str | None]]:
        names = queries.class_names(self.engine)
        colours = queries.class_colours(self.engine)
        return {v: (names.get(v), colours.get(v)) for v in sorted(set(names) | set(colours))}

    def source_fingerprints(self) -> pd.DataFrame:
        return bulk.source_fingerprints(self.engine)

    def write_ingest(
        self,
        table: TileTable | None,
        sources: Sequence[SourceRecord],
        params: IngestParams,
        replace_ids: Sequence[int] = (),
        class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
    ) -> WriteStats:
        return bulk.write_ingest(
            self.engine,
            table,
            sources,
            params,
            replace_ids=replace_ids,
            class_names=class_names,
            allow_new_classes=params.allow_new_classes,
        )

    def count_rows(self) -> tuple[int, int]:
        return queries.count_rows(self.engine)

    # --- runs ----------------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> int:
        return queries.record_run(
            self.engine,
            run.command,
            run.config,
            run.summary,
            run.results,
            run.started_at,
            run.finished_at,
            map_style=run.map_style,
        )

    def read_run(
        self, run_id: int, columns: Sequence[str] | None = None
    ) -> tuple[str, pd.DataFrame]:
        from smt_tools.catalog.runs import load_run_results

        return load_run_results(self.engine, run_id, columns)

    def list_runs(self) -> pd.DataFrame:
        from smt_tools.catalog.runs import list_runs

        return list_runs(self.engine)

    def run_info(self, run_id: int) -> dict[str, Any]:
        from smt_tools.catalog.runs import run_info

        return run_info(self.engine, run_id)

    def delete_run(self, run_id: int) -> int:
        from smt_tools.catalog.runs import delete_run

        return delete_run(self.engine, run_id)

    # --- whole catalog -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return queries.catalog_stats(self.engine)

    def server_versions(self) -> tuple[str, str | None]:
        """(PostgreSQL version, PostGIS version or None)."""
        return queries.server_versions(self.engine)

    def require_schema(self) -> None:
        """Refuse a database that ``catalog init`` has not migrated (one line, the fix)."""
        require_schema(self.engine)

    def apply_migrations(self) -> MigrationReport:
        """``catalog init``: apply the migrations not yet applied, in one transaction."""
        return apply_migrations(self.engine)

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
        from smt_tools.catalog.spatial import buffer_exclusions_postgis

        return buffer_exclusions_postgis(
            self.engine,
            tile_ids,
            fold,
            buffer_m,
            n_splits,
            metric_crs,
            table=table,
            geodesic=geodesic,
        )

    def vector_overlap(
        self,
        tile_ids: np.ndarray,
        table: str,
        geometry_column: str | None = None,
        where: str | None = None,
    ) -> np.ndarray | None:
        from smt_tools.catalog.vector_layer import vector_overlap_postgis

        return vector_overlap_postgis(self.engine, tile_ids, table, geometry_column, where)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.dispose()
