"""``catalog ingest``: scan image/mask pairs into the PostGIS catalog or a local Parquet table.

Order of work (validate, then compute, then write once):

1. read the pairs CSV (and the optional class-names CSV);
2. open the target: check the catalog is reachable and migrated, or read the existing table;
3. inspect EVERY pair (both files open, same size/transform/CRS) so a bad file fails before
   anything is scanned or written; images smaller than the patch (``--edge drop|shift``) are
   left out and named (pipelines/_tiling_report.py), and if all are, nothing is written;
4. skip source images whose image and mask size + mtime (and tiling parameters) are unchanged;
5. scan the rest in parallel processes (one read per window);
6. write everything in ONE transaction (PostGIS, COPY) or one atomic file replace (Parquet).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.choices import DEFAULT_EDGE_POLICY
from smt_tools.errors import ConfigError
from smt_tools.geo import pixel_space_note
from smt_tools.ingest_params import IngestParams
from smt_tools.pipelines._ingest_inputs import read_class_names_csv, read_pairs_csv
from smt_tools.pipelines._ingest_report import (
    IngestResult,
    check_catalog_nodata,
    nodata_warnings,
    parse_nodata_class,
    summarize,
)
from smt_tools.pipelines._tiling_report import TilingReport, skip_small, tiling_report
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.raster import (
    EDGE_POLICIES,
    SCAN_RULES,
    PairSpec,
    RasterCache,
    SourceRecord,
    inspect_pair,
    scan,
    tile_windows,
)
from smt_tools.raster.paths import (
    UNKNOWN,
    clear_remote_cache,
)
from smt_tools.tiletable import TileTable

if TYPE_CHECKING:
    from distributed import Client

    from smt_tools.catalog.store import TileStore
    from smt_tools.catalog.store_types import StoreRef

__all__ = [
    "IngestParams",
    "IngestResult",
    "parse_nodata_class",
    "read_class_names_csv",
    "read_pairs_csv",
    "run_ingest",
]

#: Columns compared to decide whether a catalogued source image is unchanged.
_COMPARED = (
    "mask_path",
    "group_id",
    "image_size",
    "image_mtime",
    "mask_size",
    "mask_mtime",
    "nodata_class",
    "patch_size",
    "stride",
    "edge_policy",
    "black_tolerance",
    "mask_band",
    "scan_rules",
)


def _validate(
    patch_size: int, stride: int, edge: str, black_tolerance: float, workers: int
) -> None:
    if patch_size < 1:
        raise ConfigError(f"--patch-size must be >= 1; got {patch_size}")
    if stride < 1:
        raise ConfigError(f"--stride must be >= 1; got {stride}")
    if edge not in EDGE_POLICIES:
        raise ConfigError(f"--edge must be one of {', '.join(EDGE_POLICIES)}; got {edge!r}")
    if not math.isfinite(black_tolerance) or black_tolerance < 0:
        raise ConfigError(f"--black-tolerance must be >= 0; got {black_tolerance}")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = one per core); got {workers}")


def _unchanged(rec: SourceRecord, old: pd.Series, params: IngestParams) -> bool:
    known = (rec.image.file_size, rec.image.file_mtime, rec.mask.file_size, rec.mask.file_mtime)
    if any(v == UNKNOWN for v in known):
        return False  # a remote object without size / Last-Modified: always re-scanned
    now: dict[str, Any] = {
        "mask_path": rec.mask.path,
        "group_id": rec.group_id,
        "image_size": rec.image.file_size,
        "image_mtime": rec.image.file_mtime,
        "mask_size": rec.mask.file_size,
        "mask_mtime": rec.mask.file_mtime,
        **params.fingerprint(),
        "mask_band": rec.mask_band,
    }
    return all(_same(old.get(col), now[col]) for col in _COMPARED)


def _is_null(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _same(stored: object, current: object) -> bool:
    """Compare a stored fingerprint value (DB / Parquet) with the current one."""
    if _is_null(stored) or _is_null(current):
        return _is_null(stored) and _is_null(current)
    if isinstance(current, int | float) and not isinstance(current, bool):
        return float(stored) == float(current)  # type: ignore[arg-type]
    return str(stored) == str(current)


@dataclass(frozen=True)
class _Job:
    """One ingest as the backends see it: the pairs, class names and settings, the scan's
    worker count and chunk size, the progress factory, the start time (perf_counter) and the
    Dask client the scan runs on (None: the local process pool)."""

    pairs: list[PairSpec]
    names: dict[int, tuple[str | None, str | None]]
    params: IngestParams
    workers: int
    chunk_size: int
    progress_factory: ProgressFactory
    start: float
    client: Client | None = None


@dataclass(frozen=True)
class _Plan:
    """The inspected pairs (``records`` with their ``windows``; images too small for a patch
    left out and named in ``tiling``) and the indexes of records that are new / changed /
    unchanged against the target."""

    records: list[SourceRecord]
    windows: list[np.ndarray]
    tiling: TilingReport
    new: list[int]
    changed: list[int]
    same: list[int]

    @property
    def todo(self) -> list[int]:
        """Indexes of the records to scan (new or changed), in order."""
        return sorted(self.new + self.changed)

    @property
    def scanned(self) -> list[SourceRecord]:
        return [self.records[i] for i in self.todo]


def run_ingest(
    pairs_csv: str | os.PathLike[str],
    *,
    catalog: str | None = None,
    patch_size: int = 256,
    stride: int | None = None,
    edge: str = DEFAULT_EDGE_POLICY,
    nodata_class: int | str | None = None,
    black_tolerance: float = 0.0,
    workers: int = 0,
    class_names_csv: str | os.PathLike[str] | None = None,
    chunk_size: int = 256,
    progress_factory: ProgressFactory | None = None,
    mask_band: int | None = None,
    allow_new_classes: bool = False,
    scheduler: str | None = None,
) -> IngestResult:
    """Ingest the pairs of ``pairs_csv`` into ``catalog`` (PostgreSQL URL, default
    ``$SMT_DATABASE_URL``; or a ``.parquet`` path for a local tile table).

    nodata_class: the mask value that means nodata; None (default), ``-1`` or ``"none"``: every
    mask value is a class. mask_band: 1-based band of multi-band masks (None: masks must have
    one band). allow_new_classes: accept class values the (non-empty) catalog does not list.
    scheduler: a Dask scheduler to scan on (see :mod:`smt_tools.dask_cluster`; default
    ``$SMT_DASK_SCHEDULER``; unset: the local process pool, and dask is not imported).
    """
    start = time.perf_counter()
    stride = patch_size if stride is None else stride
    _validate(patch_size, stride, edge, black_tolerance, workers)
    nodata_class = parse_nodata_class(nodata_class)
    if mask_band is not None and mask_band < 1:
        raise ConfigError(f"--mask-band is 1-based; got {mask_band}")
    params = IngestParams(
        patch_size=int(patch_size),
        stride=int(stride),
        edge_policy=str(edge),
        black_tolerance=float(black_tolerance),
        nodata_class=nodata_class,
        mask_band=mask_band,
        allow_new_classes=bool(allow_new_classes),
        scan_rules=SCAN_RULES,
    )
    from smt_tools.dask_cluster import require_dask, resolve_scheduler

    address = resolve_scheduler(scheduler)
    if address is not None:
        require_dask()
    clear_remote_cache()  # remote objects may have changed since GDAL cached them here
    pairs = read_pairs_csv(pairs_csv)
    names = read_class_names_csv(class_names_csv) if class_names_csv is not None else {}
    if nodata_class is not None:
        names.pop(int(nodata_class), None)
    from smt_tools.catalog.store import store_ref

    ref = store_ref(catalog)
    if ref.path is not None:
        from smt_tools.export.preflight import check_outputs

        check_outputs(  # the table is writable and not an input, before any scan
            [("--catalog", ref.path)],
            [("the pairs CSV", pairs_csv), ("--class-names", class_names_csv)],
        )
    job = _Job(pairs, names, params, workers, chunk_size, progress_factory or no_progress, start)
    return _run(job, ref, address)


def _run(job: _Job, ref: StoreRef, address: str | None) -> IngestResult:
    """Connect to the Dask scheduler (if any: a wrong address fails before any work), then
    open the store (one connection, or the table's lock, from the first read to the write)
    and ingest."""
    from smt_tools.catalog.store import open_store

    with ExitStack() as stack:
        if address is not None:
            from smt_tools.dask_cluster import dask_client

            job = replace(job, client=stack.enter_context(dask_client(address)))
        store = stack.enter_context(open_store(ref, write=True, create=ref.path is not None))
        result = _ingest(store, job)
        if job.client is not None:
            workers_now = len(job.client.scheduler_info().get("workers", {}))
            result = replace(result, scanned_on=f"dask {address} ({workers_now} workers)")
    return result


def _inspect(
    pairs: list[PairSpec], params: IngestParams
) -> tuple[list[SourceRecord], list[np.ndarray], TilingReport]:
    """Check every pair and grid it. Images smaller than the patch (edge drop/shift) are left
    out of the records (so they are never recorded as sources) and named in the report; if
    every image is that small, one error and nothing is written."""
    records: list[SourceRecord] = []
    windows: list[np.ndarray] = []
    skipped: list[tuple[str, int, int]] = []
    with RasterCache(maxsize=8) as cache:
        for pair in pairs:
            rec = inspect_pair(pair, cache, params.mask_band)
            small = skip_small(rec, params.patch_size, params.edge_policy)
            if small is not None:
                skipped.append(small)
                continue
            windows.append(
                tile_windows(
                    rec.image.width,
                    rec.image.height,
                    params.patch_size,
                    params.stride,
                    params.edge_policy,
                    source=rec.image.path,
                )
            )
            records.append(rec)
    return records, windows, tiling_report(records, windows, skipped, params)


def _plan(
    inspected: tuple[list[SourceRecord], list[np.ndarray], TilingReport],
    existing: pd.DataFrame,
    params: IngestParams,
) -> _Plan:
    """Sort the inspected records into new / changed / unchanged against ``existing``."""
    records, windows, tiling = inspected
    by_id = {int(r["source_image_id"]): r for _, r in existing.iterrows()} if len(existing) else {}
    new, changed, same = [], [], []
    for i, rec in enumerate(records):
        old = by_id.get(int(rec.source_image_id))
        if old is None:
            new.append(i)
        elif _unchanged(rec, old, params):
            same.append(i)
        else:
            changed.append(i)
    return _Plan(records, windows, tiling, new, changed, same)


def _scan(job: _Job, plan: _Plan) -> tuple[TileTable | None, float]:
    """Scan the new and changed images: (their tiles or None when there are none, seconds)."""
    todo = plan.todo
    if not todo:
        return None, 0.0
    from smt_tools.raster.scan import close_cached_handles

    close_cached_handles()  # files may have been rewritten since this process opened them
    t0 = time.perf_counter()
    total = int(sum(plan.windows[i].shape[0] for i in todo))
    with job.progress_factory("Scanning tiles", total) as advance:
        if job.client is not None:
            from smt_tools.raster.scan_dask import scan_on_cluster

            table = scan_on_cluster(
                job.client,
                plan.scanned,
                [plan.windows[i] for i in todo],
                nodata_class=job.params.nodata_class,
                black_tolerance=job.params.black_tolerance,
                read_image=True,
                progress=advance,
            )
            return table, time.perf_counter() - t0
        table = scan(
            plan.scanned,
            [plan.windows[i] for i in todo],
            nodata_class=job.params.nodata_class,
            black_tolerance=job.params.black_tolerance,
            read_image=True,
            workers=job.workers,
            chunk_size=job.chunk_size,
            progress=advance,
        )
    return table, time.perf_counter() - t0


def _result(
    job: _Job,
    plan: _Plan,
    table: TileTable | None,
    *,
    target: str,
    kind: str,
    seconds: tuple[float, float],
    in_catalog: tuple[int, int],
    all_names: Mapping[int, tuple[str | None, str | None] | str | None],
) -> IngestResult:
    """The closing summary; ``seconds`` = (scan, write), ``in_catalog`` = (tiles, sources)."""
    scanned = plan.scanned
    summary = summarize(table, scanned, all_names)
    return IngestResult(
        target=target,
        kind=kind,
        images_total=len(job.pairs),
        images_new=len(plan.new),
        images_replaced=len(plan.changed),
        images_skipped=len(plan.same),
        tiles_written=0 if table is None else len(table),
        tiles_in_catalog=in_catalog[0],
        sources_in_catalog=in_catalog[1],
        scan_seconds=seconds[0],
        write_seconds=seconds[1],
        elapsed_seconds=time.perf_counter() - job.start,
        warnings=nodata_warnings(table, scanned, job.params.nodata_class, summary)
        + pixel_space_note([r.image.path for r in scanned if not r.image.crs], len(scanned)),
        nodata_class=job.params.nodata_class,
        scanned=summary,
        tiling=plan.tiling,
    )


def _ingest(store: TileStore, job: _Job) -> IngestResult:
    """Inspect, compare with what the store holds, scan what is new or changed, write it (one
    transaction / one atomic replace), and summarise."""
    inspected = _inspect(job.pairs, job.params)
    existing = store.source_fingerprints()
    plan = _plan(inspected, existing, job.params)
    check_catalog_nodata(store.label, existing, plan.records, plan.todo, job.params)
    table, scan_s = _scan(job, plan)
    write_s = 0.0
    if table is not None or job.names or not len(existing):
        stats = store.write_ingest(
            table,
            plan.scanned,
            job.params,
            replace_ids=[plan.records[i].source_image_id for i in plan.changed],
            class_names=job.names,
        )
        write_s = stats.seconds
    all_names = {k: v[0] for k, v in store.class_names().items()}
    all_names.update({k: v[0] for k, v in job.names.items()})
    return _result(
        job,
        plan,
        table,
        target=store.label,
        kind=store.kind,
        seconds=(scan_s, write_s),
        in_catalog=store.count_rows(),
        all_names=all_names,
    )
