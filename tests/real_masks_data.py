"""Masks as real users have them (0 = background, tagged nodata, 0/255, multi-band, float,
int32/int16 with stray values, swapped pairs) with exactly known pixel counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.catalog_data import write_pairs_csv
from tests.rasters import write_tif

#: 40 x 40 px building mask: 54 building pixels (value 1) on background 0.
BUILDING_PX = 54
MASK_PX = 40 * 40


def building_mask(value: int = 1, dtype: type = np.uint8) -> np.ndarray:
    """40x40: background 0, ``BUILDING_PX`` pixels of ``value`` in three blocks."""
    m = np.zeros((40, 40), dtype)
    m[2:8, 3:9] = value  # 36 px
    m[25:28, 30:34] = value  # 12 px
    m[33:35, 10:13] = value  # 6 px
    assert int((m == value).sum()) == BUILDING_PX
    return m


def grey_image(shape: tuple[int, int], bands: int = 3, seed: int = 0) -> np.ndarray:
    """A textured uint8 image (many distinct values, like real imagery)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (bands, *shape), dtype=np.uint8)


def write_one(
    folder: Path,
    name: str,
    mask: np.ndarray,
    image: np.ndarray | None = None,
    *,
    mask_nodata: float | None = None,
    x0: float = 500_000.0,
) -> tuple[Path, Path, Path]:
    """``<name>_img.tif``, ``<name>_mask.tif`` and ``<name>.csv`` (one pair); returns all three."""
    shape = mask.shape[-2:]
    img = write_tif(
        folder / f"{name}_img.tif",
        grey_image(shape) if image is None else image,
        origin=(x0, 5_000_000.0),
    )
    msk = write_tif(folder / f"{name}_mask.tif", mask, origin=(x0, 5_000_000.0), nodata=mask_nodata)
    csv = write_pairs_csv(folder / f"{name}.csv", [(img.name, msk.name)])
    return img, msk, csv


def grid_nodata_mask(size: int = 32, step: int = 8) -> np.ndarray:
    """Class 1 with value 0 on every row/column that is a multiple of ``step``: with tiles of
    ``step`` px, 0 is 15/64 of the pixels but lies on the border of every tile."""
    m = np.ones((size, size), np.uint8)
    m[::step, :] = 0
    m[:, ::step] = 0
    return m
