"""Coreset scorers, selector and weights (docs/algorithms.md §10): known results and invariants."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from smt_tools.coreset import (
    CoresetParams,
    budget_size,
    coreset_sampler_weights,
    scorers,
    select_coreset,
)
from smt_tools.coreset.select import feature_space, lc_fd_cutoff
from smt_tools.curation.diagnostics import effective_sample_size
from smt_tools.export.csv_out import parse_class_counts_json

# ----------------------------------------------------------------------------- helpers


def _entropy(counts: np.ndarray) -> np.ndarray:
    from smt_tools.tiletable import entropy_from_counts

    return entropy_from_counts(counts)


def _pool(n: int = 60, c: int = 4, d: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = (rng.dirichlet(np.full(c, 0.4), size=n) * 1000).astype(np.int64) + 1
    return {
        "tile_ids": rng.permutation(10_000)[:n].astype(np.int64) + 7,
        "eligible": rng.random(n) > 0.2,
        "counts": counts,
        "class_entropy": _entropy(counts),
        "embeddings": rng.normal(size=(n, d)).astype(np.float32),
        "centroids_xy": rng.uniform(0, 5000, size=(n, 2)),
    }


def _run(params: CoresetParams, data: dict[str, np.ndarray]):
    return select_coreset(params, **data)


# ----------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("n", "budget", "mode", "expected"),
    [
        (10, 0.3, "fraction", 3),
        (10, 0.25, "fraction", 3),  # 2.5 rounds half up
        (10, 0.24, "fraction", 2),
        (7, 0.5, "fraction", 4),  # 3.5 -> 4
        (3, 0.01, "fraction", 1),  # at least one tile
        (10, 1.0, "fraction", 10),
        (10, 4, "count", 4),
        (10, 10, "count", 10),
    ],
)
def test_budget_arithmetic(n: int, budget: float, mode: str, expected: int) -> None:
    assert budget_size(n, budget, mode) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("budget", "mode"), [(0.0, "fraction"), (1.5, "fraction"), (11, "count"), (2.5, "count")]
)
def test_budget_invalid(budget: float, mode: str) -> None:
    with pytest.raises(ValueError):
        budget_size(10, budget, mode)  # type: ignore[arg-type]


def test_lc_fd_cutoff() -> None:
    assert lc_fd_cutoff(0.5, 10) == 5
    assert lc_fd_cutoff(3, 10) == 3
    assert lc_fd_cutoff(30, 10) == 10
    assert lc_fd_cutoff(0, 10) == 0


# ----------------------------------------------------------------------------- lc, fa, cb


def test_lc_scores_known_values_and_order() -> None:
    s = scorers.lc_scores(np.array([0.0, 0.4, 0.8]), 3)
    np.testing.assert_allclose(s, [0.0, 0.4 / math.log(3), 0.8 / math.log(3)])
    assert list(np.argsort(-s)) == [2, 1, 0]
    # entropy of the uniform distribution over C classes scores exactly 1
    assert scorers.lc_scores(np.array([math.log(6)]), 6)[0] == pytest.approx(1.0)


def test_lc_selection_picks_highest_entropy() -> None:
    counts = np.array([[100, 0, 0], [80, 20, 0], [40, 30, 30], [50, 50, 0]])
    sel = select_coreset(
        CoresetParams(method="lc", budget=2, budget_mode="count"),
        tile_ids=np.array([4, 3, 2, 1]),
        eligible=np.ones(4, bool),
        counts=counts,
        class_entropy=_entropy(counts),
    )
    assert sel.selected.tolist() == [False, False, True, True]
    assert sel.pick_order.tolist() == [2, 3]


def test_fa_scores_formula() -> None:
    x = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.5], [5.0, -5.0, 5.0, -5.0]])
    mu, sd = x.mean(axis=1), x.std(axis=1)
    gamma = -(1 - mu) * np.log(sd + 1e-12)
    expected = 1 - (gamma - gamma.min()) / (gamma.max() - gamma.min())
    np.testing.assert_allclose(scorers.fa_scores(x), expected)
    assert scorers.fa_scores(x).min() == 0.0 and scorers.fa_scores(x).max() == 1.0


def test_cb_picks_mixed_tile_first_then_balances() -> None:
    counts = np.array([[100, 0, 0], [0, 100, 0], [34, 33, 33], [0, 0, 100], [100, 0, 0]])
    order = scorers.cb_order(counts, np.arange(5) + 10, growth=0.0)
    assert order[0] == 2  # the mixed tile
    # then the rare classes (tie 1 vs 3 -> smaller tile_id), then one dominant tile; the
    # duplicate dominant tile comes last
    assert order.tolist() == [2, 1, 3, 0, 4]


def test_cb_exact_greedy_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 50, size=(25, 4))
    counts[:, 0] += 200
    ids = rng.permutation(1000)[:25]
    order = scorers.cb_order(counts, ids, growth=0.0)
    s = np.zeros(4)
    left = list(range(25))
    for pos in order:
        gains = []
        for i in left:
            t = s + counts[i]
            p = t[t > 0] / t.sum()
            gains.append((-round(float(-(p * np.log(p)).sum()), 9), ids[i], i))
        best = min(gains)[2]
        assert pos == best
        s += counts[best]
        left.remove(best)


def test_cb_batches_select_same_set_size_and_stay_balanced() -> None:
    data = _pool(400, c=5)
    exact = scorers.cb_order(data["counts"], data["tile_ids"], growth=0.0)
    batched = scorers.cb_order(data["counts"], data["tile_ids"], growth=0.05)
    assert sorted(batched.tolist()) == list(range(400))

    # the batched selection's pixel entropy at b = 100 is close to the exact greedy's
    def ent(idx: np.ndarray) -> float:
        t = data["counts"][idx].sum(axis=0)
        p = t / t.sum()
        return float(-(p * np.log(p)).sum())

    assert ent(batched[:100]) == pytest.approx(ent(exact[:100]), abs=1e-3)


# ----------------------------------------------------------------------------- kcenter, fd


def test_kcenter_on_a_line_picks_the_extremes_first() -> None:
    x = np.arange(11, dtype=np.float64)[:, None]
    ids = np.arange(11) + 100
    order = scorers.kcenter_order(x, ids, budget=3)
    assert order[:2].tolist() == [0, 10]  # both ends (tie at the mean: smaller tile_id first)
    assert order[2] == 5  # then the midpoint


def test_kcenter_batched_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5))
    ids = rng.permutation(10_000)[:500]
    one = scorers.kcenter_order(x, ids, budget=250, candidates=1)
    many = scorers.kcenter_order(x, ids, budget=250, candidates=64, chunk_rows=37)
    assert one[:250].tolist() == many[:250].tolist()
    # k-center property: each pick is the farthest remaining point from the chosen set
    chosen = [int(many[0])]
    for pos in many[1:20]:
        d = np.min(((x[:, None, :] - x[chosen][None]) ** 2).sum(-1), axis=1)
        d[chosen] = -1
        assert d[pos] == pytest.approx(d.max())
        chosen.append(int(pos))


def test_fd_two_separated_clusters_picks_from_both_first() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0, 0.1, size=(30, 3))
    b = rng.normal(10, 0.1, size=(10, 3))
    x = np.vstack([a, b])
    ids = rng.permutation(1000)[:40]
    order, _labels, k = scorers.fd_order(x, ids, k=2, random_state=0)
    assert k == 2
    first_two = order[:2]
    assert {int(i >= 30) for i in first_two} == {0, 1}
    # nearest-to-centroid first inside each cluster
    centre_a = a.mean(axis=0)
    nearest_a = int(np.argmin(((a - centre_a) ** 2).sum(1)))
    assert nearest_a in order[:2].tolist()
    # round robin: the first 20 picks alternate until the small cluster is exhausted
    sides = [int(i >= 30) for i in order[:20]]
    assert sides == [0, 1] * 10


def test_fd_elbow_finds_well_separated_clusters() -> None:
    rng = np.random.default_rng(4)
    centres = np.array([[0, 0], [20, 0], [0, 20]], dtype=float)
    x = np.vstack([c + rng.normal(0, 0.2, size=(40, 2)) for c in centres])
    ids = np.arange(120) * 3
    order, labels, k = scorers.fd_order(x, ids, k_min=2, k_max=8, random_state=0)
    assert k == 3
    assert len({int(labels[i]) for i in order[:3]}) == 3


def test_fd_round_robin_from_labels() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    dist = np.array([0.3, 0.1, 0.2, 0.5, 0.4, 0.0])
    ids = np.array([10, 11, 12, 13, 14, 15])
    order = scorers.fd_order_from_labels(labels, dist, ids)
    # cluster 0 (size 3), then 1 (size 2), then 2; nearest first in each
    assert order.tolist() == [1, 4, 5, 2, 3, 0]


# ----------------------------------------------------------------------------- combinations


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_fa_cb_limits(lam: float) -> None:
    data = _pool(80)
    base = CoresetParams(method="fa_cb", budget=0.3, fa_cb_lambda=lam, random_state=1)
    mixed = _run(base, data)
    other = "cb" if lam == 0.0 else "fa"
    ref = _run(CoresetParams(method=other, budget=0.3, random_state=1), data)  # type: ignore[arg-type]
    np.testing.assert_array_equal(mixed.selected, ref.selected)
    np.testing.assert_allclose(mixed.scores, ref.scores)


def test_lc_fd_limits_and_split() -> None:
    data = _pool(80)
    fd = _run(CoresetParams(method="fd", budget=20, budget_mode="count", fd_k=3), data)
    lc = _run(CoresetParams(method="lc", budget=20, budget_mode="count"), data)
    all_fd = _run(
        CoresetParams(method="lc_fd", budget=20, budget_mode="count", fd_k=3, lc_fd_cutoff_m=20),
        data,
    )
    none_fd = _run(
        CoresetParams(method="lc_fd", budget=20, budget_mode="count", fd_k=3, lc_fd_cutoff_m=0),
        data,
    )
    np.testing.assert_array_equal(all_fd.selected, fd.selected)
    np.testing.assert_array_equal(none_fd.selected, lc.selected)
    half = _run(
        CoresetParams(method="lc_fd", budget=20, budget_mode="count", fd_k=3, lc_fd_cutoff_m=0.5),
        data,
    )
    assert half.info["lc_fd_m"] == 10
    assert half.pick_order[:10].tolist() == fd.pick_order[:10].tolist()
    rest = [int(i) for i in half.pick_order[10:]]
    lc_rank = [int(i) for i in lc.pick_order if int(i) not in set(fd.pick_order[:10].tolist())]
    assert rest == lc_rank[:10]


# ----------------------------------------------------------------------------- invariants

ALL = ("lc", "cb", "fa", "fd", "lc_fd", "fa_cb", "kcenter", "random")


@pytest.mark.parametrize("method", ALL)
def test_excluded_never_selected_and_budget_exact(method: str) -> None:
    data = _pool(90)
    n_ok = int(data["eligible"].sum())
    sel = _run(CoresetParams(method=method, budget=0.5, fd_k=3), data)  # type: ignore[arg-type]
    assert sel.selected.sum() == budget_size(n_ok, 0.5, "fraction")
    assert not sel.selected[~data["eligible"]].any()
    assert np.isnan(sel.scores[~data["eligible"]]).all()
    s = sel.scores[data["eligible"]]
    assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    # the selected tiles are exactly the top-b scores
    assert sel.scores[sel.selected].min() >= sel.scores[data["eligible"] & ~sel.selected].max()


@pytest.mark.parametrize("method", ALL)
def test_row_order_independence(method: str) -> None:
    data = _pool(70, seed=5)
    params = CoresetParams(method=method, budget=0.4, random_state=3, spatial_weight=0.0)  # type: ignore[arg-type]
    a = _run(params, data)
    perm = np.random.default_rng(9).permutation(70)
    shuffled = {k: v[perm] for k, v in data.items()}
    b = _run(params, shuffled)
    np.testing.assert_array_equal(a.selected[perm], b.selected)
    np.testing.assert_allclose(a.scores[perm], b.scores, equal_nan=True)
    # same tile ids picked in the same order
    ids = data["tile_ids"]
    assert ids[a.pick_order].tolist() == shuffled["tile_ids"][b.pick_order].tolist()


def test_random_is_seeded() -> None:
    data = _pool(50)
    a = _run(CoresetParams(method="random", budget=10, budget_mode="count", random_state=1), data)
    b = _run(CoresetParams(method="random", budget=10, budget_mode="count", random_state=1), data)
    c = _run(CoresetParams(method="random", budget=10, budget_mode="count", random_state=2), data)
    np.testing.assert_array_equal(a.selected, b.selected)
    assert not np.array_equal(a.selected, c.selected)


def test_spatial_block_spreads_kcenter_selection() -> None:
    # identical embeddings: only the spatial block can tell tiles apart
    xy = np.array([[0, 0], [1, 0], [100, 0], [101, 0], [50, 0]], dtype=float)
    counts = np.ones((5, 2), dtype=np.int64)
    sel = select_coreset(
        CoresetParams(method="kcenter", budget=2, budget_mode="count", spatial_weight=1.0),
        tile_ids=np.arange(5),
        eligible=np.ones(5, bool),
        counts=counts,
        class_entropy=_entropy(counts),
        embeddings=np.ones((5, 4), dtype=np.float32),
        centroids_xy=xy,
    )
    assert sorted(sel.pick_order.tolist()) == [0, 3]  # the two far ends of the area


def test_feature_space_weights_spatial_block() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 8))
    xy = rng.uniform(0, 1e5, size=(200, 2))
    f = feature_space(emb, xy, spatial_weight=2.0)
    assert f.shape == (200, 10)
    feat_ms = float((f[:, :8] ** 2).sum(1).mean())
    sp_ms = float((f[:, 8:] ** 2).sum(1).mean())
    assert feat_ms == pytest.approx(1.0)
    assert sp_ms == pytest.approx(4.0)
    assert feature_space(emb, None, 0.0, pca_dim=3).shape == (200, 3)


def test_spatial_weight_rejected_for_methods_without_feature_space() -> None:
    data = _pool(20)
    with pytest.raises(ValueError, match="spatial_weight"):
        _run(CoresetParams(method="lc", budget=0.5, spatial_weight=1.0), data)


# ----------------------------------------------------------------------------- weights


def test_sampler_weights_known_values() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
    sel = np.array([True, True, False, True])
    # f = mean over selected = [(1 + .5 + .2)/3, (0 + .5 + .8)/3] = [.5667, .4333]
    f = np.array([1.7 / 3, 1.3 / 3])
    w = coreset_sampler_weights(p, sel)
    expected = [math.sqrt(1 / f[0]), math.sqrt(0.5 / f[0]) + math.sqrt(0.5 / f[1]), 0.0]
    expected.append(math.sqrt(0.2 / f[0]) + math.sqrt(0.8 / f[1]))
    np.testing.assert_allclose(w, expected)
    w_inv = coreset_sampler_weights(p, sel, "inverse_freq")
    np.testing.assert_allclose(w_inv[0], 1 / f[0])
    assert w_inv[2] == 0.0
    capped = coreset_sampler_weights(p, sel, cap=1.4)
    assert capped.max() == pytest.approx(1.4)
    assert capped[2] == 0.0
    assert effective_sample_size(np.array([1.0, 1.0, 0.0])) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- pipeline + CLI


def _balanced_csv(path: Path, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A balanced CSV in the format of docs/algorithms.md §15 with known class counts."""
    rng = np.random.default_rng(seed)
    values = np.array([1, 2, 3, 4])
    counts = (rng.dirichlet(np.full(4, 0.3), size=n) * 4096).astype(np.int64)
    counts[:, 0] += 500
    excluded = np.zeros(n, dtype=bool)
    excluded[::7] = True
    col = np.arange(n) % 8
    row = np.arange(n) // 8
    frame = pd.DataFrame(
        {
            "image_path": "img.tif",
            "mask_path": "mask.tif",
            "row_off": row * 64,
            "col_off": col * 64,
            "patch_size": 64,
            "tile_id": rng.permutation(10**6)[:n].astype(np.int64) + 1,
            "source_image_id": (np.arange(n) % 3) + 100,
            "group_id": "g",
            "minx": 500_000.0 + col * 32,
            "miny": 4_000_000.0 - row * 32 - 32,
            "maxx": 500_000.0 + col * 32 + 32,
            "maxy": 4_000_000.0 - row * 32,
            "crs": "EPSG:32631",
            "valid_pixels": counts.sum(1),
            "class_entropy": _entropy(counts),
            "nodata_ratio": 0.0,
            "class_dist_json": "{}",
            "class_counts_json": [
                json.dumps({str(v): int(c) for v, c in zip(values, r, strict=True)}) for r in counts
            ],
            "has_mask_border_nodata": False,
            "has_image_black_border": False,
            "excluded": excluded,
            "freq_cluster_id": 0,
            "freq_cluster_size": n,
            "freq_cluster_weight": 1.0 / n,
            "sampler_weight": np.where(excluded, 0.0, 1.0),
            "uniqueness_score": rng.random(n),
        }
    )
    frame.to_csv(path, index=False)
    return frame


def _write_cache(path: Path, tile_ids: np.ndarray, emb: np.ndarray) -> None:
    """An embedding cache in the Parquet format of docs/algorithms.md §15, written with pyarrow directly."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = emb.shape[1]
    table = pa.table(
        {
            "tile_id": pa.array(tile_ids, pa.int64()),
            "model_id": pa.array(["tiny"] * len(tile_ids), pa.string()),
            "preprocess_hash": pa.array(["h"] * len(tile_ids), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(emb.astype(np.float32).ravel(), pa.float32()), d
            ),
        }
    )
    pq.write_table(table, path)


def _config(tmp: Path, **coreset: Any) -> Path:
    body = {
        "method": "cb",
        "budget": 0.5,
        "input_csv_path": str(tmp / "balanced.csv"),
        "device": "cpu",
        "output": {"csv_path": str(tmp / "out" / "coreset.csv")},
    }
    body.update(coreset)
    path = tmp / "coreset.yaml"
    path.write_text(yaml.safe_dump({"coreset": body}, sort_keys=False))
    return path


def _invoke(path: Path) -> Any:
    from typer.testing import CliRunner

    from smt_tools.cli.app import app

    return CliRunner().invoke(app, ["select-coreset", str(path)])


def test_cli_cb_writes_full_table_with_scores_and_weights(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    conf = _config(
        tmp_path,
        output={
            "csv_path": str(tmp_path / "out" / "coreset.csv"),
            "geojson_path": str(tmp_path / "out" / "coreset.geojson"),
        },
    )
    res = _invoke(conf)
    assert res.exit_code == 0, res.output
    n_ok = int((~src["excluded"]).sum())
    b = budget_size(n_ok, 0.5, "fraction")
    assert f"Selected {b} of {n_ok} included tiles" in res.stdout
    assert "Source images covered: 3 of 3" in res.stdout
    assert "Mean uniqueness: selected" in res.stdout
    out = pd.read_csv(tmp_path / "out" / "coreset.csv")
    # full input table, same order, same columns + the two new ones
    assert out["tile_id"].tolist() == src["tile_id"].tolist()
    assert list(out.columns) == [*src.columns, "coreset_score", "coreset_selected"]
    assert int(out["coreset_selected"].sum()) == b
    assert not out.loc[out["excluded"], "coreset_selected"].any()
    assert out.loc[out["excluded"], "coreset_score"].isna().all()
    assert (out.loc[~out["coreset_selected"], "sampler_weight"] == 0).all()
    assert (out.loc[out["coreset_selected"], "sampler_weight"] > 0).all()
    # weights are the §10 formula over the selected rows
    counts, _ = parse_class_counts_json(src["class_counts_json"], "t", empty_is_zero=False)
    p = counts / counts.sum(1, keepdims=True)
    expected = coreset_sampler_weights(p, out["coreset_selected"].to_numpy())
    np.testing.assert_allclose(out["sampler_weight"], expected)
    gj = json.loads((tmp_path / "out" / "coreset.geojson").read_text())
    assert len(gj["features"]) == len(src)
    assert {"coreset_score", "coreset_selected", "sampler_weight"} <= set(
        gj["features"][0]["properties"]
    )
    assert (tmp_path / "out" / "coreset.qml").is_file()


def test_pipeline_result_is_row_order_independent(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    _write_cache(
        tmp_path / "emb.parquet",
        src["tile_id"].to_numpy(),
        np.random.default_rng(1).normal(size=(len(src), 8)),
    )
    conf = _config(tmp_path, method="kcenter", parquet_path=str(tmp_path / "emb.parquet"))
    assert _invoke(conf).exit_code == 0
    a = pd.read_csv(tmp_path / "out" / "coreset.csv").set_index("tile_id")
    src.sample(frac=1.0, random_state=3).to_csv(tmp_path / "balanced.csv", index=False)
    assert _invoke(conf).exit_code == 0
    b = pd.read_csv(tmp_path / "out" / "coreset.csv").set_index("tile_id").loc[a.index]
    np.testing.assert_array_equal(a["coreset_selected"], b["coreset_selected"])
    np.testing.assert_allclose(a["sampler_weight"], b["sampler_weight"])


def test_embeddings_missing_error_names_count_and_command(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    ok = ~src["excluded"].to_numpy()
    ids = src["tile_id"].to_numpy()[ok][:-3]  # three included tiles without an embedding
    _write_cache(tmp_path / "emb.parquet", ids, np.ones((ids.size, 4)))
    res = _invoke(_config(tmp_path, method="fd", parquet_path=str(tmp_path / "emb.parquet")))
    assert res.exit_code == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    assert f"3 of {int(ok.sum())} included tiles have no embedding" in line
    assert "pytorch-smt-tools embed CONFIG" in line
    res = _invoke(_config(tmp_path, method="kcenter"))
    assert res.exit_code == 1
    assert "coreset.parquet_path" in res.stderr and "embed CONFIG" in res.stderr
    res = _invoke(_config(tmp_path, method="fa", parquet_path=str(tmp_path / "none.parquet")))
    assert res.exit_code == 1
    assert f"all {int(ok.sum())} included tiles have no embedding" in res.stderr
    assert "pytorch-smt-tools embed CONFIG" in res.stderr


def test_missing_columns_and_bad_config_are_one_line(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    src.drop(columns=["class_counts_json"]).to_csv(tmp_path / "balanced.csv", index=False)
    res = _invoke(_config(tmp_path))
    assert res.exit_code == 1
    assert "missing column(s) class_counts_json" in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1
    res = _invoke(_config(tmp_path, method="cbb"))
    assert res.exit_code == 1 and "did you mean 'cb'" in res.stderr
    res = _invoke(_config(tmp_path, budget=1.5))
    assert res.exit_code == 1 and "budget_mode: count" in res.stderr
    res = _invoke(_config(tmp_path, method="lc", spatial_weight=1.0))
    assert res.exit_code == 1 and "spatial_weight applies to fd, lc_fd and kcenter" in res.stderr


def test_count_budget_larger_than_pool_is_an_error(tmp_path: Path) -> None:
    _balanced_csv(tmp_path / "balanced.csv", n=14)
    res = _invoke(_config(tmp_path, budget=50, budget_mode="count"))
    assert res.exit_code == 1
    assert "budget 50 is larger than the 12 included tiles" in res.stderr


def test_spatial_weight_uses_projected_centroids(tmp_path: Path) -> None:
    from smt_tools.pipelines.coreset import projected_centroids

    frame = pd.DataFrame(
        {"minx": [0.0, 10.0], "miny": [0.0, 0.0], "maxx": [2.0, 12.0], "maxy": [2.0, 2.0]}
    )
    frame["crs"] = "EPSG:32631"
    np.testing.assert_allclose(projected_centroids(frame, "t"), [[1, 1], [11, 1]])
    # geographic + projected mixed: distances in metres (about 111 km per degree of latitude)
    geo = pd.DataFrame(
        {"minx": [3.0, 3.0], "miny": [45.0, 46.0], "maxx": [3.0, 3.0], "maxy": [45.0, 46.0]}
    )
    geo["crs"] = "EPSG:4326"
    xy = projected_centroids(geo, "t")
    assert float(np.hypot(*(xy[1] - xy[0]))) == pytest.approx(111_150, rel=0.01)


def test_spatial_kcenter_via_cli(tmp_path: Path) -> None:
    src = _balanced_csv(tmp_path / "balanced.csv")
    _write_cache(tmp_path / "emb.parquet", src["tile_id"].to_numpy(), np.ones((len(src), 4)))
    conf = _config(
        tmp_path,
        method="kcenter",
        budget=2,
        budget_mode="count",
        spatial_weight=1.0,
        parquet_path=str(tmp_path / "emb.parquet"),
    )
    res = _invoke(conf)
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "out" / "coreset.csv")
    picked = out[out["coreset_selected"]]
    # identical embeddings: the two picks are far apart on the 8 x 5 grid of tiles
    dx = abs(picked["col_off"].diff().iloc[-1]) / 64
    dy = abs(picked["row_off"].diff().iloc[-1]) / 64
    assert dx + dy >= 8


@pytest.mark.db
def test_catalog_run_input_records_a_coreset_run(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    from smt_tools import catalog
    from smt_tools.pipelines.ingest import run_ingest

    catalog.apply_migrations(catalog.connect(fresh_database_url))
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=256, nodata_class=0, workers=1)
    balanced = {
        "balanced_dataset": {
            "mode": "masks_only",
            "sampling_method": "composition_only",
            "input": {"dsn": fresh_database_url},
            "clustering": {"k_min": 2, "k_max": 4},
            "output": {"csv_path": str(tmp_path / "balanced.csv")},
        }
    }
    bconf = tmp_path / "balanced.yaml"
    bconf.write_text(yaml.safe_dump(balanced))
    from typer.testing import CliRunner

    from smt_tools.cli.app import app

    res = CliRunner().invoke(app, ["build-balanced-dataset", str(bconf)])
    assert res.exit_code == 0, res.output
    engine = catalog.connect(fresh_database_url)
    with engine.connect() as conn:
        run_id = conn.execute(text("select max(id) from run")).scalar_one()
    body = {
        "method": "cb",
        "budget": 0.5,
        "catalog_run_id": int(run_id),  # the older spelling: still read, with one warning
        "catalog_url": "${SMT_CORESET_URL}",  # expanded like input.dsn
        "output": {"csv_path": str(tmp_path / "coreset.csv")},
    }
    conf = tmp_path / "coreset.yaml"
    conf.write_text(yaml.safe_dump({"coreset": body}))
    monkeypatch.setenv("SMT_CORESET_URL", fresh_database_url)
    res = _invoke(conf)
    assert res.exit_code == 0, res.output
    assert "Recorded catalog run" in res.stdout
    assert res.stderr.count("warning:") == 1 and "write coreset.catalog: {url" in res.stderr
    out = pd.read_csv(tmp_path / "coreset.csv")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select tile_id, coreset_selected, sampler_weight from tile_result "
                "where run_id = (select max(id) from run where command = 'select-coreset')"
            )
        ).all()
    assert len(rows) == len(out)
    by_id = {int(r[0]): (bool(r[1]), float(r[2])) for r in rows}
    for tid, sel, w in out[["tile_id", "coreset_selected", "sampler_weight"]].itertuples(
        index=False
    ):
        assert by_id[int(tid)] == (bool(sel), pytest.approx(float(w)))
    assert not out.loc[out["excluded"], "coreset_selected"].any()
    res = _invoke(conf.parent / "missing.yaml")
    assert res.exit_code == 1


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_cb_equals_cpu() -> None:
    from smt_tools.coreset import gpu

    if not gpu.cuda_available():
        pytest.skip("no CUDA device")
    data = _pool(3000, c=6, seed=11)
    for growth in (0.0, 0.02):
        cpu = scorers.cb_order(data["counts"], data["tile_ids"], growth)
        dev = gpu.cb_order_torch(data["counts"], data["tile_ids"], growth)
        np.testing.assert_array_equal(cpu, dev)


@pytest.mark.gpu
def test_gpu_kcenter_equals_cpu() -> None:
    from smt_tools.coreset import gpu

    if not gpu.cuda_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(12)
    x = rng.normal(size=(4000, 16))
    ids = rng.permutation(100_000)[:4000]
    cpu = scorers.kcenter_order(x, ids, 2000)
    dev = gpu.kcenter_order_torch(x, ids, 2000)
    np.testing.assert_array_equal(cpu[:2000], dev[:2000])
    line = np.arange(11, dtype=np.float64)[:, None]
    assert gpu.kcenter_order_torch(line, np.arange(11), 3)[:3].tolist() == [0, 10, 5]


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["cb", "kcenter", "fd"])
def test_gpu_selection_via_select_coreset(method: str) -> None:
    from smt_tools.coreset import gpu

    if not gpu.cuda_available():
        pytest.skip("no CUDA device")
    data = _pool(500, c=5, d=12, seed=13)
    cpu = _run(CoresetParams(method=method, budget=0.4, fd_k=4), data)  # type: ignore[arg-type]
    dev = _run(CoresetParams(method=method, budget=0.4, fd_k=4, device="cuda"), data)  # type: ignore[arg-type]
    assert dev.selected.sum() == cpu.selected.sum()
    assert not dev.selected[~data["eligible"]].any()
    if method != "fd":  # fd: Lloyd on the device may converge to slightly different clusters
        np.testing.assert_array_equal(cpu.selected, dev.selected)


def test_device_resolution_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from smt_tools.coreset import gpu
    from smt_tools.errors import ConfigError

    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    assert gpu.resolve_device("auto") == "cpu"
    assert gpu.resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device: cuda"):
        gpu.resolve_device("cuda")


def test_torch_kernels_on_cpu_match_numpy() -> None:
    """The torch code path (run here on torch's CPU device) selects what numpy selects."""
    pytest.importorskip("torch")
    from smt_tools.coreset import gpu

    data = _pool(300, c=6, seed=21)
    for growth in (0.0, 0.05):
        np.testing.assert_array_equal(
            scorers.cb_order(data["counts"], data["tile_ids"], growth),
            gpu.cb_order_torch(data["counts"], data["tile_ids"], growth, device="cpu"),
        )
    rng = np.random.default_rng(22)
    x = rng.normal(size=(400, 6))
    ids = rng.permutation(100_000)[:400]
    np.testing.assert_array_equal(
        scorers.kcenter_order(x, ids, 200, candidates=32),
        gpu.kcenter_order_torch(x, ids, 200, candidates=32, chunk_rows=100, device="cpu"),
    )
    a = rng.normal(0, 0.1, size=(30, 3))
    b = rng.normal(10, 0.1, size=(10, 3))
    order, _labels, k = gpu.fd_order_torch(np.vstack([a, b]), np.arange(40), k=2, device="cpu")
    assert k == 2
    assert {int(i >= 30) for i in order[:2]} == {0, 1}


def test_kcenter_cell_pruning_is_exact_on_clustered_data_with_duplicates() -> None:
    rng = np.random.default_rng(31)
    centres = rng.normal(size=(6, 4)) * 5
    x = centres[rng.integers(0, 6, 900)] + rng.normal(size=(900, 4)) * 0.3
    x[100:140] = x[0]  # exact duplicates
    ids = rng.permutation(100_000)[:900]
    plain = scorers.kcenter_order(x, ids, 600, candidates=64, cells=0)
    pruned = scorers.kcenter_order(x, ids, 600, candidates=64, cells=16)
    np.testing.assert_array_equal(plain, pruned)
