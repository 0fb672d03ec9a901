"""Vendi score (docs/algorithms.md §10): known values, invariances, fd's Vendi k rule and the
select-coreset summary's pool / selection scores."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smt_tools.config._loader import validate_mapping
from smt_tools.config.coreset import CoresetFile
from smt_tools.coreset import CoresetParams, scorers, select_coreset, vendi
from smt_tools.coreset.select import feature_space
from smt_tools.coreset.vendi import select_k_vendi, vendi_pool_and_subset, vendi_score
from smt_tools.errors import ConfigError
from tests.test_coreset import _balanced_csv, _config, _invoke, _write_cache


def _reference(x: np.ndarray) -> float:
    """The definition itself: eigenvalues of the n x n cosine-similarity matrix over n."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(xn @ xn.T / len(x)), 0, None)
    lam = lam[lam > 0]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def _entropy_exp(p: list[float]) -> float:
    return math.exp(-sum(v * math.log(v) for v in p if v > 0))


# ----------------------------------------------------------------------------- known values


@pytest.mark.parametrize(("n", "d"), [(7, 5), (3, 9), (50, 4)])
def test_identical_rows_score_one(n: int, d: int) -> None:
    row = np.random.default_rng(0).normal(size=d)
    assert vendi_score(np.tile(row, (n, 1))) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("n", "d"), [(6, 6), (4, 10), (1, 3)])
def test_orthogonal_rows_score_n(n: int, d: int) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(d, d)))
    assert vendi_score(q[:n] * 3.0) == pytest.approx(float(n), rel=1e-12)


def test_two_rows_with_cosine_half() -> None:
    # K/2 has eigenvalues (1 ± c)/2: with c = 0.5, 0.75 and 0.25
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]])
    assert vendi_score(x) == pytest.approx(_entropy_exp([0.75, 0.25]), rel=1e-12)


def test_repeated_orthogonal_rows_count_by_share() -> None:
    e = np.eye(5)
    # m orthogonal directions with equal copies: m; with 3:1 copies the shares 3/4, 1/4
    assert vendi_score(np.repeat(e[:3], 4, axis=0)) == pytest.approx(3.0, rel=1e-12)
    x = np.vstack([e[0], e[0], e[0], e[1]])
    assert vendi_score(x) == pytest.approx(_entropy_exp([0.75, 0.25]), rel=1e-12)


def test_invariant_to_row_order_and_row_scaling_and_equal_to_definition() -> None:
    rng = np.random.default_rng(3)
    for n, d in [(40, 8), (6, 20)]:  # the d x d path and the n x n path
        x = rng.normal(size=(n, d))
        ref = _reference(x)
        assert vendi_score(x) == pytest.approx(ref, rel=1e-10)
        scale = rng.choice([-1.0, 1.0], size=(n, 1)) * rng.uniform(0.01, 100.0, size=(n, 1))
        assert vendi_score((x * scale)[rng.permutation(n)]) == pytest.approx(ref, rel=1e-10)
        assert 1.0 <= ref <= min(n, d)


def test_chunked_gram_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(4).normal(size=(103, 6))
    whole = vendi_score(x)
    x32 = x.astype(np.float32)  # float32 rows (the cache) are multiplied in float32
    whole32 = vendi_score(x32)
    monkeypatch.setattr(vendi, "_CHUNK_ROWS", 10)
    assert vendi_score(x) == pytest.approx(whole, rel=1e-12)
    assert whole == pytest.approx(_reference(x), rel=1e-12)
    assert vendi_score(x32) == pytest.approx(whole32, rel=1e-6)
    assert whole32 == pytest.approx(_reference(x32.astype(np.float64)), rel=1e-6)


def test_pool_and_subset_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vendi, "_CHUNK_ROWS", 7)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 5))
    pool = rng.random(60) > 0.2
    sub = rng.random(60) > 0.5
    x[~pool] = np.nan  # rows outside the pool (excluded tiles) are never read
    p, s = vendi_pool_and_subset(x, sub, pool)
    assert p == pytest.approx(_reference(x[pool]), rel=1e-10)
    assert s == pytest.approx(_reference(x[pool & sub]), rel=1e-10)
    p_all, s_all = vendi_pool_and_subset(x[pool], sub[pool])
    assert (p_all, s_all) == pytest.approx((p, s), rel=1e-12)


def test_bad_input_is_a_clear_value_error() -> None:
    x = np.ones((5, 3))
    x[3] = 0.0
    with pytest.raises(ValueError, match="embedding row 3 is zero or not finite"):
        vendi_score(x)
    with pytest.raises(ValueError, match="2-D"):
        vendi_score(np.ones(4))
    with pytest.raises(ValueError, match="no row of the pool"):
        vendi_pool_and_subset(np.ones((4, 2)), np.zeros(4, dtype=bool))


# ----------------------------------------------------------------------------- fd's k


def _centres(k: int = 4, d: int = 16, offset: float = 0.3) -> np.ndarray:
    """k orthogonal directions plus a shared offset (offset 0.3: cosine 0.24 / 1.24)."""
    return np.eye(d)[:k] + offset * np.ones(d) / math.sqrt(d)


def _clusters(
    n_per: int = 40, k: int = 4, d: int = 16, seed: int = 6, offset: float = 0.3
) -> np.ndarray:
    """k tight clusters around :func:`_centres`, shuffled."""
    rng = np.random.default_rng(seed)
    base = _centres(k, d, offset)
    x = np.vstack([b + rng.normal(0, 0.02, size=(n_per, d)) for b in base])
    return x[rng.permutation(len(x))]


def test_vendi_k_stops_at_four_separated_clusters() -> None:
    emb = _clusters()
    ids = np.arange(len(emb), dtype=np.int64) * 5 + 11
    x = feature_space(emb, pca_dim=None)
    k, curve = select_k_vendi(x, emb, ids, k_min=2, k_max=9, delta=0.01, random_state=0)
    assert k == 4
    assert sorted(curve) == [2, 3, 4, 5]  # fits stop one past the chosen k
    assert curve[5] <= 1.01 * curve[4] and curve[4] > 1.01 * curve[3]
    # V(k) is the Vendi score of the fd order's first k picks with that k
    order, labels, k_fd = scorers.fd_order(x, ids, k=4, random_state=0)
    assert k_fd == 4 and len({int(labels[i]) for i in order[:4]}) == 4
    assert vendi_score(emb[order[:4]]) == curve[4]
    # orthogonal clusters (docs/algorithms.md §10's example): V(2..4) = 2, 3, 4, then a drop
    emb = _clusters(offset=0.0)
    x = feature_space(emb, pca_dim=None)
    k, curve = select_k_vendi(x, emb, ids, k_min=2, k_max=9, delta=0.01, random_state=0)
    assert k == 4
    assert [curve[i] for i in (2, 3, 4)] == pytest.approx([2.0, 3.0, 4.0], abs=0.01)
    assert curve[5] < curve[4]


def test_vendi_k_large_delta_keeps_k_min_and_zero_spread_is_one_cluster() -> None:
    emb = _clusters()
    ids = np.arange(len(emb), dtype=np.int64)
    x = feature_space(emb, pca_dim=None)
    # V(3) / V(2) - 1 is about 0.5 <= 1: the growth "stops" at once
    assert select_k_vendi(x, emb, ids, k_min=2, k_max=9, delta=1.0)[0] == 2
    same = np.ones((10, 4))
    assert select_k_vendi(same, same, np.arange(10), delta=0.01) == (1, {1: 1.0})
    with pytest.raises(ValueError, match="vendi_delta"):
        select_k_vendi(x, emb, ids, delta=-0.1)
    emb[7] = 0.0
    with pytest.raises(ValueError, match=f"tile {ids[7]} has a zero or NaN embedding"):
        select_k_vendi(x, emb, ids)


def test_select_coreset_fd_with_vendi_rule() -> None:
    emb = _clusters()
    n = len(emb)
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 100, size=(n, 3))
    data = {
        "tile_ids": np.arange(n, dtype=np.int64) + 100,
        "eligible": np.ones(n, dtype=bool),
        "counts": counts,
        "class_entropy": np.zeros(n),
        "embeddings": emb,
    }
    params = CoresetParams(method="fd", budget=8, budget_mode="count", pca_dim=None)
    res = select_coreset(
        CoresetParams(**{**params.__dict__, "fd_use_vendi": True, "fd_k_max": 9}), **data
    )
    assert res.info["fd_k"] == 4 and res.info["fd_k_rule"] == "vendi"
    assert set(res.info["fd_vendi_by_k"]) == {"2", "3", "4", "5"}
    # the first round of picks is one tile per cluster: the score of the four centres
    assert vendi_score(emb[res.pick_order[:4]]) == pytest.approx(vendi_score(_centres()), abs=0.01)
    assert "fd_k_rule" not in select_coreset(params, **data).info  # off by default


# ----------------------------------------------------------------------------- config


def _cfg(**coreset: object) -> dict[str, object]:
    return {"coreset": {"input_csv_path": "b.csv", "output": {"csv_path": "c.csv"}, **coreset}}


def test_config_vendi_keys_and_older_spelling() -> None:
    cfg = validate_mapping(_cfg(), CoresetFile, "c.yaml").coreset
    assert (cfg.fd.use_vendi, cfg.fd.vendi_delta) == (False, 0.01)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = validate_mapping(
            _cfg(fd_use_vendi=True, fd_vendi_delta=0.05), CoresetFile, "c.yaml"
        ).coreset
    assert (cfg.fd.use_vendi, cfg.fd.vendi_delta) == (True, 0.05)
    assert [str(w.message) for w in seen] == [
        "c.yaml: coreset.fd_use_vendi and coreset.fd_vendi_delta: an older spelling, still read "
        "but to be removed; write coreset.fd: {use_vendi: ..., vendi_delta: ...}"
    ]
    with pytest.raises(ConfigError, match=r"keep only fd\.use_vendi"):
        validate_mapping(_cfg(fd_use_vendi=True, fd={"use_vendi": True}), CoresetFile, "c.yaml")
    with pytest.raises(ConfigError, match=r"give fd\.k or fd\.use_vendi"):
        validate_mapping(_cfg(fd={"use_vendi": True, "k": 3}), CoresetFile, "c.yaml")


# ----------------------------------------------------------------------------- summary


def _expected(tmp: Path, emb: np.ndarray) -> tuple[float, float]:
    out = pd.read_csv(tmp / "out" / "coreset.csv")
    included = ~out["excluded"].to_numpy()
    chosen = out["coreset_selected"].to_numpy()
    return _reference(emb[included]), _reference(emb[chosen])


@pytest.mark.parametrize("method", ["fd", "cb"])
def test_summary_reports_pool_and_selection_vendi(tmp_path: Path, method: str) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    emb = np.random.default_rng(8).normal(size=(len(src), 8)) + 0.5
    _write_cache(tmp_path / "emb.parquet", src["tile_id"].to_numpy(), emb)
    emb = emb.astype(np.float32).astype(np.float64)  # the cache stores float32
    conf = _config(tmp_path, method=method, parquet_path=str(tmp_path / "emb.parquet"))
    res = _invoke(conf)
    assert res.exit_code == 0, res.output
    pool, chosen = _expected(tmp_path, emb)
    assert 1.0 < chosen < pool < 8.0
    assert (
        f"Diversity (Vendi score of the embeddings): selected {chosen:.2f}, pool {pool:.2f}"
        in res.stdout
    )
    summary = json.loads((tmp_path / "out" / "coreset.run.json").read_text())["summary"]
    assert summary["pool_vendi"] == pytest.approx(pool, rel=1e-6)
    assert summary["selected_vendi"] == pytest.approx(chosen, rel=1e-6)


def test_summary_without_embeddings_says_na(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    res = _invoke(_config(tmp_path))
    assert res.exit_code == 0, res.output
    assert "Diversity (Vendi score): n/a (no embeddings; set coreset.parquet_path)" in res.stdout
    summary = json.loads((tmp_path / "out" / "coreset.run.json").read_text())["summary"]
    assert summary["pool_vendi"] is None and summary["selected_vendi"] is None
    # cb needs no embeddings: a cache missing some included tiles is a warning, not an error
    ids = src["tile_id"].to_numpy()[~src["excluded"].to_numpy()][:-2]
    _write_cache(tmp_path / "emb.parquet", ids, np.ones((ids.size, 4)))
    res = _invoke(_config(tmp_path, parquet_path=str(tmp_path / "emb.parquet")))
    assert res.exit_code == 0, res.output
    n_ok = int((~src["excluded"]).sum())
    assert (
        f"warning: no Vendi score: 2 of {n_ok} included tiles have no embedding in "
        f"{tmp_path / 'emb.parquet'}" in res.stderr
    )


def test_cli_fd_vendi_rule_is_named(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv", n=80)
    emb = _clusters(n_per=20, k=4, d=8, seed=9)
    _write_cache(tmp_path / "emb.parquet", src["tile_id"].to_numpy(), emb)
    conf = _config(
        tmp_path,
        method="fd",
        pca_dim=None,
        fd={"use_vendi": True, "k_max": 8},
        parquet_path=str(tmp_path / "emb.parquet"),
    )
    res = _invoke(conf)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "coreset.run.json").read_text())["summary"]
    assert summary["info"]["fd_k"] == 4 and summary["info"]["fd_k_rule"] == "vendi"
    assert "fd clusters k = 4 (Vendi rule)" in res.stdout
