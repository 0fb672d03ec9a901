"""Visual uniqueness: mean cosine distance to the k nearest OTHER tiles (docs/algorithms.md §7).

One interface, four backends, and ``auto`` (:func:`resolve_backend`, the default):

- ``torch``: exact, chunked matmul + top-k, on the GPU when torch sees one, else the same code
  on the CPU (:mod:`smt_tools.curation.knn_torch`; optional package ``torch``);
- ``sklearn``: exact, brute-force cosine (scikit-learn ``NearestNeighbors``);
- ``faiss``: exact, ``IndexFlatIP`` on L2-normalised rows (optional package ``faiss-cpu``);
- ``hnsw``: approximate, hnswlib inner-product graph (optional package ``hnswlib``),
  ``M`` / ``ef_construction`` / ``ef`` configurable.

``auto`` is ``torch`` on a GPU; on the CPU ``hnsw`` when hnswlib is installed, else ``faiss``,
else ``sklearn``.

The tail pass (approximate searches: ``hnsw``, or any backend with ``pca_dim``): a missed
neighbour can only make a tile look MORE unique, so the tiles with the highest approximate
scores are the ones to check. The neighbours of the top ``tail_fraction`` of tiles by
approximate score are recomputed exactly (brute force), and the pass widens
(:data:`TAIL_STEP_ROWS` at a time, up to :data:`TAIL_MAX_WIDEN` times its start) until it proves
that the top :data:`TAIL_CERTIFIED` of the final scores are the exact scores of the exact top
tiles (see :func:`_tail_pass`).

Optional ``pca_dim``: a seeded randomized PCA is fitted on the rows, rows are projected and
re-normalised, and the index searches in that space. Whatever the search space, the returned
distances are recomputed in the ORIGINAL space for every candidate, and candidates are
re-ranked by them, so scores are exact cosine distances of the neighbours found. With
``pca_dim`` the search returns more candidates than ``k`` (see :func:`candidate_count`), which
is what keeps recall high against neighbours in the original space.

Self is removed by identity (``ids``), never by assuming it is the first column: approximate
indexes, and exact ones with duplicates, may return self anywhere or not at all. When self is
absent the farthest candidate is dropped instead, so every row keeps ``k`` other tiles.

Cosine distance is ``1 - cos`` on unit rows; bitwise-identical rows are set to exactly 0, so
exact duplicates score exactly 0 (and orthogonal vectors exactly 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from smt_tools.choices import (
    DEFAULT_KNN_BACKEND,
    DEFAULT_KNN_PRECISION,
    KNN_BACKENDS,
    KNN_PRECISIONS,
    KnnBackend,
    KnnPrecision,
)
from smt_tools.config.balanced import HNSW_EF, HNSW_EF_CONSTRUCTION, HNSW_M, TAIL_FRACTION
from smt_tools.errors import InputDataError, missing_dependency

#: Extra candidates per query when searching in a PCA space (re-ranked in the original space).
PCA_CANDIDATE_FACTOR = 4

#: Rows sampled (seeded) to fit the optional PCA.
PCA_FIT_ROWS = 20_000

#: The top share of uniqueness scores the tail pass proves exact (when it can).
TAIL_CERTIFIED = 0.01

#: The tail pass widens until the proof holds, up to this many times its starting share ...
TAIL_MAX_WIDEN = 4

#: ... by this many rows at a time.
TAIL_STEP_ROWS = 1024

#: Query rows per block of the tail pass's brute force ((rows, n) float32 similarities).
TAIL_BLOCK_ROWS = 256


def resolve_backend(name: str) -> str:
    """The backend a run uses: ``name`` itself, or for ``auto`` the first that fits this
    install: ``torch`` when torch sees a CUDA GPU; else ``hnsw`` when hnswlib imports; else
    ``faiss`` when faiss imports; else ``sklearn`` (a core dependency)."""
    if name not in KNN_BACKENDS:
        raise InputDataError(
            f"uniqueness.backend must be one of {', '.join(KNN_BACKENDS)}; got {name!r}"
        )
    if name != "auto":
        return name
    from smt_tools.curation.knn_torch import cuda_available

    if cuda_available():
        return "torch"
    for backend, module in (("hnsw", "hnswlib"), ("faiss", "faiss")):
        if _importable(module):
            return backend
    return "sklearn"


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except (ImportError, OSError):
        return False
    return True


def candidate_count(k: int, n: int, pca_dim: int | None) -> int:
    """Neighbours asked from the index per query: ``k + 1`` (self included), or more with PCA."""
    want = k + 1 if pca_dim is None else max(k + 1, PCA_CANDIDATE_FACTOR * (k + 1))
    return min(want, n)


def _validate(x: np.ndarray, k: int, precision: str, ids: np.ndarray | None) -> np.ndarray:
    if precision not in KNN_PRECISIONS:
        raise InputDataError(
            f"uniqueness.precision must be one of {', '.join(KNN_PRECISIONS)}; got {precision!r}"
        )
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InputDataError(f"embeddings must be a 2-D (n, d) array; got shape {arr.shape}")
    n = arr.shape[0]
    if k < 1:
        raise InputDataError(f"uniqueness.k_neighbors must be >= 1; got {k}")
    if n < k + 1:
        raise InputDataError(
            f"uniqueness needs more tiles than k_neighbors: {n} tiles, k_neighbors = {k}; "
            "lower uniqueness.k_neighbors or include more tiles"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise InputDataError(
            f"{int(bad.sum())} embedding rows contain NaN/inf (first rows {where}); "
            "recompute them (embed --rebuild) — NaN scores are never ranked"
        )
    xu = arr.astype(np.float32, copy=True)  # unit rows
    norms = np.linalg.norm(xu, axis=1)
    zero = norms == 0
    if zero.any():
        where = np.flatnonzero(zero)[:5].tolist()
        raise InputDataError(
            f"{int(zero.sum())} embedding rows are all zeros (first rows {where}); "
            "a zero vector has no direction, so its cosine distance is undefined"
        )
    xu /= norms[:, None].astype(np.float32)
    if ids is not None:
        ids_arr = np.asarray(ids)
        if ids_arr.shape != (n,):
            raise InputDataError(f"ids must have shape ({n},); got {ids_arr.shape}")
        if len(np.unique(ids_arr)) != n:
            raise InputDataError("ids must be unique (one id per embedding row)")
    return xu


def _pca(xu: np.ndarray, pca_dim: int, random_state: int) -> np.ndarray:
    """Seeded randomized PCA to ``pca_dim`` columns, rows re-normalised (float32).

    The projection is fitted on a seeded sample of at most :data:`PCA_FIT_ROWS` rows (the
    principal directions of 155k embeddings are well estimated from 20k) and applied to all.
    """
    from sklearn.decomposition import PCA

    n, d = xu.shape
    dim = min(pca_dim, n, d)
    x32 = np.ascontiguousarray(xu, dtype=np.float32)  # no copy when already float32
    rng = np.random.default_rng(random_state)
    fit_rows = (
        np.sort(rng.choice(n, size=PCA_FIT_ROWS, replace=False)) if n > PCA_FIT_ROWS else None
    )
    pca = PCA(n_components=dim, svd_solver="randomized", random_state=random_state)
    pca.fit(x32 if fit_rows is None else x32[fit_rows])
    z = (x32 - pca.mean_.astype(np.float32)) @ pca.components_.T.astype(np.float32)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(z / norms, dtype=np.float32)


# --- raw searches: (n, kq) int64 positional labels (-1 = none), self possibly included ---------


def _search_sklearn(z: np.ndarray, kq: int, *, num_threads: int, **_unused: object) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(
        n_neighbors=kq, metric="cosine", algorithm="brute", n_jobs=num_threads or -1
    )
    nn.fit(z)
    _, labels = nn.kneighbors(z, return_distance=True)
    return np.asarray(labels, dtype=np.int64)


def _search_faiss(z: np.ndarray, kq: int, *, num_threads: int, **_unused: object) -> np.ndarray:
    try:
        import faiss
    except ImportError:
        raise missing_dependency("faiss-cpu", "faiss", "uniqueness.backend: faiss") from None
    if num_threads > 0:
        faiss.omp_set_num_threads(num_threads)
    index = faiss.IndexFlatIP(z.shape[1])
    index.add(z)
    _, labels = index.search(z, kq)
    return np.asarray(labels, dtype=np.int64)


def _search_hnsw(
    z: np.ndarray,
    kq: int,
    *,
    M: int,
    ef_construction: int,
    ef: int,
    random_state: int,
    num_threads: int,
    **_unused: object,
) -> np.ndarray:
    try:
        import hnswlib
    except ImportError:
        raise missing_dependency("hnswlib", "hnsw", "uniqueness.backend: hnsw") from None
    n, d = z.shape
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(
        max_elements=n, M=M, ef_construction=max(ef_construction, kq), random_seed=random_state
    )
    # An explicit count: hnswlib's "-1 = all cores" ran single-threaded here (BENCHMARKS.md).
    threads = num_threads if num_threads > 0 else _available_cores()
    index.set_num_threads(threads)
    index.add_items(z, np.arange(n, dtype=np.int64), num_threads=threads)
    index.set_ef(max(ef, kq))
    labels, _ = index.knn_query(z, k=kq, num_threads=threads)
    return np.asarray(labels, dtype=np.int64)


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _search_torch(
    z: np.ndarray, kq: int, *, precision: str, num_threads: int, **_unused: object
) -> np.ndarray:
    from smt_tools.curation.knn_torch import search_torch

    return search_torch(z, kq, precision=precision, num_threads=num_threads)


_SEARCH: dict[str, Callable[..., np.ndarray]] = {
    "torch": _search_torch,
    "sklearn": _search_sklearn,
    "faiss": _search_faiss,
    "hnsw": _search_hnsw,
}


def _duplicate_groups(xu: np.ndarray) -> np.ndarray:
    """(n,) int64 group of bitwise-identical rows (equal rows, equal group)."""
    rows = np.ascontiguousarray(xu).view(np.dtype((np.void, xu.shape[1] * xu.itemsize)))[:, 0]
    _, inverse = np.unique(rows, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def _exact_distances(
    xu: np.ndarray, labels: np.ndarray, chunk: int = 256, rows: np.ndarray | None = None
) -> np.ndarray:
    """(m, kq) float64 cosine distances ``1 - x_i . x_j`` in the original space (inf for -1).

    xu: (n, d) float32 unit rows; labels: (m, kq) positions, the neighbours of rows ``rows``
    (default: all rows, m = n). Bitwise-identical rows get exactly 0 (no rounding residue),
    so exact duplicates score 0; orthogonal rows get exactly 1.
    """
    m, kq = labels.shape
    query = np.arange(m, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.full((m, kq), np.inf, dtype=np.float64)
    group = _duplicate_groups(xu)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        q = query[start:stop]
        lab = labels[start:stop]
        valid = lab >= 0
        safe = np.where(valid, lab, 0)
        sim = np.matmul(xu[safe], xu[q, :, None])[..., 0].astype(np.float64)
        d = np.clip(1.0 - sim, 0.0, 2.0)
        d[group[safe] == group[q, None]] = 0.0
        out[start:stop] = np.where(valid, d, np.inf)
    return out


def _remove_self(
    labels: np.ndarray,
    dists: np.ndarray,
    k: int,
    ids: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row's own entry by identity, sort by distance, keep ``k`` (m, k) columns.

    labels: (m, kq) int64 positional labels, -1 for "no result"; dists: (m, kq) float64;
    rows: the (m,) positions the rows are the candidates of (default: all, m = n).
    When a row's self is not among its candidates, its farthest candidate is dropped.
    """
    m = labels.shape[0]
    own = np.arange(m, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if ids is None:
        is_self = labels == own[:, None]
    else:
        id_arr = np.asarray(ids)
        is_self = (labels >= 0) & (id_arr[np.where(labels >= 0, labels, 0)] == id_arr[own, None])
    d = np.where(is_self | (labels < 0), np.inf, dists)
    lab = np.where(is_self, -1, labels)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    out_lab = np.take_along_axis(lab, order, axis=1)
    out_d = np.take_along_axis(d, order, axis=1)
    missing = (out_lab < 0) | ~np.isfinite(out_d)
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))
        raise InputDataError(
            f"the kNN index returned fewer than k = {k} other tiles for {len(rows)} rows "
            f"(first row {int(rows[0])}); raise uniqueness.ef or use an exact backend"
        )
    return out_lab.astype(np.int64), out_d


def _brute_labels(xu: np.ndarray, rows: np.ndarray, kq: int) -> np.ndarray:
    """(m, kq) int64 positions of the ``kq`` largest inner products of rows ``rows`` with all
    rows (unordered; self included): exact brute force in float32 blocks."""
    n = xu.shape[0]
    kq = min(kq, n)
    out = np.empty((len(rows), kq), dtype=np.int64)
    for start in range(0, len(rows), TAIL_BLOCK_ROWS):
        sim = xu[rows[start : start + TAIL_BLOCK_ROWS]] @ xu.T  # (b, n)
        out[start : start + TAIL_BLOCK_ROWS] = _top_unordered(sim, kq)
    return out


def _top_unordered(sim: np.ndarray, kq: int) -> np.ndarray:
    """(b, kq) int64 positions of each row's ``kq`` largest values, in no order. torch's
    top-k when torch is installed (about 8x faster than numpy's argpartition here), else
    numpy."""
    try:
        import torch
    except (ImportError, OSError):
        np.negative(sim, out=sim)
        return np.argpartition(sim, kq - 1, axis=1)[:, :kq]
    top = torch.topk(torch.from_numpy(sim), kq, dim=1, largest=True, sorted=False)
    return top.indices.numpy()


def _tail_pass(
    xu: np.ndarray,
    labels: np.ndarray,
    dists: np.ndarray,
    ids: np.ndarray | None,
    fraction: float,
) -> None:
    """Recompute exactly, in place, the (n, k) neighbours of the tiles with the highest
    approximate scores (mean of ``dists``).

    Approximate search only misses neighbours, and a missed neighbour is replaced by a farther
    one, so an approximate score is never below the exact score. Once the top ``m`` tiles by
    approximate score are exact, every other tile's exact score is at most the highest
    approximate score left, ``a``; if at least ``TAIL_CERTIFIED * n`` refined tiles score above
    ``a``, the top ``TAIL_CERTIFIED`` of the final scores are exact and are the exact top tiles.
    The top ``fraction`` is always refined; then :data:`TAIL_STEP_ROWS` more at a time until
    that proof holds, up to ``TAIL_MAX_WIDEN`` times ``fraction``.
    """
    n, k = labels.shape
    m_min = min(n, math.ceil(fraction * n))
    if m_min == 0:
        return
    approx = dists.mean(axis=1)
    order = np.argsort(-approx, kind="stable")
    target = min(m_min, max(1, math.ceil(TAIL_CERTIFIED * n)))
    m_max = min(n, TAIL_MAX_WIDEN * m_min)
    done, m = 0, m_min
    while True:
        rows = order[done:m]
        cand = _brute_labels(xu, rows, k + 1)
        lab, d = _remove_self(cand, _exact_distances(xu, cand, rows=rows), k, ids, rows=rows)
        labels[rows], dists[rows] = lab, d
        done = m
        left = approx[order[m]] if m < n else -np.inf
        exact_top = np.partition(dists[order[:m]].mean(axis=1), m - target)[m - target]
        if exact_top > left or m >= m_max:
            return
        m = min(m_max, m + TAIL_STEP_ROWS)


def _knn(
    x: np.ndarray,
    k: int,
    backend: str,
    ids: np.ndarray | None,
    *,
    precision: str,
    tail_fraction: float,
    pca_dim: int | None,
    random_state: int,
    **search: object,
) -> tuple[np.ndarray, np.ndarray]:
    name = resolve_backend(backend)
    if not 0 <= tail_fraction <= 1:
        raise InputDataError(f"uniqueness.tail_fraction must be in [0, 1]; got {tail_fraction}")
    xu = _validate(x, k, precision, ids)
    n, dim = xu.shape
    kq = candidate_count(k, n, pca_dim)
    projected = pca_dim is not None and pca_dim < dim
    z = (
        _pca(xu, pca_dim, random_state)
        if pca_dim is not None and projected
        else np.ascontiguousarray(xu, dtype=np.float32)
    )
    labels = _SEARCH[name](z, kq, precision=precision, random_state=random_state, **search)
    dists = _exact_distances(xu, labels)
    idx, dist = _remove_self(labels, dists, k, ids)
    if (name == "hnsw" or projected) and tail_fraction > 0:
        _tail_pass(xu, idx, dist, ids, tail_fraction)
    return idx, dist


def knn_search(
    x: np.ndarray,
    k: int,
    backend: KnnBackend | str = DEFAULT_KNN_BACKEND,
    *,
    ids: np.ndarray | None = None,
    M: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef: int = HNSW_EF,
    pca_dim: int | None = None,
    random_state: int = 0,
    num_threads: int = 0,
    precision: KnnPrecision | str = DEFAULT_KNN_PRECISION,
    tail_fraction: float = TAIL_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest OTHER rows of every row, by cosine distance.

    x: (n, d) float embeddings (normalised here again; NaN/inf or zero rows are errors).
    backend: one of ``KNN_BACKENDS``; ``auto`` is resolved by :func:`resolve_backend`.
    ids: (n,) unique identities used to recognise self (default: row positions).
    precision: the torch backend's matmul on a GPU (``fp32``; ``tf32``/``bf16`` re-ranked in
    fp32). tail_fraction: approximate searches only (hnsw, pca_dim): the share of rows, highest
    approximate scores first, whose neighbours are recomputed exactly (0: off).
    Returns (n, k) int64 positional neighbour indices and (n, k) float32 cosine distances
    (``1 - cos``, computed in the original space), nearest first.
    """
    idx, dist = _knn(
        x,
        k,
        backend,
        ids,
        precision=precision,
        tail_fraction=tail_fraction,
        pca_dim=pca_dim,
        M=M,
        ef_construction=ef_construction,
        ef=ef,
        random_state=random_state,
        num_threads=num_threads,
    )
    return idx, dist.astype(np.float32)


def uniqueness_scores(
    x: np.ndarray,
    k: int,
    backend: KnnBackend | str = DEFAULT_KNN_BACKEND,
    *,
    ids: np.ndarray | None = None,
    M: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef: int = HNSW_EF,
    pca_dim: int | None = None,
    random_state: int = 0,
    num_threads: int = 0,
    precision: KnnPrecision | str = DEFAULT_KNN_PRECISION,
    tail_fraction: float = TAIL_FRACTION,
) -> np.ndarray:
    """(n,) float64 mean cosine distance to the ``k`` nearest other rows (docs/algorithms.md §7).

    Same arguments as :func:`knn_search`. Exact duplicates score 0; 8 one-hot vectors with
    k = 1 score 1.0 each.
    """
    _, dist = _knn(
        x,
        k,
        backend,
        ids,
        precision=precision,
        tail_fraction=tail_fraction,
        pca_dim=pca_dim,
        M=M,
        ef_construction=ef_construction,
        ef=ef,
        random_state=random_state,
        num_threads=num_threads,
    )
    return dist.mean(axis=1)
