"""``build-balanced-dataset CONFIG``: sampler weights for every tile, plus CSV/GeoJSON/report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from smt_tools.cli._common import console, err_console, guard, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("build-balanced-dataset")
    @guard
    def build_balanced_dataset(
        config: Path = typer.Argument(
            ..., help="YAML file with a top-level balanced_dataset: section."
        ),
    ) -> None:
        """Weight every tile so rare compositions (and unique-looking tiles) are drawn more often.

        Writes the balanced CSV (sampler_weight per tile); optionally GeoJSON + QGIS style, PNG plots, and (catalog input) a run with one tile_result row per tile.
        """
        from smt_tools.config import load_config
        from smt_tools.config.balanced import BalancedFile
        from smt_tools.pipelines.balanced import run_balanced

        cfg = load_config(config, BalancedFile).balanced_dataset
        result = run_balanced(cfg, progress_factory=progress_bar)

        def say(text: str) -> None:
            console.print(text, soft_wrap=True)

        for line in result.warnings:
            err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
        ex = ", ".join(f"{k} {v}" for k, v in result.exclusion_counts.items() if v)
        say(
            f"Tiles: {result.n_tiles} in, {result.n_excluded} excluded"
            + (f" ({ex})" if ex else "")
            + f", {result.n_included} weighted"
        )
        if result.k is not None:
            sizes = ", ".join(str(v) for v in result.cluster_sizes.values())
            rng = f" from k {result.k_range[0]}..{result.k_range[1]}" if result.k_range else ""
            say(f"Composition clusters: k = {result.k} ({result.k_selection}{rng}); sizes {sizes}")
        say(
            f"Weights ({result.effective_method}): min {result.weight_min:.3f}, max "
            f"{result.weight_max:.3f}; effective sample size {result.ess:,.1f} of "
            f"{result.n_included} ({result.ess / max(result.n_included, 1):.0%})"
        )

        def label(value: int) -> str:
            name = result.class_names.get(value)
            return f"{value} {name}" if name else str(value)

        if result.rare_classes:
            say("Rare-class boost on classes " + ", ".join(label(c) for c in result.rare_classes))
        table = Table(title="Expected pixel share per epoch", title_justify="left")
        table.add_column("class", justify="right")
        table.add_column("uniform", justify="right")
        table.add_column("weighted", justify="right")
        table.add_column("change", justify="right")
        for value, u, w in zip(
            result.class_values, result.uniform_share, result.weighted_share, strict=True
        ):
            change = f"x{w / u:.2f}" if u > 0 else "-"
            table.add_row(label(value), f"{u:.2%}", f"{w:.2%}", change)
        console.print(table)
        for path in result.outputs:
            say(f"Wrote {path}")
        if result.run_id is not None:
            say(f"Recorded catalog run {result.run_id} ({result.n_tiles} tile results)")
        say(f"Done in {result.timings.get('total', 0.0):.1f} s")
