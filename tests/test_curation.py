"""Known values and invariants of the pure curation math (docs/algorithms.md §5, §6, §8, §9)."""

from __future__ import annotations

import numpy as np
import pytest

from smt_tools.curation.composition import clr, cluster_compositions, cluster_weights, elbow_k
from smt_tools.curation.diagnostics import (
    class_pixel_share,
    class_shares_uniform_vs_weighted,
    effective_sample_size,
)
from smt_tools.curation.exclusion import exclusion_mask
from smt_tools.curation.ranking import average_rank, combine, minmax
from smt_tools.curation.weights import (
    final_weights,
    rare_class_boost,
    rare_classes,
    resolve_floor,
)
from smt_tools.errors import ConfigError, EmptySelectionError


def test_clr_known_values() -> None:
    assert np.allclose(clr(np.array([[0.25, 0.25, 0.25, 0.25]])), 0.0)
    out = clr(np.array([[0.9, 0.1]]))
    assert out[0] == pytest.approx([1.0986, -1.0986], abs=1e-4)
    # rows always sum to 0
    p = np.random.default_rng(0).dirichlet(np.ones(5), size=20)
    assert np.allclose(clr(p).sum(axis=1), 0.0)


def test_elbow_example_gives_k5() -> None:
    ks = np.arange(2, 11)
    inertias = np.array([1000, 600, 400, 300, 250, 220, 210, 205, 203], dtype=float)
    assert elbow_k(ks, inertias) == 5


def test_elbow_exact_tie_goes_to_smaller_k() -> None:
    # symmetric curve: k=3 and k=4 are equally far from the chord
    ks = np.array([1, 2, 3, 4, 5, 6])
    inertias = np.array([5.0, 2.0, 1.0, 1.0, 2.0, 5.0])
    # chord is horizontal (5 -> 5): distances 0,3,4,4,3,0 (normalised) -> first max = k 3
    assert elbow_k(ks, inertias) == 3
    assert elbow_k(np.array([4]), np.array([1.0])) == 4


def test_cluster_weights_known_values() -> None:
    sizes, comp = cluster_weights(np.array([0, 0, 1, 1, 1, 2]))
    assert sizes.tolist() == [2, 2, 3, 3, 3, 1]
    assert comp == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0])


def test_rank_max_example() -> None:
    res = combine("rank_max", np.array([0.1, 0.9, 0.5]), np.array([0.8, 0.2, 0.5]))
    assert res.score == pytest.approx([1.0, 1.0, 0.5])
    assert res.fallback is None


def test_other_methods_on_example() -> None:
    comp, uniq = np.array([0.1, 0.9, 0.5]), np.array([0.8, 0.2, 0.5])
    # r(comp) = [0, 1, .5], r(uniq) = [1, 0, .5]
    assert combine("rank_multiply", comp, uniq).score == pytest.approx([0, 0, 0.25])
    assert combine("rank_add", comp, uniq).score == pytest.approx([0.5, 0.5, 0.5])
    assert combine("composition_only", comp, uniq).score == pytest.approx([0, 1, 0.5])
    assert combine("uniqueness_only", comp, uniq).score == pytest.approx([1, 0, 0.5])
    mm = combine("multiplicative", comp, uniq).score
    assert mm == pytest.approx(minmax(comp, constant=1.0) * minmax(uniq, constant=1.0))
    assert mm == pytest.approx([0.0, 0.0, 0.5 * 0.5])


def test_minmax_constant_input_is_the_callers_choice() -> None:
    """One minmax; a constant signal gets the caller's value: 1.0 in ranking, 0.0 in fa."""
    np.testing.assert_array_equal(minmax(np.array([2.0, 4.0, 3.0]), constant=1.0), [0, 1, 0.5])
    flat = np.full(3, 0.7)
    np.testing.assert_array_equal(minmax(flat, constant=1.0), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(minmax(flat, constant=0.0), [0.0, 0.0, 0.0])
    assert minmax(np.zeros(0), constant=1.0).shape == (0,)
    # the two call sites keep their behaviour on a constant input
    comp, uniq = np.full(3, 0.5), np.array([0.2, 0.4, 0.6])
    assert combine("multiplicative", comp, uniq).score == pytest.approx([0.0, 0.5, 1.0])
    from smt_tools.coreset.scorers import fa_scores

    np.testing.assert_array_equal(fa_scores(np.ones((4, 8))), np.ones(4))


def test_one_definition_of_each_shared_helper() -> None:
    """The merged helpers are defined once in smt_tools/ (issue 13, part 5)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "smt_tools"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))
    once = ("minmax", "effective_sample_size", "no_progress", "parse_class_counts_json")
    once += ("quote_identifier", "db_message", "db_failure")
    gone = ("_no_progress", "_counts_from_json", "parse_class_counts", "_quote_ident")
    gone += ("_one_line", "_sqlstate")
    once += ("read_window", "read_pixels", "inside_part", "shared_metric_crs", "parse_crs")
    gone += ("_crs", "_is_metric")  # the metric-CRS decision lives in smt_tools.geo
    for name in once + gone:
        found = len(re.findall(rf"^\s*def {name}\(", text, flags=re.M))
        assert found == (1 if name in once else 0), name
    assert not (root / "export" / "_atomic.py").exists()  # the atomic writer is smt_tools.atomic


def test_average_rank_ties_equal() -> None:
    r = average_rank(np.array([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 1.0]))
    assert r[0] == r[1] == r[2] == pytest.approx(0.2)
    assert r[3] == r[4] == pytest.approx(0.7)
    assert r[5] == 1.0
    assert average_rank(np.array([7.0])).tolist() == [1.0]
    with pytest.raises(ValueError, match="NaN"):
        average_rank(np.array([1.0, np.nan]))


def test_masks_only_fallback_and_uniqueness_only_error() -> None:
    comp = np.array([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0])
    for method in ("rank_max", "rank_add", "rank_multiply", "multiplicative"):
        res = combine(method, comp, None)
        assert res.effective_method == "composition_only"
        assert res.score == pytest.approx(average_rank(comp))
        assert res.fallback is not None and "\n" not in res.fallback
        assert "masks_only" in res.fallback
    assert combine("composition_only", comp, None).fallback is None
    with pytest.raises(ConfigError, match="uniqueness_only"):
        combine("uniqueness_only", comp, None)
    with pytest.raises(ConfigError, match="sampling_method"):
        combine("rank_mx", comp, None)


def test_ties_give_equal_weights_within_cluster() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    _, comp = cluster_weights(labels)
    score = combine("rank_max", comp, None).score
    w = final_weights(score, np.ones(7, bool))
    for c in np.unique(labels):
        assert np.unique(w[labels == c]).size == 1
    assert w.max() == 1.0


def test_final_weights_scale_floor_and_excluded() -> None:
    included = np.array([True, False, True, True, True])
    score = np.array([0.0, 0.5, 1.0, 2.0])
    w = final_weights(score, included, weight_floor=0.05)
    assert w.tolist() == pytest.approx([0.05, 0.0, 0.25, 0.5, 1.0])
    assert w.max() / w[included].min() <= 20 + 1e-9
    w_auto = final_weights(score, included, weight_floor="auto")
    assert w_auto.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.5, 1.0])
    assert resolve_floor("auto", 8) == 0.125
    # all-zero score: all included tiles equal
    assert final_weights(np.zeros(4), included).tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(EmptySelectionError, match="excluded"):
        final_weights(np.zeros(0), np.zeros(3, bool))


def test_rare_class_boost() -> None:
    # class 6 is rare (share below the mean share 1/3)
    counts = np.array([[90, 10, 0], [50, 40, 10], [0, 50, 0]], dtype=np.int64)
    values = np.array([1, 2, 6])
    rare = rare_classes(counts, values)
    assert rare.tolist() == [6]
    p = counts / counts.sum(axis=1, keepdims=True)
    boost = rare_class_boost(p, values, rare, multiplier=3.0)
    assert boost.tolist() == pytest.approx([1.0, 1.2, 1.0])
    w = final_weights(np.ones(3), np.ones(3, bool), boost=boost)
    assert w.tolist() == pytest.approx([1 / 1.2, 1.0, 1 / 1.2])
    # explicit rare list, multiplier 1 = off
    assert rare_class_boost(p, values, np.array([2]), 1.0).tolist() == [1.0, 1.0, 1.0]


def test_ess_and_class_shares_hand_made() -> None:
    counts = np.array([[100, 0], [100, 0], [50, 50], [0, 0]], dtype=np.int64)
    w = np.array([0.25, 0.25, 1.0, 0.0])
    assert effective_sample_size(w) == pytest.approx(1.5**2 / 1.125)
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.zeros(3)) == 0.0
    included = np.array([True, True, True, False])
    uniform, weighted = class_shares_uniform_vs_weighted(counts, w, included)
    assert uniform == pytest.approx([250 / 300, 50 / 300])
    # weighted: class0 = 25+25+50 = 100, class1 = 50 -> [2/3, 1/3]
    assert weighted == pytest.approx([2 / 3, 1 / 3])
    assert class_pixel_share(counts, np.zeros(4)).tolist() == [0.0, 0.0]


def test_exclusion_rule() -> None:
    ex = exclusion_mask(
        np.array([True, False, False, False, False, False]),
        np.array([False, True, False, False, False, False]),
        np.array([0.5, 0.5, 0.01, 0.5, np.nan, 0.5]),
        np.array([0.0, 0.0, 0.0, 0.3, 1.0, 0.0]),
        np.array([10, 10, 10, 10, 0, 10]),
        min_entropy=0.1,
        max_nodata_ratio=0.2,
    )
    assert ex.tolist() == [True, True, True, True, True, False]
    ex2 = exclusion_mask(
        np.array([True, False]),
        np.array([False, True]),
        np.array([0.5, 0.5]),
        np.array([0.0, 0.0]),
        np.array([10, 10]),
        exclude_border_nodata=False,
        exclude_black_border=False,
    )
    assert ex2.tolist() == [False, False]


def _three_groups(rng: np.random.Generator, n_each: int = 30) -> np.ndarray:
    alphas = [(20, 1, 1), (1, 20, 1), (1, 1, 20)]
    return np.concatenate([rng.dirichlet(a, size=n_each) for a in alphas])


def test_cluster_compositions_recovers_groups_and_is_row_order_independent() -> None:
    rng = np.random.default_rng(1)
    p = _three_groups(rng)
    res = cluster_compositions(p, k_min=2, k_max=3, k_selection="fixed", k=3, random_state=0)
    assert res.k == 3
    truth = np.repeat([0, 1, 2], 30)
    for g in range(3):
        assert np.unique(res.labels[truth == g]).size == 1
    assert sorted(res.cluster_sizes.values()) == [30, 30, 30]
    assert res.freq_cluster_weight == pytest.approx(np.full(90, 1 / 30))
    perm = rng.permutation(90)
    res2 = cluster_compositions(p[perm], k_min=2, k_max=6, k_selection="elbow", random_state=0)
    res1 = cluster_compositions(p, k_min=2, k_max=6, k_selection="elbow", random_state=0)
    assert res1.k == res2.k
    assert np.array_equal(res1.labels[perm], res2.labels)
    assert res1.k_scores == pytest.approx(res2.k_scores)


def test_cluster_compositions_duplicates_weighted_like_all_rows() -> None:
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(2)
    base = _three_groups(rng, 5)
    p = np.concatenate([base, np.repeat(base[:3], 20, axis=0)])
    res = cluster_compositions(p, k_min=2, k_max=5, k_selection="elbow", random_state=0)
    x = clr(p)
    for k, inertia in res.k_scores.items():
        # the weighted fit on distinct rows has the same objective as a fit on all rows
        direct = KMeans(k, random_state=0, n_init=10).fit(x).inertia_
        assert inertia == pytest.approx(direct, rel=0.25)
    assert res.distinct_rows == 15


def test_k_max_clamped_and_single_cluster() -> None:
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    res = cluster_compositions(p, k_min=4, k_max=16, k_selection="elbow")
    assert res.k_range == (2, 2)
    assert res.k == 2
    one = cluster_compositions(np.tile([[0.3, 0.7]], (5, 1)), k_min=4, k_max=16)
    assert one.k == 1 and one.labels.tolist() == [0] * 5
    assert one.freq_cluster_weight == pytest.approx([0.2] * 5)


def test_silhouette_picks_true_k() -> None:
    p = _three_groups(np.random.default_rng(3))
    res = cluster_compositions(p, k_min=2, k_max=6, k_selection="silhouette", random_state=0)
    assert res.k == 3
    assert set(res.k_scores) <= set(range(2, 7))


@pytest.mark.parametrize("selection", ["elbow", "silhouette"])
def test_k_chosen_on_sample_then_fitted_on_all(selection: str) -> None:
    rng = np.random.default_rng(4)
    p = _three_groups(rng, 200)  # 600 rows, k chosen on a seeded sample of 150
    kw = {"k_min": 2, "k_max": 6, "k_selection": selection, "random_state": 0}
    res = cluster_compositions(p, selection_sample_size=150, **kw)  # type: ignore[arg-type]
    assert res.k == 3
    truth = np.repeat([0, 1, 2], 200)
    for g in range(3):
        assert np.unique(res.labels[truth == g]).size == 1
    perm = rng.permutation(600)
    res2 = cluster_compositions(p[perm], selection_sample_size=150, **kw)  # type: ignore[arg-type]
    assert np.array_equal(res.labels[perm], res2.labels)
    assert res.k_scores == pytest.approx(res2.k_scores)
    full = cluster_compositions(p, selection_sample_size=None, **kw)  # type: ignore[arg-type]
    assert full.k == 3 and np.array_equal(full.labels, res.labels)
