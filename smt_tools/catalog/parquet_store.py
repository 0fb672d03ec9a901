"""The Parquet backend of :class:`~smt_tools.catalog.store.TileStore`: a catalog with no server.

The tile table is one Parquet file (:mod:`smt_tools.catalog.parquet_io`); runs recorded on it
go to ``<table>.runs/run-NNNNNN.parquet`` beside it, one file per run: ``tile_id`` plus the
result columns, the run (command, config, summary, times, version) in the schema metadata.
Writes hold the table's lock (``<table>.lock``) and replace files atomically, so an ingest or a
run is all or nothing and two processes never lose each other's rows.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from smt_tools.atomic import atomic_path
from smt_tools.catalog import parquet_io as tio
from smt_tools.catalog.store_types import (
    RESULT_COLUMNS,
    RUN_LIST_COLUMNS,
    RunRecord,
    StoreKind,
    TileQuery,
    WriteStats,
    result_columns,
)
from smt_tools.errors import CatalogError, ConfigError, EmptySelectionError, InputDataError

if TYPE_CHECKING:
    from smt_tools.ingest_params import IngestParams
    from smt_tools.raster.scan import SourceRecord
    from smt_tools.tiletable import TileTable

RUN_META_KEY = b"smt_tools.run"
_RUN_FILE = re.compile(r"^run-(\d{6,})\.parquet$")


def runs_dir(path: str | Path) -> Path:
    """The folder of the runs recorded on the tile table ``path``."""
    return Path(str(path) + ".runs")


class ParquetStore:
    """A Parquet tile table and its runs. ``write``: hold the table's lock until :meth:`close`
    (an ingest reads, merges and replaces under it); ``create``: the table may not exist yet."""

    kind: StoreKind = "parquet"

    def __init__(self, path: str | Path, *, write: bool = False, create: bool = False) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self._locks = contextlib.ExitStack()
        self._locked = False
        self._cache: TileTable | None = None
        if write or create:
            if not self.path.parent.is_dir():
                raise InputDataError(
                    f"{self.path}: folder {self.path.parent} does not exist; create it first"
                )
        elif not self.path.is_file():
            raise ConfigError(
                f"{self.path}: tile table not found; create it with `pytorch-smt-tools catalog "
                f"ingest pairs.csv --catalog {self.path}`"
            )
        if write:
            self._locks.enter_context(tio.tile_table_lock(self.path, "ingest into"))
            self._locked = True

    @contextlib.contextmanager
    def _lock(self, what: str) -> Iterator[None]:
        if self._locked:
            yield
            return
        with tio.tile_table_lock(self.path, what):
            yield

    def _full(self) -> TileTable | None:
        """The whole table with its fingerprint columns (None when it does not exist yet)."""
        if self._cache is None and self.path.exists():
            self._cache = tio.read_tile_table(self.path, include_sources=True)
        return self._cache

    # --- tiles ---------------------------------------------------------------------------

    def read_tiles_batched(self, query: TileQuery = TileQuery()) -> TileTable:
        """:meth:`read_tiles` in bounded memory (build-balanced-dataset at millions of tiles)."""
        return self.read_tiles(query, batched=True)

    def read_tiles(self, query: TileQuery = TileQuery(), *, batched: bool = False) -> TileTable:
        """The tiles of ``query``; ``batched``: read in bounded memory, the path columns as
        pandas ``category`` (:func:`~smt_tools.catalog.parquet_io.read_tile_table_batched`)."""
        read = tio.read_tile_table_batched if batched else tio.read_tile_table
        if query.table != "tile":
            raise ConfigError(
                f"catalog.table: a Parquet tile table holds one table; got {query.table!r}: "
                "remove catalog.table or use the PostGIS catalog"
            )
        if query.where_clause is not None:
            from smt_tools.catalog.parquet_where import filter_rows

            table = read(self.path)
            keep = filter_rows(_as_catalog_tile(table.frame), query.where_clause, self.label)
            table = _selection(table, keep)
        else:
            table = read(self.path)
        if query.run_id is not None:
            _, results = self.read_run(query.run_id, ("excluded",))
            if query.included_only:
                results = results[~results["excluded"].fillna(False).astype(bool)]
            ids = table.frame["tile_id"].to_numpy(np.int64)
            table = _selection(table, np.isin(ids, results["tile_id"].to_numpy(np.int64)))
        if not len(table):
            what = f"where {query.where_clause!r}" if query.where_clause else ""
            run = f" in run {query.run_id}" if query.run_id is not None else ""
            raise EmptySelectionError(
                f"{self.label}: no tile {what}{run}; check the filter or run `catalog ingest`"
            )
        return table

    def class_names(self) -> dict[int, tuple[str | None, str | None]]:
        return tio.read_class_names(self.path) if self.path.exists() else {}

    def source_fingerprints(self) -> pd.DataFrame:
        full = self._full()
        return tio.source_fingerprints(full) if full is not None else pd.DataFrame()

    def write_ingest(
        self,
        table: TileTable | None,
        sources: Sequence[SourceRecord],
        params: IngestParams,
        replace_ids: Sequence[int] = (),
        class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
    ) -> WriteStats:
        """Merge: the tiles of the other source images stay, these are (re)written; one
        atomic replace of the file. New class values need ``params.allow_new_classes``."""
        from smt_tools.raster.maskcheck import first_mask_with, new_classes_message
        from smt_tools.tiletable import TileTable

        start = time.perf_counter()
        with self._lock("ingest into"):
            old = self._full()
            old_names = self.class_names()
            drop = {int(s.source_image_id) for s in sources} | {int(i) for i in replace_ids}
            kept = None
            if old is not None:
                ids = old.frame["source_image_id"].to_numpy(np.int64)
                kept = old.take(np.flatnonzero(~np.isin(ids, list(drop))))
            known = kept.class_values.tolist() if kept is not None and len(kept) else []
            if table is not None and known and not params.allow_new_classes:
                new = sorted(set(int(v) for v in table.class_values) - set(int(v) for v in known))
                if new:
                    first = first_mask_with(table, new)
                    raise InputDataError(new_classes_message(self.label, known, new, first))
            names = {**old_names, **dict(class_names or {})}
            merged = kept
            if table is not None:
                fresh = tio.attach_sources(table, list(sources), params)
                merged = (
                    TileTable.concat([kept, fresh]) if kept is not None and len(kept) else fresh
                )
                merged.nodata_class = params.nodata_class
            if table is None and old is not None and names == old_names:
                return WriteStats(0, 0, 0, 0, time.perf_counter() - start)
            if merged is None:
                raise InputDataError(f"{self.path}: nothing to write")
            tio.write_tile_table(merged, self.path, class_names=names)
            self._cache = merged
        before = set(old.class_values.tolist()) if old is not None else set()
        return WriteStats(
            tiles_written=0 if table is None else len(table),
            sources_written=len(sources),
            sources_deleted=len(drop & set(_source_ids(old))),
            classes_added=len(set(merged.class_values.tolist()) - before) if before else 0,
            seconds=time.perf_counter() - start,
        )

    def count_rows(self) -> tuple[int, int]:
        full = self._full()
        if full is None:
            return 0, 0
        return len(full), int(full.frame["source_image_id"].nunique())

    # --- runs ----------------------------------------------------------------------------

    def _run_files(self) -> dict[int, Path]:
        folder = runs_dir(self.path)
        if not folder.is_dir():
            return {}
        found = {}
        for p in folder.iterdir():
            m = _RUN_FILE.match(p.name)
            if m:
                found[int(m.group(1))] = p
        return found

    def record_run(self, run: RunRecord) -> int:
        from smt_tools._version import __version__

        results = run.results
        if "tile_id" not in results.columns:
            raise CatalogError("record_run: results need a tile_id column")
        ids = results["tile_id"].to_numpy(np.int64)
        if pd.Series(ids).duplicated().any():
            dup = int(pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0])
            raise CatalogError(f"record_run: tile_id {dup} appears twice in the results")
        known = np.sort(pq.read_table(self.path, columns=["tile_id"]).column(0).to_numpy())
        # np.setdiff1d / np.isin cost 15-30 s at 10M ids; two sorts + a merge-like search ~4 s
        wanted = np.sort(ids)  # sorted keys: each binary search starts where the last ended
        pos = np.searchsorted(known, wanted).clip(max=max(known.size - 1, 0))
        found = known[pos] == wanted if known.size else np.zeros(wanted.size, bool)
        unknown = wanted[~found]  # sorted and unique (duplicates were refused above)
        if unknown.size:
            raise CatalogError(
                f"{self.label}: recording the run failed: {unknown.size} tile ids are not in the "
                f"tile table (e.g. {int(unknown[0])}; ingest their source images first); "
                "nothing was written"
            )
        columns = [c for c in RESULT_COLUMNS if c in results.columns]
        frame = results[["tile_id", *columns]].reset_index(drop=True)
        with self._lock("record a run on"):
            run_id = self._next_run_id()
            meta = {
                "id": run_id,
                "command": run.command,
                "config": dict(run.config),
                "summary": dict(run.summary),
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat(),
                "tool_version": __version__,
            }
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            arrow = arrow.replace_schema_metadata(
                {RUN_META_KEY: json.dumps(meta, default=str).encode("utf-8")}
            )
            folder = runs_dir(self.path)
            folder.mkdir(exist_ok=True)
            with atomic_path(folder / f"run-{run_id:06d}.parquet", suffix=".part") as tmp:
                pq.write_table(arrow, tmp, compression="zstd")
        return run_id

    def _next_run_id(self) -> int:
        """One more than any id ever given here (``<runs>/last_run_id`` remembers ids of runs
        since deleted, so an id is never reused, as in PostGIS). Called under the lock."""
        folder = runs_dir(self.path)
        last = folder / "last_run_id"
        given = int(last.read_text().strip() or 0) if last.is_file() else 0
        run_id = max(given, *self._run_files(), 0) + 1
        folder.mkdir(exist_ok=True)
        with atomic_path(last) as tmp:
            Path(tmp).write_text(f"{run_id}\n")
        return run_id

    def run_meta(self, run_id: int) -> dict[str, Any]:
        """The recorded run ``run_id`` (command, config, summary, times, version)."""
        path = self._run_files().get(int(run_id))
        if path is None:
            have = sorted(self._run_files())
            listed = ", ".join(str(i) for i in have[-10:]) if have else "none yet"
            raise EmptySelectionError(
                f"{self.label}: no run with id {run_id} (runs recorded: {listed}; they are "
                f"files in {runs_dir(self.path)})"
            )
        raw = (pq.read_schema(path).metadata or {}).get(RUN_META_KEY, b"{}")
        meta: dict[str, Any] = json.loads(raw)
        return meta

    def read_run(
        self, run_id: int, columns: Sequence[str] | None = None
    ) -> tuple[str, pd.DataFrame]:
        meta = self.run_meta(run_id)
        path = self._run_files()[int(run_id)]
        wanted = result_columns(columns)
        present = set(pq.ParquetFile(path).schema_arrow.names)
        frame = pq.read_table(
            path, columns=["tile_id", *(c for c in wanted if c in present)]
        ).to_pandas()
        command = str(meta.get("command", ""))
        if frame.empty:
            raise EmptySelectionError(
                f"{self.label}: run {run_id} ({command}) has no tile results; use a "
                "build-balanced-dataset run"
            )
        out = pd.DataFrame({"tile_id": frame["tile_id"].astype("int64")})
        for col in wanted:  # as the catalog gives them: Python values, None if unset
            values = frame[col] if col in frame.columns else pd.Series([None] * len(frame))
            out[col] = values.astype(object).where(values.notna(), None).to_numpy()
        return command, out.sort_values("tile_id", kind="stable").reset_index(drop=True)

    def list_runs(self) -> pd.DataFrame:
        rows = []
        for run_id, path in sorted(self._run_files().items()):
            meta = self.run_meta(run_id)
            rows.append(
                (
                    run_id,
                    meta.get("command"),
                    meta.get("started_at"),
                    meta.get("finished_at"),
                    meta.get("tool_version"),
                    pq.ParquetFile(path).metadata.num_rows,
                    None,
                )
            )
        frame = pd.DataFrame(rows, columns=list(RUN_LIST_COLUMNS))
        return frame.astype({"run_id": "int64", "results": "int64"})

    def run_info(self, run_id: int) -> dict[str, Any]:
        meta = self.run_meta(run_id)  # an unknown run is an error naming the runs there
        row = self.list_runs().set_index("run_id").loc[int(run_id)]
        return {
            "run_id": int(run_id),
            **{str(k): (None if pd.isna(v) else v) for k, v in row.items()},
            "config": meta.get("config", {}),
            "summary": meta.get("summary", {}),
        }

    def delete_run(self, run_id: int) -> int:
        with self._lock("delete a run of"):
            info = self.run_info(run_id)
            self._run_files()[int(run_id)].unlink()
        return int(info["results"])

    # --- whole table ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        table = tio.read_tile_table(self.path)
        names = self.class_names()
        f = table.frame
        pixels = table.counts.sum(axis=0).astype(np.int64).tolist() if len(table) else []
        values = [int(v) for v in table.class_values]
        pixels = pixels or [0] * len(values)
        return {
            "tiles": len(table),
            "source_images": int(f["source_image_id"].nunique()),
            "groups": int(f["group_id"].nunique()),
            "runs": len(self._run_files()),
            "window_pixels": int(
                (f["height"].astype(np.int64) * f["width"].astype(np.int64)).sum()
            ),
            "valid_pixels": int(table.counts.sum()),
            "classes": [
                {
                    "class_value": v,
                    "name": names.get(v, (None, None))[0],
                    "colour": names.get(v, (None, None))[1],
                    "pixels": int(p),
                }
                for v, p in zip(values, pixels, strict=True)
            ],
        }

    def buffer_exclusions(self, *_args: Any, **_kwargs: Any) -> np.ndarray | None:
        return None  # no spatial engine: the split computes the buffer with shapely

    def vector_overlap(self, *_args: Any, **_kwargs: Any) -> np.ndarray | None:
        return None  # no PostGIS tables: a hybrid vector step reads a file layer instead

    def close(self) -> None:
        self._locks.close()
        self._locked = False


#: columns of the catalog's ``tile`` table a filter can use (the same names on both backends,
#: so a where_clause means the same thing on PostGIS and on a Parquet tile table)
FILTER_COLUMNS: tuple[str, ...] = (
    "id",
    "source_image_id",
    "row_off",
    "col_off",
    "height",
    "width",
    "valid_pixels",
    "nodata_ratio",
    "class_entropy",
    "has_mask_border_nodata",
    "has_image_black_border",
)


def _as_catalog_tile(frame: pd.DataFrame) -> pd.DataFrame:
    """The tile table's rows with the columns (and names) of the catalog's ``tile`` table."""
    out = frame.rename(columns={"tile_id": "id"})
    return out[[c for c in FILTER_COLUMNS if c in out.columns]]


def _source_ids(table: TileTable | None) -> list[int]:
    if table is None:
        return []
    return [int(v) for v in table.frame["source_image_id"].unique()]


def _selection(table: TileTable, keep: np.ndarray) -> TileTable:
    """Rows ``keep`` (bool) of ``table``, in file order; when rows are left out, classes with
    no pixel in the rows kept are dropped (as the catalog does for a filtered selection)."""
    from smt_tools.tiletable import TileTable

    if keep.all():
        return table
    part = table.take(np.flatnonzero(keep))
    used = part.counts.sum(axis=0) > 0
    return TileTable(part.frame, part.counts[:, used], part.class_values[used], part.nodata_class)
