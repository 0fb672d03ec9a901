"""kNN uniqueness (docs/algorithms.md §7): known values, backend agreement, self removal by id."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

from smt_tools.curation import uniqueness as U
from smt_tools.errors import InputDataError, MissingDependencyError

BACKENDS = ["sklearn", "faiss", "hnsw"]


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
    res = {b: U.knn_search(x, 5, b, random_state=0) for b in BACKENDS}
    ref_idx, ref_d = res["sklearn"]
    assert ref_idx.shape == (300, 5) and ref_idx.dtype == np.int64 and ref_d.dtype == np.float32
    assert not (ref_idx == np.arange(300)[:, None]).any()
    for b in ("faiss", "hnsw"):
        idx, d = res[b]
        np.testing.assert_allclose(d, ref_d, atol=1e-6)
        assert (idx == ref_idx).mean() > 0.99
    # distances are 1 - cos in the original space, nearest first
    cos = np.einsum("id,ikd->ik", x, x[ref_idx])
    np.testing.assert_allclose(ref_d, 1 - cos, atol=1e-5)
    assert (np.diff(ref_d, axis=1) >= 0).all()
    scores = {b: U.uniqueness_scores(x, 5, b) for b in BACKENDS}
    np.testing.assert_allclose(scores["faiss"], scores["sklearn"], atol=1e-6)
    np.testing.assert_allclose(scores["hnsw"], scores["sklearn"], atol=1e-6)


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
    idx, d = U.knn_search(x, 2, "hnsw")
    assert idx.tolist() == [[1, 2], [0, 3], [0, 1], [2, 1]]
    assert np.array_equal(d, np.ones((4, 2), dtype=np.float32))
    # with explicit ids (tile ids), same answer
    idx_ids, _ = U.knn_search(x, 2, "hnsw", ids=np.array([40, 10, 30, 20]))
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
