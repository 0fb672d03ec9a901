"""Splitters and the spatial buffer (docs/algorithms.md §11): invariants and hand-made exact cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from smt_tools.errors import InputDataError
from smt_tools.splits import (
    GroupKFoldSplitter,
    StratifiedGroupKFoldSplitter,
    assign_folds,
    buffer_exclusions,
    fold_report,
    holdout_mask,
    metric_crs,
    metric_footprints,
)


@st.composite
def group_layouts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    n_splits = draw(st.integers(2, 5))
    n_groups = draw(st.integers(n_splits, 25))
    sizes = draw(st.lists(st.integers(1, 12), min_size=n_groups, max_size=n_groups))
    groups = np.repeat(np.arange(n_groups) * 7 + 3, sizes)
    perm = np.random.default_rng(draw(st.integers(0, 1000))).permutation(len(groups))
    groups = groups[perm]
    counts = np.asarray(
        draw(
            st.lists(
                st.lists(st.integers(0, 500), min_size=3, max_size=3),
                min_size=len(groups),
                max_size=len(groups),
            )
        ),
        dtype=np.int64,
    )
    return groups, counts, n_splits, draw(st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(group_layouts())
def test_no_group_in_two_folds(layout: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    groups, counts, k, seed = layout
    for splitter, y in (
        (GroupKFoldSplitter(k, random_state=seed), None),
        (StratifiedGroupKFoldSplitter(k, random_state=seed), counts),
    ):
        pairs = list(splitter.split(np.zeros(len(groups)), y, groups))
        assert len(pairs) == k
        seen_test = np.zeros(len(groups), dtype=int)
        for train, test in pairs:
            assert len(test) > 0
            assert not set(groups[train]) & set(groups[test])
            assert len(train) + len(test) == len(groups)
            assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(groups)))
            seen_test[test] += 1
        assert (seen_test == 1).all()  # every row validates exactly once


def _skewed_layout() -> tuple[np.ndarray, np.ndarray]:
    """24 groups of equal tile count; a third are almost all class 2 and carry most pixels."""
    rng = np.random.default_rng(42)
    groups, rows = [], []
    for g in range(24):
        for _ in range(10):
            groups.append(g)
            if g % 3 == 0:
                rows.append([rng.integers(0, 50), rng.integers(800, 1000), 0])
            else:
                rows.append([rng.integers(100, 400), rng.integers(0, 20), rng.integers(0, 60)])
    return np.asarray(groups), np.asarray(rows, dtype=np.int64)


def test_stratified_folds_closer_to_global_than_plain_group_folds() -> None:
    groups, counts = _skewed_layout()
    plain, strat = [], []
    for seed in range(8):
        f_plain = assign_folds(groups, 4, strategy="group", random_state=seed)
        f_strat = assign_folds(
            groups, 4, counts=counts, strategy="stratified_group", random_state=seed
        )
        plain.append(fold_report(counts, f_plain, 4).max_deviation)
        strat.append(fold_report(counts, f_strat, 4).max_deviation)
        assert strat[-1] <= plain[-1] + 1e-12
    assert np.mean(strat) < 0.5 * np.mean(plain)
    assert max(strat) < 0.03


def test_stratified_report_matches_global_share() -> None:
    groups, counts = _skewed_layout()
    splitter = StratifiedGroupKFoldSplitter(3, random_state=0)
    list(splitter.split(None, counts, groups))
    rep = splitter.report_
    total = counts.sum(axis=0) / counts.sum()
    np.testing.assert_allclose(rep.global_share, total)
    np.testing.assert_allclose(rep.shares.sum(axis=1), 1.0)
    assert rep.tiles.sum() == len(groups)
    assert rep.max_deviation == pytest.approx(np.abs(rep.shares - total).max())


@pytest.mark.parametrize("strategy", ["group", "stratified_group"])
def test_folds_independent_of_row_order(strategy: str) -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 30, 600)
    counts = rng.integers(0, 1000, (600, 5))
    tile_ids = np.arange(600) * 13 + 5
    base = assign_folds(groups, 5, counts=counts, strategy=strategy, random_state=11)
    for trial in range(3):
        perm = np.random.default_rng(trial).permutation(600)
        again = assign_folds(
            groups[perm], 5, counts=counts[perm], strategy=strategy, random_state=11
        )
        by_id = dict(zip(tile_ids[perm], again, strict=True))
        assert all(by_id[t] == f for t, f in zip(tile_ids, base, strict=True))


def test_seed_changes_equal_size_group_layout() -> None:
    groups = np.repeat(np.arange(10), 5)
    a = assign_folds(groups, 5, random_state=0)
    b = assign_folds(groups, 5, random_state=1)
    assert np.bincount(a).tolist() == [10] * 5
    assert not np.array_equal(a, b)


def test_too_few_groups_is_a_clear_error() -> None:
    with pytest.raises(InputDataError, match="only 3 groups for n_splits=4"):
        assign_folds(np.array([1, 1, 2, 3]), 4)


def test_holdout_takes_whole_groups_deterministically() -> None:
    groups = np.repeat(np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]), 3)
    m = holdout_mask(groups, 0.2, random_state=5)
    held = set(groups[m])
    assert len(held) == 2
    assert not held & set(groups[~m])
    perm = np.random.default_rng(0).permutation(len(groups))
    assert set(groups[perm][holdout_mask(groups[perm], 0.2, random_state=5)]) == held


def _frame(boxes: list[tuple[float, float, float, float]], crs: str = "EPSG:32631") -> pd.DataFrame:
    arr = np.asarray(boxes, dtype=np.float64)
    return pd.DataFrame(
        {
            "minx": arr[:, 0] + 500_000,
            "miny": arr[:, 1] + 5_000_000,
            "maxx": arr[:, 2] + 500_000,
            "maxy": arr[:, 3] + 5_000_000,
            "crs": crs,
        }
    )


def test_buffer_drops_exactly_the_expected_tiles() -> None:
    boxes = [
        (0, 0, 10, 10),  # 0 A fold 0
        (15, 0, 25, 10),  # 1 B fold 1: 5 m from A
        (100, 0, 110, 10),  # 2 C fold 1: far from everything
        (0, 30, 10, 40),  # 3 D fold 0: 20.6 m from B
        (35, 0, 45, 10),  # 4 E fold 2: exactly 10 m from B (within: distance <= buffer)
        (0, -12, 10, -2),  # 5 T test: 2 m below A
        (12, 0, 13, 10),  # 6 F fold 0: 2 m from B, 2 m from A (same fold as A: no effect)
    ]
    fold = np.array([0, 1, 1, 0, 2, -1, 0])
    geoms = metric_footprints(_frame(boxes))
    ex = buffer_exclusions(geoms, fold, 10.0, 3)
    expected = np.zeros((7, 4), dtype=bool)
    expected[0, 1] = True  # A must not train fold 1 (B validates)
    expected[1, 0] = True  # B must not train fold 0 (A, F validate)
    expected[6, 1] = True  # F must not train fold 1
    expected[1, 2] = True  # B must not train fold 2 (E validates, exactly 10 m)
    expected[4, 1] = True  # E must not train fold 1
    expected[0, 3] = True  # A must not train the final model (T is 2 m away)
    expected[1, 3] = True  # B: 5.39 m from T
    expected[6, 3] = True  # F: 2.83 m from T
    np.testing.assert_array_equal(ex, expected)
    # a smaller buffer keeps E and B apart, and A-T (2 m) too
    ex5 = buffer_exclusions(geoms, fold, 5.0, 3)
    assert not ex5[4].any() and not ex5[1, 2]
    assert ex5[0, 3] and ex5[0, 1]
    # zero buffer: only touching/overlapping footprints
    assert not buffer_exclusions(geoms, fold, 0.0, 3).any()


def test_footprints_in_other_crs_are_reprojected_to_metres() -> None:
    utm = _frame([(0, 0, 100, 100)])
    from smt_tools.geo import footprints_lonlat

    ring = footprints_lonlat(utm)[0]
    lonlat = pd.DataFrame(
        {
            "minx": [ring[:, 0].min()],
            "miny": [ring[:, 1].min()],
            "maxx": [ring[:, 0].max()],
            "maxy": [ring[:, 1].max()],
            "crs": ["EPSG:4326"],
        }
    )
    both = pd.concat([utm, lonlat], ignore_index=True)
    assert metric_crs(both) == "EPSG:32631"
    geoms = metric_footprints(both)
    inter = shapely.area(shapely.intersection(geoms[0], geoms[1]))
    assert inter == pytest.approx(100 * 100, rel=1e-3)
    assert metric_crs(utm) == "EPSG:32631"
