"""The split buffer on tiles in two UTM zones: planar within each zone, geodesic across the zone
boundary and near the threshold (:mod:`smt_tools.splits.zones`), gives exactly the pairs of the
all-geodesic reference (:func:`smt_tools.splits.measure_pairs`, every candidate pair measured on
WGS 84).

Real coordinates: tiles in EPSG:32632 and EPSG:32633 on both sides of the 12°E zone boundary at
48°N (fields that overlap across the boundary, pairs whose planar gap straddles 50 m, touching
and overlapping tiles), and the same zones far from their boundary (9°E and 15°E).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyproj import Geod, Transformer

from smt_tools.splits import (
    buffer_exclusions,
    distance,
    exclusions_from_pairs,
    measure_pairs,
    zones,
)
from smt_tools.splits.distance import TileFootprints, tile_footprints
from smt_tools.splits.grid import box_distances
from smt_tools.splits.zones import zoned_close_pairs

GEOD = Geod(ellps="WGS84")
Z32, Z33 = "EPSG:32632", "EPSG:32633"


def _to(crs: str, lon: float, lat: float) -> tuple[float, float]:
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return float(x), float(y)


def _field(crs: str, lon: float, lat: float, n: int, rng: np.random.Generator) -> list[tuple]:
    """``n`` random tiles (20-120 m sides) in a 1.5 km square of ``crs`` centred on lon/lat."""
    x0, y0 = _to(crs, lon, lat)
    cx = x0 + rng.uniform(-750, 750, n)
    cy = y0 + rng.uniform(-750, 750, n)
    w, h = rng.uniform(20, 120, n), rng.uniform(20, 120, n)
    return [
        (crs, a - u / 2, b - v / 2, a + u / 2, b + v / 2)
        for a, b, u, v in zip(cx, cy, w, h, strict=True)
    ]


def _threshold_pairs(crs: str, lon: float, lat: float) -> list[tuple]:
    """Pairs of 100 m tiles side by side in ``crs`` whose planar gap is 49.9 .. 50.2 m: the
    zone's point scale (about 1.0002 here) puts some gaps above 50 m within 50 m on WGS 84."""
    x0, y0 = _to(crs, lon, lat)
    out = []
    for k, gap in enumerate([49.9, 49.99, 50.0, 50.005, 50.008, 50.01, 50.012, 50.02, 50.2]):
        y = y0 + 400.0 * k
        out += [(crs, x0, y, x0 + 100, y + 100), (crs, x0 + 100 + gap, y, x0 + 200 + gap, y + 100)]
    return out


def _cross_pairs(lat: float) -> list[tuple]:
    """A zone-32 tile ending at 12°E and a zone-33 tile ``g`` m east of its right edge's
    midpoint; the grids are rotated against each other (meridian convergence), so the corners
    come about 3.9 m closer: footprints 49.7 .. 50.3 m apart."""
    out = []
    for k, g in enumerate(np.linspace(53.6, 54.2, 9)):
        la = lat + 0.004 * k
        x, y = _to(Z32, 12.0, la)
        out.append((Z32, x - 100, y - 50, x, y + 50))
        lon_b, lat_b, _ = GEOD.fwd(12.0, la, 90.0, g)
        xb, yb = _to(Z33, lon_b, lat_b)
        out.append((Z33, xb, yb - 50, xb + 100, yb + 50))
    return out


def _frame(tiles: list[tuple], folds: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame(tiles, columns=["crs", "minx", "miny", "maxx", "maxy"])
    frame["source_image_id"] = np.arange(len(frame))
    return frame, np.asarray(folds, dtype=np.int64)


def boundary_case(seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Tiles of both zones around 12°E, 48°N (fields overlapping across the boundary), the
    threshold pairs in each zone, the cross-boundary pairs, one touching and one overlapping
    pair; folds: random in -1..4 for the fields, 0 / 1 for the pairs."""
    rng = np.random.default_rng(seed)
    tiles = _field(Z32, 11.995, 48.0, 300, rng) + _field(Z33, 12.005, 48.0, 300, rng)
    folds = list(rng.integers(-1, 5, len(tiles)))
    x, y = _to(Z32, 11.9, 48.0)
    pairs = _threshold_pairs(Z32, 11.9, 48.05) + _threshold_pairs(Z33, 12.1, 48.05)
    pairs += _cross_pairs(48.1)
    pairs += [(Z32, x, y, x + 80, y + 80), (Z32, x + 80, y + 10, x + 150, y + 60)]  # touching
    x, y = _to(Z33, 12.2, 48.0)
    pairs += [(Z33, x, y, x + 90, y + 90), (Z33, x + 45, y + 45, x + 135, y + 135)]  # overlap
    folds += [0, 1] * (len(pairs) // 2)
    return _frame(tiles + pairs, np.asarray(folds))


def far_case(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Tiles of zone 32 at its central meridian (9°E) and of zone 33 at its own (15°E): the
    same native coordinates 450 km apart; threshold pairs in both zones."""
    rng = np.random.default_rng(seed)
    tiles = _field(Z32, 9.0, 48.0, 250, rng) + _field(Z33, 15.0, 48.0, 250, rng)
    folds = list(rng.integers(-1, 5, len(tiles)))
    pairs = _threshold_pairs(Z32, 10.5, 48.05) + _threshold_pairs(Z33, 16.5, 48.05)
    folds += [0, 1] * (len(pairs) // 2)
    return _frame(tiles + pairs, np.asarray(folds))


def _pairs(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in zip(i, j, strict=True)}


class _Spy:
    """Counts the rows / pairs the zoned path sends to the geodesic kernels."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        self.band = 0
        pairs, dists = zones.geodesic_pairs, zones.geodesic_distances

        def spy_pairs(fp: TileFootprints, rows: np.ndarray, *a: Any) -> Any:
            self.rows += len(rows)
            return pairs(fp, rows, *a)

        def spy_dists(fp: TileFootprints, i: np.ndarray, j: np.ndarray) -> Any:
            self.band += len(i)
            return dists(fp, i, j)

        monkeypatch.setattr(zones, "geodesic_pairs", spy_pairs)
        monkeypatch.setattr(zones, "geodesic_distances", spy_dists)


@pytest.mark.parametrize("buffer_m", [0.0, 20.0, 50.0])
def test_boundary_pairs_equal_all_geodesic_reference(
    buffer_m: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, fold = boundary_case()
    fp = tile_footprints(frame)
    assert fp.method.kind == "geodesic" and fp.source is not None
    ri, rj, _ = measure_pairs(fp, buffer_m, labels=fold)
    spy = _Spy(monkeypatch)
    zi, zj = zoned_close_pairs(fp, buffer_m, fold)
    assert _pairs(zi, zj) == _pairs(ri, rj)
    np.testing.assert_array_equal(zi, ri)  # same order too: sorted by (i, j)
    np.testing.assert_array_equal(zj, rj)
    crs = frame["crs"].to_numpy()
    cross = crs[ri] != crs[rj]
    assert cross.any()  # the case has pairs across the zone boundary ...
    assert 0 < spy.rows < len(frame)  # ... found by the geodesic pass on tiles near it only
    ex = buffer_exclusions(fp, fold, buffer_m, 5)
    np.testing.assert_array_equal(ex, exclusions_from_pairs(ri, rj, fold, 5))


def test_boundary_threshold_pairs_need_the_scale() -> None:
    """The case is sensitive: within one zone, pairs whose planar gap is above 50 m are within
    50 m on WGS 84, and some cross-boundary pairs are in, some out."""
    frame, fold = boundary_case()
    fp = tile_footprints(frame)
    ri, rj, rd = measure_pairs(fp, 50.0, labels=fold)
    b = [frame[c].to_numpy(np.float64) for c in ("minx", "miny", "maxx", "maxy")]
    crs = frame["crs"].to_numpy()
    same = crs[ri] == crs[rj]
    planar = box_distances(*b, ri[same], rj[same])
    assert (planar > 50.0).sum() >= 4  # a planar-only buffer would miss these
    assert np.all(rd <= 50.0)
    cross_pairs = _cross_pairs(48.1)
    first = len(frame) - len(cross_pairs) - 4  # the cross pairs sit before the last 4 tiles
    found = _pairs(ri, rj)
    hits = [(first + 2 * k, first + 2 * k + 1) in found for k in range(len(cross_pairs) // 2)]
    assert any(hits) and not all(hits)


def test_far_from_the_boundary_no_geodesic_pairing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zones 450 km apart: no tile is near the other zone, so nothing is paired geodesically;
    only the pairs within centimetres of the threshold are measured; same pairs."""
    frame, fold = far_case()
    fp = tile_footprints(frame)
    ri, rj, _ = measure_pairs(fp, 50.0, labels=fold)
    spy = _Spy(monkeypatch)
    zi, zj = zoned_close_pairs(fp, 50.0, fold)
    assert _pairs(zi, zj) == _pairs(ri, rj)
    assert len(ri) > 20
    crs = frame["crs"].to_numpy()
    assert not (crs[ri] != crs[rj]).any()
    assert spy.rows == 0
    assert 0 < spy.band < 30  # the threshold pairs, not the fields


def test_geographic_tiles_and_lazy_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles in lon/lat (EPSG:4326) beside zone-32 and zone-33 tiles are measured
    geodesically, against each other and the zones; rings built per chunk give the same."""
    frame, fold = boundary_case(11)
    ll = frame.iloc[:150].copy()
    rings = Transformer.from_crs(Z32, "EPSG:4326", always_xy=True)
    ll["minx"], ll["miny"] = rings.transform(ll["minx"].to_numpy(), ll["miny"].to_numpy())
    ll["maxx"], ll["maxy"] = rings.transform(ll["maxx"].to_numpy(), ll["maxy"].to_numpy())
    ll["crs"] = "EPSG:4326"
    frame = pd.concat([frame, ll], ignore_index=True)
    fold = np.concatenate([fold, np.random.default_rng(1).integers(-1, 5, 150)])
    frame["crs"] = frame["crs"].astype("category")  # as a batched Parquet read gives it
    fp = tile_footprints(frame)
    ri, rj, _ = measure_pairs(fp, 50.0, labels=fold)
    crs = frame["crs"].astype(str).to_numpy()
    assert ((crs[ri] == "EPSG:4326") != (crs[rj] == "EPSG:4326")).any()
    monkeypatch.setattr(distance, "_LAZY_RINGS", 0)
    monkeypatch.setattr(distance, "_CHUNK", 37)
    lazy = tile_footprints(frame)
    assert lazy.rings is None
    zi, zj = zoned_close_pairs(lazy, 50.0, fold)
    assert _pairs(zi, zj) == _pairs(ri, rj)


def test_tiles_without_crs_are_never_paired() -> None:
    frame, fold = boundary_case()
    frame.loc[:99, "crs"] = ""
    fp = tile_footprints(frame)
    ri, rj, _ = measure_pairs(fp, 50.0, labels=fold)
    zi, zj = zoned_close_pairs(fp, 50.0, fold)
    assert _pairs(zi, zj) == _pairs(ri, rj)
    assert not np.isin(np.concatenate([zi, zj]), np.arange(100)).any()


@pytest.mark.parametrize(
    ("crs", "lon"),
    [
        ("EPSG:32632", 14.6),  # zone 32 used 5.6° east of its meridian: scale error 0.3 %
        ("EPSG:3857", 12.0),  # Web Mercator at 48°N: native metres are 1.49 ground metres
    ],
)
def test_one_distorted_crs_pairs_equal_reference(crs: str, lon: float) -> None:
    """One CRS whose scale is too far from 1 for planar distances (the geodesic method): the
    zoned path scales its planar gaps by the CRS's point scale and measures the pairs near the
    threshold; the pairs are the reference's."""
    rng = np.random.default_rng(5)
    tiles = _field(crs, lon, 48.0, 400, rng)
    frame, fold = _frame(tiles, rng.integers(-1, 5, len(tiles)))
    fp = tile_footprints(frame)
    assert fp.method.kind == "geodesic" and fp.method.scale_error > 1e-3
    for buffer_m in (0.0, 30.0, 50.0):
        ri, rj, _ = measure_pairs(fp, buffer_m, labels=fold)
        zi, zj = zoned_close_pairs(fp, buffer_m, fold)
        assert _pairs(zi, zj) == _pairs(ri, rj), buffer_m
        assert len(ri) > 10
