"""Coreset selection (docs/algorithms.md §10): budget, feature space, method dispatch. Pure numpy.

:func:`select_coreset` takes arrays for ALL tiles (included and excluded) and returns a score
and a selected flag per tile; excluded tiles are never candidates (score NaN, never selected).
Candidates are put in tile_id order before any computation, so the result does not depend
on input row order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smt_tools.choices import (
    CORESET_METHODS,
    DEFAULT_BUDGET_MODE,
    EMBEDDING_METHODS,
    SPATIAL_METHODS,
    BudgetMode,
    CoresetMethod,
    Device,
)
from smt_tools.coreset import scorers
from smt_tools.coreset.kcenter import all_unique
from smt_tools.coreset.spatial import SpatialTerm, cb_spatial, fa_spatial


def budget_size(n_candidates: int, budget: float, mode: BudgetMode) -> int:
    """Number of tiles to select.

    fraction: ``floor(budget · n + 0.5)`` (round half up), at least 1; budget in (0, 1].
    count: ``budget`` itself, an integer in 1..n. Raises ValueError otherwise.
    """
    if n_candidates <= 0:
        raise ValueError("no candidate tiles to select from")
    if mode == "fraction":
        if not 0 < budget <= 1:
            raise ValueError(f"a fraction budget must be in (0, 1]; got {budget}")
        return max(1, min(n_candidates, math.floor(budget * n_candidates + 0.5)))
    if mode == "count":
        if budget != int(budget) or budget < 1:
            raise ValueError(f"a count budget must be a whole number >= 1; got {budget}")
        if int(budget) > n_candidates:
            raise ValueError(
                f"budget {int(budget)} is larger than the {n_candidates} included tiles"
            )
        return int(budget)
    raise ValueError(f"budget_mode must be fraction or count; got {mode!r}")


def lc_fd_cutoff(cutoff: float, budget: int) -> int:
    """``lc_fd_cutoff_m``: a value < 1 is a fraction of the budget, else a count (<= budget)."""
    if cutoff < 0:
        raise ValueError(f"lc_fd_cutoff_m must be >= 0; got {cutoff}")
    m = math.floor(cutoff * budget + 0.5) if cutoff < 1 else int(cutoff)
    return min(m, budget)


def standardise_block(x: np.ndarray) -> np.ndarray:
    """Centre the rows and scale so the mean squared row norm is 1. (n, d) float64."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0, keepdims=True)
    ms = float(np.einsum("ij,ij->i", xc, xc).mean()) if len(xc) else 0.0
    return xc / math.sqrt(ms) if ms > 0 else xc


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). (n, d) float32 input stays float32."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def pca_project(
    x: np.ndarray, dim: int, random_state: int = 0, sample_size: int = 20_000
) -> np.ndarray:
    """Project rows onto the top ``dim`` principal axes. (n, dim) float64.

    The axes are the leading eigenvectors of the covariance of a seeded sample of at most
    ``sample_size`` rows (exact eigendecomposition, signs fixed so each axis' largest
    component is positive): deterministic, and ~1 s at 155k x 768 where a full-data
    randomized SVD takes tens of seconds on 2 cores.
    """
    n = x.shape[0]
    if n > sample_size:
        rng = np.random.default_rng(random_state)
        rows = np.sort(rng.choice(n, size=sample_size, replace=False))
        xs = np.asarray(x[rows], dtype=np.float64)
    else:
        xs = np.asarray(x, dtype=np.float64)
    mean = xs.mean(axis=0)
    xs = xs - mean
    cov = xs.T @ xs / max(1, xs.shape[0] - 1)
    vals, vecs = np.linalg.eigh(cov)
    axes = vecs[:, np.argsort(vals)[::-1][:dim]]
    flip = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    axes = axes * np.where(flip == 0, 1.0, flip)
    out = np.empty((n, axes.shape[1]), dtype=np.float64)
    for start in range(0, n, 32_768):
        part = np.asarray(x[start : start + 32_768], dtype=np.float64) - mean
        out[start : start + 32_768] = part @ axes
    return out


def feature_space(
    embeddings: np.ndarray,
    centroids_xy: np.ndarray | None = None,
    spatial_weight: float = 0.0,
    pca_dim: int | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """The space fd and kcenter work in. (n, d' [+ 2]) float64.

    embeddings: (n, d) rows, L2-normalised (cosine geometry, as for uniqueness), optionally
    reduced by a seeded sample PCA (:func:`pca_project`) to ``pca_dim`` dimensions, then standardised
    (:func:`standardise_block`). With ``spatial_weight > 0`` the tile centroids (n, 2) in a
    projected CRS (metres) are standardised the same way, multiplied by ``spatial_weight`` and
    appended: weight 1 gives space and appearance equal mean squared contribution.
    Rows must be in a canonical (tile_id) order for a row-order independent result.
    """
    x = l2_normalise(embeddings)
    if pca_dim is not None and pca_dim < x.shape[1] and x.shape[0] > pca_dim:
        x = pca_project(x, pca_dim, random_state)
    block = standardise_block(x)
    if spatial_weight > 0:
        if centroids_xy is None:
            raise ValueError("spatial_weight > 0 needs tile centroids")
        xy = standardise_block(np.asarray(centroids_xy, dtype=np.float64))
        block = np.hstack([block, spatial_weight * xy])
    return block


@dataclass(frozen=True)
class CoresetParams:
    """Everything :func:`select_coreset` needs besides the data (from the ``coreset:`` config)."""

    method: CoresetMethod
    budget: float
    budget_mode: BudgetMode = DEFAULT_BUDGET_MODE
    spatial_weight: float = 0.0
    lc_fd_cutoff_m: float = 0.5
    fa_cb_lambda: float = 0.5
    cb_growth: float = 0.02
    kcenter_candidates: int = 1024
    pca_dim: int | None = 32
    fd_k: int | None = None
    fd_k_min: int = 2
    fd_k_max: int = 10
    fd_sample_size: int = 20_000
    fd_use_vendi: bool = False
    fd_vendi_delta: float = 0.01
    random_state: int = 0
    device: Device = "cpu"


@dataclass
class CoresetSelection:
    """Result for n tiles.

    scores: (n,) float64 in [0, 1], NaN for non-candidates (excluded tiles);
    selected: (n,) bool, exactly ``budget`` True, never on an excluded tile;
    pick_order: (budget,) int64 positions of the selected tiles, best first;
    info: method details (chosen k, cutoff m, ...);
    step: (n,) object, method hybrid: the step that picked each tile (``""``: none), else None.
    """

    scores: np.ndarray
    selected: np.ndarray
    pick_order: np.ndarray
    budget: int
    info: dict[str, Any] = field(default_factory=dict)
    step: np.ndarray | None = None


def select_coreset(
    params: CoresetParams,
    tile_ids: np.ndarray,
    eligible: np.ndarray,
    counts: np.ndarray,
    class_entropy: np.ndarray,
    embeddings: np.ndarray | None = None,
    centroids_xy: np.ndarray | SpatialTerm | None = None,
) -> CoresetSelection:
    """Score all candidate tiles with ``params.method`` and select the top ``budget``.

    tile_ids: (n,) int64 unique; eligible: (n,) bool (False = excluded, never selected);
    counts: (n, C) class pixel counts; class_entropy: (n,) float64 (natural log);
    embeddings: (n, d) float (rows of ineligible tiles may be NaN), needed by
    :data:`EMBEDDING_METHODS`; centroids_xy: (n, 2) projected tile centres, needed when
    ``spatial_weight > 0``, or a :class:`SpatialTerm` (spatial cb / fa, and those centres).
    """
    ids_all = np.asarray(tile_ids, dtype=np.int64)
    n_all = ids_all.size
    elig = np.asarray(eligible, dtype=bool)
    _check_inputs(params, ids_all, elig, embeddings)
    # Canonical candidate order: ascending tile_id.
    cand = np.flatnonzero(elig)
    cand = cand[np.argsort(ids_all[cand], kind="stable")]
    b = budget_size(cand.size, params.budget, params.budget_mode)
    spatial = centroids_xy if isinstance(centroids_xy, SpatialTerm) else None
    xy = centroids_xy.xy if isinstance(centroids_xy, SpatialTerm) else centroids_xy
    c = _Candidates(params, cand, ids_all[cand], counts, class_entropy, embeddings, xy, spatial)
    info: dict[str, Any] = {"method": params.method, "device": params.device}
    s = _method_scores(c, b, info)
    top = scorers.order_by_score(s, c.ids)[:b]
    scores = np.full(n_all, np.nan, dtype=np.float64)
    scores[cand] = s
    selected = np.zeros(n_all, dtype=bool)
    selected[cand[top]] = True
    return CoresetSelection(
        scores=scores, selected=selected, pick_order=cand[top], budget=b, info=info
    )


def _check_inputs(
    params: CoresetParams, ids_all: np.ndarray, elig: np.ndarray, embeddings: np.ndarray | None
) -> None:
    """ValueError for misshapen or duplicate inputs, an unknown method, missing embeddings, or
    a spatial weight on a method that has no feature space."""
    n_all = ids_all.size
    if elig.shape != (n_all,):
        raise ValueError(f"eligible has shape {elig.shape}, expected ({n_all},)")
    if not all_unique(ids_all):
        raise ValueError("tile_ids must be unique")
    if params.method not in CORESET_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(CORESET_METHODS)}; got {params.method!r}"
        )
    if params.method == "hybrid":
        raise ValueError("method hybrid runs steps: use smt_tools.coreset.hybrid.select_hybrid")
    if params.method in EMBEDDING_METHODS and embeddings is None:
        raise ValueError(f"method {params.method} needs embeddings")
    if params.spatial_weight > 0 and params.method not in SPATIAL_METHODS:
        raise ValueError(
            f"spatial_weight applies to {', '.join(sorted(SPATIAL_METHODS))}; got method "
            f"{params.method}"
        )


@dataclass(frozen=True)
class _Candidates:
    """The candidate rows (``cand``: positions in tile_id order, ``ids``: their tile ids) and
    the inputs the scorers read, taken at those rows on demand."""

    params: CoresetParams
    cand: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    class_entropy: np.ndarray
    embeddings: np.ndarray | None
    centroids_xy: np.ndarray | None
    spatial: SpatialTerm | None = None

    def emb(self) -> np.ndarray:
        assert self.embeddings is not None
        e = np.asarray(self.embeddings)[self.cand]
        if not np.isfinite(e).all():
            raise ValueError("embeddings contain NaN/inf for candidate tiles")
        return e

    def space(self, emb: np.ndarray | None = None) -> np.ndarray:
        p = self.params
        xy = None if self.centroids_xy is None else np.asarray(self.centroids_xy)[self.cand]
        e = self.emb() if emb is None else emb
        return feature_space(e, xy, p.spatial_weight, p.pca_dim, p.random_state)

    def fd(self, info: dict[str, Any]) -> np.ndarray:
        p = self.params
        kw: dict[str, Any] = {
            "k": p.fd_k,
            "k_min": p.fd_k_min,
            "k_max": p.fd_k_max,
            "sample_size": p.fd_sample_size,
            "random_state": p.random_state,
        }
        vendi = p.fd_use_vendi and p.fd_k is None  # §10 "Vendi score": where diversity levels off
        emb = self.emb() if vendi else None
        x = self.space(emb)
        if emb is not None:
            from smt_tools.coreset.vendi import select_k_vendi

            kw["k"], curve = select_k_vendi(
                x,
                emb,
                self.ids,
                k_min=p.fd_k_min,
                k_max=p.fd_k_max,
                delta=p.fd_vendi_delta,
                sample_size=p.fd_sample_size,
                random_state=p.random_state,
            )
            info["fd_k_rule"] = "vendi"
            info["fd_vendi_by_k"] = {str(kk): v for kk, v in curve.items()}
        if p.device == "cuda":
            from smt_tools.coreset import gpu

            order, _labels, k = gpu.fd_order_torch(x, self.ids, **kw)
        else:
            order, _labels, k = scorers.fd_order(x, self.ids, **kw)
        info["fd_k"] = k
        return order

    def cb(self, info: dict[str, Any]) -> np.ndarray:
        # float64 once here (the int64 gather is freed before the greedy runs)
        c = np.asarray(self.counts)[self.cand].astype(np.float64)
        growth = self.params.cb_growth
        if self.spatial is not None and self.spatial.cb:  # §10 spatial cb (CPU only)
            order = cb_spatial(c, self.ids, self.cand, self.spatial, growth, info)
            return scorers.order_to_scores(order)
        if self.params.device == "cuda":
            from smt_tools.coreset import gpu

            return scorers.order_to_scores(gpu.cb_order_torch(c, self.ids, growth))
        return scorers.order_to_scores(scorers.cb_order(c, self.ids, growth))

    def fa(self, info: dict[str, Any]) -> np.ndarray:
        s = scorers.fa_scores(self.emb())
        if self.spatial is not None and self.spatial.fa:  # §10 spatial fa
            return scorers.order_to_scores(fa_spatial(s, self.ids, self.cand, self.spatial, info))
        return s

    def lc(self) -> np.ndarray:
        h = np.asarray(self.class_entropy)[self.cand]
        return scorers.lc_scores(h, np.asarray(self.counts).shape[1])

    def kcenter(self, b: int) -> np.ndarray:
        x = self.space()
        n_cand = self.params.kcenter_candidates
        if self.params.device == "cuda":
            from smt_tools.coreset import gpu

            order = gpu.kcenter_order_torch(x, self.ids, b, n_cand)
        else:
            order = scorers.kcenter_order(x, self.ids, b, n_cand)
        return scorers.order_to_scores(order)


def _method_scores(c: _Candidates, b: int, info: dict[str, Any]) -> np.ndarray:
    """(n candidates,) float64 scores of ``c.params.method``; method details go into ``info``."""
    params = c.params
    method = params.method
    if method == "lc":
        return c.lc()
    if method == "cb":
        return c.cb(info)
    if method == "fa":
        return c.fa(info)
    if method == "fd":
        return scorers.order_to_scores(c.fd(info))
    if method == "lc_fd":
        m = lc_fd_cutoff(params.lc_fd_cutoff_m, b)
        info["lc_fd_m"] = m
        return scorers.order_to_scores(scorers.lc_fd_order(c.fd(info), c.lc(), c.ids, m))
    if method == "fa_cb":
        n = c.cand.size
        lam = params.fa_cb_lambda
        if not 0 <= lam <= 1:
            raise ValueError(f"fa_cb_lambda must be in [0, 1]; got {lam}")
        s_fa = c.fa(info) if lam > 0 else np.zeros(n)
        s_cb = c.cb(info) if lam < 1 else np.zeros(n)
        return lam * s_fa + (1.0 - lam) * s_cb
    if method == "kcenter":
        return c.kcenter(b)
    return scorers.random_scores(c.ids, params.random_state)  # random
