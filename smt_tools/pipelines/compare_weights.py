"""compare-weights: what each weighted table would show the model per epoch, before training.

For each balanced CSV / Parquet (``sampler_weight`` + ``class_counts_json``), the numbers of
docs/algorithms.md §9.5 and §9.6 (expected pixel share, share of draws holding a class,
effective sample size, epochs to see each tile of a class), and optionally one PNG bar chart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError, OutputError

#: columns a weighted table must have
REQUIRED_COLUMNS: tuple[str, ...] = ("sampler_weight", "class_counts_json")
#: the PNG's size in pixels (width, height): 12 x 4.2 inches at 100 dpi
PNG_SIZE = (1200, 420)
_DPI = 100


@dataclass(frozen=True)
class WeightsExposure:
    """One table's numbers; every array is (C,) float64 over ``class_values`` (C,) int64.

    rows: rows in the file; drawable: rows with weight > 0; draws: draws per epoch; ess:
    (Σw)² / Σw²; tiles_with_class: drawable tiles holding each class (int64).
    """

    path: Path
    rows: int
    drawable: int
    draws: int
    ess: float
    class_values: np.ndarray
    tiles_with_class: np.ndarray
    pixel_share_uniform: np.ndarray
    pixel_share_weighted: np.ndarray
    tile_share_uniform: np.ndarray
    tile_share_weighted: np.ndarray
    epochs_to_see: np.ndarray

    def summary(self) -> dict[str, Any]:
        def per_class(a: np.ndarray) -> dict[str, float | None]:
            return {
                str(int(c)): (float(x) if np.isfinite(x) else None)
                for c, x in zip(self.class_values, a, strict=True)
            }

        return {
            "path": str(self.path),
            "rows": self.rows,
            "drawable_rows": self.drawable,
            "draws_per_epoch": self.draws,
            "effective_sample_size": self.ess,
            "tiles_with_class": per_class(self.tiles_with_class.astype(np.float64)),
            "pixel_share_uniform": per_class(self.pixel_share_uniform),
            "pixel_share_weighted": per_class(self.pixel_share_weighted),
            "tile_share_uniform": per_class(self.tile_share_uniform),
            "tile_share_weighted": per_class(self.tile_share_weighted),
            "epochs_to_see_each_tile": per_class(self.epochs_to_see),
        }


@dataclass(frozen=True)
class CompareResult:
    tables: list[WeightsExposure]
    png: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "tables": [t.summary() for t in self.tables],
            "png": str(self.png) if self.png else None,
        }


def read_weighted_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (n,) float64, counts (n, C) int64, class_values (C,) int64) of a balanced CSV
    or Parquet file; anything unusable is one :class:`InputDataError` line naming the file."""
    from smt_tools.export.csv_out import parse_class_counts_json

    source = str(path)
    if not path.is_file():
        raise InputDataError(
            f"{source}: file not found; give a balanced CSV or Parquet written by "
            "build-balanced-dataset or select-coreset"
        )
    parquet = path.suffix.lower() == ".parquet"
    cols = list(REQUIRED_COLUMNS)
    try:
        if parquet:
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        else:
            names = list(pd.read_csv(path, nrows=0).columns)
        missing = [c for c in cols if c not in names]
        frame = None
        if not missing:
            frame = (
                pd.read_parquet(path, columns=cols)
                if parquet
                else pd.read_csv(path, usecols=cols, dtype={"class_counts_json": str})
            )
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # pandas and pyarrow errors
        kind = "Parquet" if parquet else "CSV"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputDataError(f"{source}: not a readable {kind} ({first})") from None
    if frame is None:
        raise InputDataError(
            f"{source}: missing column(s) {', '.join(missing)}; expected a balanced CSV or "
            "Parquet written by build-balanced-dataset (needs sampler_weight, class_counts_json)"
        )
    if frame.empty:
        raise InputDataError(f"{source}: the table has no rows")
    w = pd.to_numeric(frame["sampler_weight"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"{source}: row {k + 1}: sampler_weight must be a finite number >= 0; got "
            f"{str(frame['sampler_weight'].iloc[k])!r}"
        )
    if not (w > 0).any():
        raise InputDataError(
            f"{source}: no row has sampler_weight > 0, so a weighted sampler draws nothing; "
            "check that the run included some tiles"
        )
    counts, class_values = parse_class_counts_json(
        frame["class_counts_json"], source, empty_is_zero=False
    )
    return w, counts, class_values


def weights_exposure(
    path: Path, w: np.ndarray, counts: np.ndarray, class_values: np.ndarray, draws: int | None
) -> WeightsExposure:
    """The numbers of §9.6 for one table: w (n,) float64 >= 0 with a positive value, counts
    (n, C) int64; ``draws`` per epoch (None: the rows with w > 0)."""
    from smt_tools.curation.diagnostics import (
        class_shares_uniform_vs_weighted,
        class_tile_share,
        effective_sample_size,
        epochs_to_see_tiles,
    )

    drawn = w > 0
    n_draws = int(drawn.sum()) if draws is None else int(draws)
    uniform, weighted = class_shares_uniform_vs_weighted(counts, w, drawn)
    return WeightsExposure(
        path=path,
        rows=len(w),
        drawable=int(drawn.sum()),
        draws=n_draws,
        ess=effective_sample_size(w),
        class_values=np.asarray(class_values, dtype=np.int64),
        tiles_with_class=(counts[drawn] > 0).sum(axis=0).astype(np.int64),
        pixel_share_uniform=uniform,
        pixel_share_weighted=weighted,
        tile_share_uniform=class_tile_share(counts, drawn.astype(np.float64)),
        tile_share_weighted=class_tile_share(counts, w),
        epochs_to_see=epochs_to_see_tiles(counts, w, n_draws),
    )


def run_compare_weights(
    paths: list[Path], png: Path | None = None, epoch_size: int | None = None
) -> CompareResult:
    """Read every table, check they share one class set, compute §9.6, write the PNG."""
    if not paths:
        raise InputDataError("compare-weights: give at least one balanced CSV or Parquet file")
    if png is not None and Path(png).is_dir():
        raise OutputError(f"{png} is a folder; give a file name for --png, e.g. {png}/weights.png")
    if epoch_size is not None and epoch_size < 1:
        raise InputDataError(f"--epoch-size must be >= 1; got {epoch_size}")
    tables: list[WeightsExposure] = []
    for path in paths:
        w, counts, values = read_weighted_table(Path(path))
        if tables and not np.array_equal(values, tables[0].class_values):
            first = tables[0]
            raise InputDataError(
                f"{path}: classes {_listing(values)} differ from {first.path}'s "
                f"{_listing(first.class_values)}; compare tables built from the same tiles"
            )
        tables.append(weights_exposure(Path(path), w, counts, values, epoch_size))
    if png is not None:
        write_png(tables, Path(png))
    return CompareResult(tables, Path(png) if png is not None else None)


def _listing(values: np.ndarray) -> str:
    return ", ".join(str(int(v)) for v in values) or "(none)"


def table_labels(tables: list[WeightsExposure]) -> list[str]:
    """File names, or the paths where two tables share a name."""
    names = [t.path.name for t in tables]
    return names if len(set(names)) == len(names) else [str(t.path) for t in tables]


def write_png(tables: list[WeightsExposure], path: Path) -> None:
    """Grouped bars per class and table (PNG_SIZE px), written atomically: expected pixel
    share per epoch (log scale), share of draws holding the class, epochs to see each tile
    (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    from smt_tools.atomic import atomic_path

    labels = table_labels(tables)
    x = np.arange(len(tables[0].class_values))
    width = 0.8 / len(tables)
    fig, axes = plt.subplots(1, 3, figsize=(PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI))
    panels = (
        ("expected pixel share per epoch (%)", "pixel_share_weighted", 100.0, True),
        ("draws holding the class (%)", "tile_share_weighted", 100.0, False),
        ("epochs to see each tile once", "epochs_to_see", 1.0, True),
    )
    try:
        for ax, (title, attr, scale, log) in zip(axes, panels, strict=True):
            for k, (t, label) in enumerate(zip(tables, labels, strict=True)):
                v = np.asarray(getattr(t, attr), dtype=np.float64) * scale
                v = np.where(np.isfinite(v), v, np.nan)
                ax.bar(x - 0.4 + (k + 0.5) * width, v, width, label=label)
            if log:
                ax.set_yscale("log")
                # plain numbers; minor ticks labelled only when the axis spans about a decade
                ax.yaxis.set_major_formatter(LogFormatter())
                ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.5)))
            ax.set_title(title, fontsize=10)
            ax.set_xticks(x, [str(int(c)) for c in tables[0].class_values])
            ax.set_xlabel("class")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(os.fspath(tmp), format="png", dpi=_DPI)
    finally:
        plt.close(fig)
