"""What a mask may hold, checked before (and while) it is scanned (docs/algorithms.md §2).

A mask is ONE band of integer class values in ``0 .. MAX_CLASS_VALUE``, with at most
``MAX_DISTINCT_VALUES`` distinct values in one ingest. Before any window is scanned,
:func:`check_mask` looks at the metadata (band count, data type) and at a small sample of
pixels (``SAMPLE_GRID`` x ``SAMPLE_GRID`` block-aligned windows of ``SAMPLE_SIZE`` px of the
mask band and of image band 1: at most 9 windows of 64 x 64 px per file, i.e. a few GeoTIFF
blocks, whatever the raster size), so a float mask, a 3-band mask without ``--mask-band``, a
value out of range or an image listed as the mask (a swapped pair) stops with one line before
anything is read in full or written. The scan then checks every window again
(:func:`mask_value_counts`), so a bad value outside the sample also stops the ingest before
the write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from smt_tools.errors import InputDataError
from smt_tools.raster.window import read_pixels

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from smt_tools.tiletable import TileTable

#: Largest class value a mask may hold (class counts are indexed by value; uint16 range).
MAX_CLASS_VALUE = 65_535
#: Most distinct mask values one ingest accepts (more means an image, not a mask).
MAX_DISTINCT_VALUES = 1_024
#: A mask sample with at least this many distinct values, and ``SWAP_RATIO`` times as many as
#: its image's sample, looks like an image: the pairs CSV's columns are probably swapped.
SWAP_MIN_DISTINCT = 64
SWAP_RATIO = 4
#: Pre-scan sample: a ``SAMPLE_GRID`` x ``SAMPLE_GRID`` grid of block-aligned windows.
SAMPLE_GRID = 3
SAMPLE_SIZE = 64

_SWAPPED = "check that the pairs CSV's image and mask columns are not swapped"


class MaskValueError(ValueError):
    """A mask array holds a value no class can have (negative or above MAX_CLASS_VALUE)."""

    def __init__(self, value: int, count: int) -> None:
        self.value = int(value)
        self.count = int(count)
        low = self.value < 0
        super().__init__(
            f"mask value {self.value} ({self.count} px) is "
            + ("negative" if low else f"above {MAX_CLASS_VALUE}")
            + f"; class values must be 0..{MAX_CLASS_VALUE}"
        )


def mask_value_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer mask array (any shape) and their pixel counts.

    Returns ``(values, counts)``, both (V,) int64, values ascending. Never allocates by the
    largest value: uint8/uint16 go straight to ``np.bincount`` (at most 65,536 bins); other
    integer types are range-checked first. Raises :class:`MaskValueError` for a value below 0
    or above :data:`MAX_CLASS_VALUE` and ``ValueError`` for a non-integer dtype.
    """
    flat = np.asarray(mask).reshape(-1)
    if flat.dtype.kind not in "ui":
        raise ValueError(f"mask must hold integer class values; got dtype {flat.dtype}")
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if flat.dtype not in (np.uint8, np.uint16):
        lo, hi = flat.min(), flat.max()
        if lo < 0 or hi > MAX_CLASS_VALUE:
            bad = lo if lo < 0 else hi
            raise MaskValueError(int(bad), int(np.count_nonzero(flat == bad)))
        flat = flat.astype(np.uint16)
    counts = np.bincount(flat)
    values = np.flatnonzero(counts)
    return values.astype(np.int64), counts[values].astype(np.int64)


def value_error_message(mask_path: str, exc: MaskValueError, where: str) -> str:
    """One line for a bad mask value: file, value, pixel count, where, and the fix."""
    v = exc.value
    if v < 0:
        fix = (
            f"remap {v} to an unused value in 0..{MAX_CLASS_VALUE} (e.g. 255 for a uint8 copy) "
            f"and pass --nodata-class <it> if {v} marks missing data"
        )
    else:
        fix = (
            f"remap it to an unused value in 0..{MAX_CLASS_VALUE} and pass --nodata-class <it> "
            f"if it marks missing data; {_SWAPPED}"
        )
    return (
        f"{mask_path}: mask value {v} ({exc.count} px in {where}) is outside the class range "
        f"0..{MAX_CLASS_VALUE}; {fix}"
    )


def too_many_values_message(mask_path: str, n_values: int, scope: str) -> str:
    """One line for more than :data:`MAX_DISTINCT_VALUES` distinct values (``scope`` says where
    they were counted)."""
    return (
        f"{mask_path}: {n_values} distinct mask values {scope}, more than the "
        f"{MAX_DISTINCT_VALUES} classes an ingest accepts; a mask holds class values, not "
        f"measurements: {_SWAPPED}, or remap the classes to fewer values"
    )


def _looks_like_mask(ds: DatasetReader) -> bool:
    return int(ds.count) == 1 and np.dtype(ds.dtypes[0]).kind in "ui"


def resolve_mask_band(
    mask_ds: DatasetReader,
    mask_path: str,
    image_ds: DatasetReader,
    mask_band: int | None,
    option: str = "--mask-band",
) -> int:
    """The 1-based band of the mask to read; one line naming the band count and the option
    (``option``: ``--mask-band`` for ingest, ``input.mask_band`` in a config) when a multi-band
    mask has none, or the band does not exist."""
    count = int(mask_ds.count)
    if mask_band is None:
        if count == 1:
            return 1
        swap = (
            f"; if this file is the image, {_SWAPPED} (the image has 1 band)"
            if _looks_like_mask(image_ds)
            else ""
        )
        raise InputDataError(
            f"{mask_path}: mask has {count} bands; a mask is one band of class values: choose "
            f"it with {option} N (1..{count}), or write a 1-band mask{swap}"
        )
    if not 1 <= mask_band <= count:
        raise InputDataError(
            f"{mask_path}: {option} {mask_band} but the mask has {count} band(s); "
            f"pass a band number from 1 to {count}"
        )
    return int(mask_band)


def check_mask_dtype(
    mask_ds: DatasetReader, mask_path: str, band: int, image_ds: DatasetReader
) -> None:
    """Refuse a non-integer mask band (one line with the dtype and a gdal_translate fix)."""
    dtype = str(mask_ds.dtypes[band - 1])
    if np.dtype(dtype).kind in "ui":
        return
    swap = f"; {_SWAPPED}" if _looks_like_mask(image_ds) else ""
    raise InputDataError(
        f"{mask_path}: mask band {band} has data type {dtype}; masks must hold integer class "
        f"values 0..{MAX_CLASS_VALUE}: convert it, e.g. `gdal_translate -ot Byte {mask_path} "
        f"mask_byte.tif` (-ot UInt16 for values above 255){swap}"
    )


def sample_windows(ds: DatasetReader, band: int) -> list[Window]:
    """The pre-scan windows: a 3 x 3 grid of up to 64 x 64 px windows centred on the sixths
    of the raster, moved to the block origin (tiled files) so each touches few blocks; a
    strip layout (blocks as wide as the raster) keeps the columns where they are."""
    h, w = int(ds.height), int(ds.width)
    bh, bw = (max(int(x), 1) for x in ds.block_shapes[band - 1])
    sh, sw = min(SAMPLE_SIZE, h), min(SAMPLE_SIZE, w)
    out: list[Window] = []
    seen: set[tuple[int, int]] = set()
    for fy in range(SAMPLE_GRID):
        for fx in range(SAMPLE_GRID):
            r = int((2 * fy + 1) * h / (2 * SAMPLE_GRID)) - sh // 2
            c = int((2 * fx + 1) * w / (2 * SAMPLE_GRID)) - sw // 2
            if bh < h:
                r = (max(r, 0) + bh // 2) // bh * bh  # nearest block row
            if bw < w:
                c = (max(c, 0) + bw // 2) // bw * bw
            r = min(max(r, 0), h - sh)
            c = min(max(c, 0), w - sw)
            if (r, c) not in seen:
                seen.add((r, c))
                out.append(Window(c, r, sw, sh))
    return out


def read_sample(ds: DatasetReader, path: str, band: int) -> np.ndarray:
    """The pixels of :func:`sample_windows` of ``band``, flattened."""
    parts = []
    for win in sample_windows(ds, band):
        parts.append(read_pixels(ds, path, band, win).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def check_mask_sample(
    mask_ds: DatasetReader,
    mask_path: str,
    band: int,
    image_ds: DatasetReader,
    image_path: str,
) -> None:
    """Pre-scan: value range, distinct-value limit and the swapped-pair test on a sample."""
    sample = read_sample(mask_ds, mask_path, band)
    n_px = int(sample.size)
    try:
        values, _ = mask_value_counts(sample)
    except MaskValueError as exc:
        raise InputDataError(
            value_error_message(mask_path, exc, f"a {n_px}-px sample of band {band}")
        ) from None
    if values.size > MAX_DISTINCT_VALUES:
        raise InputDataError(
            too_many_values_message(mask_path, int(values.size), f"in a {n_px}-px sample")
        )
    if values.size < SWAP_MIN_DISTINCT:
        return
    image = read_sample(image_ds, image_path, 1)
    if image.dtype.kind == "f":
        image = image[np.isfinite(image)]
    n_image = int(np.unique(image).size)
    if values.size >= SWAP_RATIO * max(n_image, 1):
        raise InputDataError(
            f"{mask_path}: looks like an image, not a mask: {values.size} distinct values in a "
            f"{n_px}-px sample, against {n_image} in the same pixels of its image {image_path}; "
            "are the pairs CSV's image and mask columns swapped?"
        )


def check_mask(
    mask_ds: DatasetReader,
    mask_path: str,
    image_ds: DatasetReader,
    image_path: str,
    mask_band: int | None = None,
    option: str = "--mask-band",
) -> int:
    """Every check a mask gets before its windows are scanned; returns the band to read
    (``option`` names the band setting in messages)."""
    band = resolve_mask_band(mask_ds, mask_path, image_ds, mask_band, option)
    check_mask_dtype(mask_ds, mask_path, band, image_ds)
    check_mask_sample(mask_ds, mask_path, band, image_ds, image_path)
    return band


def declared_nodata(value: float | None) -> int | None:
    """A GeoTIFF nodata tag as a possible class value (None if absent, NaN, fractional or out
    of the class range)."""
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    v = int(value)
    return v if 0 <= v <= MAX_CLASS_VALUE else None


def first_mask_with(table: TileTable, values: Iterable[int]) -> dict[int, str]:
    """For each class value of ``table``, the mask path of the first tile holding it."""
    col = {int(v): j for j, v in enumerate(table.class_values)}
    paths = table.frame["mask_path"].to_numpy() if len(table) else np.zeros(0, object)
    out: dict[int, str] = {}
    for v in values:
        j = col.get(int(v))
        if j is None:
            continue
        rows = np.flatnonzero(table.counts[:, j] > 0)
        if rows.size:
            out[int(v)] = str(paths[rows[0]])
    return out


def new_classes_message(
    target: str, known: Sequence[int], new: Sequence[int], first: Mapping[int, str]
) -> str:
    """One line refusing classes a catalog has not seen (the flag that accepts them)."""
    shown = [
        f"{v} (first in {first[v]})" if v in first else f"{v} (only in --class-names)"
        for v in sorted(new)[:5]
    ]
    more = f" and {len(new) - 5} more" if len(new) > 5 else ""
    listed = ", ".join(str(v) for v in sorted(known)[:12]) + (" ..." if len(known) > 12 else "")
    return (
        f"{target}: this ingest brings mask values that are not among the catalog's "
        f"{len(known)} classes ({listed}): {', '.join(shown)}{more}; nothing was written: if "
        "they are real new classes, re-run with --allow-new-classes; otherwise fix those masks "
        f"(a wrong --mask-band or a swapped image/mask pair brings values like these)"
    )
