"""What the HTML report's galleries show, and the thumbnails themselves.

Pure selection (which tiles each gallery shows, mean class shares per cluster, class colours)
plus the thumbnail pixels: a decimated window read of the image (bands 1-3, or band 1 in
grey) and of the mask, the image scaled for display (8-bit as is, other types by a per-tile
2-98 percentile stretch) and the mask as an RGBA overlay in the class colours.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: thumbnails of the highest- and of the lowest-weighted tiles shown per cluster
PER_SIDE = 4
#: thumbnails of excluded tiles shown per exclusion reason
PER_REASON = 8
#: clusters with a gallery (the others are listed by number)
MAX_CLUSTERS = 32
#: longer side of a thumbnail, in pixels
THUMB_PX = 128
#: JPEG quality of the image part of a thumbnail
JPEG_QUALITY = 85

#: What each exclusion reason means (the keys of the run summary's ``exclusion_counts``).
REASON_TEXT: dict[str, str] = {
    "no_valid_pixel": "no valid mask pixel",
    "mask_border_nodata": "mask border touches nodata",
    "image_black_border": "black run along an image edge",
    "low_entropy": "class entropy below exclusion.min_entropy",
    "nodata_ratio": "nodata ratio above exclusion.max_nodata_ratio",
}

#: Colours of classes that classes.csv does not colour (qualitative, colour-blind aware).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
    (213, 94, 0), (240, 228, 66), (110, 110, 110), (153, 102, 51), (0, 0, 0),
)  # fmt: skip

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Gallery:
    """One row of thumbnails: ``key`` (HTML id), heading, note, tile positions (into n)."""

    key: str
    heading: str
    note: str
    rows: list[int]


# --- colours ---------------------------------------------------------------------------------


def parse_colour(text: str | None) -> RGB | None:
    """(r, g, b) 0-255 from ``#rgb``, ``#rrggbb``, ``#rrggbbaa``, ``r,g,b[,a]`` (QGIS) or a
    CSS colour name; None when empty or not understood."""
    if text is None or not str(text).strip():
        return None
    t = str(text).strip()
    if "," in t:
        parts = [p.strip() for p in t.split(",")]
        if len(parts) in (3, 4) and all(p.isdigit() and int(p) <= 255 for p in parts):
            return int(parts[0]), int(parts[1]), int(parts[2])
        return None
    digits = t.removeprefix("#")
    if len(digits) in (3, 6, 8) and all(c in "0123456789abcdefABCDEF" for c in digits):
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    if t.startswith("#"):
        return None
    from matplotlib import colors  # CSS colour names

    try:
        r, g, b = colors.to_rgb(t)
    except ValueError:
        return None
    return round(r * 255), round(g * 255), round(b * 255)


def class_rgb(
    class_values: np.ndarray, colours: Mapping[int, str | None]
) -> tuple[dict[int, RGB], list[str]]:
    """Class value -> (r, g, b): the classes.csv colour, else the next palette colour; plus
    one note per colour that could not be read."""
    out: dict[int, RGB] = {}
    notes: list[str] = []
    spare = 0
    for v in np.asarray(class_values, dtype=np.int64).tolist():
        given = colours.get(int(v))
        rgb = parse_colour(given)
        if rgb is None:
            if given:
                notes.append(
                    f"class {v}: colour {given!r} not understood (use #rrggbb or r,g,b); "
                    "a default colour is used"
                )
            rgb = _PALETTE[spare % len(_PALETTE)]
            spare += 1
        out[int(v)] = rgb
    return out, notes


def hex_colour(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --- what the galleries show (pure) ------------------------------------------------------------


def _smallest(rows: np.ndarray, key: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    """The ``k`` of ``rows`` with the smallest (key, tile_id); key: (len(rows),) float64.
    Linear time for large groups (a partition keeps the candidates, ties included)."""
    if rows.size > 4 * k:
        kth = np.partition(key, k - 1)[k - 1]
        keep = key <= kth
        rows, key = rows[keep], key[keep]
    return [int(i) for i in rows[np.lexsort((ids[rows], key))][:k]]


def cluster_galleries(
    tile_ids: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    excluded: np.ndarray,
    per_side: int = PER_SIDE,
    max_clusters: int = MAX_CLUSTERS,
) -> tuple[list[Gallery], list[int]]:
    """Per cluster (ascending id; all included tiles as one group when there are no clusters):
    the ``per_side`` highest-weighted tiles (weight descending, then tile_id ascending) and the
    ``per_side`` lowest (weight ascending, then tile_id), never the same tile twice. A cluster
    of at most ``2 * per_side`` tiles shows all of them in one row; a cluster whose weights are
    all equal shows its first ``2 * per_side`` tiles by tile_id. Returns the galleries and the
    cluster ids left without one (beyond ``max_clusters``)."""
    ids = np.asarray(tile_ids, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    rows = np.flatnonzero(~np.asarray(excluded, dtype=bool))
    rows = rows[np.argsort(lab[rows], kind="stable")]  # grouped by cluster: one sort for all
    clusters, starts = np.unique(lab[rows], return_index=True)
    bounds = [*starts.tolist(), rows.size]
    out: list[Gallery] = []
    for j, c in enumerate(clusters[:max_clusters].tolist()):
        members = rows[bounds[j] : bounds[j + 1]]
        name = f"cluster {c}" if c >= 0 else "all included tiles"
        key = f"c{c}" if c >= 0 else "all"
        mw = w[members]
        n = len(members)
        if n <= 2 * per_side:
            high = members[np.lexsort((ids[members], -mw))].tolist()
            out.append(
                Gallery(f"{key}-all", f"{name}: all {n} tiles", "highest weight first", high)
            )
            continue
        lo_w, hi_w = float(mw.min()), float(mw.max())
        if hi_w - lo_w <= 1e-12 * max(abs(hi_w), 1e-300):
            first = _smallest(members, ids[members].astype(np.float64), ids, 2 * per_side)
            note = f"all {n} tiles weigh {hi_w:.4g}: the first {2 * per_side} by tile_id"
            out.append(Gallery(f"{key}-equal", f"{name}: {n} tiles", note, first))
            continue
        top = _smallest(members, -mw, ids, per_side)
        shown = set(top)
        low = _smallest(members, mw, ids, 2 * per_side)
        bottom = [i for i in low if i not in shown][:per_side]
        out.append(Gallery(f"{key}-high", f"{name}: highest weight", f"of {n} tiles", top))
        out.append(Gallery(f"{key}-low", f"{name}: lowest weight", f"of {n} tiles", bottom))
    return out, clusters[max_clusters:].tolist()


def excluded_galleries(
    tile_ids: np.ndarray, reasons: Mapping[str, np.ndarray], per_reason: int = PER_REASON
) -> list[Gallery]:
    """Per exclusion reason that matched any tile: its first ``per_reason`` tiles by tile_id
    (a tile matching two reasons is shown under both)."""
    ids = np.asarray(tile_ids, dtype=np.int64)
    out: list[Gallery] = []
    for reason, hit in reasons.items():
        rows = np.flatnonzero(np.asarray(hit, dtype=bool))
        if rows.size == 0:
            continue
        rows = rows[np.argsort(ids[rows], kind="stable")]
        shown = rows[:per_reason]
        note = f"{rows.size} tiles" + (
            f"; the first {shown.size} by tile_id" if shown.size < rows.size else ""
        )
        head = f"excluded: {reason}"
        if reason in REASON_TEXT:
            head += f" ({REASON_TEXT[reason]})"
        out.append(Gallery(f"ex-{reason}", head, note, shown.tolist()))
    return out


def cluster_composition(
    counts: np.ndarray, labels: np.ndarray, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean class shares per cluster over its included tiles. counts (n, C) int64; returns
    cluster ids (K,) int64, sizes (K,) int64, means (K, C) float64 (tile proportions over
    valid pixels, averaged; a tile without valid pixels counts as all zeros)."""
    counts = np.asarray(counts, dtype=np.int64)
    inc = ~np.asarray(excluded, dtype=bool)
    lab = np.asarray(labels, dtype=np.int64)[inc]
    valid = counts[inc].sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(valid > 0, counts[inc] / np.where(valid > 0, valid, 1.0), 0.0)
    ids, pos, sizes = np.unique(lab, return_inverse=True, return_counts=True)
    sums = np.zeros((ids.size, counts.shape[1]), np.float64)
    np.add.at(sums, pos.ravel(), p)
    return ids.astype(np.int64), sizes.astype(np.int64), sums / np.maximum(sizes, 1)[:, None]


# --- thumbnails ----------------------------------------------------------------------------------


def display_rgb(data: np.ndarray, inside: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """(bands, h, w) raster values -> (h, w, bands) uint8 for display: uint8 as is; any other
    type by a per-band 2-98 percentile stretch over the finite pixels inside the raster that
    are not ``nodata`` (a flat band maps to 0). Pixels outside the raster are 0."""
    if data.dtype == np.uint8:
        out = data.copy()
    else:
        arr = data.astype(np.float64)
        out = np.zeros(data.shape, np.uint8)
        for b in range(arr.shape[0]):
            band = arr[b]
            ok = inside & np.isfinite(band)
            if nodata is not None and not math.isnan(nodata):
                ok &= band != nodata
            if not ok.any():
                continue
            lo, hi = np.percentile(band[ok], [2.0, 98.0])
            if hi > lo:
                scaled = np.clip((band - lo) / (hi - lo), 0.0, 1.0) * 255.0
                out[b] = np.where(ok, np.round(scaled), 0).astype(np.uint8)
    out[:, ~inside] = 0
    return np.moveaxis(out, 0, -1)


def overlay_rgba(
    mask: np.ndarray,
    inside: np.ndarray,
    class_values: np.ndarray,
    colours: Mapping[int, RGB],
    nodata_class: int | None,
) -> np.ndarray:
    """(h, w) mask values -> (h, w, 4) uint8: class pixels opaque in their class colour; the
    nodata class, values that are not a class and pixels outside the raster transparent."""
    vals = np.asarray([v for v in np.asarray(class_values, np.int64).tolist() if v != nodata_class])
    out = np.zeros((*mask.shape, 4), np.uint8)
    if vals.size == 0:
        return out
    order = np.argsort(vals)
    vals = vals[order]
    lut = np.array([(*colours[int(v)], 255) for v in vals], np.uint8)
    m = np.asarray(mask).astype(np.int64)
    pos = np.clip(np.searchsorted(vals, m), 0, vals.size - 1)
    hit = (vals[pos] == m) & inside
    out[hit] = lut[pos[hit]]
    return out


def _data_uri(arr: np.ndarray, fmt: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        img.save(buf, "PNG", compress_level=6)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Thumb:
    """Data URIs of a tile's image (JPEG) and mask overlay (PNG), or the reason it failed."""

    image: str = ""
    mask: str = ""
    error: str = ""


def read_thumbs(
    tiles: pd.DataFrame,
    rows: Sequence[int],
    class_values: np.ndarray,
    colours: Mapping[int, RGB],
    nodata_class: int | None,
    size: int = THUMB_PX,
) -> dict[int, Thumb]:
    """Thumbnails of ``rows`` of ``tiles`` (decimated window reads, at most one open handle
    per raster at a time). A tile that cannot be read gets a :class:`Thumb` with ``error``."""
    from rasterio.enums import Resampling

    from smt_tools.errors import SmtError
    from smt_tools.raster.handles import RasterCache
    from smt_tools.raster.thumbnail import read_thumbnail

    has_band = "mask_band" in tiles.columns
    out: dict[int, Thumb] = {}
    todo = list(dict.fromkeys(int(i) for i in rows))  # each tile once
    paths = np.asarray(tiles["image_path"].to_numpy()[todo], dtype=str)
    todo = [todo[i] for i in np.argsort(paths, kind="stable")]
    with RasterCache(maxsize=16) as cache:  # by image: each raster opened about once
        for r in todo:
            t = tiles.iloc[r]
            win = (int(t["row_off"]), int(t["col_off"]), int(t["height"]), int(t["width"]))
            try:
                img_path, msk_path = str(t["image_path"]), str(t["mask_path"])
                ids = cache.get(img_path)
                bands = [1, 2, 3] if ids.count >= 3 else [1]
                img, inside = read_thumbnail(ids, img_path, bands, *win, size, Resampling.average)
                mds = cache.get(msk_path)
                band = int(t["mask_band"]) if has_band and pd.notna(t["mask_band"]) else 1
                msk, m_inside = read_thumbnail(mds, msk_path, [band], *win, size)
                rgb = display_rgb(img, inside, ids.nodata)
                over = overlay_rgba(msk[0], m_inside, class_values, colours, nodata_class)
                out[r] = Thumb(_data_uri(rgb, "JPEG"), _data_uri(over, "PNG"))
            except (SmtError, OSError, ValueError) as exc:
                out[r] = Thumb(error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return out
