"""What the tiling of an ingest leaves out or pads (docs/algorithms.md §14).

- ``--edge drop`` / ``shift``: an image smaller than the patch has no window; it is skipped (not
  recorded as a source, so a later ingest with ``--edge pad`` picks it up) and named.
- ``--edge drop``: the pixels past the last whole window are in no tile; an image whose grid
  reaches less than :data:`MIN_DROP_COVERAGE` of its pixels is named.
- ``--edge pad``: windows that run past the image edge are kept; their missing pixels count as
  nodata (``nodata_ratio``) and never set a border flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError
from smt_tools.ingest_params import IngestParams
from smt_tools.raster import SourceRecord
from smt_tools.raster.padding import padded_tiles
from smt_tools.raster.tiling import fits, grid_coverage, outside_pixels

#: With ``--edge drop``, an image whose tiles cover less than this share of its pixels is reported.
MIN_DROP_COVERAGE = 0.9
#: At most this many paths are listed per report line; the rest are counted ("... and N more").
MAX_LISTED = 10


@dataclass(frozen=True)
class TilingReport:
    """Images and tiles the tiling did not handle as whole windows inside the image.

    skipped_small: (image path, width, height) of images smaller than the patch (not ingested).
    low_coverage: (image path, share of its pixels in some tile) under ``--edge drop`` below
        :data:`MIN_DROP_COVERAGE`, lowest share first.
    padded_tiles: windows (of the listed images) that run past the image edge (``--edge pad``);
    padded_missing_pixels / padded_window_pixels: their pixels outside / all their pixels.
    """

    patch_size: int = 0
    edge_policy: str = "drop"
    skipped_small: list[tuple[str, int, int]] = field(default_factory=list)
    low_coverage: list[tuple[str, float]] = field(default_factory=list)
    padded_tiles: int = 0
    padded_missing_pixels: int = 0
    padded_window_pixels: int = 0

    @property
    def padded_missing_share(self) -> float:
        """Missing pixels / window pixels of the padded tiles (0 when there are none)."""
        if not self.padded_window_pixels:
            return 0.0
        return self.padded_missing_pixels / self.padded_window_pixels

    def warning_lines(self) -> list[str]:
        """Lines for stderr: each block starts ``warning: ...`` and lists at most
        :data:`MAX_LISTED` paths, indented, then ``... and N more``."""
        out: list[str] = []
        if self.skipped_small:
            n = len(self.skipped_small)
            side = min(min(w, h) for _, w, h in self.skipped_small)
            out.append(
                f"warning: {n} image{'s' if n != 1 else ''} smaller than the {self.patch_size} px "
                f"patch skipped (not ingested, --edge {self.edge_policy}); to include "
                f"{'them' if n != 1 else 'it'} use --edge pad, or --patch-size {side} or less:"
            )
            out += _listed([f"{p} ({w}x{h} px)" for p, w, h in self.skipped_small])
        if self.low_coverage:
            n = len(self.low_coverage)
            worst_path, worst = self.low_coverage[0]
            has, its = ("has", "its") if n == 1 else ("have", "their")
            out.append(
                f"warning: {n} image{'s' if n != 1 else ''} {has} less than "
                f"{100 * MIN_DROP_COVERAGE:.0f} % of {its} pixels in tiles with --edge drop "
                f"(worst {100 * worst:.1f} %: {worst_path}); use --edge shift or --edge pad "
                "to cover the edges:"
            )
            out += _listed([f"{p} ({100 * s:.1f} % in tiles)" for p, s in self.low_coverage])
        return out

    def info_lines(self) -> list[str]:
        """Lines for stdout (padded tiles: how many, and that they are kept)."""
        if not self.padded_tiles:
            return []
        n = self.padded_tiles
        return [
            f"Padded: {n} tile{'s run' if n != 1 else ' runs'} past the image edge (--edge pad) and "
            f"{'are' if n != 1 else 'is'} kept; {100 * self.padded_missing_share:.1f} % of "
            f"{'their' if n != 1 else 'its'} pixels lie outside the image and count as nodata "
            "(nodata_ratio), not as a class"
        ]


def _listed(items: Sequence[str]) -> list[str]:
    lines = [f"  {s}" for s in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"  ... and {len(items) - MAX_LISTED} more")
    return lines


def skip_small(
    record: SourceRecord, patch_size: int, edge_policy: str
) -> tuple[str, int, int] | None:
    """``(image path, width, height)`` if the image cannot hold one whole window and the edge
    policy does not pad, else None."""
    w, h = record.image.width, record.image.height
    if edge_policy != "pad" and not fits(w, h, patch_size):
        return (record.image.path, w, h)
    return None


def tiling_report(
    records: Sequence[SourceRecord],
    windows: Sequence[np.ndarray],
    skipped: Sequence[tuple[str, int, int]],
    params: IngestParams,
) -> TilingReport:
    """The report for the ``records`` kept (with their ``windows``) and the ``skipped`` images.

    Raises :class:`InputDataError` when every listed image was skipped (nothing to ingest).
    """
    patch, stride, edge = int(params.patch_size), int(params.stride), str(params.edge_policy)
    if skipped and not records:
        n = len(skipped)
        side = min(min(w, h) for _, w, h in skipped)
        path, w, h = max(skipped, key=lambda s: min(s[1], s[2]))
        raise InputDataError(
            f"all {n} image{'s' if n != 1 else ''} listed {'are' if n != 1 else 'is'} smaller "
            f"than the {patch} px patch (largest: {path}, {w}x{h} px); nothing was ingested: "
            f"use --edge pad, or --patch-size {side} or less"
        )
    low: list[tuple[str, float]] = []
    padded = missing = window_px = 0
    for rec, win in zip(records, windows, strict=True):
        w, h = rec.image.width, rec.image.height
        if edge == "drop":
            share = grid_coverage(w, h, patch, stride)
            if share < MIN_DROP_COVERAGE:
                low.append((rec.image.path, share))
        out = outside_pixels(win, w, h)
        hit = out > 0
        padded += int(hit.sum())
        missing += int(out[hit].sum())
        window_px += int((win[hit, 2] * win[hit, 3]).sum())
    low.sort(key=lambda x: (x[1], x[0]))
    return TilingReport(
        patch_size=patch,
        edge_policy=edge,
        skipped_small=list(skipped),
        low_coverage=low,
        padded_tiles=padded,
        padded_missing_pixels=missing,
        padded_window_pixels=window_px,
    )


def padded_tiles_note(frame: pd.DataFrame, excluded: np.ndarray) -> list[str]:
    """One line for the build summary: how many tiles run past their image's edge (``--edge
    pad``) and how many of those the exclusion rules kept / excluded; [] when there are none.

    frame: the tile-table frame (``image_path``, window columns, ``nodata_ratio``);
    excluded: (n,) bool aligned with ``frame``. Opens the header of each image that could hold
    a padded tile (see :func:`~smt_tools.raster.padding.padded_tiles`).
    """
    padded, unreadable = padded_tiles(frame)
    n = int(padded.sum())
    unchecked = (
        f"; {len(unreadable)} source image{'s' if len(unreadable) != 1 else ''} could not be "
        f"opened to check for padded tiles (first: {unreadable[0]})"
        if unreadable
        else ""
    )
    if not n:
        return [f"padded tiles: none found{unchecked}"] if unreadable else []
    out = int((padded & np.asarray(excluded, bool)).sum())
    return [
        f"padded tiles (windows past the image edge, --edge pad): {n}, {n - out} kept and "
        f"{out} excluded; their pixels outside the image count as nodata (nodata_ratio), "
        f"never as a border{unchecked}"
    ]
