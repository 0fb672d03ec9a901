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

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.choices import DEFAULT_EDGE_POLICY
from smt_tools.errors import ConfigError, InputDataError
from smt_tools.geo import pixel_space_note
from smt_tools.pipelines._ingest_report import (
    ScanSummary,
    check_catalog_nodata,
    check_new_classes,
    nodata_text,
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
    is_gdal_path,
    path_identity,
    redact,
    resolve_path,
)
from smt_tools.tiletable import TileTable

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


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did (printed as the closing summary)."""

    target: str  # redacted URL or Parquet path
    kind: str  # "postgis" or "parquet"
    images_total: int
    images_new: int
    images_replaced: int
    images_skipped: int
    tiles_written: int
    tiles_in_catalog: int
    sources_in_catalog: int
    scan_seconds: float
    write_seconds: float
    elapsed_seconds: float
    #: One line each, printed as ``warning: ...`` after the summary (data the user should check).
    warnings: list[str] = field(default_factory=list)
    #: The mask value treated as nodata (None: every mask value is a class).
    nodata_class: int | None = None
    #: Pixel totals and class shares of the tiles written by this ingest.
    scanned: ScanSummary = field(default_factory=ScanSummary)
    #: Images skipped as smaller than the patch, low --edge drop coverage, padded tiles.
    tiling: TilingReport = field(default_factory=TilingReport)

    @property
    def images_scanned(self) -> int:
        return self.images_new + self.images_replaced

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_written / self.scan_seconds if self.scan_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``, ``run.json``)."""
        s, t = self.scanned, self.tiling
        return {
            "target": self.target,
            "kind": self.kind,
            "images_total": self.images_total,
            "images_scanned": self.images_scanned,
            "images_new": self.images_new,
            "images_replaced": self.images_replaced,
            "images_skipped": self.images_skipped,
            "tiles_written": self.tiles_written,
            "tiles_in_catalog": self.tiles_in_catalog,
            "sources_in_catalog": self.sources_in_catalog,
            "tiles_per_second": self.tiles_per_second,
            "nodata_class": self.nodata_class,
            "nodata_share": s.nodata_share,
            "mask_pixels": s.mask_pixels,
            "nodata_pixels": s.nodata_pixels,
            "classes": [
                {"class_value": c.class_value, "name": c.name, "pixels": c.pixels, "share": c.share}
                for c in s.classes
            ],
            "skipped_small_images": [p for p, _, _ in t.skipped_small],
            "low_coverage_images": [{"image": p, "coverage": c} for p, c in t.low_coverage],
            "padded_tiles": t.padded_tiles,
            "warnings": list(self.warnings),
            "timings_s": {
                "scan": self.scan_seconds,
                "write": self.write_seconds,
                "total": self.elapsed_seconds,
            },
        }

    def run_json_path(self) -> Path | None:
        """A local tile table gets its run record beside it; a PostGIS catalog none."""
        if self.kind != "parquet":
            return None
        from smt_tools.export.run_record import run_json_path

        return run_json_path(self.target)


def read_pairs_csv(path: str | os.PathLike[str], check_exists: bool = True) -> list[PairSpec]:
    """Pairs from a CSV with columns ``image``, ``mask`` and optional ``group``.

    Relative paths are resolved against the CSV's folder; GDAL paths (``s3://``, ``https://``,
    ``/vsicurl/`` …) are kept as written and checked by opening them through rasterio
    (:mod:`smt_tools.raster.paths`). Errors name the file, row and column (URLs redacted).
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: pairs CSV not found; give a CSV with columns image, mask[, group]"
        )
    base = p.resolve().parent
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(
            f"{p}: not a readable CSV ({exc}); expected columns image, mask[, group]"
        ) from None
    if not header:
        raise InputDataError(f"{p}: pairs CSV is empty; expected a header row image, mask[, group]")
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("image", "mask") if c not in names]
    if missing:
        raise InputDataError(
            f"{p}: pairs CSV lacks column(s) {', '.join(missing)}; expected columns image, mask[, group]; "
            f"found: {', '.join(h.strip() for h in header) or 'none'}"
        )
    ii, mi = names.index("image"), names.index("mask")
    gi = names.index("group") if "group" in names else None
    pairs: list[PairSpec] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {
            c: (row[i].strip() if i < len(row) else "") for c, i in (("image", ii), ("mask", mi))
        }
        for col, value in cells.items():
            if not value:
                raise InputDataError(
                    f"{p}: line {line}: empty '{col}' value; every row needs an image and a mask path"
                )
        image = resolve_path(cells["image"], base)
        mask = resolve_path(cells["mask"], base)
        if check_exists:
            for col, full in (("image", image), ("mask", mask)):
                _check_raster(p, line, col, full, base)
        key = path_identity(image)
        if key in seen:
            raise InputDataError(
                f"{p}: line {line}: image {redact(image)} is already listed on line {seen[key]}; "
                "list each image once"
            )
        seen[key] = line
        group = row[gi].strip() if gi is not None and gi < len(row) and row[gi].strip() else None
        pairs.append(PairSpec(image, mask, group))
    if not pairs:
        raise InputDataError(
            f"{p}: pairs CSV has a header but no rows; add one row per image/mask pair"
        )
    return pairs


def _check_raster(csv_path: Path, line: int, col: str, path: str, base: Path) -> None:
    """A local file must exist; a GDAL path must open (one line with GDAL's cause if not)."""
    if not is_gdal_path(path):
        if not Path(path).is_file():
            raise InputDataError(
                f"{csv_path}: line {line}: {col} file {path} not found "
                f"(relative paths are resolved against {base})"
            )
        return
    from smt_tools.errors import RasterOpenError
    from smt_tools.raster.handles import probe_raster

    try:
        probe_raster(path)
    except RasterOpenError as exc:
        raise InputDataError(f"{csv_path}: line {line}: {col} {exc}") from None


def read_class_names_csv(path: str | os.PathLike[str]) -> dict[int, tuple[str | None, str | None]]:
    """Class value -> (name, colour) from a CSV with columns ``class_value, name[, colour]``."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: class names CSV not found; expected columns class_value, name[, colour]"
        )
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        rows = list(reader)
    if "color" in header and "colour" not in header:
        header[header.index("color")] = "colour"
    missing = [c for c in ("class_value", "name") if c not in header]
    if missing:
        raise InputDataError(
            f"{p}: class names CSV lacks column(s) {', '.join(missing)}; expected class_value, name[, colour]"
        )
    vi, ni = header.index("class_value"), header.index("name")
    ci = header.index("colour") if "colour" in header else None
    out: dict[int, tuple[str | None, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue
        raw = row[vi].strip() if vi < len(row) else ""
        try:
            value = int(raw)
        except ValueError:
            raise InputDataError(
                f"{p}: line {line}: class_value must be an integer; got {raw!r}"
            ) from None
        name = row[ni].strip() if ni < len(row) and row[ni].strip() else None
        colour = row[ci].strip() if ci is not None and ci < len(row) and row[ci].strip() else None
        out[value] = (name, colour)
    return out


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


def is_parquet_target(target: str | None) -> bool:
    return bool(target) and str(target).lower().endswith(".parquet")


def _unchanged(rec: SourceRecord, old: pd.Series, params: dict[str, Any]) -> bool:
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
        **params,
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
) -> IngestResult:
    """Ingest the pairs of ``pairs_csv`` into ``catalog`` (PostgreSQL URL, default
    ``$SMT_DATABASE_URL``; or a ``.parquet`` path for a local tile table).

    nodata_class: the mask value that means nodata; None (default), ``-1`` or ``"none"``: every
    mask value is a class. mask_band: 1-based band of multi-band masks (None: masks must have
    one band). allow_new_classes: accept class values the (non-empty) catalog does not list.
    """
    start = time.perf_counter()
    stride = patch_size if stride is None else stride
    _validate(patch_size, stride, edge, black_tolerance, workers)
    nodata_class = parse_nodata_class(nodata_class)
    if mask_band is not None and mask_band < 1:
        raise ConfigError(f"--mask-band is 1-based; got {mask_band}")
    params: dict[str, Any] = {
        "mask_band": mask_band,
        "allow_new_classes": bool(allow_new_classes),
        "nodata_class": nodata_class,
        "patch_size": int(patch_size),
        "stride": int(stride),
        "edge_policy": str(edge),
        "black_tolerance": float(black_tolerance),
        "scan_rules": SCAN_RULES,
    }
    clear_remote_cache()  # remote objects may have changed since GDAL cached them here
    pairs = read_pairs_csv(pairs_csv)
    names = read_class_names_csv(class_names_csv) if class_names_csv is not None else {}
    if nodata_class is not None:
        names.pop(int(nodata_class), None)
    progress_factory = progress_factory or no_progress
    target = catalog if catalog else os.environ.get("SMT_DATABASE_URL", "").strip() or None
    if is_parquet_target(target):
        assert target is not None
        from smt_tools.export.preflight import check_outputs

        check_outputs(  # the table is writable and not an input, before any scan
            [("--catalog", target)],
            [("the pairs CSV", pairs_csv), ("--class-names", class_names_csv)],
        )
        return _ingest_parquet(
            Path(target), pairs, names, params, workers, chunk_size, progress_factory, start
        )
    return _ingest_postgis(
        target, pairs, names, params, workers, chunk_size, progress_factory, start
    )


def _inspect(
    pairs: list[PairSpec], params: dict[str, Any]
) -> tuple[list[SourceRecord], list[np.ndarray], TilingReport]:
    """Check every pair and grid it. Images smaller than the patch (edge drop/shift) are left
    out of the records (so they are never recorded as sources) and named in the report; if
    every image is that small, one error and nothing is written."""
    records: list[SourceRecord] = []
    windows: list[np.ndarray] = []
    skipped: list[tuple[str, int, int]] = []
    with RasterCache(maxsize=8) as cache:
        for pair in pairs:
            rec = inspect_pair(pair, cache, params["mask_band"])
            small = skip_small(rec, params["patch_size"], params["edge_policy"])
            if small is not None:
                skipped.append(small)
                continue
            windows.append(
                tile_windows(
                    rec.image.width,
                    rec.image.height,
                    params["patch_size"],
                    params["stride"],
                    params["edge_policy"],
                    source=rec.image.path,
                )
            )
            records.append(rec)
    return records, windows, tiling_report(records, windows, skipped, params)


def _plan(
    records: list[SourceRecord], existing: pd.DataFrame, params: dict[str, Any]
) -> tuple[list[int], list[int], list[int]]:
    """Indexes of records that are new / changed / unchanged."""
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
    return new, changed, same


def _scan(
    records: list[SourceRecord],
    windows: list[np.ndarray],
    todo: list[int],
    params: dict[str, Any],
    workers: int,
    chunk_size: int,
    progress_factory: ProgressFactory,
) -> tuple[TileTable | None, float]:
    if not todo:
        return None, 0.0
    from smt_tools.raster.scan import close_cached_handles

    close_cached_handles()  # files may have been rewritten since this process opened them
    t0 = time.perf_counter()
    total = int(sum(windows[i].shape[0] for i in todo))
    with progress_factory("Scanning tiles", total) as advance:
        table = scan(
            [records[i] for i in todo],
            [windows[i] for i in todo],
            nodata_class=params["nodata_class"],
            black_tolerance=params["black_tolerance"],
            read_image=True,
            workers=workers,
            chunk_size=chunk_size,
            progress=advance,
        )
    return table, time.perf_counter() - t0


def _ingest_postgis(
    target: str | None,
    pairs: list[PairSpec],
    names: dict[int, tuple[str | None, str | None]],
    params: dict[str, Any],
    workers: int,
    chunk_size: int,
    progress_factory: ProgressFactory,
    start: float,
) -> IngestResult:
    from smt_tools import catalog as cat

    url = cat.resolve_url(target)
    engine = cat.connect(url)
    try:
        cat.require_schema(engine)
        records, windows, tiling = _inspect(pairs, params)
        existing = cat.source_fingerprints(engine)
        new, changed, same = _plan(records, existing, params)
        todo = sorted(new + changed)
        check_catalog_nodata(cat.engine_label(engine), existing, records, todo, params)
        table, scan_s = _scan(records, windows, todo, params, workers, chunk_size, progress_factory)
        write_s = 0.0
        if table is not None or names:
            stats = cat.write_ingest(
                engine,
                table,
                [records[i] for i in todo],
                params,
                replace_ids=[records[i].source_image_id for i in changed],
                class_names=names,
                allow_new_classes=params["allow_new_classes"],
            )
            write_s = stats.seconds
        n_tiles, n_sources = cat.count_rows(engine)
        label = cat.engine_label(engine)
        all_names = {**cat.class_names(engine), **{k: v[0] for k, v in names.items()}}
    finally:
        engine.dispose()
    scanned_sources = [records[i] for i in todo]
    summary = summarize(table, scanned_sources, all_names)
    return IngestResult(
        target=label,
        kind="postgis",
        images_total=len(pairs),
        images_new=len(new),
        images_replaced=len(changed),
        images_skipped=len(same),
        tiles_written=0 if table is None else len(table),
        tiles_in_catalog=n_tiles,
        sources_in_catalog=n_sources,
        scan_seconds=scan_s,
        write_seconds=write_s,
        elapsed_seconds=time.perf_counter() - start,
        warnings=nodata_warnings(table, scanned_sources, params["nodata_class"], summary)
        + pixel_space_note(
            [r.image.path for r in scanned_sources if not r.image.crs], len(scanned_sources)
        ),
        nodata_class=params["nodata_class"],
        scanned=summary,
        tiling=tiling,
    )


def _ingest_parquet(
    path: Path,
    pairs: list[PairSpec],
    names: dict[int, tuple[str | None, str | None]],
    params: dict[str, Any],
    workers: int,
    chunk_size: int,
    progress_factory: ProgressFactory,
    start: float,
) -> IngestResult:
    """Read-merge-write of the local table under an exclusive lock (``<table>.parquet.lock``),
    held from before the existing table is read until after the atomic replace: a concurrent
    ingest into the same file waits, then merges onto this one's result (nothing is lost)."""
    from smt_tools.export.tiletable_io import tile_table_lock

    if not path.parent.is_dir():
        raise InputDataError(f"{path}: folder {path.parent} does not exist; create it first")
    with tile_table_lock(path, "ingest into"):
        return _ingest_parquet_locked(
            path, pairs, names, params, workers, chunk_size, progress_factory, start
        )


def _ingest_parquet_locked(
    path: Path,
    pairs: list[PairSpec],
    names: dict[int, tuple[str | None, str | None]],
    params: dict[str, Any],
    workers: int,
    chunk_size: int,
    progress_factory: ProgressFactory,
    start: float,
) -> IngestResult:
    from smt_tools.export import tiletable_io as tio

    old: TileTable | None = None
    old_names: dict[int, tuple[str | None, str | None]] = {}
    if path.exists():
        old = tio.read_tile_table(path, include_sources=True)
        old_names = tio.read_class_names(path)
    elif not path.parent.is_dir():
        raise InputDataError(f"{path}: folder {path.parent} does not exist; create it first")
    records, windows, tiling = _inspect(pairs, params)
    existing = tio.source_fingerprints(old) if old is not None else pd.DataFrame()
    new, changed, same = _plan(records, existing, params)
    todo = sorted(new + changed)
    all_names = {**old_names, **names}
    kept: TileTable | None = None
    if old is not None:
        drop = {int(records[i].source_image_id) for i in todo}
        keep_idx = np.flatnonzero(~old.frame["source_image_id"].isin(list(drop)).to_numpy())
        kept = old.take(keep_idx)
        if len(kept) and kept.nodata_class != params["nodata_class"]:
            raise InputDataError(
                f"{path}: tile table was built with nodata class "
                f"{nodata_text(kept.nodata_class)}; got --nodata-class "
                f"{nodata_text(params['nodata_class'])}: use the same one, re-ingest all of its "
                "source images in one run, or write a new file"
            )
    table, scan_s = _scan(records, windows, todo, params, workers, chunk_size, progress_factory)
    known = kept.class_values.tolist() if kept is not None and len(kept) else []
    check_new_classes(str(path), known, table, params["allow_new_classes"])
    write_s = 0.0
    merged: TileTable | None = kept
    if table is not None:
        fresh = tio.attach_sources(table, [records[i] for i in todo], params)
        merged = TileTable.concat([kept, fresh]) if kept is not None and len(kept) else fresh
        merged.nodata_class = params["nodata_class"]
    if table is not None or (names and all_names != old_names) or old is None:
        if merged is None:
            raise InputDataError(f"{path}: nothing to write")
        t0 = time.perf_counter()
        tio.write_tile_table(merged, path, class_names=all_names)
        write_s = time.perf_counter() - t0
    n_tiles = 0 if merged is None else len(merged)
    n_sources = 0 if merged is None else int(merged.frame["source_image_id"].nunique())
    scanned_sources = [records[i] for i in todo]
    summary = summarize(table, scanned_sources, all_names)
    return IngestResult(
        target=str(path),
        kind="parquet",
        images_total=len(pairs),
        images_new=len(new),
        images_replaced=len(changed),
        images_skipped=len(same),
        tiles_written=0 if table is None else len(table),
        tiles_in_catalog=n_tiles,
        sources_in_catalog=n_sources,
        scan_seconds=scan_s,
        write_seconds=write_s,
        elapsed_seconds=time.perf_counter() - start,
        warnings=nodata_warnings(table, scanned_sources, params["nodata_class"], summary)
        + pixel_space_note(
            [r.image.path for r in scanned_sources if not r.image.crs], len(scanned_sources)
        ),
        nodata_class=params["nodata_class"],
        scanned=summary,
        tiling=tiling,
    )
