"""Batched / pruned paths at scale equal the straightforward ones exactly (small inputs).

- cb: :func:`smt_tools.coreset.scorers.cb_order` (candidate pruning, docs/algorithms.md §10)
  against the full evaluation of every remaining tile at every step (the reference below, the
  algorithm as specified);
- split's planar buffer: the grid pairs of :mod:`smt_tools.splits.grid` against shapely's
  STRtree ``dwithin`` on the same boxes, and the split's exclusions both ways;
- the ``buffer_excluded_folds`` text, vectorised, against the row-by-row formatting.
"""

from __future__ import annotations

import numpy as np
import pytest

from smt_tools.coreset import scorers
from smt_tools.coreset.cb import cb_batch_size, entropy_rows
from smt_tools.coreset.kcenter import _quantise, _take_top


def cb_order_reference(counts: np.ndarray, ids: np.ndarray, growth: float) -> np.ndarray:
    """The cb greedy evaluating every remaining tile at every step."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.shape[0]
    remaining = np.arange(n, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    done = 0
    s = np.zeros(c.shape[1], dtype=np.float64)
    while remaining.size:
        k = min(cb_batch_size(done, growth), remaining.size)
        gain = _quantise(entropy_rows(s[None, :] + c[remaining]))
        top = _take_top(gain, ids[remaining], k)
        picked = remaining[top]
        order[done : done + k] = picked
        done += k
        s += c[picked].sum(axis=0)
        keep = np.ones(remaining.size, dtype=bool)
        keep[top] = False
        remaining = remaining[keep]
    return order


def synth_counts(n: int, seed: int, n_classes: int = 6) -> np.ndarray:
    """Dirichlet-mixture class counts of 256x256 tiles (as benchmarks/bench_balanced.py):
    pure tiles, nodata borders, a rare class that many tiles lack. (n, C) int64."""
    rng = np.random.default_rng(seed)
    alphas = rng.uniform(0.05, 5.0, size=(5, n_classes))
    alphas[:, -1] = 0.05
    p = rng.gamma(alphas[rng.integers(0, 5, n)])
    p /= p.sum(axis=1, keepdims=True)
    pure = rng.random(n) < 0.1
    p[pure] = 0.0
    p[pure, rng.integers(0, n_classes, pure.sum())] = 1.0
    valid = 65536 - np.where(rng.random(n) < 0.05, rng.integers(0, 40000, n), 0)
    counts = np.floor(p * valid[:, None]).astype(np.int64)
    counts[:, 0] += valid - counts.sum(axis=1)
    return counts


@pytest.mark.parametrize("growth", [0.0, 0.02, 0.05, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cb_pruned_equals_full_evaluation(seed: int, growth: float) -> None:
    n = 3000 if growth > 0 else 1200
    counts = synth_counts(n, seed)
    ids = np.random.default_rng(seed + 10).permutation(10 * n)[:n].astype(np.int64)
    got = scorers.cb_order(counts, ids, growth)
    want = cb_order_reference(counts, ids, growth)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.sort(got), np.arange(n))


def test_cb_pruned_equals_full_evaluation_with_ties_and_empty_rows() -> None:
    """Duplicate count rows (ties broken by tile_id), all-zero rows, a class no tile has."""
    base = synth_counts(800, 5, n_classes=5)
    counts = np.vstack([base, base[:300], np.zeros((50, 5), np.int64)])
    counts = np.hstack([counts, np.zeros((counts.shape[0], 1), np.int64)])
    n = counts.shape[0]
    ids = np.random.default_rng(3).permutation(n).astype(np.int64) * 7 + 1
    for growth in (0.0, 0.02):
        got = scorers.cb_order(counts, ids, growth)
        np.testing.assert_array_equal(got, cb_order_reference(counts, ids, growth))


def test_cb_pruned_prunes() -> None:
    """The bound holds (UB >= exact gain for every tile) and rules out most tiles once S grows."""
    from smt_tools.coreset.cb import _Pool, _upper_bounds

    counts = synth_counts(20000, 7).astype(np.float64)
    ids = np.arange(counts.shape[0], dtype=np.int64)
    pool = _Pool(counts, ids)
    s = counts[:500].sum(axis=0)
    ub = _upper_bounds(pool, s)
    exact = entropy_rows(s[None, :] + counts)
    assert (ub >= exact - 1e-12).all()
    # near the top, the bound is within 1e-4 of the exact gain for almost every tile
    assert np.mean(ub - exact < 1e-4) > 0.9


def test_cb_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        scorers.cb_order(np.array([[1.0, -1.0]]), np.array([1]), 0.0)


# --------------------------------------------------------------------------- split buffer


def _boxes(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Boxes of three sizes on a 32 m lattice (many touch, overlap or sit exactly 32/64 m
    apart), labels 0..3 (-1 = holdout)."""
    rng = np.random.default_rng(seed)
    w = rng.choice([128.0, 64.0, 100.5], n)
    h = rng.choice([128.0, 90.0], n)
    minx = np.round(rng.uniform(0, 4000, n) / 32) * 32 + 500_000.0
    miny = np.round(rng.uniform(0, 4000, n) / 32) * 32 + 5_000_000.0
    labels = rng.integers(-1, 4, n)
    return minx, miny, minx + w, miny + h, labels


@pytest.mark.parametrize("distance", [0.0, 32.0, 50.0, 128.0])
@pytest.mark.parametrize("batch", [500, 4_000_000])
def test_grid_pairs_equal_strtree(distance: float, batch: int) -> None:
    import shapely

    from smt_tools.splits.grid import grid_close_pairs

    minx, miny, maxx, maxy, labels = _boxes(2500, int(distance) + batch % 7)
    i, j, d = grid_close_pairs(minx, miny, maxx, maxy, distance, labels, batch=batch)
    geoms = shapely.box(minx, miny, maxx, maxy)
    tree = shapely.STRtree(geoms)
    if distance > 0:
        a, b = tree.query(geoms, predicate="dwithin", distance=distance)
    else:
        a, b = tree.query(geoms, predicate="intersects")
    keep = (a < b) & (labels[a] != labels[b])
    a, b = a[keep], b[keep]
    srt = np.lexsort((b, a))
    np.testing.assert_array_equal(i, a[srt])
    np.testing.assert_array_equal(j, b[srt])
    np.testing.assert_allclose(d, shapely.distance(geoms[a[srt]], geoms[b[srt]]), atol=1e-9)
    assert i.size > 100  # the data has real work


def test_split_planar_grid_equals_strtree_exclusions() -> None:
    """compute_split's grid path gives the exclusions of the STRtree path (buffer_exclusions
    on shapely footprints)."""
    import pandas as pd

    from smt_tools.config.split import SplitConfig
    from smt_tools.pipelines.split import compute_split
    from smt_tools.splits.buffer import buffer_exclusions
    from smt_tools.splits.distance import tile_footprints

    minx, miny, maxx, maxy, _ = _boxes(3000, 11)
    frame = pd.DataFrame(
        {
            "tile_id": np.arange(3000),
            "source_image_id": (minx // 700).astype(int) * 10 + (miny // 700).astype(int),
            "minx": minx,
            "miny": miny,
            "maxx": maxx,
            "maxy": maxy,
            "crs": "EPSG:32631",
        }
    )
    cfg = SplitConfig.model_validate(
        {
            "input_csv_path": "unused.csv",
            "output": {"csv_path": "unused_out.csv"},
            "n_splits": 4,
            "strategy": "group",
            "buffer_m": 50,
            "holdout": 0.1,
        }
    )
    fold, exclusions, method = compute_split(frame, None, cfg)
    assert method.kind == "planar"
    want = buffer_exclusions(tile_footprints(frame, method), fold, 50.0, 4)
    np.testing.assert_array_equal(exclusions, want)
    assert 0 < exclusions.sum() < exclusions.size


def test_excluded_folds_text_equals_row_by_row() -> None:
    import pandas as pd

    from smt_tools.splits.fold_text import format_excluded_folds, parse_excluded_folds

    rng = np.random.default_rng(4)
    ex = rng.random((5000, 6)) < 0.15
    got = format_excluded_folds(ex)
    names = ["0", "1", "2", "3", "4", "-1"]
    want = [";".join(names[c] for c in range(6) if row[c]) for row in ex]
    assert got.tolist() == want
    np.testing.assert_array_equal(parse_excluded_folds(pd.Series(got), 5), ex)
    assert format_excluded_folds(np.zeros((0, 3), bool)).shape == (0,)


def test_geodesic_rings_per_chunk_equal_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles in two UTM zones (geodesic method): rings built per chunk (the 10M path) give the
    pairs, distances and overlaps of the rings built all at once."""
    import pandas as pd

    from smt_tools.splits import distance

    minx, miny, maxx, maxy, labels = _boxes(1500, 21)
    frame = pd.DataFrame(
        {
            "minx": minx,
            "miny": miny,
            "maxx": maxx,
            "maxy": maxy,
            "crs": np.where(np.arange(1500) % 2 == 0, "EPSG:32631", "EPSG:32632"),
        }
    )
    eager = distance.tile_footprints(frame)
    assert eager.method.kind == "geodesic" and eager.rings is not None
    monkeypatch.setattr(distance, "_LAZY_RINGS", 0)
    monkeypatch.setattr(distance, "_CHUNK", 97)
    lazy = distance.tile_footprints(frame)
    assert lazy.rings is None and lazy.source is not None
    for lab in (None, labels):
        i1, j1, d1 = distance.measure_pairs(eager, 50.0, labels=lab)
        i2, j2, d2 = distance.measure_pairs(lazy, 50.0, labels=lab)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(j1, j2)
        np.testing.assert_array_equal(d1, d2)
        assert i1.size > 100
    np.testing.assert_array_equal(
        distance.overlap_areas(eager, i1, j1), distance.overlap_areas(lazy, i1, j1)
    )


def test_cb_gains_in_chunks_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    from smt_tools.coreset import cb

    counts = synth_counts(2000, 8)
    ids = np.arange(2000, dtype=np.int64)
    want = cb_order_reference(counts, ids, 0.02)
    monkeypatch.setattr(cb, "_GAIN_CHUNK", 77)
    np.testing.assert_array_equal(scorers.cb_order(counts, ids, 0.02), want)


def test_coreset_csv_in_chunks_equals_one_shot(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The chunked writer (JSON count columns made per chunk, categorical columns) writes the
    bytes of one write of the whole table with the JSON columns in place."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from smt_tools.export.csv_out import class_counts_json, class_dist_json
    from smt_tools.pipelines import _coreset_csv

    counts = synth_counts(1000, 9)
    values = np.arange(1, 7)
    frame = pd.DataFrame(
        {
            "tile_id": np.arange(1000),
            "image_path": pd.Categorical([f"/a/img_{i % 7}.tif" for i in range(1000)]),
            "note": [None if i < 600 else "x,y" for i in range(1000)],
            "coreset_score": np.linspace(0, 1, 1000),
            "coreset_selected": np.arange(1000) % 3 == 0,
        }
    )
    monkeypatch.setattr(_coreset_csv, "CHUNK_ROWS", 128)
    got = tmp_path / "chunked.csv"
    _coreset_csv.write_coreset_csv(frame, got, counts, values, json_after="note")
    full = frame.copy()
    full["image_path"] = full["image_path"].astype(object)
    full.insert(3, "class_dist_json", class_dist_json(counts, values).to_numpy())
    full.insert(4, "class_counts_json", class_counts_json(counts, values).to_numpy())
    want = tmp_path / "whole.csv"
    pacsv.write_csv(
        pa.Table.from_pandas(full, preserve_index=False),
        want,
        write_options=pacsv.WriteOptions(quoting_style="needed"),
    )
    assert got.read_bytes() == want.read_bytes()
