"""``compare-weights``: per-class exposure of weighted tables before training (§9.6)."""

from __future__ import annotations

from pathlib import Path

import typer

from smt_tools.cli._common import console, guard
from smt_tools.cli._tables import print_matrix


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _epochs(x: float) -> str:
    return f"{x:,.2f}" if x == x and x != float("inf") else "never"


_LEGEND = (
    "tiles: tiles with weight > 0 holding the class; px: expected pixel share per epoch; "
    "draws: share of draws holding the class (unif: every weighted tile equally, wtd: by "
    "sampler_weight); epochs/tile: epochs to see each such tile once, mean of 1 / (draws p_i) "
    "(docs/algorithms.md §9.6)"
)


def register(app: typer.Typer) -> None:
    @app.command("compare-weights")
    @guard(outputs=("png",))
    def compare_weights(
        tables: list[Path] = typer.Argument(
            ..., help="Balanced CSV or Parquet files (sampler_weight, class_counts_json)."
        ),
        png: Path | None = typer.Option(
            None, "--png", metavar="PATH", help="Also write a bar chart of the numbers here."
        ),
        epoch_size: int | None = typer.Option(
            None,
            "--epoch-size",
            min=1,
            help="Draws per epoch (default: the rows with sampler_weight > 0, what train draws "
            "with drop_excluded: true and no weighted_sampler_num_samples).",
        ),
    ) -> object:
        """Before training: per class, the expected pixel share per epoch, the share of draws holding it, the effective sample size and the epochs it takes to see each tile holding it once (docs/algorithms.md §9.6), for each weighted table."""
        from smt_tools.pipelines.compare_weights import run_compare_weights, table_labels

        result = run_compare_weights(list(tables), png=png, epoch_size=epoch_size)
        headers = ["tiles", "px unif", "px wtd", "draws unif", "draws wtd", "epochs/tile"]
        for t, label in zip(result.tables, table_labels(result.tables), strict=True):
            console.print(
                f"{label}: {t.rows:,} rows, {t.drawable:,} with weight > 0; epoch = "
                f"{t.draws:,} draws; effective sample size {t.ess:,.1f} "
                f"({t.ess / t.drawable:.0%} of the weighted rows)",
                markup=False,
                soft_wrap=True,
            )
            cells = [
                [
                    f"{int(t.tiles_with_class[j]):,}",
                    _pct(t.pixel_share_uniform[j]),
                    _pct(t.pixel_share_weighted[j]),
                    _pct(t.tile_share_uniform[j]),
                    _pct(t.tile_share_weighted[j]),
                    _epochs(float(t.epochs_to_see[j])),
                ]
                for j in range(len(t.class_values))
            ]
            rows = [str(int(c)) for c in t.class_values]
            print_matrix(console, f"Exposure per epoch: {label}", "class", rows, headers, cells)
        console.print(_LEGEND, markup=False, soft_wrap=True)
        if result.png is not None:
            console.print(f"Wrote {result.png}", markup=False, soft_wrap=True)
        return result
