"""Write a synthetic Parquet tile table of millions of tiles straight away (no rasters).

The table is what ``catalog ingest --catalog tiles.parquet`` writes (same columns, metadata and
fingerprint columns), built scene by scene and written in row groups, so 10,000,000 tiles need
about one chunk of memory, not ten million Python objects:

- scenes of ``--tiles-per-side``² tiles of 256x256 px at 0.5 m in two UTM zones (EPSG:32631 /
  32632), on a grid; every 7th scene is a second acquisition of the scene 3 before it, shifted
  by a third of a tile, so footprints overlap;
- class counts (classes 1..6, nodata 0) from a Dirichlet mixture whose component weights are
  drawn per scene (urban, water, forest, farmland and mixed scenes); 10 % pure-class tiles;
- nodata at the scene's outer row and column of tiles (border) and in 3 % of the others; black
  image borders on 2 % of the edge tiles.

    python benchmarks/gen_tiles.py /tmp/tiles_10m.parquet --n 10000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.catalog.parquet_io import tile_table_writer  # noqa: E402
from smt_tools.raster.info import RasterInfo  # noqa: E402
from smt_tools.raster.scan import SourceRecord  # noqa: E402
from smt_tools.tiletable import (  # noqa: E402
    TileTable,
    entropy_from_counts,
    source_image_key,
    tile_keys,
)

PATCH = 256
PIXEL = 0.5
CLASSES = np.arange(1, 7)
GRID_COLUMNS = 50  # scenes per row of the layout
#: Dirichlet components (background, urban, water, forest, farmland, rare)
ALPHAS = np.array(
    [
        [8.0, 1.0, 1.0, 0.5, 0.3, 0.05],
        [2.0, 4.0, 1.0, 1.0, 0.5, 0.2],
        [1.0, 0.5, 5.0, 0.5, 0.5, 0.05],
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.3],
        [3.0, 0.3, 0.3, 3.0, 2.0, 0.5],
    ]
)


def _scene_origin(i: int, per_side: int) -> tuple[float, float, str]:
    """(x0, y0, crs) of scene ``i``; every 7th scene re-images scene i - 3, shifted."""
    size_m = per_side * PATCH * PIXEL
    base = i - 3 if i % 7 == 6 else i
    shift = PATCH * PIXEL / 3 if base != i else 0.0
    zone = "EPSG:32631" if (base // (GRID_COLUMNS * 20)) % 2 == 0 else "EPSG:32632"
    x0 = 300_000.0 + (base % GRID_COLUMNS) * (size_m + 500) + shift
    y0 = 5_500_000.0 - (base // GRID_COLUMNS % (GRID_COLUMNS * 20)) * (size_m + 500) - shift
    return x0, y0, zone


def _scene_frame(i: int, m: int, per_side: int) -> pd.DataFrame:
    """The first ``m`` tiles of scene ``i`` (window and footprint columns)."""
    x0, y0, crs = _scene_origin(i, per_side)
    img, msk = f"/bench/images/scene_{i:06d}.tif", f"/bench/masks/scene_{i:06d}.tif"
    k = np.arange(m)
    row, col = (k // per_side) * PATCH, (k % per_side) * PATCH
    h = np.full(m, PATCH, np.int64)
    return pd.DataFrame(
        {
            "tile_id": tile_keys(img, row, col, h, h),
            "source_image_id": np.full(m, source_image_key(img), np.int64),
            "group_id": f"scene_{i:06d}",
            "image_path": img,
            "mask_path": msk,
            "row_off": row,
            "col_off": col,
            "height": h,
            "width": h,
            "minx": x0 + col * PIXEL,
            "miny": y0 - (row + PATCH) * PIXEL,
            "maxx": x0 + (col + PATCH) * PIXEL,
            "maxy": y0 - row * PIXEL,
            "crs": crs,
        }
    )


def synth_chunk(first: int, n_scenes: int, n: int, per_side: int, seed: int) -> TileTable:
    """Scenes ``first .. first + n_scenes - 1`` (the last one cut so the chunk has ``n`` tiles)
    as a TileTable with class counts (n, 6) int64; seeded by (seed, first)."""
    rng = np.random.default_rng([seed, first])
    per_image = per_side * per_side
    sizes = [min(per_image, n - s * per_image) for s in range(n_scenes)]
    frame = pd.concat(
        [_scene_frame(first + s, m, per_side) for s, m in enumerate(sizes)], ignore_index=True
    )
    scene = np.repeat(np.arange(n_scenes), sizes)
    mix = rng.dirichlet(np.full(len(ALPHAS), 0.6), size=n_scenes)  # the scene's landscape
    u = rng.random(n)[:, None]
    comp = (u > np.cumsum(mix, axis=1)[scene]).sum(axis=1).clip(0, len(ALPHAS) - 1)
    p = rng.gamma(ALPHAS[comp])
    p /= p.sum(axis=1, keepdims=True)
    pure = rng.random(n) < 0.1
    p[pure] = 0.0
    p[pure, rng.choice(len(CLASSES), size=int(pure.sum()), p=[0.6, 0.1, 0.2, 0.05, 0.04, 0.01])] = 1
    window = PATCH * PATCH
    last = per_side - 1
    tile_row = frame["row_off"].to_numpy() // PATCH
    tile_col = frame["col_off"].to_numpy() // PATCH
    edge = (tile_row == last) | (tile_col == last) | (tile_row == 0) | (tile_col == 0)
    border = ((tile_row == last) | (tile_col == last)) | (rng.random(n) < 0.03)
    nodata = np.zeros(n, np.int64)
    nodata[border] = (rng.uniform(0.01, 0.6, int(border.sum())) * window).astype(np.int64)
    valid = window - nodata
    counts = np.floor(p * valid[:, None]).astype(np.int64)
    counts[np.arange(n), counts.argmax(axis=1)] += valid - counts.sum(axis=1)
    frame["valid_pixels"] = valid
    frame["nodata_ratio"] = nodata / window
    frame["class_entropy"] = entropy_from_counts(counts)
    frame["has_mask_border_nodata"] = border
    frame["has_image_black_border"] = edge & (rng.random(n) < 0.02)
    _fingerprints(frame)
    return TileTable(frame, counts, CLASSES.copy(), 0)


def _fingerprints(frame: pd.DataFrame) -> None:
    """The ingest fingerprint columns, as ``catalog ingest --patch-size 256`` records them."""
    n = len(frame)
    frame["image_size"] = pd.array(np.full(n, 50_000_000), dtype="Int64")
    frame["image_mtime"] = pd.array(np.full(n, 1.7e9), dtype="Float64")
    frame["mask_size"] = pd.array(np.full(n, 2_000_000), dtype="Int64")
    frame["mask_mtime"] = pd.array(np.full(n, 1.7e9), dtype="Float64")
    frame["patch_size"] = pd.array(np.full(n, PATCH), dtype="Int64")
    frame["stride"] = pd.array(np.full(n, PATCH), dtype="Int64")
    frame["edge_policy"] = pd.array(["drop"] * n, dtype="string")
    frame["black_tolerance"] = pd.array(np.zeros(n), dtype="Float64")
    frame["mask_band"] = pd.array(np.ones(n, np.int64), dtype="Int64")
    frame["scan_rules"] = pd.array(np.ones(n, np.int64), dtype="Int64")


def source_records(table: TileTable) -> list[SourceRecord]:
    """One source record per scene of ``table`` (what ``catalog ingest`` would have read from
    the rasters: size, CRS, transform), for loading the tiles into a PostGIS catalog."""
    f = table.frame.drop_duplicates("source_image_id")
    size = int((f["row_off"].max() + PATCH) if len(f) else PATCH)
    out = []
    for sid, img, msk, grp, crs in zip(
        f["source_image_id"], f["image_path"], f["mask_path"], f["group_id"], f["crs"],
        strict=True,
    ):  # fmt: skip
        i = int(str(grp).rsplit("_", 1)[1])
        x0, y0, _ = _scene_origin(i, size // PATCH)
        transform = (PIXEL, 0.0, x0, 0.0, -PIXEL, y0)
        infos = [
            RasterInfo(str(p), size, size, bands, "uint8", str(crs), transform, None, 0, 0.0)
            for p, bands in ((img, 3), (msk, 1))
        ]
        out.append(SourceRecord(int(sid), infos[0], infos[1], str(grp)))
    return out


def write_tiles(
    path: Path, n: int, per_side: int = 40, seed: int = 0, chunk_tiles: int = 500_000
) -> int:
    """Write ``n`` synthetic tiles to the tile table ``path``; returns the number of scenes."""
    per_image = per_side * per_side
    n_scenes = -(-n // per_image)
    per_chunk = max(1, chunk_tiles // per_image)
    names = {int(v): (f"class_{int(v)}", None) for v in CLASSES}
    with tile_table_writer(path, class_names=names) as write:
        for first in range(0, n_scenes, per_chunk):
            count = min(per_chunk, n_scenes - first)
            m = min(count * per_image, n - first * per_image)
            write(synth_chunk(first, count, m, per_side, seed))
    return n_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", type=Path, help="the tile table to write (.parquet)")
    ap.add_argument("--n", type=int, default=10_000_000, help="tiles (default 10,000,000)")
    ap.add_argument("--tiles-per-side", type=int, default=40, help="tiles per scene side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = time.perf_counter()
    scenes = write_tiles(args.path, args.n, args.tiles_per_side, args.seed)
    print(
        f"wrote {args.n:,} tiles of {scenes:,} scenes to {args.path} "
        f"in {time.perf_counter() - t:.1f} s"
    )


if __name__ == "__main__":
    main()
