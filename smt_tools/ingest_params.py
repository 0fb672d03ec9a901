"""The settings of one ``catalog ingest``: tiling, nodata, mask band and scan rules.

They are stored with every source image (``source_image`` columns in PostGIS, the same columns
in a Parquet tile table) as its fingerprint: a re-ingest skips an image only when its files and
these settings are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smt_tools.raster.scan import SCAN_RULES


@dataclass(frozen=True)
class IngestParams:
    """patch_size, stride: pixels; edge_policy: drop | shift | pad; black_tolerance: image value
    <= this (all bands) is black; nodata_class: the mask value that means nodata (None: every
    value is a class); mask_band: 1-based band of multi-band masks (None: one band);
    allow_new_classes: accept class values the catalog does not list; scan_rules: the version of
    the scan's rules the tiles were computed with."""

    patch_size: int
    stride: int
    edge_policy: str
    black_tolerance: float = 0.0
    nodata_class: int | None = None
    mask_band: int | None = None
    allow_new_classes: bool = False
    scan_rules: int = SCAN_RULES

    def fingerprint(self) -> dict[str, Any]:
        """The settings stored with each source image and compared on re-ingest (as stored)."""
        return {
            "nodata_class": self.nodata_class,
            "patch_size": int(self.patch_size),
            "stride": int(self.stride),
            "edge_policy": str(self.edge_policy),
            "black_tolerance": float(self.black_tolerance),
            "scan_rules": int(self.scan_rules),
        }
