"""Binary 0/1 masks whose GeoTIFFs tag 0 as nodata (the issue-11 case: 0 is background).

The mask is 2 x 8 tiles of 16 px (32 x 128). ``bin``: tile (0, 0) is all 1, tile (0, 1) has
its left half 1, every other tile is all 0. ``edge``: the same, but the top row of tile (0, 0)
is 0 too, so every tile's border touches 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.rasters import write_pair

PATCH = 16
ROWS, COLS = 2, 8
N_TILES = ROWS * COLS
WINDOW_PIXELS = N_TILES * PATCH * PATCH  # 4096
#: pixels of class 1 in each scene
ONES = {"bin": 256 + 128, "edge": 256 - 16 + 128}


def binary_mask(kind: str) -> np.ndarray:
    mask = np.zeros((ROWS * PATCH, COLS * PATCH), np.uint8)
    mask[:PATCH, :PATCH] = 1
    mask[:PATCH, PATCH : PATCH + PATCH // 2] = 1
    if kind == "edge":
        mask[0, :PATCH] = 0
    assert int(mask.sum()) == ONES[kind]
    return mask


def write_binary_scene(folder: Path, kind: str) -> tuple[Path, Path, Path]:
    """Image + mask GeoTIFFs (both tagged nodata=0) and a pairs CSV; returns (img, mask, csv)."""
    img, msk = write_pair(folder, kind, binary_mask(kind), nodata=0)
    pairs = folder / f"{kind}_pairs.csv"
    pairs.write_text(f"image,mask\n{img.name},{msk.name}\n")
    return img, msk, pairs


def patch_records(img: Path, msk: Path) -> list[dict[str, Any]]:
    """Every 16-px window of the scene, row-major."""
    return [
        {
            "image_path": str(img),
            "mask_path": str(msk),
            "row_off": r * PATCH,
            "col_off": c * PATCH,
            "patch_size": PATCH,
        }
        for r in range(ROWS)
        for c in range(COLS)
    ]
