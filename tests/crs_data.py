"""Test data for distances across CRS zones and rasters without a CRS (tests/test_crs_*.py).

- :func:`zone_scenes`: real GeoTIFFs in EPSG:32631 and EPSG:32632 on either side of the 6°E zone
  boundary (45°N) whose footprints are a known geodesic distance apart, plus a bigger scene far
  east (EPSG:32640, 57°E) that pulls a "one common UTM zone" choice away from the pair;
- :func:`write_plain_pair`: an image/mask pair with NO CRS and no geotransform (a slide scan);
- :func:`reference_distance`: an independent geodesic distance between two native boxes
  (dense boundary samples, pyproj.Geod on WGS 84), to check the toolkit's numbers against.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Geod, Transformer
from rasterio.errors import NotGeoreferencedWarning

from tests.rasters import write_pair

GEOD = Geod(ellps="WGS84")
LAT = 45.0
SIZE_PX = 256  # each zone-pair scene: 256 x 256 px at 1 m -> 2 x 2 tiles of 128 px


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    """Classes 1 and 2 in vertical halves, class 3 in a seeded block (no 0: nodata is 0)."""
    m = np.ones((h, w), np.uint8)
    m[:, w // 2 :] = 2
    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, h - 16), rng.integers(0, w - 16)
    m[r : r + 16, c : c + 16] = 3
    return m


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, size=(3, h, w), dtype=np.uint8)


def _edge_lonlat(
    crs: str, x0: float, x1: float, y0: float, y1: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples of the boundary of the native box [x0, x1] x [y0, y1] in lon/lat."""
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return np.asarray(lon), np.asarray(lat)


def reference_distance(
    a: tuple[str, float, float, float, float],
    b: tuple[str, float, float, float, float],
    n: int = 400,
) -> float:
    """Geodesic distance (m, WGS 84) between two native boxes ``(crs, minx, miny, maxx, maxy)``:
    the minimum of pyproj.Geod.inv over dense boundary samples (``n`` per edge; the sampling
    overestimates by at most (edge / n)^2 / (8 d), well under a millimetre here)."""
    la, pa = _edge_lonlat(a[0], a[1], a[3], a[2], a[4], n)
    lb, pb = _edge_lonlat(b[0], b[1], b[3], b[2], b[4], n)
    # coarse pass on every 8th sample, then the exact pass near the best coarse pair
    ia, ib = np.meshgrid(np.arange(0, len(la), 8), np.arange(0, len(lb), 8), indexing="ij")
    _, _, d = GEOD.inv(la[ia.ravel()], pa[ia.ravel()], lb[ib.ravel()], pb[ib.ravel()])
    k = int(np.argmin(d))
    ca, cb = int(ia.ravel()[k]), int(ib.ravel()[k])
    wa = np.arange(max(ca - 16, 0), min(ca + 17, len(la)))
    wb = np.arange(max(cb - 16, 0), min(cb + 17, len(lb)))
    ja, jb = np.meshgrid(wa, wb, indexing="ij")
    _, _, d2 = GEOD.inv(la[ja.ravel()], pa[ja.ravel()], lb[jb.ravel()], pb[jb.ravel()])
    return float(min(d.min(), d2.min()))


@dataclass(frozen=True)
class ZoneScenes:
    """Three georeferenced scenes; ``pairs_csv`` lists them (image, mask, group a/b/c).

    a: EPSG:32631 west of 6°E; b: EPSG:32632 east of it, ``gap_m`` (geodesic) from a;
    c: EPSG:32640 at 57°E, 3 x 3 tiles (more tiles than a and b together). Boxes are
    ``(crs, minx, miny, maxx, maxy)`` of the whole scenes.
    """

    pairs_csv: Path
    box_a: tuple[str, float, float, float, float]
    box_b: tuple[str, float, float, float, float]
    gap_m: float


def _box(
    crs: str, origin: tuple[float, float], size: int
) -> tuple[str, float, float, float, float]:
    return (crs, origin[0], origin[1] - size, origin[0] + size, origin[1])


def zone_scenes(
    folder: Path,
    gap_m: float = 45.0,
    zones: tuple[int, int, int] = (31, 32, 40),
    boundary_lon: float = 6.0,
) -> ZoneScenes:
    """Write the three scenes of :class:`ZoneScenes` (scene b placed so that the geodesic
    distance between the footprints of a and b is ``gap_m`` to a millimetre).

    zones: UTM zones (north) of a, b and c; boundary_lon: the meridian between a's and b's
    zones (180 for zones 60 and 1: the pair straddles the antimeridian)."""
    folder.mkdir(parents=True, exist_ok=True)
    crs_a, crs_b, crs_c = (f"EPSG:{32600 + z}" for z in zones)
    to_a = Transformer.from_crs("EPSG:4326", crs_a, always_xy=True)
    to_b = Transformer.from_crs("EPSG:4326", crs_b, always_xy=True)
    xe, ye = to_a.transform(boundary_lon, LAT)
    origin_a = (round(xe - 100.0 - SIZE_PX), round(ye + SIZE_PX / 2))
    box_a = _box(crs_a, origin_a, SIZE_PX)
    # b's top-left corner: gap_m due east of a's top-right corner, then corrected so that the
    # footprints (not the corners) are gap_m apart (the zones' grids differ by ~4 degrees)
    lon, lat = Transformer.from_crs(crs_a, "EPSG:4326", always_xy=True).transform(
        origin_a[0] + SIZE_PX, origin_a[1]
    )
    lon_b, lat_b, _ = GEOD.fwd(lon, lat, 90.0, gap_m)
    bx, by = to_b.transform(lon_b, lat_b)
    for _ in range(4):
        d = reference_distance(box_a, _box(crs_b, (bx, by), SIZE_PX))
        bx += gap_m - d
    origin_b = (bx, by)
    box_b = _box(crs_b, origin_b, SIZE_PX)
    to_c = Transformer.from_crs("EPSG:4326", crs_c, always_xy=True)
    origin_c = tuple(round(v) for v in to_c.transform(zones[2] * 6.0 - 183.0, LAT))
    write_pair(folder, "a", _mask(SIZE_PX, SIZE_PX, 1), _image(SIZE_PX, SIZE_PX, 1),
               crs=crs_a, origin=origin_a)  # fmt: skip
    write_pair(folder, "b", _mask(SIZE_PX, SIZE_PX, 2), _image(SIZE_PX, SIZE_PX, 2),
               crs=crs_b, origin=origin_b)  # fmt: skip
    write_pair(folder, "c", _mask(384, 384, 3), _image(384, 384, 3),
               crs=crs_c, origin=origin_c)  # fmt: skip
    pairs = folder / "pairs.csv"
    with pairs.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "group"])
        for name in "abc":
            w.writerow([f"{name}_img.tif", f"{name}_mask.tif", name])
    return ZoneScenes(pairs, box_a, box_b, reference_distance(box_a, box_b))


def write_plain_tif(path: Path, data: np.ndarray) -> Path:
    """A GeoTIFF-less TIFF: no CRS, no geotransform (rasterio reads the identity transform)."""
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        compress="deflate",
    )
    with warnings.catch_warnings():  # no geotransform on purpose
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    return path


def write_plain_pair(folder: Path, name: str, size: int = 256, seed: int = 0) -> tuple[Path, Path]:
    """``<name>_img.tif`` / ``<name>_mask.tif`` without a CRS (a slide scan and its labels)."""
    img = write_plain_tif(folder / f"{name}_img.tif", _image(size, size, seed))
    msk = write_plain_tif(folder / f"{name}_mask.tif", _mask(size, size, seed))
    return img, msk


def write_pairs_csv(path: Path, names: list[str]) -> Path:
    """pairs CSV listing ``<name>_img.tif, <name>_mask.tif`` for each name (group = name)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "group"])
        for name in names:
            w.writerow([f"{name}_img.tif", f"{name}_mask.tif", name])
    return path
