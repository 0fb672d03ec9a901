"""Hand-built image/mask pairs with exactly known tile statistics (catalog and ingest tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tests.rasters import write_pair

#: Expected stats of the 4 tiles (4x4, row-major) of :func:`hand_pair`, classes [1, 2, 3].
HAND_COUNTS = [[12, 0, 0], [0, 16, 0], [8, 0, 8], [0, 0, 0]]
HAND_NODATA_RATIO = [0.25, 0.0, 0.0, 1.0]
HAND_MASK_BORDER = [True, False, False, True]
HAND_BLACK_BORDER = [False, True, False, False]


def hand_mask() -> np.ndarray:
    """8x8 mask: tile (0,0) class 1 with a nodata left column; (0,4) class 2;
    (4,0) half class 3 / half class 1; (4,4) all nodata."""
    mask = np.ones((8, 8), np.uint8)
    mask[0:4, 0] = 0
    mask[0:4, 4:8] = 2
    mask[4:8, 0:2] = 3
    mask[4:8, 4:8] = 0
    return mask


def hand_image() -> np.ndarray:
    image = np.full((3, 8, 8), 100, np.uint8)
    image[:, 0, 4:8] = 0  # a black top row (a collar) on tile (0,4): its whole 4-px top edge
    return image


def hand_pair(folder: Path, name: str = "hand", **kw: object) -> tuple[Path, Path]:
    return write_pair(folder, name, hand_mask(), hand_image(), **kw)


def write_pairs_csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("image", "mask")
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def two_scenes(folder: Path) -> Path:
    """Two 8x8 pairs side by side (a: hand-built, b: classes 1 and 2 halves); returns pairs.csv."""
    hand_pair(folder, "a")
    mask_b = np.ones((8, 8), np.uint8)
    mask_b[:, 4:] = 2
    write_pair(folder, "b", mask_b, origin=(500_008.0, 5_000_000.0))
    return write_pairs_csv(
        folder / "pairs.csv", [("a_img.tif", "a_mask.tif"), ("b_img.tif", "b_mask.tif")]
    )


def corrupt_last_block_pair(folder: Path, name: str = "broken") -> tuple[Path, Path]:
    """A 32x32 pair (16 px blocks) whose mask opens fine but whose LAST block is garbage, so
    only the scan (not the inspection) fails, on the last window."""
    import rasterio
    from rasterio.transform import from_origin

    mask = np.ones((32, 32), np.uint8)
    img = write_pair(folder, name, mask, origin=(600_000.0, 5_000_000.0))[0]
    path = folder / f"{name}_mask.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=32,
        height=32,
        count=1,
        dtype="uint8",
        crs="EPSG:32631",
        transform=from_origin(600_000.0, 5_000_000.0, 1.0, 1.0),
        compress="deflate",
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(mask, 1)
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = bytes(range(size))
    path.write_bytes(bytes(data))
    return img, path
