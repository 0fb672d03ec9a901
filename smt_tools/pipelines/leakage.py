"""``check-leakage``: audit a train/val pair of CSVs or a folds CSV (docs/algorithms.md §11 (a)-(d)).

Three inputs:
- ``--train A.csv --val B.csv``: A's tiles train, B's are evaluated;
- a ``split`` run in the catalog (``--catalog URL|PATH --run-id N`` or a config's
  ``catalog:`` block): read where it is recorded, folds as with ``--folds``;
- ``--folds F.csv`` (written by ``split``): every fold is validation once and trains otherwise;
  ``fold = -1`` (holdout test) is only evaluated; ``buffer_excluded_folds`` (when present) marks
  the rounds a tile was already dropped from, so those pairs are not leaks.

Needs ``tile_id`` and the group column (default ``source_image_id``); footprints
(``minx, miny, maxx, maxy, crs``) for the spatial check; an embedding cache for near-duplicates.

The spatial check measures each pair per :mod:`smt_tools.splits.distance` (planar in one
low-distortion CRS, else geodesic on WGS 84) and says which. Tiles without a CRS (pixel space)
are left out of the spatial check (one line says how many); checks (a), (c) and (d) still cover
them. The ``--report`` GeoJSON holds the leaking tiles that have a CRS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.choices import DEFAULT_AUDIT_KNN_BACKEND
from smt_tools.config._source import CatalogSource
from smt_tools.config.split import MAX_BUFFER_M
from smt_tools.errors import InputDataError
from smt_tools.export.run_record import run_json_path
from smt_tools.splits.audit import CHECKS, LeakageAudit, audit_splits
from smt_tools.splits.buffer import TEST_FOLD
from smt_tools.splits.distance import (
    DistanceMethod,
    TileFootprints,
    distance_method,
    tile_crs,
    tile_footprints,
)

__all__ = ["LeakageResult", "load_split_frames", "run_check_leakage"]

_BOUNDS = ["minx", "miny", "maxx", "maxy", "crs"]


@dataclass
class LeakageResult:
    """The audit plus what was audited.

    frame: the audited tiles (train rows then val rows, or the folds CSV) with a ``split``
    column of label names; label_tiles: tiles per label name.
    """

    audit: LeakageAudit
    frame: pd.DataFrame = field(repr=False)
    label_tiles: dict[str, int]
    buffer_m: float
    near_duplicate_threshold: float
    spatial_checked: bool
    embeddings_checked: bool
    report_path: Path | None = None
    #: how the spatial check measured distances (None when it did not run)
    method: DistanceMethod | None = None
    #: why the spatial check was skipped (None when it ran)
    spatial_skipped: str | None = None
    #: one line each, printed as ``warning: ...``
    warnings: list[str] = field(default_factory=list)

    @property
    def has_leak(self) -> bool:
        return self.audit.has_leak

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``, ``run.json``): per check (a)-(d) its
        status (``leak``, ``warning``, ``ok`` or ``skipped``), tiles, groups/pairs, detail and
        example tile ids."""
        by_check = {f.check: f for f in self.audit.findings}
        checks: dict[str, dict[str, Any]] = {}
        for check in CHECKS:
            f = by_check.get(check)
            if f is None:
                checks[check] = {"status": "skipped"}
                continue
            status = "leak" if f.leak else ("warning" if f.warning else "ok")
            checks[check] = {
                "status": status,
                "tiles": f.n_tiles,
                "items": f.n_items,
                "detail": f.detail,
                "example_tile_ids": list(f.examples),
            }
        return {
            "leak": self.has_leak,
            "label_tiles": dict(self.label_tiles),
            "buffer_m": self.buffer_m,
            "near_duplicate_threshold": self.near_duplicate_threshold,
            "spatial_checked": self.spatial_checked,
            "spatial_skipped": self.spatial_skipped,
            "spatial_method": self.method.describe() if self.method is not None else None,
            "embeddings_checked": self.embeddings_checked,
            "leaking_tiles": len(self.audit.leaking_rows),
            "checks": checks,
            "report_path": self.report_path,
            "warnings": list(self.warnings),
        }

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the ``--report`` GeoJSON (no local output: None)."""
        return run_json_path(self.report_path)


def _read(path: Path, what: str, need: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise InputDataError(f"{path}: {what} CSV not found; check the path")
    try:
        frame = pd.read_csv(
            path, low_memory=False, dtype={"buffer_excluded_folds": str}, keep_default_na=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{path}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{path}: missing column(s) {', '.join(missing)}; the {what} CSV needs "
            f"{', '.join(need)} (use --group-column for another grouping column)"
        )
    return frame


def load_split_frames(
    *,
    train: Path | None,
    val: Path | None,
    folds: Path | None,
    group_column: str,
    catalog: CatalogSource | None = None,
) -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    """Read the inputs: ``(frame, labels (n,), label_names, trains (L,), evaluated (L,),
    exclusions (n, L) or None)``."""
    need = ["tile_id", group_column]
    if catalog is not None:
        if train is not None or val is not None or folds is not None:
            raise InputDataError("give the catalog or CSVs (--folds, --train/--val), not both")
        return _fold_labels(_catalog_folds(catalog, group_column), "the catalog run")
    if folds is not None:
        if train is not None or val is not None:
            raise InputDataError("give either --folds or --train with --val, not both")
        return _fold_labels(_read(Path(folds), "folds", [*need, "fold"]), str(folds))
    if train is None or val is None:
        raise InputDataError("give --train and --val (or --folds, or a catalog split run)")
    a = _read(Path(train), "train", need)
    b = _read(Path(val), "val", need)
    frame = pd.concat([a, b], ignore_index=True, sort=False)
    labels = np.concatenate([np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
    frame["split"] = np.where(labels == 0, "train", "val")
    return (
        frame,
        labels,
        ["train", "val"],
        np.array([True, False]),
        np.array([False, True]),
        None,
    )


def _fold_labels(
    frame: pd.DataFrame, source: str
) -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    """Every fold is validation once and trains otherwise; ``fold = -1`` is only evaluated;
    ``buffer_excluded_folds`` (when present) marks the rounds a tile was already dropped from."""
    fold = pd.to_numeric(frame["fold"], errors="coerce")
    if fold.isna().any() or (fold < TEST_FOLD).any():
        raise InputDataError(f"{source}: column fold must hold integers >= -1")
    fold_arr = fold.to_numpy(np.int64)
    values = np.unique(fold_arr)
    labels = np.searchsorted(values, fold_arr).astype(np.int64)
    names = ["test" if v == TEST_FOLD else f"fold {int(v)}" for v in values]
    exclusions = None
    if "buffer_excluded_folds" in frame.columns:
        from smt_tools.pipelines.split import parse_excluded_folds

        k = int(values.max()) + 1 if values.max() >= 0 else 0
        per_fold = parse_excluded_folds(frame["buffer_excluded_folds"], k)
        cols = np.where(values == TEST_FOLD, k, values)
        exclusions = per_fold[:, cols]
    out = frame.copy(deep=False)
    out["split"] = pd.Categorical.from_codes(labels, dtype=pd.CategoricalDtype(names))  # 1 B/row
    return out, labels, names, values >= 0, np.ones(len(values), dtype=bool), exclusions


def _catalog_folds(src: CatalogSource, group_column: str) -> pd.DataFrame:
    """The tiles of split run ``src.run_id`` with their ``fold`` and ``buffer_excluded_folds``,
    read from the catalog (PostGIS or a Parquet tile table) through its store."""
    from smt_tools.pipelines._sources import open_source, tile_query

    assert src.run_id is not None
    with open_source(src, "check_leakage.catalog") as store:
        assert store is not None
        command, results = store.read_run(src.run_id, ("fold", "buffer_excluded_folds"))
        results = results[results["fold"].notna()]
        if results.empty:
            raise InputDataError(
                f"catalog {store.label}: run {src.run_id} is a {command} run with no folds; "
                "check-leakage audits a split run (run `pytorch-smt-tools split` with this "
                "catalog and use its run id)"
            )
        query = tile_query(src, included_only=False)
        if store.kind == "parquet":  # bounded memory: path columns stay categorical
            frame = store.read_tiles(query, batched=True).frame  # type: ignore[call-arg]
        else:
            frame = store.read_tiles(query).frame  # the class counts are not needed: freed
    frame = _with_folds(frame, results)
    if group_column not in frame.columns:
        raise InputDataError(
            f"--group-column: the catalog tiles have no column {group_column!r}; use one of "
            f"{', '.join(map(str, frame.columns[:8]))}, ..."
        )
    # a few distinct texts shared by millions of rows: categorical, not one string per row
    frame["buffer_excluded_folds"] = frame["buffer_excluded_folds"].fillna("").astype("category")
    return frame


def _with_folds(frame: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The tiles of ``frame`` that have a row in ``results`` (tile ids unique in both), with
    its ``fold`` and ``buffer_excluded_folds``: the inner join on tile_id in ``frame``'s order,
    without copying ``frame`` when every tile has a result (10M rows: no second frame)."""
    res_ids = pd.Index(results["tile_id"].to_numpy(np.int64))
    if not res_ids.is_unique or not frame["tile_id"].is_unique:
        raise InputDataError("the split run lists a tile twice; run `split` again")
    pos = res_ids.get_indexer(frame["tile_id"].to_numpy(np.int64))
    keep = pos >= 0
    if not keep.all():
        frame, pos = frame.loc[keep], pos[keep]
    frame = frame.reset_index(drop=True)  # copy-on-write: no data copied
    for column in ("fold", "buffer_excluded_folds"):
        frame[column] = results[column].to_numpy()[pos]
    return frame


def run_check_leakage(
    *,
    train: Path | None = None,
    val: Path | None = None,
    folds: Path | None = None,
    embeddings: Path | None = None,
    model_id: str | None = None,
    buffer_m: float = 0.0,
    near_duplicate_threshold: float = 0.02,
    k_neighbors: int = 10,
    knn_backend: str = DEFAULT_AUDIT_KNN_BACKEND,
    group_column: str = "source_image_id",
    report: Path | None = None,
    catalog: CatalogSource | None = None,
) -> LeakageResult:
    """Run checks (a)-(d) and optionally write ``report`` (GeoJSON of leaking tiles + .qml).

    ``catalog``: audit the split run ``catalog.run_id`` where it is recorded (its tiles and
    folds come from the store), instead of CSVs."""
    from smt_tools.pipelines._preflight import preflight_leakage

    preflight_leakage(  # the report is writable and not an input, before any work
        report,
        [("--train", train), ("--val", val), ("--folds", folds), ("--embeddings", embeddings)],
    )
    if not 0 <= buffer_m <= MAX_BUFFER_M:  # also refuses NaN
        raise InputDataError(
            f"--buffer-m must be a distance in metres between 0 and {MAX_BUFFER_M:g}; got {buffer_m}"
        )
    if not 0 < near_duplicate_threshold <= 2:
        raise InputDataError(
            f"--near-duplicate-threshold must be in (0, 2] (cosine distance); got {near_duplicate_threshold}"
        )
    frame, labels, names, trains, evaluated, exclusions = load_split_frames(
        train=train, val=val, folds=folds, group_column=group_column, catalog=catalog
    )
    tile_ids = pd.to_numeric(frame["tile_id"], errors="coerce")
    if tile_ids.isna().any():
        raise InputDataError("column tile_id must hold integers in every row")
    ids = tile_ids.to_numpy(np.int64)
    geoms, method, skipped, note = _footprints(frame)
    x = found = None
    if embeddings is not None:
        from smt_tools.embeddings.cache import read_embeddings

        x, found = read_embeddings(Path(embeddings), ids, model_id=model_id)
    audit = audit_splits(
        ids,
        labels,
        frame[group_column].to_numpy(),
        label_names=names,
        trains=trains,
        evaluated=evaluated,
        geoms=geoms,
        buffer_m=buffer_m,
        exclusions=exclusions,
        embeddings=x,
        has_embedding=found,
        near_duplicate_threshold=near_duplicate_threshold,
        k_neighbors=k_neighbors,
        knn_backend=knn_backend,
    )
    result = LeakageResult(
        audit=audit,
        frame=frame,
        label_tiles={n: int((labels == i).sum()) for i, n in enumerate(names)},
        buffer_m=buffer_m,
        near_duplicate_threshold=near_duplicate_threshold,
        spatial_checked=geoms is not None,
        embeddings_checked=x is not None,
        method=method,
        spatial_skipped=skipped,
    )
    if note:
        result.warnings.append(note)
    if report is not None:
        _write_report(result, Path(report))
        result.report_path = Path(report)
    return result


def _footprints(
    frame: pd.DataFrame,
) -> tuple[TileFootprints | None, DistanceMethod | None, str | None, str | None]:
    """``(footprints or None, method, why the spatial check is skipped, warning line)``."""
    if not all(c in frame.columns for c in _BOUNDS):
        return None, None, "no footprint columns", None
    if len(frame) == 0:
        return None, None, "no tiles", None
    georef = tile_crs(frame) != ""
    bounds = frame[_BOUNDS[:4]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = georef & ~np.isfinite(bounds).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"tile_id {frame['tile_id'].iloc[row]} (in {frame['split'].iloc[row]}) has a CRS but "
            f"no numeric minx/miny/maxx/maxy ({int(bad.sum())} such rows); fix that row of the "
            "input CSV (or clear its crs to leave it out of the spatial check)"
        )
    method = distance_method(frame)
    if method.kind == "none":
        return (
            None,
            method,
            f"no tile has a CRS ({len(frame)} tiles in pixel space: no shared coordinates)",
            None,
        )
    note = None
    if method.tiles_without_crs:
        note = (
            f"spatial check: {method.tiles_without_crs} of {len(frame)} tiles "
            f"({method.images_without_crs} source images) have no CRS (pixel space) and were not "
            "checked for overlaps or distances; checks (a), (c) and (d) include them"
        )
    return tile_footprints(frame, method), method, None, note


def _write_report(result: LeakageResult, path: Path) -> None:
    """Map of the leaking tiles (``leak_reasons``, ``leak_checks``, ``split``) with a style
    by check and split side; the format follows the extension (.geojson, .gpkg, .fgb)."""
    if not all(c in result.frame.columns for c in _BOUNDS):
        raise InputDataError(
            f"--report {path}: the input CSVs have no footprint columns (minx, miny, maxx, maxy, crs)"
        )
    from smt_tools.export.qgis_style import leak_qml
    from smt_tools.export.vector import write_vector
    from smt_tools.splits.audit import CHECKS

    rows = result.audit.leaking_rows
    reasons = result.audit.reasons()
    flags = result.audit.flags[rows]
    out = result.frame.iloc[rows].reset_index(drop=True).copy()
    out["leak_reasons"] = [reasons[r] for r in rows]
    out["leak_checks"] = flags.sum(axis=1).astype(np.int64)
    props = [
        c
        for c in ("tile_id", "source_image_id", "group_id", "split", "leak_reasons", "leak_checks")
        if c in out.columns
    ]
    # legend: the checks that flagged a tile x the split sides that have a leaking tile
    checks = [c for i, c in enumerate(CHECKS[: flags.shape[1]]) if flags[:, i].any()]
    present = set(out["split"].astype(str)) if "split" in out.columns else set()
    sides = [s for s in result.label_tiles if s in present]
    written = write_vector(out, path, props, leak_qml(sides, checks))
    if written.note:
        result.warnings.append(written.note)
