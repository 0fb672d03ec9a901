"""kNN uniqueness (docs/algorithms.md §7): known values, backend agreement, self removal by id,
the torch backend, ``auto`` resolution and the tail pass of approximate searches."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import numpy as np
import pytest

from smt_tools.config.balanced import UniquenessConfig
from smt_tools.curation import knn_torch
from smt_tools.curation import uniqueness as U
from smt_tools.errors import InputDataError, MissingDependencyError

BACKENDS = ["sklearn", "faiss", "hnsw", "torch"]


def _clusters(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    x = centres[rng.integers(0, 6, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_k1_scores_exactly_one(backend: str) -> None:
    x = np.eye(8, dtype=np.float32)
    s = U.uniqueness_scores(x, 1, backend)
    assert s.dtype == np.float64 and s.shape == (8,)
    assert np.array_equal(s, np.ones(8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_vectors_score_exactly_zero(backend: str) -> None:
    x = np.tile(np.array([[0.3, -1.2, 0.7, 2.0]], dtype=np.float32), (20, 1))
    s = U.uniqueness_scores(x, 5, backend)
    assert np.array_equal(s, np.zeros(20))


@pytest.mark.parametrize("backend", BACKENDS)
def test_outlier_scores_above_every_other_tile(backend: str) -> None:
    rng = np.random.default_rng(1)
    base = np.array([1.0, 0.0, 0.0, 0.0])
    x = base + 0.05 * rng.normal(size=(30, 4))
    x = np.vstack([x, [0.0, 0.0, 0.0, 1.0]]).astype(np.float32)
    s = U.uniqueness_scores(x, 3, backend)
    assert s[-1] > s[:-1].max()
    assert s[-1] == pytest.approx(
        np.mean(np.sort(1 - x[:-1] @ x[-1] / np.linalg.norm(x[:-1], axis=1))[:3]), abs=1e-6
    )


def test_all_backends_agree_on_a_small_set() -> None:
    x = _clusters()
    # hnsw on one thread: a multi-threaded build is not reproducible from machine to machine
    res = {b: U.knn_search(x, 5, b, random_state=0, num_threads=1) for b in BACKENDS}
    ref_idx, ref_d = res["sklearn"]
    assert ref_idx.shape == (300, 5) and ref_idx.dtype == np.int64 and ref_d.dtype == np.float32
    assert not (ref_idx == np.arange(300)[:, None]).any()
    for b in ("faiss", "torch"):  # exact: the same neighbours at the same distances
        idx, d = res[b]
        np.testing.assert_allclose(d, ref_d, atol=1e-6)
        assert (idx == ref_idx).mean() > 0.99
    # hnsw is approximate: it may miss a neighbour, never report one closer than the truth
    idx, d = res["hnsw"]
    assert (idx == ref_idx).mean() > 0.98
    assert (d >= ref_d - 1e-6).all()
    # distances are 1 - cos in the original space, nearest first
    cos = np.einsum("id,ikd->ik", x, x[ref_idx])
    np.testing.assert_allclose(ref_d, 1 - cos, atol=1e-5)
    assert (np.diff(ref_d, axis=1) >= 0).all()
    scores = {b: U.uniqueness_scores(x, 5, b, num_threads=1) for b in BACKENDS}
    np.testing.assert_allclose(scores["faiss"], scores["sklearn"], atol=1e-6)
    np.testing.assert_allclose(scores["torch"], scores["sklearn"], atol=1e-6)
    assert (scores["hnsw"] >= scores["sklearn"] - 1e-6).all()
    assert np.abs(scores["hnsw"] - scores["sklearn"]).mean() < 1e-3


def test_pca_path_keeps_original_space_distances_and_recall() -> None:
    rng = np.random.default_rng(3)
    low = _clusters(n=400, d=8, seed=3).astype(np.float64)  # intrinsic dimension 8 in 64-d
    x = low @ rng.normal(size=(8, 64)) + 0.01 * rng.normal(size=(400, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    exact_idx, _ = U.knn_search(x, 5, "sklearn")
    idx, d = U.knn_search(x, 5, "hnsw", pca_dim=16, random_state=7)
    cos = np.einsum("id,ikd->ik", x, x[idx])
    np.testing.assert_allclose(d, 1 - cos, atol=1e-5)  # re-ranked in the original space
    hits = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, exact_idx, strict=True)])
    assert hits >= 0.95
    # seeded: same result twice
    idx2, _ = U.knn_search(x, 5, "faiss", pca_dim=16, random_state=7)
    idx3, _ = U.knn_search(x, 5, "faiss", pca_dim=16, random_state=7)
    assert np.array_equal(idx2, idx3)


def test_self_removed_by_id_when_index_returns_self_out_of_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = np.eye(4, dtype=np.float32)

    def fake(z: np.ndarray, kq: int, **_: object) -> np.ndarray:
        # self in the LAST column for row 0, in the middle for row 1, absent for row 2
        return np.array([[1, 2, 0], [0, 1, 3], [0, 1, 3], [3, 2, 1]], dtype=np.int64)[:, :kq]

    monkeypatch.setitem(U._SEARCH, "hnsw", fake)
    idx, d = U.knn_search(x, 2, "hnsw", tail_fraction=0.0)  # the index's answer, unchanged
    assert idx.tolist() == [[1, 2], [0, 3], [0, 1], [2, 1]]
    assert np.array_equal(d, np.ones((4, 2), dtype=np.float32))
    # with explicit ids (tile ids), same answer
    idx_ids, _ = U.knn_search(x, 2, "hnsw", ids=np.array([40, 10, 30, 20]), tail_fraction=0.0)
    assert np.array_equal(idx_ids, idx)


def test_remove_self_keeps_duplicate_that_is_not_self() -> None:
    labels = np.array([[1, 0], [1, 0]], dtype=np.int64)
    dists = np.zeros((2, 2))
    idx, d = U._remove_self(labels, dists, 1)
    assert idx.tolist() == [[1], [0]]
    assert d.tolist() == [[0.0], [0.0]]


def test_invalid_inputs_are_clear_errors() -> None:
    x = _clusters(n=10)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        U.uniqueness_scores(bad, 2, "sklearn")
    with pytest.raises(InputDataError, match="more tiles than k_neighbors"):
        U.uniqueness_scores(x, 10, "sklearn")
    with pytest.raises(InputDataError, match="backend must be one of"):
        U.uniqueness_scores(x, 2, "annoy")
    zero = x.copy()
    zero[0] = 0
    with pytest.raises(InputDataError, match="all zeros"):
        U.uniqueness_scores(zero, 2, "sklearn")
    with pytest.raises(InputDataError, match="unique"):
        U.uniqueness_scores(x, 2, "sklearn", ids=np.zeros(10, dtype=np.int64))


@pytest.mark.parametrize(
    ("backend", "module", "package"),
    [("hnsw", "hnswlib", "hnswlib"), ("faiss", "faiss", "faiss-cpu")],
)
def test_missing_optional_package_names_pip_command(
    monkeypatch: pytest.MonkeyPatch, backend: str, module: str, package: str
) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == module:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(
        MissingDependencyError, match=rf"pip install \"smt-tools\[{backend}\]\""
    ) as ei:
        U.uniqueness_scores(_clusters(n=10), 2, backend)
    assert package in str(ei.value)


def test_row_order_does_not_change_exact_scores() -> None:
    x = _clusters(n=200, seed=5)
    perm = np.random.default_rng(0).permutation(200)
    for b in ("sklearn", "faiss"):
        s = U.uniqueness_scores(x, 4, b)
        sp = U.uniqueness_scores(x[perm], 4, b)
        np.testing.assert_allclose(sp, s[perm], atol=1e-7)


def test_single_thread_hnsw_is_reproducible() -> None:
    x = _clusters(n=500, d=32, seed=9)
    a = U.knn_search(x, 5, "hnsw", num_threads=1, random_state=3, M=8, ef_construction=16, ef=8)
    b = U.knn_search(x, 5, "hnsw", num_threads=1, random_state=3, M=8, ef_construction=16, ef=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --- torch backend ------------------------------------------------------------------------


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import m`` raise ImportError for each of ``modules`` (and their submodules)."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in modules:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    for m in modules:
        monkeypatch.delitem(sys.modules, m, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_torch_equals_exact_backends_neighbours_and_distances(precision: str) -> None:
    x = _clusters(n=500, d=32, seed=11)
    ref_idx, ref_d = U.knn_search(x, 6, "sklearn")
    f_idx, f_d = U.knn_search(x, 6, "faiss")
    t_idx, t_d = U.knn_search(x, 6, "torch", precision=precision)  # the CPU: always fp32
    assert np.array_equal(t_idx, ref_idx) and np.array_equal(t_idx, f_idx)
    assert np.array_equal(t_d, ref_d) and np.array_equal(t_d, f_d)
    cos = np.einsum("id,ikd->ik", x.astype(np.float64), x[t_idx].astype(np.float64))
    np.testing.assert_allclose(t_d, 1 - cos, atol=1e-5)
    # row order does not change the scores
    perm = np.random.default_rng(2).permutation(500)
    s = U.uniqueness_scores(x, 6, "torch")
    np.testing.assert_allclose(U.uniqueness_scores(x[perm], 6, "torch"), s[perm], atol=1e-7)


def test_torch_blocks_give_the_same_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _clusters(n=300, d=16, seed=4)
    whole = knn_torch.search_torch(x, 6, device="cpu")
    monkeypatch.setattr(knn_torch, "CPU_BLOCK_BYTES", 4 * 300 * 7)  # 7 query rows per block
    blocked = knn_torch.search_torch(x, 6, device="cpu")
    assert blocked.shape == (300, 6) and blocked.dtype == np.int64
    assert [set(r) for r in blocked] == [set(r) for r in whole]
    assert (blocked == np.arange(300)[:, None]).any(axis=1).all()  # self among the candidates


def test_low_precision_candidates_are_reranked_in_fp32() -> None:
    torch = pytest.importorskip("torch")
    # near-ties that bf16 cannot order: all rows within about 1e-2 of one direction
    rng = np.random.default_rng(5)
    x = np.ones((200, 64)) + 1e-2 * rng.normal(size=(200, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    kq = 4
    xt = torch.from_numpy(x)
    low = torch.topk(xt.bfloat16() @ xt.bfloat16().T, 200, dim=1).indices  # all, bf16 order
    got = knn_torch._rerank(torch, xt, xt, low, kq).numpy()
    sim = x.astype(np.float64) @ x.T.astype(np.float64)
    best = -np.sort(-sim, axis=1)[:, :kq]  # the kq largest similarities, exact

    def chosen(idx: np.ndarray) -> np.ndarray:
        return -np.sort(-np.take_along_axis(sim, idx, axis=1), axis=1)

    np.testing.assert_allclose(chosen(got), best, atol=1e-6)  # fp32 re-rank: the true top kq
    assert np.abs(chosen(low[:, :kq].numpy()) - best).max() > 1e-5  # bf16 alone is not


def test_torch_duplicates_score_exactly_zero() -> None:
    x = _clusters(n=60, d=8, seed=6)
    x = np.vstack([x, x[:10]])  # rows 60..69 duplicate rows 0..9
    s = U.uniqueness_scores(x, 1, "torch", ids=np.arange(1000, 1070))
    assert np.array_equal(s[:10], np.zeros(10)) and np.array_equal(s[60:], np.zeros(10))
    assert (s[10:60] > 0).all()
    np.testing.assert_array_equal(s, U.uniqueness_scores(x, 1, "sklearn"))


def test_missing_torch_names_the_embed_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "torch")
    with pytest.raises(MissingDependencyError, match=r"pip install \"smt-tools\[embed\]\""):
        U.uniqueness_scores(_clusters(n=10), 2, "torch")


def test_unknown_precision_and_bad_tail_fraction_are_clear_errors() -> None:
    with pytest.raises(InputDataError, match="precision must be one of fp32, tf32, bf16"):
        U.uniqueness_scores(_clusters(n=10), 2, "torch", precision="fp16")
    with pytest.raises(InputDataError, match=r"tail_fraction must be in \[0, 1\]; got 1.5"):
        U.uniqueness_scores(_clusters(n=10), 2, "hnsw", tail_fraction=1.5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_torch_on_the_gpu_equals_faiss(precision: str) -> None:
    assert knn_torch.cuda_available() and U.resolve_backend("auto") == "torch"
    x = _structured(20_000, 128, 40, 12, seed=3)
    ref_idx, ref_d = U.knn_search(x, 5, "faiss")
    idx, d = U.knn_search(x, 5, "torch", precision=precision)
    np.testing.assert_allclose(d, ref_d, atol=1e-5)  # distances recomputed the same way
    assert (idx == ref_idx).mean() > 0.999  # the rest: exact ties


# --- auto ---------------------------------------------------------------------------------


def test_auto_is_the_default() -> None:
    assert UniquenessConfig().backend == "auto"
    assert U.DEFAULT_KNN_BACKEND == "auto"


def test_auto_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert U.resolve_backend("faiss") == "faiss"  # a named backend is used as named
    monkeypatch.setattr(knn_torch, "cuda_available", lambda: True)
    assert U.resolve_backend("auto") == "torch"
    monkeypatch.setattr(knn_torch, "cuda_available", lambda: False)
    assert U.resolve_backend("auto") == "hnsw"
    _hide_modules(monkeypatch, "hnswlib")
    assert U.resolve_backend("auto") == "faiss"
    _hide_modules(monkeypatch, "hnswlib", "faiss")
    assert U.resolve_backend("auto") == "sklearn"
    with pytest.raises(InputDataError, match="backend must be one of auto, torch, hnsw"):
        U.resolve_backend("annoy")


def test_auto_without_torch_or_optional_indexes_is_exact_sklearn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = _clusters(n=120, d=8, seed=8)
    ref = U.uniqueness_scores(x, 3, "sklearn")
    _hide_modules(monkeypatch, "torch", "hnswlib", "faiss")
    assert knn_torch.cuda_available() is False  # no torch: no GPU, no error
    assert U.resolve_backend("auto") == "sklearn"
    np.testing.assert_array_equal(U.uniqueness_scores(x, 3), ref)


# --- the tail pass --------------------------------------------------------------------------


def _structured(n: int, d: int, comps: int, rank: int, seed: int) -> np.ndarray:
    """Unit rows from a mixture of low-rank Gaussians (how image embeddings look)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(comps, d))
    comp = rng.integers(0, comps, n)
    bases = rng.normal(size=(comps, rank, d)) / np.sqrt(rank)
    coef = rng.normal(size=(n, rank)) * np.geomspace(1.0, 0.1, rank)
    x = centres[comp] + 0.8 * np.einsum("nr,nrd->nd", coef, bases[comp])
    x += 0.05 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _top(s: np.ndarray, share: float = 0.01) -> set[int]:
    return set(np.argsort(-s, kind="stable")[: int(np.ceil(share * len(s)))].tolist())


@pytest.mark.parametrize("tail_fraction", [0.03, 0.01])
def test_tail_pass_makes_hnsw_top_one_percent_exact(tail_fraction: float) -> None:
    x = _structured(4000, 64, 20, 8, seed=0)
    exact = U.uniqueness_scores(x, 5, "sklearn")
    tiny: dict[str, Any] = {
        "M": 16,
        "ef_construction": 64,
        "ef": 8,
        "num_threads": 1,
        "random_state": 0,
    }
    plain = U.uniqueness_scores(x, 5, "hnsw", tail_fraction=0.0, **tiny)
    assert (plain >= exact - 1e-6).all()  # a missed neighbour only ever inflates a score
    assert len(_top(plain) & _top(exact)) < 0.5 * len(_top(exact))  # tiny ef misses the tail
    fixed = U.uniqueness_scores(x, 5, "hnsw", tail_fraction=tail_fraction, **tiny)
    assert _top(fixed) == _top(exact)
    top = sorted(_top(exact))
    np.testing.assert_array_equal(fixed[top], exact[top])  # the same exact distances
    assert (fixed >= exact - 1e-6).all() and (fixed <= plain).all()


def test_tail_pass_keeps_self_removal_by_id() -> None:
    x = _structured(600, 16, 6, 4, seed=1)
    x = np.vstack([x, x[:5]])  # duplicates: self must be recognised by id, not by position
    ids = np.arange(605)[::-1] * 10
    _, exact_d = U.knn_search(x, 3, "sklearn", ids=ids)
    idx, d = U.knn_search(
        x, 3, "hnsw", ids=ids, M=4, ef_construction=8, ef=4, num_threads=1, tail_fraction=1.0
    )
    assert not (idx == np.arange(605)[:, None]).any()
    np.testing.assert_array_equal(d, exact_d)  # tail_fraction 1: every row recomputed exactly
    assert (d[:5, 0] == 0).all() and (d[600:, 0] == 0).all()  # each duplicate finds its twin
