"""What an ingest tells the user about nodata and classes (docs/algorithms.md §1).

Every number here is over the tiles this ingest wrote (sources scanned now; skipped sources
are not re-read), counting each window's pixels inside the raster as *mask pixels*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.errors import ConfigError, InputDataError
from smt_tools.export.run_record import run_json_path
from smt_tools.ingest_params import IngestParams
from smt_tools.pipelines._tiling_report import TilingReport
from smt_tools.raster import SourceRecord
from smt_tools.raster.maskcheck import (
    MAX_CLASS_VALUE,
    declared_nodata,
)
from smt_tools.tiletable import TileTable

#: Warn when the nodata class covers more than this share of the mask pixels.
NODATA_SHARE_WARN = 0.5
#: Warn when the nodata class touches the border of at least this share of the tiles
#: (``has_mask_border_nodata``: excluded by default when building a dataset).
BORDER_TILES_WARN = 0.9


@dataclass(frozen=True)
class ScannedClass:
    """One row of the class-share table of the tiles an ingest wrote."""

    class_value: int
    name: str | None
    pixels: int
    share: float  # pixels / all class pixels of the tiles written (nodata excluded)


@dataclass(frozen=True)
class ScanSummary:
    """Pixel totals of the tiles an ingest wrote.

    mask_pixels: window pixels inside the raster; nodata_pixels: those holding the nodata
    class; outside_pixels: window pixels past the raster edge (``--edge pad``, always nodata).
    """

    tiles: int = 0
    mask_pixels: int = 0
    nodata_pixels: int = 0
    outside_pixels: int = 0
    border_tiles: int = 0
    classes: list[ScannedClass] = field(default_factory=list)

    @property
    def nodata_share(self) -> float:
        """Nodata-class pixels / mask pixels (0 when nothing was scanned)."""
        return self.nodata_pixels / self.mask_pixels if self.mask_pixels else 0.0


def _inside_pixels(table: TileTable, sources: Sequence[SourceRecord]) -> np.ndarray:
    """(n,) int64 pixels of each tile's window that lie inside its raster."""
    size = {int(s.source_image_id): (s.mask.height, s.mask.width) for s in sources}
    f = table.frame
    ids = f["source_image_id"].to_numpy(np.int64)
    hw = np.array([size[int(i)] for i in ids], np.int64).reshape(-1, 2)
    r = f["row_off"].to_numpy(np.int64)
    c = f["col_off"].to_numpy(np.int64)
    h = f["height"].to_numpy(np.int64)
    w = f["width"].to_numpy(np.int64)
    rows = np.clip(np.minimum(r + h, hw[:, 0]) - np.maximum(r, 0), 0, None)
    cols = np.clip(np.minimum(c + w, hw[:, 1]) - np.maximum(c, 0), 0, None)
    return rows * cols


def summarize(
    table: TileTable | None,
    sources: Sequence[SourceRecord],
    names: Mapping[int, tuple[str | None, str | None] | str | None],
) -> ScanSummary:
    """Totals and the class-share table of ``table`` (the tiles scanned by this ingest)."""
    if table is None or not len(table):
        return ScanSummary()
    inside = _inside_pixels(table, sources)
    window = (table.frame["height"] * table.frame["width"]).to_numpy(np.int64)
    valid = table.counts.sum(axis=1)
    pixels = table.counts.sum(axis=0)
    total = int(pixels.sum())

    def name_of(v: int) -> str | None:
        entry = names.get(v)
        return entry[0] if isinstance(entry, tuple) else entry

    classes = [
        ScannedClass(int(v), name_of(int(v)), int(p), int(p) / total if total else 0.0)
        for v, p in zip(table.class_values, pixels, strict=True)
    ]
    return ScanSummary(
        tiles=len(table),
        mask_pixels=int(inside.sum()),
        nodata_pixels=int((inside - valid).sum()),
        outside_pixels=int((window - inside).sum()),
        border_tiles=int(table.frame["has_mask_border_nodata"].to_numpy(bool).sum()),
        classes=classes,
    )


def nodata_warnings(
    table: TileTable | None,
    sources: Sequence[SourceRecord],
    nodata_class: int | None,
    summary: ScanSummary,
) -> list[str]:
    """One line per suspicious nodata convention, each with the exact flag that fixes it.

    (a) no nodata class, but masks declare a GeoTIFF nodata tag whose value occurs in their
    pixels; (b) a nodata class that covers more than :data:`NODATA_SHARE_WARN` of the mask
    pixels or touches the border of at least :data:`BORDER_TILES_WARN` of the tiles.
    """
    if table is None or not len(table):
        return []
    out: list[str] = []
    if nodata_class is None:
        inside = _inside_pixels(table, sources)
        ids = table.frame["source_image_id"].to_numpy(np.int64)
        col = {int(v): j for j, v in enumerate(table.class_values)}
        tagged: dict[int, list[SourceRecord]] = {}
        for s in sources:
            v = declared_nodata(s.mask.nodata)
            if v is not None:
                tagged.setdefault(v, []).append(s)
        for v, recs in sorted(tagged.items()):
            rows = np.isin(ids, [int(s.source_image_id) for s in recs])
            j = col.get(v)
            hit = int(table.counts[rows, j].sum()) if j is not None else 0
            if not hit:
                continue
            px = int(inside[rows].sum())
            out.append(
                f"{len(recs)} of {len(sources)} masks declare GeoTIFF nodata = {v} "
                f"(e.g. {recs[0].mask.path}) and value {v} is {100 * hit / max(px, 1):.2f} % of "
                f"their pixels; it is counted as a class (no --nodata-class given); if {v} marks "
                f"missing data rather than a class, re-ingest with --nodata-class {v}"
            )
        return out
    share = summary.nodata_share
    border = summary.border_tiles / summary.tiles if summary.tiles else 0.0
    if share > NODATA_SHARE_WARN or border >= BORDER_TILES_WARN:
        out.append(
            f"nodata class {nodata_class} is {100 * share:.2f} % of the mask pixels and touches "
            f"the border of {summary.border_tiles} of {summary.tiles} tiles "
            f"({100 * border:.0f} %; those get has_mask_border_nodata and are excluded by "
            f"default); if {nodata_class} is background, re-ingest with --nodata-class none"
        )
    return out


def parse_nodata_class(value: str | int | None) -> int | None:
    """``--nodata-class``: ``none``, ``-1`` (the same) or an integer class value 0..65535."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("none", "null", "-1"):
        return None
    try:
        number = int(text)
    except ValueError:
        number = -2
    if not 0 <= number <= MAX_CLASS_VALUE:
        raise ConfigError(
            f"--nodata-class must be none (every mask value is a class), -1 (the same) or a "
            f"class value 0..{MAX_CLASS_VALUE}; got {value!r}"
        )
    return number


def nodata_text(value: object) -> str:
    """A nodata class as users write it: ``none`` or the integer."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return str(int(value))  # type: ignore[call-overload]


def check_catalog_nodata(
    label: str,
    existing: pd.DataFrame,
    records: list[SourceRecord],
    todo: list[int],
    params: IngestParams,
) -> None:
    """Before scanning: the source images that stay in the catalog must share the nodata class
    of this ingest (the write checks it again under the lock)."""
    if not len(existing):
        return
    replaced = {int(records[i].source_image_id) for i in todo}
    stay = existing[~existing["source_image_id"].astype("int64").isin(list(replaced))]
    found = sorted({nodata_text(v) for v in stay["nodata_class"]})
    want = nodata_text(params.nodata_class)
    if found and found != [want]:
        raise InputDataError(
            f"catalog {label} holds tiles ingested with nodata class {', '.join(found)}; got "
            f"--nodata-class {want}: use the same nodata class, re-ingest all of its source "
            "images in one run, or use a separate catalog"
        )


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did (printed as the closing summary)."""

    target: str  # redacted URL or Parquet path
    kind: str  # "postgis" or "parquet"
    images_total: int
    images_new: int
    images_replaced: int
    images_skipped: int
    tiles_written: int
    tiles_in_catalog: int
    sources_in_catalog: int
    scan_seconds: float
    write_seconds: float
    elapsed_seconds: float
    #: One line each, printed as ``warning: ...`` after the summary (data the user should check).
    warnings: list[str] = field(default_factory=list)
    #: The mask value treated as nodata (None: every mask value is a class).
    nodata_class: int | None = None
    #: Pixel totals and class shares of the tiles written by this ingest.
    scanned: ScanSummary = field(default_factory=ScanSummary)
    #: Images skipped as smaller than the patch, low --edge drop coverage, padded tiles.
    tiling: TilingReport = field(default_factory=TilingReport)
    #: Where the scan ran: ``local`` (the process pool) or ``dask <scheduler> (<n> workers)``.
    scanned_on: str = "local"

    @property
    def images_scanned(self) -> int:
        return self.images_new + self.images_replaced

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_written / self.scan_seconds if self.scan_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``, ``run.json``)."""
        s, t = self.scanned, self.tiling
        return {
            "target": self.target,
            "kind": self.kind,
            "images_total": self.images_total,
            "images_scanned": self.images_scanned,
            "images_new": self.images_new,
            "images_replaced": self.images_replaced,
            "images_skipped": self.images_skipped,
            "tiles_written": self.tiles_written,
            "tiles_in_catalog": self.tiles_in_catalog,
            "sources_in_catalog": self.sources_in_catalog,
            "scanned_on": self.scanned_on,
            "tiles_per_second": self.tiles_per_second,
            "nodata_class": self.nodata_class,
            "nodata_share": s.nodata_share,
            "mask_pixels": s.mask_pixels,
            "nodata_pixels": s.nodata_pixels,
            "classes": [
                {"class_value": c.class_value, "name": c.name, "pixels": c.pixels, "share": c.share}
                for c in s.classes
            ],
            "skipped_small_images": [p for p, _, _ in t.skipped_small],
            "low_coverage_images": [{"image": p, "coverage": c} for p, c in t.low_coverage],
            "padded_tiles": t.padded_tiles,
            "warnings": list(self.warnings),
            "timings_s": {
                "scan": self.scan_seconds,
                "write": self.write_seconds,
                "total": self.elapsed_seconds,
            },
        }

    def run_json_path(self) -> Path | None:
        """A local tile table gets its run record beside it; a PostGIS catalog none."""
        return run_json_path(self.target if self.kind == "parquet" else None)
