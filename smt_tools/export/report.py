"""PNG plots of a balanced-dataset run (matplotlib, Agg backend, no display needed).

- ``class_share.png``: each class's pixel share, uniform vs. under the weights;
- ``weight_hist.png``: histogram of sampler_weight over included tiles;
- ``weight_map.png``: tiles (lon/lat) coloured by sampler_weight, excluded tiles grey;
- ``uniqueness.png`` (when uniqueness is present): its histogram and uniqueness vs. weight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.export._atomic import atomic_path
from smt_tools.geo import footprints_lonlat

#: above this many tiles the map draws centroids instead of polygons
MAP_POLYGON_LIMIT = 20_000


@dataclass(frozen=True)
class ReportData:
    """What the plots need.

    class_values: (C,) int64; uniform_share / weighted_share: (C,) float64;
    weights: (n,) float64 sampler_weight; excluded: (n,) bool; footprints: frame with
    minx, miny, maxx, maxy, crs (n rows); uniqueness: (n,) float64 (NaN for excluded) or None.
    """

    class_values: np.ndarray
    uniform_share: np.ndarray
    weighted_share: np.ndarray
    weights: np.ndarray
    excluded: np.ndarray
    footprints: pd.DataFrame
    uniqueness: np.ndarray | None = None
    title: str = "build-balanced-dataset"


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

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(data.class_values))
    ax.bar(x - 0.2, data.uniform_share * 100, 0.4, label="uniform", color="#9e9e9e")
    ax.bar(x + 0.2, data.weighted_share * 100, 0.4, label="weighted", color="#3b528b")
    ax.set_xticks(x, [str(int(v)) for v in data.class_values])
    ax.set_xlabel("class value")
    ax.set_ylabel("expected pixel share per epoch (%)")
    ax.set_title(f"{data.title}: class pixel share")
    ax.legend()
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
    n = len(data.footprints)
    if n:
        rings = footprints_lonlat(data.footprints, densify=1)
        if n <= MAP_POLYGON_LIMIT:
            ex = PolyCollection(
                list(rings[~included]), facecolor="#bdbdbd", edgecolor="#757575", hatch="///"
            )
            inc = PolyCollection(list(rings[included]), array=w[included], cmap="viridis")
            inc.set_clim(0.0, 1.0)
            ax.add_collection(ex)
            ax.add_collection(inc)
            fig.colorbar(inc, ax=ax, label="sampler_weight", shrink=0.7)
            ax.autoscale_view()
        else:
            centre = rings[:, :4, :].mean(axis=1)
            ax.scatter(centre[~included, 0], centre[~included, 1], s=1, c="#bdbdbd")
            sc = ax.scatter(
                centre[included, 0], centre[included, 1], s=1, c=w[included], cmap="viridis"
            )
            fig.colorbar(sc, ax=ax, label="sampler_weight", shrink=0.7)
        ax.set_aspect(1.0 / max(np.cos(np.deg2rad(float(rings[..., 1].mean()))), 1e-6))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("tiles by sampler_weight (grey hatched: excluded)")
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
