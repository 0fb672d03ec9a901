"""Spatial cb and fa (docs/algorithms.md §10): candidates penalised by proximity to the tiles
already selected. Known picks on hand-made layouts, picks moved apart, off = today's picks,
distances right across UTM zones, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Geod, Transformer

from smt_tools.config.coreset import CoresetConfig
from smt_tools.coreset import scorers
from smt_tools.coreset.select import CoresetParams, select_coreset
from smt_tools.coreset.spatial import (
    Proximity,
    SpatialTerm,
    TileCentres,
    cb_order_spatial,
    fa_order_spatial,
    penalised_picks,
    tile_centres,
)

#: five tiles on a line (metres, one UTM zone): three 10 m apart, two 10 m apart 5 km away
XY = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [5000.0, 0.0], [5010.0, 0.0]])
COUNTS = np.array([[50, 50], [50, 50], [50, 50], [60, 40], [40, 60]], dtype=np.float64)
IDS = np.array([1, 2, 3, 4, 5], dtype=np.int64)


def _min_pair_distance(xy: np.ndarray) -> float:
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    return float(d[np.triu_indices(len(xy), 1)].min())


def _centres(xy: np.ndarray = XY) -> TileCentres:
    return TileCentres(xy, geodesic=False)


def test_cb_spatial_known_picks_on_a_tiny_layout() -> None:
    """Plain cb takes the three balanced tiles side by side (1, 2, 3), then 4, 5. With a 100 m
    radius: after 1, tile 2 (10 m away) loses 0.9 and 3 loses 0.8, so the best is 4, 5 km
    away (H = 0.6881 nats); then 3 (H(160, 140) − 0.8) before 5 (ln 2 − 0.9), then 5, then 2."""
    plain = scorers.cb_order(COUNTS, IDS, growth=0.0)
    assert plain.tolist() == [0, 1, 2, 3, 4]
    spatial = cb_order_spatial(COUNTS, IDS, 0.0, Proximity(_centres(), 100.0), 1.0)
    assert spatial.tolist() == [0, 3, 2, 4, 1]
    # the first two picks move from 10 m apart to 5 km apart; the first three from 10 m to 20 m
    assert _min_pair_distance(XY[plain[:2]]) == 10.0
    assert _min_pair_distance(XY[spatial[:2]]) == 5000.0
    assert _min_pair_distance(XY[plain[:3]]) == 10.0
    assert _min_pair_distance(XY[spatial[:3]]) == 20.0


def test_fa_spatial_known_picks() -> None:
    """fa scores 1, .95, .9 on the cluster and .5, .4 far away. Plain: 1, 2, 3, 4, 5. With a
    100 m radius and penalty 1: 1, then 4 (.5 beats .95 − .9 and .9 − .8), then 3
    (.9 − .8 = .1 beats 5's .4 − .9 and 2's .05), then 2 (.05 > −.5), then 5."""
    scores = np.array([1.0, 0.95, 0.9, 0.5, 0.4])
    assert scorers.order_by_score(scores, IDS).tolist() == [0, 1, 2, 3, 4]
    got = fa_order_spatial(scores, IDS, Proximity(_centres(), 100.0), 1.0)
    assert got.tolist() == [0, 3, 2, 1, 4]


def test_penalty_falls_linearly_to_zero_at_the_radius() -> None:
    xy = np.array([[0.0, 0.0], [25.0, 0.0], [50.0, 0.0], [100.0, 0.0], [150.0, 0.0]])
    prox = Proximity(TileCentres(xy, geodesic=False), 100.0)
    prox.select(0)
    np.testing.assert_allclose(prox.pen, [1.0, 0.75, 0.5, 0.0, 0.0])
    prox.select(4)  # the nearest selected tile counts
    np.testing.assert_allclose(prox.pen, [1.0, 0.75, 0.5, 0.5, 1.0])


def _synth(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = (rng.dirichlet(np.full(5, 0.4), size=n) * 65536).astype(np.int64).astype(float)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    # clustered layout: 20 towns of tiles 128 m apart
    towns = rng.uniform(0, 50_000, size=(20, 2))
    xy = towns[rng.integers(0, 20, n)] + rng.integers(0, 8, size=(n, 2)) * 128.0
    return counts, ids, xy


@pytest.mark.parametrize("growth", [0.0, 0.02, 0.2])
def test_zero_penalty_is_plain_cb(growth: float) -> None:
    """Penalty 0: the one-at-a-time picks of each step are the step's plain top k, in order."""
    counts, ids, xy = _synth(3000, 1)
    got = cb_order_spatial(counts, ids, growth, Proximity(_centres(xy), 500.0), 0.0)
    np.testing.assert_array_equal(got, scorers.cb_order(counts, ids, growth))


def test_spatial_cb_spreads_the_selection() -> None:
    counts, ids, xy = _synth(3000, 2)
    b = 200
    plain = scorers.cb_order(counts, ids, 0.02)[:b]
    spatial = cb_order_spatial(counts, ids, 0.02, Proximity(_centres(xy), 300.0), 1.0)[:b]
    # within its batches each pick already pushes the next ones away: no two picks share a
    # place while an unpenalised tile is left (here: none closer than one tile step)
    assert _min_pair_distance(xy[plain]) == 0.0
    assert _min_pair_distance(xy[spatial]) >= 128.0
    # and class balance is not given up: the selection's entropy stays within 1 %
    h = scorers._entropy_rows
    assert h(counts[spatial].sum(0)[None])[0] > 0.99 * h(counts[plain].sum(0)[None])[0]


def test_lazy_greedy_equals_brute_force() -> None:
    """The heap (with refills) picks exactly what re-scoring every row after each pick does."""
    rng = np.random.default_rng(5)
    n = 400
    xy = rng.uniform(0, 2000, size=(n, 2))
    base = rng.integers(0, 2**40, size=n).astype(np.int64)
    base[::7] = base[0]  # ties, broken by tile id
    ids = rng.permutation(n).astype(np.int64) + 10
    rows = np.arange(n)
    got = penalised_picks(base, ids, rows, 150, Proximity(_centres(xy), 300.0), 0.6)
    prox = Proximity(_centres(xy), 300.0)
    left = np.ones(n, dtype=bool)
    want = []
    for _ in range(150):
        v = base - np.floor(0.6 * prox.pen * 2.0**40).astype(np.int64)
        cand = np.flatnonzero(left)
        best = cand[np.lexsort((ids[cand], -v[cand]))[0]]
        want.append(best)
        left[best] = False
        prox.select(int(best))
    assert got.tolist() == want


def test_distances_across_utm_zones_are_geodesic() -> None:
    """Two tiles either side of the 6° E zone boundary at 45° N, each in its own zone: the
    distance is the WGS 84 geodesic between their centres (about 157 m), not the ~470 km
    difference of their UTM eastings."""
    lonlat = np.array([[5.999, 45.0], [6.001, 45.0], [6.0015, 45.0005]])
    zones = ["EPSG:32631", "EPSG:32632", "EPSG:32632"]
    x, y = np.empty(3), np.empty(3)
    for i, (zone, (lon, lat)) in enumerate(zip(zones, lonlat, strict=True)):
        x[i], y[i] = Transformer.from_crs("EPSG:4326", zone, always_xy=True).transform(lon, lat)
    half = 64.0
    centres = tile_centres(x - half, y - half, x + half, y + half, np.array(zones))
    assert centres.geodesic
    np.testing.assert_allclose(centres.xy, lonlat, atol=1e-9)
    prox = Proximity(centres, 1000.0)
    want = Geod(ellps="WGS84").inv([5.999, 5.999], [45.0, 45.0], [6.001, 6.0015], [45.0, 45.0005])
    np.testing.assert_allclose(prox.distances(0, np.array([1, 2])), want[2], rtol=1e-9)
    assert 150 < want[2][0] < 165
    prox.select(0)
    np.testing.assert_allclose(prox.pen[1:], 1 - np.asarray(want[2]) / 1000.0, rtol=1e-9)


def test_one_projected_crs_is_planar() -> None:
    c = tile_centres(
        np.array([0.0, 100.0]),
        np.array([0.0, 0.0]),
        np.array([10.0, 110.0]),
        np.array([10.0, 10.0]),
        np.array(["EPSG:32631", "EPSG:32631"]),
    )
    assert not c.geodesic
    np.testing.assert_allclose(c.xy, [[5.0, 5.0], [105.0, 5.0]])


def _params(method: str, **kw: object) -> CoresetParams:
    return CoresetParams(method=method, budget=2, budget_mode="count", cb_growth=0.0, **kw)  # type: ignore[arg-type]


def test_select_coreset_off_by_default_gives_todays_picks() -> None:
    counts, ids, xy = _synth(500, 3)
    elig = np.ones(len(ids), dtype=bool)
    ent = scorers._entropy_rows(counts)
    params = CoresetParams(method="cb", budget=0.3)
    plain = select_coreset(params, ids, elig, counts, ent)
    off = SpatialTerm(_centres(xy), 1000.0, 1.0, cb=False, fa=False)
    same = select_coreset(params, ids, elig, counts, ent, centroids_xy=off)
    np.testing.assert_array_equal(plain.scores, same.scores)
    np.testing.assert_array_equal(plain.pick_order, same.pick_order)
    assert "spatial" not in same.info


def test_select_coreset_spatial_cb_fa_and_gpu_note() -> None:
    rows = np.array([2, 0, 4, 1, 3])  # input order is not tile_id order
    term = SpatialTerm(_centres(XY[rows]), 100.0, 1.0, cb=True, fa=True)
    elig = np.ones(5, dtype=bool)
    ent = scorers._entropy_rows(COUNTS[rows])
    sel = select_coreset(_params("cb"), IDS[rows], elig, COUNTS[rows], ent, centroids_xy=term)
    assert IDS[rows][sel.pick_order].tolist() == [1, 4]
    assert sel.info["spatial"] == {"radius_m": 100.0, "penalty": 1.0, "distances": "planar"}
    # fa on embeddings whose γ ranks the cluster first: spatial fa takes one of it, then far
    # rows [-s, s]: μ = 0, σ = s, γ = −ln s; fa scores 1, .853, .663, .057, 0
    spread = np.array([5.0, 4.0, 3.0, 1.2, 1.1])
    emb = np.column_stack([-spread, spread])[rows]
    fa_plain = select_coreset(_params("fa"), IDS[rows], elig, COUNTS[rows], ent, emb)
    assert IDS[rows][fa_plain.pick_order].tolist() == [1, 2]
    fa = select_coreset(_params("fa"), IDS[rows], elig, COUNTS[rows], ent, emb, term)
    assert IDS[rows][fa.pick_order].tolist() == [1, 4]
    gpu = select_coreset(
        _params("cb", device="cuda"), IDS[rows], elig, COUNTS[rows], ent, centroids_xy=term
    )
    assert gpu.pick_order.tolist() == sel.pick_order.tolist()
    assert "CPU" in gpu.info["device_note"]


def test_config_keys_defaults_and_methods() -> None:
    base = {"input_csv_path": "x.csv", "output": {"csv_path": "o.csv"}}
    cfg = CoresetConfig.model_validate(base)
    assert (cfg.cb_use_spatial, cfg.fa_use_spatial) == (False, False)
    assert (cfg.spatial_radius_m, cfg.spatial_penalty) == (1000.0, 1.0)
    CoresetConfig.model_validate({**base, "method": "fa_cb", "cb_use_spatial": True})
    with pytest.raises(ValueError, match="cb_use_spatial applies to cb and fa_cb; method is lc"):
        CoresetConfig.model_validate({**base, "method": "lc", "cb_use_spatial": True})
    with pytest.raises(ValueError, match="fa_use_spatial applies to fa and fa_cb; method is cb"):
        CoresetConfig.model_validate({**base, "fa_use_spatial": True})


def _csv(path: Path, crs: list[str]) -> pd.DataFrame:
    """Five tiles with the counts and positions of the tiny layout (the last two in ``crs[1]``
    when given: the same places, written in the next UTM zone)."""
    lon0, lat0 = 5.99, 45.0
    to_ll = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(lon0, lat0)
    rows = []
    for i in range(5):
        zone = crs[0] if i < 3 else crs[-1]
        lon, lat = to_ll.transform(x0 + XY[i, 0], y0 + XY[i, 1])
        x, y = Transformer.from_crs("EPSG:4326", zone, always_xy=True).transform(lon, lat)
        rows.append(
            {
                "tile_id": int(IDS[i]),
                "image_path": "img.tif",
                "minx": x - 8,
                "miny": y - 8,
                "maxx": x + 8,
                "maxy": y + 8,
                "crs": zone,
                "excluded": False,
                "class_counts_json": json.dumps({"1": int(COUNTS[i, 0]), "2": int(COUNTS[i, 1])}),
            }
        )
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.parametrize("crs", [["EPSG:32631"], ["EPSG:32631", "EPSG:32632"]])
def test_command_spatial_cb_one_zone_and_two(tmp_path: Path, crs: list[str]) -> None:
    from smt_tools.pipelines.coreset import run_coreset

    _csv(tmp_path / "in.csv", crs)
    cfg = CoresetConfig.model_validate(
        {
            "input_csv_path": str(tmp_path / "in.csv"),
            "method": "cb",
            "budget": 3,
            "budget_mode": "count",
            "cb_growth": 0,
            "cb_use_spatial": True,
            "spatial_radius_m": 100,
            "output": {"csv_path": str(tmp_path / "out.csv")},
        }
    )
    res = run_coreset(cfg)
    out = pd.read_csv(tmp_path / "out.csv")
    assert sorted(out.loc[out["coreset_selected"], "tile_id"]) == [1, 3, 4]
    kind = "planar" if len(crs) == 1 else "geodesic (WGS 84)"
    assert res.info["spatial"]["distances"] == kind


def test_command_refuses_tiles_without_position(tmp_path: Path) -> None:
    from smt_tools.errors import InputDataError
    from smt_tools.pipelines.coreset import run_coreset

    frame = _csv(tmp_path / "in.csv", ["EPSG:32631"])
    frame.drop(columns=["minx"]).to_csv(tmp_path / "in.csv", index=False)
    cfg = CoresetConfig.model_validate(
        {
            "input_csv_path": str(tmp_path / "in.csv"),
            "cb_use_spatial": True,
            "output": {"csv_path": str(tmp_path / "out.csv")},
        }
    )
    with pytest.raises(InputDataError, match=r"coreset.cb_use_spatial needs column\(s\) minx"):
        run_coreset(cfg)
