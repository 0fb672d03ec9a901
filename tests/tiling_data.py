"""Scenes for the small-image, padding and black-border tests (seeded, exactly known content)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.catalog_data import write_pairs_csv
from tests.rasters import write_pair


def textured_image(height: int, width: int, seed: int = 0, bands: int = 3) -> np.ndarray:
    """(bands, h, w) uint8 with every value in 1..255: no pixel is black at tolerance 0."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, size=(bands, height, width), dtype=np.uint8)


def striped_mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(h, w) uint8 classes 1..3 in vertical stripes whose widths depend on ``seed``."""
    mask = np.ones((height, width), np.uint8)
    mask[:, width // (2 + seed % 3) :] = 2
    mask[: height // (3 + seed % 2), :] = 3
    return mask


def scene(
    folder: Path, name: str, width: int, height: int, seed: int = 0, image: np.ndarray | None = None
) -> tuple[Path, Path]:
    """``<name>_img.tif`` (textured unless ``image`` is given) and ``<name>_mask.tif``; scenes
    are placed side by side by ``seed`` so footprints do not overlap."""
    img = textured_image(height, width, seed) if image is None else image
    origin = (500_000.0 + 10_000.0 * seed, 5_000_000.0)
    return write_pair(folder, name, striped_mask(height, width, seed), img, origin=origin)


def pairs_for(folder: Path, sizes: list[tuple[str, int, int]], csv_name: str = "pairs.csv") -> Path:
    """Write one scene per ``(name, width, height)`` and the pairs CSV listing them in order."""
    rows = []
    for i, (name, w, h) in enumerate(sizes):
        img, msk = scene(folder, name, w, h, seed=i)
        rows.append((img.name, msk.name))
    return write_pairs_csv(folder / csv_name, rows)
