"""Test data for the split / leakage tests: a balanced-style CSV scanned from demo rasters."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from smt_tools.raster.scan import PairSpec, inspect_pair, scan
from smt_tools.raster.tiling import tile_windows


def balanced_csv_from_pairs(pairs_csv: Path, out_csv: Path, patch: int = 128) -> pd.DataFrame:
    """Scan every pair of ``pairs_csv`` into tiles of ``patch`` px and write the columns of the
    balanced CSV that split / check-leakage read (tile_id, source_image_id, group_id, bounds,
    crs, class_counts_json, ...). Returns the frame written."""
    root = pairs_csv.parent
    with pairs_csv.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sources = [
        inspect_pair(PairSpec(str(root / r["image"]), str(root / r["mask"]), r.get("group")))
        for r in rows
    ]
    windows = [tile_windows(s.mask.width, s.mask.height, patch) for s in sources]
    table = scan(sources, windows, workers=1)
    frame = table.frame.copy()
    frame["patch_size"] = patch
    frame["class_counts_json"] = [
        json.dumps({str(int(v)): int(c) for v, c in zip(table.class_values, row, strict=True)})
        for row in table.counts
    ]
    frame["excluded"] = False
    frame["sampler_weight"] = 1.0
    frame.to_csv(out_csv, index=False)
    return frame


def grid_frame(
    n_images: int,
    per_side: int,
    tile_m: float = 128.0,
    gap_m: float = 1000.0,
    overlap_pairs: int = 0,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic tile footprints: a per_side x per_side grid per source image, images laid out
    left to right with ``gap_m`` between them; the last ``overlap_pairs`` images are shifted
    copies (half a tile) of the first ones. Returns (frame, counts (n, 6))."""
    rng = np.random.default_rng(seed)
    frames = []
    side = per_side * tile_m
    for img in range(n_images):
        base = img if img < n_images - overlap_pairs else img - (n_images - overlap_pairs)
        x0 = 500_000.0 + base * (side + gap_m) + (tile_m / 2 if base != img else 0.0)
        y0 = 5_000_000.0 + (tile_m / 2 if base != img else 0.0)
        r, c = np.meshgrid(np.arange(per_side), np.arange(per_side), indexing="ij")
        r, c = r.ravel(), c.ravel()
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": img * 1_000_000 + r * per_side + c + 1,
                    "source_image_id": 10_000 + img,
                    "group_id": f"img{img:03d}",
                    "minx": x0 + c * tile_m,
                    "miny": y0 + r * tile_m,
                    "maxx": x0 + (c + 1) * tile_m,
                    "maxy": y0 + (r + 1) * tile_m,
                    "crs": "EPSG:32631",
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    counts = rng.integers(0, 1000, size=(len(frame), 6)).astype(np.int64)
    return frame, counts
