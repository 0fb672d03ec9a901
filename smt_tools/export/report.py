"""PNG plots of a balanced-dataset run (matplotlib, Agg backend, no display needed).

- ``class_share.png``: each class's pixel share, uniform vs. under the weights;
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

from smt_tools.export._atomic import atomic_path
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
    (uniform, weighted) share of window pixels), noted under the class plot.
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


def class_labels(class_values: np.ndarray, class_names: Mapping[int, str]) -> list[str]:
    """``"1 background"`` where a name is known, else ``"1"`` (as in the build summary)."""
    out = []
    for v in np.asarray(class_values, dtype=np.int64).tolist():
        name = class_names.get(int(v))
        out.append(f"{v} {name}" if name else str(v))
    return out


def class_share_figure(data: ReportData) -> Any:
    """The class pixel share plot (uniform vs weighted) as a matplotlib Figure; the x tick
    labels are :func:`class_labels` (the caller closes the figure)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = class_labels(data.class_values, data.class_names)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(labels) + 2.0), 4.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, np.asarray(data.uniform_share) * 100, 0.4, label="uniform", color="#9e9e9e")
    ax.bar(x + 0.2, np.asarray(data.weighted_share) * 100, 0.4, label="weighted", color="#3b528b")
    long = any(len(t) > 6 for t in labels)
    ax.set_xticks(x, labels, rotation=30 if long else 0, ha="right" if long else "center")
    xlabel = "class"
    if data.nodata_label is not None and data.nodata_share is not None:
        u, w = data.nodata_share
        xlabel += (
            f"  ({data.nodata_label}, not a class: {u:.1%} of window pixels uniform, "
            f"{w:.1%} weighted)"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("expected pixel share per epoch (%)")
    ax.set_title(f"{data.title}: class pixel share")
    ax.legend()
    return fig


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_report(report_dir: str | os.PathLike[str], data: ReportData) -> list[Path]:
    """Write the PNGs into ``report_dir`` (created if needed); return their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    out = Path(report_dir)
    written: list[Path] = []
    included = ~np.asarray(data.excluded, dtype=bool)
    w = np.asarray(data.weights, dtype=np.float64)

    fig = class_share_figure(data)
    _save(fig, out / "class_share.png")
    written.append(out / "class_share.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(w[included], bins=40, color="#21918c")
    ax.set_xlabel("sampler_weight")
    ax.set_ylabel("tiles")
    ax.set_title(f"sampler_weight of {int(included.sum())} included tiles")
    _save(fig, out / "weight_hist.png")
    written.append(out / "weight_hist.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 7))
    # tiles of rasters without a CRS (pixel space) cannot be placed in lon/lat: left off the map
    georef = has_crs(data.footprints) if len(data.footprints) else np.zeros(0, dtype=bool)
    n = int(georef.sum())
    unmapped = len(georef) - n
    if n:
        rings = footprints_lonlat(data.footprints.iloc[np.flatnonzero(georef)], densify=1)
        inc_m, w_m = included[georef], w[georef]
        if n <= MAP_POLYGON_LIMIT:
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
    elif unmapped:
        ax.text(0.5, 0.5, "no tile has a CRS (pixel space):\nnothing to place on a map",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    title = "tiles by sampler_weight (grey hatched: excluded)"
    if unmapped:
        title += f"\n{unmapped} of {len(georef)} tiles have no CRS (pixel space): not drawn"
    ax.set_title(title)
    _save(fig, out / "weight_map.png")
    written.append(out / "weight_map.png")
    plt.close(fig)

    if data.uniqueness is not None:
        u = np.asarray(data.uniqueness, dtype=np.float64)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        a1.hist(u[included], bins=40, color="#5ec962")
        a1.set_xlabel("uniqueness_score (mean cosine distance to k nearest)")
        a1.set_ylabel("tiles")
        a2.scatter(u[included], w[included], s=3, alpha=0.5)
        a2.set_xlabel("uniqueness_score")
        a2.set_ylabel("sampler_weight")
        fig.suptitle("visual uniqueness")
        _save(fig, out / "uniqueness.png")
        written.append(out / "uniqueness.png")
        plt.close(fig)
    return written
