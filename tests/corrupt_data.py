"""Damaged GeoTIFFs with a known failure: real files written with rasterio, then broken.

- :func:`write_tiled`: a deflate GeoTIFF in 16 x 16 px blocks (so a window maps to known blocks).
- :func:`garble_blocks`: overwrite the bytes of every block from a given row down with garbage.
  The header stays valid (the file opens) but reading those windows fails inside GDAL with
  "IReadBlock failed at X offset .., Y offset ..: TIFFReadEncodedTile() failed.". File size and
  modification time are kept, so nothing that checks them notices.
- :func:`garble_header`: overwrite the TIFF header: the file no longer opens at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

BLOCK = 16


def write_tiled(path: Path, data: np.ndarray, origin: float = 500_000.0) -> Path:
    """Write ``data`` ((h, w) or (bands, h, w)) as a deflate GeoTIFF in 16 px blocks."""
    arr = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs="EPSG:32631",
        transform=from_origin(origin, 5_000_000.0, 1.0, 1.0),
        compress="deflate",
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
    ) as dst:
        dst.write(arr)
    return path


def _keep_stat(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def garble_blocks(path: Path, from_row: int) -> Path:
    """Overwrite every block of every band whose first row is >= ``from_row`` with garbage."""
    with rasterio.open(path) as ds:
        spans = []
        for band in range(1, ds.count + 1):
            for bi in range(from_row // BLOCK, -(-ds.height // BLOCK)):
                for bj in range(-(-ds.width // BLOCK)):
                    off = ds.get_tag_item(f"BLOCK_OFFSET_{bj}_{bi}", "TIFF", bidx=band)
                    size = ds.get_tag_item(f"BLOCK_SIZE_{bj}_{bi}", "TIFF", bidx=band)
                    spans.append((int(off), int(size)))
    data = bytearray(path.read_bytes())
    for off, size in spans:
        data[off : off + size] = bytes((37 * k + 11) % 256 for k in range(size))
    _keep_stat(path, bytes(data))
    return path


def garble_header(path: Path) -> Path:
    """Overwrite the first 64 bytes (TIFF header and first IFD offset) with garbage."""
    data = bytearray(path.read_bytes())
    data[:64] = bytes((97 * k + 5) % 256 for k in range(64))
    _keep_stat(path, bytes(data))
    return path
