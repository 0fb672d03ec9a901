"""Helpers to write small hand-built GeoTIFFs with exactly known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

UTM = "EPSG:32631"


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = UTM,
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    pixel: float = 1.0,
    nodata: float | None = None,
) -> Path:
    """Write ``data`` ((h, w) or (bands, h, w)) as a tiled deflate GeoTIFF and return the path."""
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1], pixel, pixel),
        compress="deflate",
    )
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def write_pair(
    folder: Path, name: str, mask: np.ndarray, image: np.ndarray | None = None, **kw: object
) -> tuple[Path, Path]:
    """Write ``<name>_img.tif`` (default: mid-grey 3-band) and ``<name>_mask.tif``."""
    if image is None:
        image = np.full((3, *mask.shape), 128, dtype=np.uint8)
    img = write_tif(folder / f"{name}_img.tif", image, **kw)  # type: ignore[arg-type]
    msk = write_tif(folder / f"{name}_mask.tif", mask, **kw)  # type: ignore[arg-type]
    return img, msk
