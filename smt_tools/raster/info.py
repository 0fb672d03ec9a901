"""Raster metadata and image/mask agreement checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smt_tools.errors import RasterMismatchError
from smt_tools.raster.handles import open_raster
from smt_tools.raster.paths import file_fingerprint

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


@dataclass(frozen=True)
class RasterInfo:
    """What the catalog records about one raster file."""

    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs: str  # "EPSG:xxxx" when the CRS has an EPSG code, else WKT; "" when missing
    transform: tuple[float, float, float, float, float, float]  # a, b, c, d, e, f (affine)
    nodata: float | None
    file_size: int  # bytes; -1 when unknown (a remote object without Content-Length)
    file_mtime: float  # seconds since the epoch; -1 when unknown

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the native CRS."""
        return window_bounds(self.transform, 0, 0, self.height, self.width)


def crs_string(ds: DatasetReader) -> str:
    if ds.crs is None:
        return ""
    epsg = ds.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else ds.crs.to_wkt()


def info_from_dataset(ds: DatasetReader, path: str) -> RasterInfo:
    size, mtime = file_fingerprint(path)  # remote: from HTTP headers, -1 when unknown
    t = ds.transform
    return RasterInfo(
        path=path,
        width=int(ds.width),
        height=int(ds.height),
        band_count=int(ds.count),
        dtype=str(ds.dtypes[0]),
        crs=crs_string(ds),
        transform=(float(t.a), float(t.b), float(t.c), float(t.d), float(t.e), float(t.f)),
        nodata=None if ds.nodata is None else float(ds.nodata),
        file_size=size,
        file_mtime=mtime,
    )


def read_info(path: str | os.PathLike[str]) -> RasterInfo:
    """Metadata of ``path`` (opens and closes the file)."""
    p = os.fspath(path)
    with open_raster(p) as ds:
        return info_from_dataset(ds, p)


def window_bounds(
    transform: tuple[float, ...], row_off: float, col_off: float, height: float, width: float
) -> tuple[float, float, float, float]:
    """Native-CRS bounds of a pixel window under an affine ``transform`` (a, b, c, d, e, f)."""
    a, b, c, d, e, f = transform[:6]
    xs = [
        a * cx + b * ry + c
        for cx, ry in (
            (col_off, row_off),
            (col_off + width, row_off),
            (col_off, row_off + height),
            (col_off + width, row_off + height),
        )
    ]
    ys = [
        d * cx + e * ry + f
        for cx, ry in (
            (col_off, row_off),
            (col_off + width, row_off),
            (col_off, row_off + height),
            (col_off + width, row_off + height),
        )
    ]
    return (min(xs), min(ys), max(xs), max(ys))


def check_pair(image: RasterInfo, mask: RasterInfo, atol: float = 1e-6) -> None:
    """Raise :class:`RasterMismatchError` naming both files if they disagree in size, transform or CRS."""
    problems: list[str] = []
    if (image.width, image.height) != (mask.width, mask.height):
        problems.append(f"size {image.width}x{image.height} vs {mask.width}x{mask.height}")
    if any(
        abs(x - y) > atol * max(1.0, abs(x))
        for x, y in zip(image.transform, mask.transform, strict=True)
    ):
        problems.append(f"transform {image.transform} vs {mask.transform}")
    if image.crs != mask.crs:
        problems.append(f"CRS {image.crs or 'none'} vs {mask.crs or 'none'}")
    if problems:
        raise RasterMismatchError(
            f"image {image.path} and mask {mask.path} disagree: {'; '.join(problems)}; "
            "the mask must be pixel-aligned with its image (same size, transform and CRS)"
        )
    if mask.band_count < 1:
        raise RasterMismatchError(f"mask {mask.path} has no band")
