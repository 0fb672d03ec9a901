"""``check-leakage``: audit a train/val pair of CSVs or a folds CSV (ALGORITHMS.md §8 (a)-(d)).

Two inputs:
- ``--train A.csv --val B.csv``: A's tiles train, B's are evaluated;
- ``--folds F.csv`` (written by ``split``): every fold is validation once and trains otherwise;
  ``fold = -1`` (holdout test) is only evaluated; ``buffer_excluded_folds`` (when present) marks
  the rounds a tile was already dropped from, so those pairs are not leaks.

Needs ``tile_id`` and the group column (default ``source_image_id``); footprints
(``minx, miny, maxx, maxy, crs``) for the spatial check; an embedding cache for near-duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError
from smt_tools.splits.audit import LeakageAudit, audit_splits
from smt_tools.splits.buffer import TEST_FOLD, metric_footprints

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

    @property
    def has_leak(self) -> bool:
        return self.audit.has_leak


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
) -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    """Read the inputs: ``(frame, labels (n,), label_names, trains (L,), evaluated (L,),
    exclusions (n, L) or None)``."""
    need = ["tile_id", group_column]
    if folds is not None:
        if train is not None or val is not None:
            raise InputDataError("give either --folds or --train with --val, not both")
        frame = _read(Path(folds), "folds", [*need, "fold"])
        fold = pd.to_numeric(frame["fold"], errors="coerce")
        if fold.isna().any() or (fold < TEST_FOLD).any():
            raise InputDataError(f"{folds}: column fold must hold integers >= -1")
        fold_arr = fold.to_numpy(np.int64)
        values = np.unique(fold_arr)
        labels = np.searchsorted(values, fold_arr).astype(np.int64)
        names = ["test" if v == TEST_FOLD else f"fold {int(v)}" for v in values]
        trains = values >= 0
        evaluated = np.ones(len(values), dtype=bool)
        exclusions = None
        if "buffer_excluded_folds" in frame.columns:
            from smt_tools.pipelines.split import parse_excluded_folds

            k = int(values.max()) + 1 if values.max() >= 0 else 0
            per_fold = parse_excluded_folds(frame["buffer_excluded_folds"], k)
            cols = np.where(values == TEST_FOLD, k, values)
            exclusions = per_fold[:, cols]
        out = frame.copy()
        out["split"] = [names[i] for i in labels]
        return out, labels, names, trains, evaluated, exclusions
    if train is None or val is None:
        raise InputDataError("give --train and --val (or --folds)")
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
    knn_backend: str = "sklearn",
    group_column: str = "source_image_id",
    report: Path | None = None,
) -> LeakageResult:
    """Run checks (a)-(d) and optionally write ``report`` (GeoJSON of leaking tiles + .qml)."""
    if buffer_m < 0:
        raise InputDataError(f"--buffer-m must be >= 0; got {buffer_m}")
    if not 0 < near_duplicate_threshold <= 2:
        raise InputDataError(
            f"--near-duplicate-threshold must be in (0, 2] (cosine distance); got {near_duplicate_threshold}"
        )
    frame, labels, names, trains, evaluated, exclusions = load_split_frames(
        train=train, val=val, folds=folds, group_column=group_column
    )
    tile_ids = pd.to_numeric(frame["tile_id"], errors="coerce")
    if tile_ids.isna().any():
        raise InputDataError("column tile_id must hold integers in every row")
    ids = tile_ids.to_numpy(np.int64)
    spatial = all(c in frame.columns for c in _BOUNDS) and not frame[_BOUNDS].isna().any().any()
    geoms = metric_footprints(frame) if spatial and len(frame) else None
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
    )
    if report is not None:
        _write_report(result, Path(report))
        result.report_path = Path(report)
    return result


def _write_report(result: LeakageResult, path: Path) -> None:
    """GeoJSON of the leaking tiles (``leak_reasons``, ``leak_checks``) and a QGIS style."""
    if not result.spatial_checked:
        raise InputDataError(
            f"--report {path}: the input CSVs have no footprint columns (minx, miny, maxx, maxy, crs)"
        )
    from smt_tools.export.geojson import write_geojson
    from smt_tools.export.qgis_style import write_qml

    rows = result.audit.leaking_rows
    reasons = result.audit.reasons()
    out = result.frame.iloc[rows].reset_index(drop=True).copy()
    out["leak_reasons"] = [reasons[r] for r in rows]
    out["leak_checks"] = result.audit.flags[rows].sum(axis=1).astype(np.int64)
    props = [
        c
        for c in ("tile_id", "source_image_id", "group_id", "split", "leak_reasons", "leak_checks")
        if c in out.columns
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_geojson(out, path, props)
    # colour by how many of checks (a)-(c) flagged the tile
    write_qml(
        path.with_suffix(".qml"),
        field="leak_checks",
        excluded_field=None,
        breaks=(0.5, 1.5, 2.5, 3.5),
    )
