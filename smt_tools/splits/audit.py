"""Leakage audit of a split (docs/algorithms.md §11): pure, arrays and shapely geometries in, findings out.

Every tile carries a split LABEL (``train``/``val``, or a fold number with ``-1`` = holdout test).
A label either trains (its tiles are used to fit a model while another label is evaluated) or
is evaluated, or both (k-fold: every fold is validation once and training otherwise). A pair of
tiles (a, b) with different labels LEAKS when a trains while b's label is evaluated and a was
not dropped from that round (``exclusions``), or the other way round.

Checks:
(a) ``source_image``: a group (source image) with tiles under more than one label;
(b) ``spatial``: footprints of a leaking pair intersect with positive area, or lie closer than
    ``buffer_m`` metres (touching counts when ``buffer_m > 0``); distances are measured per pair
    (:mod:`smt_tools.splits.distance`: planar in one low-distortion CRS, else geodesic) and tiles
    without a CRS are not checked (the detail says how many);
(c) ``near_duplicate``: a leaking pair whose embeddings are closer than
    ``near_duplicate_threshold`` in cosine distance (among each tile's ``k`` nearest neighbours);
(d) ``crop_level``: the crop-level-split smell, about one sample per source image
    (0.9 < tiles/groups < 1.1) with more than 500 groups under one label. A warning only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.choices import KNN_BACKENDS
from smt_tools.errors import InputDataError
from smt_tools.splits.distance import (
    DistanceMethod,
    TileFootprints,
    measure_pairs,
    overlap_areas,
)
from smt_tools.splits.kfold import encode_groups

__all__ = [
    "CHECKS",
    "Finding",
    "LeakageAudit",
    "audit_splits",
    "crop_level_smell",
]

#: the four checks, in report order
CHECKS = ("source_image", "spatial", "near_duplicate", "crop_level")
_N_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """One audit check's result.

    check: one of :data:`CHECKS`; leak: True when this check found leakage (exit code 1),
    False for a clean check or a warning; n_tiles: tiles involved; n_items: groups (a),
    pairs (b, c) or labels (d) involved; examples: up to 5 tile ids; detail: one line.
    """

    check: str
    leak: bool
    warning: bool
    n_tiles: int
    n_items: int
    examples: tuple[int, ...]
    detail: str


@dataclass
class LeakageAudit:
    """All findings plus which tiles leaked and why.

    flags: (n, 3) bool, columns ``source_image, spatial, near_duplicate`` per input row.
    """

    findings: list[Finding]
    flags: np.ndarray
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def has_leak(self) -> bool:
        return any(f.leak for f in self.findings)

    @property
    def leaking_rows(self) -> np.ndarray:
        """Positions of the rows flagged by any of (a)-(c), ascending: (m,) int64."""
        return np.flatnonzero(self.flags.any(axis=1))

    def reasons(self) -> list[str]:
        """Per input row, the comma-joined checks that flagged it ('' when clean)."""
        names = CHECKS[:3]
        return [",".join(n for n, hit in zip(names, row, strict=True) if hit) for row in self.flags]


def _examples(tile_ids: np.ndarray, rows: np.ndarray) -> tuple[int, ...]:
    if len(rows) == 0:
        return ()
    return tuple(int(t) for t in np.sort(np.unique(tile_ids[rows]))[:_N_EXAMPLES])


def crop_level_smell(group_codes: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Labels that look crop-level split: ``[(label, n_tiles, n_groups)]`` with
    ``0.9 < n_tiles / n_groups < 1.1`` and ``n_groups > 500``."""
    out: list[tuple[int, int, int]] = []
    for label in np.unique(labels):
        rows = labels == label
        n_tiles = int(rows.sum())
        n_groups = len(np.unique(group_codes[rows]))
        ratio = n_tiles / n_groups if n_groups else 0.0
        if 0.9 < ratio < 1.1 and n_groups > 500:
            out.append((int(label), n_tiles, n_groups))
    return out


def _leaking_pairs(
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray,
    trains: np.ndarray,
    evaluated: np.ndarray,
    exclusions: np.ndarray | None,
) -> np.ndarray:
    """Mask over pairs (a, b): True when one of them trains while the other is evaluated."""
    la, lb = labels[a], labels[b]
    ab = (la != lb) & trains[la] & evaluated[lb]
    ba = (la != lb) & trains[lb] & evaluated[la]
    if exclusions is not None:
        ab &= ~exclusions[a, lb]
        ba &= ~exclusions[b, la]
    return ab | ba


def audit_splits(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    groups: Any,
    *,
    label_names: Sequence[str],
    trains: np.ndarray,
    evaluated: np.ndarray,
    geoms: np.ndarray | TileFootprints | None = None,
    buffer_m: float = 0.0,
    exclusions: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    has_embedding: np.ndarray | None = None,
    near_duplicate_threshold: float = 0.02,
    k_neighbors: int = 10,
    knn_backend: str = "sklearn",
) -> LeakageAudit:
    """Run checks (a)-(d) on tiles under split labels.

    tile_ids: (n,) int64. labels: (n,) int64 codes in ``[0, L)``; label_names: (L,) display names.
    groups: (n,) group value (source image id or any grouping column).
    trains / evaluated: (L,) bool per label (see module docstring).
    geoms: :class:`~smt_tools.splits.distance.TileFootprints` (pairs measured per the method;
    tiles without a CRS not checked), or (n,) shapely polygons in metres of one CRS (skip (b)
    when None).
    exclusions: (n, L) bool, ``[t, l]`` = tile t was dropped from training while label l is
    evaluated (the split's buffer); such pairs do not leak.
    embeddings: (n, d) float32 L2-normalised rows, with has_embedding (n,) bool (skip (c) when None).
    """
    tile_ids = np.asarray(tile_ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    trains = np.asarray(trains, dtype=bool)
    evaluated = np.asarray(evaluated, dtype=bool)
    _check_inputs(tile_ids, labels, len(label_names), trains, evaluated, exclusions)
    codes, uniques = encode_groups(groups)
    flags = np.zeros((len(tile_ids), 3), dtype=bool)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    findings = [_source_image_check(tile_ids, labels, codes, uniques, flags)]
    if geoms is not None:
        findings.append(
            _spatial_check(
                tile_ids,
                labels,
                trains,
                evaluated,
                exclusions,
                _footprints(geoms),
                buffer_m,
                flags,
                pairs,
            )
        )
    if embeddings is not None:
        findings.append(
            _near_duplicates(
                tile_ids,
                labels,
                trains,
                evaluated,
                exclusions,
                np.asarray(embeddings, dtype=np.float32),
                has_embedding,
                near_duplicate_threshold,
                k_neighbors,
                knn_backend,
                flags,
                pairs,
            )
        )
    findings.append(_crop_level_check(codes, labels, label_names))
    return LeakageAudit(findings=findings, flags=flags, pairs=pairs)


def _check_inputs(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    trains: np.ndarray,
    evaluated: np.ndarray,
    exclusions: np.ndarray | None,
) -> None:
    """Raise :class:`InputDataError` when the arrays disagree in length or shape, or a label
    code is out of range."""
    n = len(tile_ids)
    if len(labels) != n or len(trains) != n_labels or len(evaluated) != n_labels:
        raise InputDataError("audit: tile ids, labels and label flags disagree in length")
    if n and (labels.min() < 0 or labels.max() >= n_labels):
        raise InputDataError(f"audit: labels must be codes in [0, {n_labels})")
    if exclusions is not None and exclusions.shape != (n, n_labels):
        raise InputDataError(
            f"audit: exclusions have shape {exclusions.shape}; expected ({n}, {n_labels})"
        )


def _source_image_check(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    codes: np.ndarray,
    uniques: Any,
    flags: np.ndarray,
) -> Finding:
    """(a) groups under more than one label; flags their tiles in column 0."""
    g_lab = pd.DataFrame({"g": codes, "l": labels}).drop_duplicates()
    per_group = g_lab.groupby("g")["l"].nunique()
    bad_groups = per_group.index[per_group.to_numpy() > 1].to_numpy()
    rows = np.flatnonzero(np.isin(codes, bad_groups))
    flags[rows, 0] = True
    return Finding(
        check="source_image",
        leak=len(bad_groups) > 0,
        warning=False,
        n_tiles=len(rows),
        n_items=len(bad_groups),
        examples=_examples(tile_ids, rows),
        detail=(
            f"{len(bad_groups)} groups in more than one split, e.g. "
            + ", ".join(str(uniques[g]) for g in bad_groups[:3])
            if len(bad_groups)
            else f"each of {len(uniques)} groups is in one split"
        ),
    )


def _footprints(geoms: np.ndarray | TileFootprints) -> TileFootprints:
    """Footprints as given, or (n,) shapely polygons in metres of one CRS as planar ones."""
    if isinstance(geoms, TileFootprints):
        return geoms
    arr = np.asarray(geoms, dtype=object)
    return TileFootprints(
        DistanceMethod("planar", "", (), float("nan")),
        np.ones(len(arr), dtype=bool),
        planar=arr,
    )


def _spatial_check(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    trains: np.ndarray,
    evaluated: np.ndarray,
    exclusions: np.ndarray | None,
    fp: TileFootprints,
    buffer_m: float,
    flags: np.ndarray,
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
) -> Finding:
    """(b) leaking pairs that overlap, or lie closer than ``buffer_m``; flags column 1."""
    n = len(tile_ids)
    if len(fp) != n:
        raise InputDataError(f"audit: {len(fp)} footprints for {n} tiles")
    i, j, d = measure_pairs(fp, buffer_m, labels=labels)
    cross = _leaking_pairs(i, j, labels, trains, evaluated, exclusions)
    i, j, d = i[cross], j[cross], d[cross]
    if len(i):
        hit = d < buffer_m if buffer_m > 0 else overlap_areas(fp, i, j) > 0
        i, j, d = i[hit], j[hit], d[hit]
    rows = np.unique(np.concatenate([i, j]))
    flags[rows, 1] = True
    pairs["spatial"] = (i, j)
    what = f"closer than {buffer_m:g} m" if buffer_m > 0 else "overlapping"
    closest = f" (closest {float(d.min()):.2f} m)" if buffer_m > 0 and len(d) else ""
    return Finding(
        check="spatial",
        leak=len(i) > 0,
        warning=False,
        n_tiles=len(rows),
        n_items=len(i),
        examples=_examples(tile_ids, rows),
        detail=f"{len(i)} tile pairs {what} across splits{closest}",
    )


def _crop_level_check(codes: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> Finding:
    """(d) the crop-level-split smell (a warning only)."""
    smells = crop_level_smell(codes, labels)
    return Finding(
        check="crop_level",
        leak=False,
        warning=bool(smells),
        n_tiles=sum(s[1] for s in smells),
        n_items=len(smells),
        examples=(),
        detail=(
            "; ".join(
                f"{label_names[lab]}: {nt} tiles from {ng} groups (about 1 per group): "
                "was the split made per crop instead of per source image?"
                for lab, nt, ng in smells
            )
            if smells
            else "tiles per group look like an image-level split"
        ),
    )


def _near_duplicates(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    trains: np.ndarray,
    evaluated: np.ndarray,
    exclusions: np.ndarray | None,
    x: np.ndarray,
    has_embedding: np.ndarray | None,
    threshold: float,
    k: int,
    backend: str,
    flags: np.ndarray,
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
) -> Finding:
    from smt_tools.curation.uniqueness import knn_search

    n = len(tile_ids)
    found = np.ones(n, dtype=bool) if has_embedding is None else np.asarray(has_embedding, bool)
    if x.shape[0] != n:
        raise InputDataError(f"audit: {x.shape[0]} embeddings for {n} tiles")
    pos = np.flatnonzero(found)
    missing = n - len(pos)
    i = j = np.zeros(0, np.int64)
    if len(pos) >= 2:
        kk = min(int(k), len(pos) - 1)
        idx, dist = knn_search(x[pos], kk, knn_backend_name(backend), ids=tile_ids[pos])
        a = np.repeat(pos, kk)
        b_local = np.asarray(idx, dtype=np.int64).reshape(-1)
        d = np.asarray(dist, dtype=np.float64).reshape(-1)
        valid = (b_local >= 0) & (d < threshold)
        a, b, d = a[valid], pos[b_local[valid]], d[valid]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        uniq = pd.DataFrame({"i": lo, "j": hi}).drop_duplicates().to_numpy()
        i, j = uniq[:, 0].astype(np.int64), uniq[:, 1].astype(np.int64)
        keep = (i != j) & _leaking_pairs(i, j, labels, trains, evaluated, exclusions)
        i, j = i[keep], j[keep]
    rows = np.unique(np.concatenate([i, j]))
    flags[rows, 2] = True
    pairs["near_duplicate"] = (i, j)
    note = (
        f"; {missing} tiles have no embedding in the cache and were not checked" if missing else ""
    )
    return Finding(
        check="near_duplicate",
        leak=len(i) > 0,
        warning=False,
        n_tiles=len(rows),
        n_items=len(i),
        examples=_examples(tile_ids, rows),
        detail=f"{len(i)} tile pairs with cosine distance < {threshold:g} across splits{note}",
    )


def knn_backend_name(backend: str) -> str:
    if backend not in KNN_BACKENDS:
        *first, last = KNN_BACKENDS
        raise InputDataError(f"knn backend must be {', '.join(first)} or {last}; got {backend!r}")
    return backend
