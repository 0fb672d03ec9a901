"""PNG plots of a balanced-dataset run (matplotlib, Agg backend, no display needed).

- ``class_share.png``: each class's pixel share, uniform vs. under the weights (log scale,
  so a 1 % class is as visible as a 50 % one), and the change weighted / uniform on a ratio
  (log2) scale, bars in the class colours of ``classes.csv``;
- ``weight_hist.png``: histogram of sampler_weight over included tiles;
- ``weight_map.png``: tiles (lon/lat) coloured by sampler_weight, excluded tiles grey;
- ``uniqueness.png`` (when uniqueness is present): its histogram and uniqueness vs. weight.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.atomic import atomic_path
from smt_tools.geo import footprints_lonlat, has_crs

#: above this many tiles the map draws centroids instead of polygons
MAP_POLYGON_LIMIT = 20_000


@dataclass(frozen=True)
class ReportData:
    """What the plots need.

    class_values: (C,) int64; uniform_share / weighted_share: (C,) float64;
    weights: (n,) float64 sampler_weight; excluded: (n,) bool; footprints: frame with
    minx, miny, maxx, maxy, crs (n rows); uniqueness: (n,) float64 (NaN for excluded) or None;
    class_names: class value -> name (tile table / catalog), used for the class labels;
    nodata_label / nodata_share: the nodata row of the class table (``"nodata (0)"``, and its
    (uniform, weighted) share of window pixels), noted under the class plot;
    class_colours: class value -> colour text from classes.csv (others get a palette colour).
    """

    class_values: np.ndarray
    uniform_share: np.ndarray
    weighted_share: np.ndarray
    weights: np.ndarray
    excluded: np.ndarray
    footprints: pd.DataFrame
    uniqueness: np.ndarray | None = None
    title: str = "build-balanced-dataset"
    class_names: Mapping[int, str] = field(default_factory=dict)
    nodata_label: str | None = None
    nodata_share: tuple[float, float] | None = None
    class_colours: Mapping[int, str | None] = field(default_factory=dict)


def class_labels(class_values: np.ndarray, class_names: Mapping[int, str]) -> list[str]:
    """``"1 background"`` where a name is known, else ``"1"`` (as in the build summary)."""
    out = []
    for v in np.asarray(class_values, dtype=np.int64).tolist():
        name = class_names.get(int(v))
        out.append(f"{v} {name}" if name else str(v))
    return out


def class_share_figure(data: ReportData) -> Any:
    """The class pixel share plot as a matplotlib Figure (the caller closes it): left, the
    share uniform (hatched) vs weighted (solid) on a log axis; right, the change weighted /
    uniform on a log2 axis (x2 and x0.5 equally long), each bar labelled. Bars use the class
    colours; the x tick labels of both axes are :func:`class_labels`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from smt_tools.export._gallery import class_rgb

    labels = class_labels(data.class_values, data.class_names)
    rgb, _ = class_rgb(np.asarray(data.class_values), data.class_colours)
    colours = [tuple(c / 255 for c in rgb[int(v)]) for v in np.asarray(data.class_values)]
    u = np.asarray(data.uniform_share, dtype=np.float64) * 100
    w = np.asarray(data.weighted_share, dtype=np.float64) * 100
    width = max(11.0, 1.2 * len(labels) + 4.0)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(width, 4.8))
    x = np.arange(len(labels))
    long = any(len(t) > 6 for t in labels)
    positive = np.concatenate([u[u > 0], w[w > 0]])
    floor = float(positive.min()) / 2 if positive.size else 0.01
    ax.set_yscale("log")
    ax.bar(x - 0.2, np.maximum(u, floor), 0.4, color=colours, alpha=0.45, hatch="///",
           edgecolor="#444444", linewidth=0.5)  # fmt: skip
    ax.bar(x + 0.2, np.maximum(w, floor), 0.4, color=colours, edgecolor="#444444", linewidth=0.5)
    ax.set_ylim(bottom=floor)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
    xlabel = "class"
    if data.nodata_label is not None and data.nodata_share is not None:
        nu, nw = data.nodata_share
        xlabel += (
            f"\n({data.nodata_label}, not a class: {nu:.1%} of window pixels uniform, "
            f"{nw:.1%} weighted)"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("expected pixel share per epoch (%, log scale)")
    ax.set_title(f"{data.title}: class pixel share")
    ax.legend(
        handles=[
            Patch(facecolor="#bbbbbb", hatch="///", edgecolor="#444444", label="uniform"),
            Patch(facecolor="#666666", edgecolor="#444444", label="weighted"),
        ]
    )

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(u > 0, w / np.where(u > 0, u, 1.0), np.nan)
    finite = ratio[np.isfinite(ratio) & (ratio > 0)]
    span = max(1, int(np.ceil(np.abs(np.log2(finite)).max()))) if finite.size else 1
    lo, hi = 2.0 ** -(span + 0.5), 2.0 ** (span + 0.5)
    ax2.set_yscale("log", base=2)
    for i, r in enumerate(ratio):
        if not np.isfinite(r):
            ax2.text(x[i], 1.0, "-", ha="center", va="bottom")
            continue
        shown = min(max(float(r), lo), hi)
        ax2.bar(x[i], shown - 1.0, 0.6, bottom=1.0, color=colours[i], edgecolor="#444444",
                linewidth=0.5)  # fmt: skip
        ax2.text(x[i], shown, f"×{r:.2f}", ha="center", va="bottom" if r >= 1 else "top")
    ax2.axhline(1.0, color="#333333", linewidth=0.8)
    ax2.set_ylim(lo, hi)
    ax2.yaxis.set_major_locator(FixedLocator([2.0**e for e in range(-span, span + 1)]))
    ax2.yaxis.set_minor_locator(NullLocator())
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"×{v:g}"))
    ax2.set_ylabel("weighted / uniform (log2 scale)")
    ax2.set_title("change per class")
    for a in (ax, ax2):
        a.set_xticks(x, labels, rotation=30 if long else 0, ha="right" if long else "center")
    ax2.set_xlabel("class")
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_report(report_dir: str | os.PathLike[str], data: ReportData) -> list[Path]:
    """Write the PNGs into ``report_dir`` (created if needed); return their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(report_dir)
    written: list[Path] = []
    included = ~np.asarray(data.excluded, dtype=bool)
    w = np.asarray(data.weights, dtype=np.float64)
    steps: list[tuple[str, Any]] = [
        ("class_share.png", lambda: class_share_figure(data)),
        ("weight_hist.png", lambda: _weight_hist_figure(w, included)),
        ("weight_map.png", lambda: _weight_map_figure(data, w, included)),
    ]
    if data.uniqueness is not None:
        u = np.asarray(data.uniqueness, dtype=np.float64)
        steps.append(("uniqueness.png", lambda: _uniqueness_figure(u, w, included)))
    for name, make in steps:
        fig = make()
        _save(fig, out / name)
        written.append(out / name)
        plt.close(fig)
    return written


def _weight_hist_figure(w: np.ndarray, included: np.ndarray) -> Any:
    """Histogram of sampler_weight over the included tiles."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(w[included], bins=40, color="#21918c")
    ax.set_xlabel("sampler_weight")
    ax.set_ylabel("tiles")
    ax.set_title(f"sampler_weight of {int(included.sum())} included tiles")
    return fig


def _weight_map_figure(data: ReportData, w: np.ndarray, included: np.ndarray) -> Any:
    """Tiles (lon/lat) coloured by sampler_weight, excluded tiles grey hatched."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 7))
    # tiles of rasters without a CRS (pixel space) cannot be placed in lon/lat: left off the map
    georef = has_crs(data.footprints) if len(data.footprints) else np.zeros(0, dtype=bool)
    n = int(georef.sum())
    unmapped = len(georef) - n
    if n:
        rings = footprints_lonlat(data.footprints.iloc[np.flatnonzero(georef)], densify=1)
        _draw_tiles(fig, ax, rings, included[georef], w[georef])
    elif unmapped:
        ax.text(0.5, 0.5, "no tile has a CRS (pixel space):\nnothing to place on a map",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    title = "tiles by sampler_weight (grey hatched: excluded)"
    if unmapped:
        title += f"\n{unmapped} of {len(georef)} tiles have no CRS (pixel space): not drawn"
    ax.set_title(title)
    return fig


def _draw_tiles(fig: Any, ax: Any, rings: np.ndarray, inc_m: np.ndarray, w_m: np.ndarray) -> None:
    """The georeferenced tiles on ``ax``: polygons up to :data:`MAP_POLYGON_LIMIT`, else
    centroids; a colour bar of sampler_weight; aspect set for the mean latitude."""
    from matplotlib.collections import PolyCollection

    if len(rings) <= MAP_POLYGON_LIMIT:
        ex = PolyCollection(
            list(rings[~inc_m]), facecolor="#bdbdbd", edgecolor="#757575", hatch="///"
        )
        inc = PolyCollection(list(rings[inc_m]), array=w_m[inc_m], cmap="viridis")
        inc.set_clim(0.0, 1.0)
        ax.add_collection(ex)
        ax.add_collection(inc)
        fig.colorbar(inc, ax=ax, label="sampler_weight", shrink=0.7)
        ax.autoscale_view()
    else:
        centre = rings[:, :4, :].mean(axis=1)
        ax.scatter(centre[~inc_m, 0], centre[~inc_m, 1], s=1, c="#bdbdbd")
        sc = ax.scatter(centre[inc_m, 0], centre[inc_m, 1], s=1, c=w_m[inc_m], cmap="viridis")
        fig.colorbar(sc, ax=ax, label="sampler_weight", shrink=0.7)
    ax.set_aspect(1.0 / max(np.cos(np.deg2rad(float(rings[..., 1].mean()))), 1e-6))


def _uniqueness_figure(u: np.ndarray, w: np.ndarray, included: np.ndarray) -> Any:
    """Histogram of uniqueness_score and uniqueness vs sampler_weight (included tiles)."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.hist(u[included], bins=40, color="#5ec962")
    a1.set_xlabel("uniqueness_score (mean cosine distance to k nearest)")
    a1.set_ylabel("tiles")
    a2.scatter(u[included], w[included], s=3, alpha=0.5)
    a2.set_xlabel("uniqueness_score")
    a2.set_ylabel("sampler_weight")
    fig.suptitle("visual uniqueness")
    return fig
