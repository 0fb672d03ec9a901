"""Hybrid selection (docs/algorithms.md §10, "Hybrid selection"): steps that each take their
share of the budget from the tiles the earlier steps left. Pure numpy.

Step kinds: ``vector`` (tiles a map layer covers, most covered first: the covered shares come
from the caller, :mod:`smt_tools.pipelines._coreset_vector`), ``embedding`` (fd, kcenter or fa
run by :func:`smt_tools.coreset.select.select_coreset` among the tiles that hold one of given
classes) and ``entropy`` (label complexity, the lc score; it fills the rest of the budget and
is added at the end when the steps leave room).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from smt_tools.choices import HybridStepType
from smt_tools.coreset import scorers
from smt_tools.coreset.select import (
    CoresetParams,
    CoresetSelection,
    budget_size,
    select_coreset,
)

#: ``coreset_step`` of the entropy sweep added when the steps do not fill the budget
REST_STEP = "entropy"


@dataclass(frozen=True)
class HybridStepSpec:
    """One step: ``name`` (what ``coreset_step`` records), ``kind``, ``share`` of the budget
    (None: the rest, entropy only); embedding: ``method`` and ``classes`` (class values);
    vector: ``min_share`` of the tile area its features must cover."""

    name: str
    kind: HybridStepType
    share: float | None
    method: str | None = None
    classes: tuple[int, ...] = ()
    min_share: float = 0.0


def step_quotas(shares: Sequence[float | None], budget: int) -> list[int]:
    """Tiles each step may pick: ``round(S_i · b) − round(S_{i−1} · b)`` with ``S_i`` the sum
    of the first i shares (round half up), so the quotas add up to ``round(S · b)`` and each is
    within one tile of ``share · b``. A step without a share gets 0 here (it takes the rest)."""
    out: list[int] = []
    total, done = 0.0, 0
    for share in shares:
        total += share or 0.0
        upto = min(budget, math.floor(total * budget + 0.5 + 1e-9))
        out.append(max(0, upto - done))
        done = max(done, upto)
    return out


def _ranked(pool: np.ndarray, key: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``pool`` by ``key`` descending, ties by the smaller tile id."""
    rows = np.flatnonzero(pool)
    return rows[np.lexsort((ids[rows], -key[rows]))]


def class_pool(spec: HybridStepSpec, counts: np.ndarray, class_values: np.ndarray) -> np.ndarray:
    """(n,) bool: the tile holds pixels of at least one of ``spec.classes``."""
    cols = np.flatnonzero(np.isin(np.asarray(class_values), np.asarray(spec.classes)))
    if cols.size == 0:
        return np.zeros(len(counts), dtype=bool)
    return np.asarray(counts)[:, cols].sum(axis=1) > 0


@dataclass
class _State:
    ids: np.ndarray
    eligible: np.ndarray
    lc: np.ndarray
    taken: np.ndarray
    order: list[np.ndarray]
    step: np.ndarray
    info: list[dict[str, Any]]

    def take(self, name: str, rows: np.ndarray, quota: int, candidates: int) -> None:
        self.taken[rows] = True
        self.step[rows] = name
        self.order.append(rows)
        self.info.append(
            {"name": name, "quota": quota, "candidates": candidates, "picked": int(rows.size)}
        )

    @property
    def n_taken(self) -> int:
        return sum(int(r.size) for r in self.order)


def _embedding_picks(
    spec: HybridStepSpec,
    params: CoresetParams,
    pool: np.ndarray,
    k: int,
    arrays: Mapping[str, Any],
    info: dict[str, Any],
) -> np.ndarray:
    """The first ``k`` picks of ``spec.method`` among ``pool``; its details (method, fd's k)
    go into ``info``."""
    sub = select_coreset(
        replace(params, method=spec.method, budget=k, budget_mode="count", spatial_weight=0.0),  # type: ignore[arg-type]
        tile_ids=arrays["ids"],
        eligible=pool,
        counts=arrays["counts"],
        class_entropy=arrays["class_entropy"],
        embeddings=arrays["embeddings"],
    )
    info.update({k: v for k, v in sub.info.items() if k not in ("device", "steps")})
    return np.asarray(sub.pick_order, dtype=np.int64)


def select_hybrid(
    steps: Sequence[HybridStepSpec],
    params: CoresetParams,
    tile_ids: np.ndarray,
    eligible: np.ndarray,
    counts: np.ndarray,
    class_values: np.ndarray,
    class_entropy: np.ndarray,
    vector_shares: Mapping[str, np.ndarray] | None = None,
    embeddings: np.ndarray | None = None,
) -> CoresetSelection:
    """Run ``steps`` in order; return the selection, its ``step`` (n,) object the name of the
    step that picked each tile (``""`` for the others) and ``info["steps"]`` one dict per step
    (name, quota, candidates, picked).

    params: the budget and the embedding methods' settings (``method`` is ignored);
    tile_ids (n,) int64; eligible (n,) bool; counts (n, C); class_values (C,);
    class_entropy (n,) natural log; vector_shares: step name -> (n,) float64 covered share of
    each tile (NaN: no feature meets it); embeddings (n, d): rows of the embedding steps'
    candidates finite. The selection's order is the picks step by step, then the other
    candidates by lc score; each candidate scores ``1 − k / (n − 1)`` at position k.
    """
    ids = np.asarray(tile_ids, dtype=np.int64)
    elig = np.asarray(eligible, dtype=bool)
    n = ids.size
    if np.unique(ids).size != n:
        raise ValueError("tile_ids must be unique")
    b = budget_size(int(elig.sum()), params.budget, params.budget_mode)
    quotas = step_quotas([s.share for s in steps], b)
    lc = np.zeros(n, dtype=np.float64)
    lc[elig] = scorers.lc_scores(np.asarray(class_entropy)[elig], np.asarray(counts).shape[1])
    st = _State(ids, elig, lc, np.zeros(n, bool), [], np.full(n, "", dtype=object), [])
    arrays = {
        "ids": ids,
        "counts": counts,
        "class_values": class_values,
        "class_entropy": class_entropy,
        "embeddings": embeddings,
    }
    for spec, quota in zip(steps, quotas, strict=True):
        _run_step(
            st,
            spec,
            quota if spec.kind != "entropy" else b - st.n_taken,
            params,
            arrays,
            vector_shares or {},
        )
    if st.n_taken < b:  # the shares leave room, or a step found fewer tiles than its share
        rest = b - st.n_taken
        pool = elig & ~st.taken
        st.take(REST_STEP, _ranked(pool, lc, ids)[:rest], rest, int(pool.sum()))
        st.info[-1]["type"] = "entropy"
    return _selection(st, b, params)


def _run_step(
    st: _State,
    spec: HybridStepSpec,
    quota: int,
    params: CoresetParams,
    arrays: Mapping[str, Any],
    vector_shares: Mapping[str, np.ndarray],
) -> None:
    pool = st.eligible & ~st.taken
    extra: dict[str, Any] = {"type": spec.kind}
    if spec.kind == "vector":
        share = np.asarray(vector_shares[spec.name], dtype=np.float64)
        covered = np.isfinite(share) & (np.nan_to_num(share, nan=-1.0) >= spec.min_share)
        pool &= covered
        rows = _ranked(pool, np.nan_to_num(share, nan=-1.0), st.ids)[:quota]
    elif spec.kind == "embedding":
        pool &= class_pool(spec, arrays["counts"], arrays["class_values"])
        k = min(quota, int(pool.sum()))
        extra["method"] = spec.method
        if k > 0:
            rows = _embedding_picks(spec, params, pool, k, arrays, extra)
        else:
            rows = np.empty(0, np.int64)
    else:  # entropy
        rows = _ranked(pool, st.lc, st.ids)[:quota]
    st.take(spec.name, rows, quota, int(pool.sum()))
    st.info[-1].update(extra)


def _selection(st: _State, b: int, params: CoresetParams) -> CoresetSelection:
    picks = np.concatenate(st.order) if st.order else np.empty(0, np.int64)
    rest = _ranked(st.eligible & ~st.taken, st.lc, st.ids)
    order = np.concatenate([picks, rest]).astype(np.int64)
    n_cand = order.size
    scores = np.full(st.ids.size, np.nan, dtype=np.float64)
    scores[order] = 1.0 - np.arange(n_cand) / (n_cand - 1) if n_cand > 1 else 1.0
    selected = np.zeros(st.ids.size, dtype=bool)
    selected[picks] = True
    info: dict[str, Any] = {"method": "hybrid", "device": params.device, "steps": st.info}
    return CoresetSelection(scores, selected, picks, b, info, step=st.step)
