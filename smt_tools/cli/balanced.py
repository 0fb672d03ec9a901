"""``build-balanced-dataset CONFIG``: sampler weights for every tile, plus CSV/GeoJSON/report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from smt_tools.cli._common import console, err_console, guard, progress_bar
from smt_tools.cli._config_opts import dry_run, dry_run_option, set_option
from smt_tools.cli._tables import class_label, print_class_table

if TYPE_CHECKING:
    from smt_tools.pipelines.balanced import BalancedResult


def _change(uniform: float, weighted: float) -> str:
    return f"x{weighted / uniform:.2f}" if uniform > 0 else "-"


@guard
def build_balanced_dataset(
    config: Path = typer.Argument(
        ..., help="YAML file with a top-level balanced_dataset: section."
    ),
    overrides: list[str] = set_option(),
    dry_run_: bool = dry_run_option(),
) -> object:
    """Weight every tile so rare compositions (and unique-looking tiles) are drawn more often.

    Writes the balanced CSV (sampler_weight per tile); optionally GeoJSON + QGIS style, PNG plots, and (catalog input) a run with one tile_result row per tile.
    """
    from smt_tools.config import load_config
    from smt_tools.config.balanced import BalancedFile
    from smt_tools.pipelines.balanced import run_balanced

    cfg = load_config(config, BalancedFile, overrides).balanced_dataset
    if dry_run_:
        from smt_tools.pipelines.plan import plan_balanced

        return dry_run(plan_balanced, cfg, config)
    result = run_balanced(cfg, progress_factory=progress_bar, config_path=config)
    _print_summary(result)
    return result


def _say(text: str) -> None:
    console.print(text, soft_wrap=True)


def _print_summary(result: BalancedResult) -> None:
    """Exclusions, clusters, weights, the expected class shares per epoch and the outputs."""
    from smt_tools.pipelines._nodata import nodata_label

    for line in result.warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
    ex = ", ".join(f"{k} {v}" for k, v in result.exclusion_counts.items() if v)
    _say(
        f"Tiles: {result.n_tiles} in, {result.n_excluded} excluded"
        + (f" ({ex})" if ex else "")
        + f", {result.n_included} weighted"
    )
    if result.k is not None:
        sizes = ", ".join(str(v) for v in result.cluster_sizes.values())
        rng = f" from k {result.k_range[0]}..{result.k_range[1]}" if result.k_range else ""
        _say(f"Composition clusters: k = {result.k} ({result.k_selection}{rng}); sizes {sizes}")
    _say(
        f"Weights ({result.effective_method}): min {result.weight_min:.3f}, max "
        f"{result.weight_max:.3f}; effective sample size {result.ess:,.1f} of "
        f"{result.n_included} ({result.ess / max(result.n_included, 1):.0%})"
    )
    if result.repeat_factors:
        _say(_repeat_line(result))

    if result.uniqueness_backend is not None:
        _say(f"Visual uniqueness: kNN backend {result.uniqueness_backend}")
    if result.rare_classes:
        _say(
            "Rare-class boost on classes "
            + ", ".join(class_label(c, result.class_names) for c in result.rare_classes)
        )
    show_nodata = result.nodata_class is not None or result.nodata_share > 0
    extra: list[tuple[str, list[str]]] = []
    if show_nodata:  # not a class: a share of window pixels, in its own dimmed section
        u, w = result.nodata_share_uniform, result.nodata_share_weighted
        extra.append((nodata_label(result.nodata_class), [f"{u:.2%}", f"{w:.2%}", _change(u, w)]))
    print_class_table(
        console,
        "Expected pixel share per epoch",
        result.class_values,
        result.class_names,
        ["uniform", "weighted", "change"],
        [
            [f"{u:.2%}", f"{w:.2%}", _change(u, w)]
            for u, w in zip(result.uniform_share, result.weighted_share, strict=True)
        ],
        extra,
    )
    if show_nodata:
        label = nodata_label(result.nodata_class)
        _say(f"{label} row: share of window pixels of the weighted tiles, not a class share")
        _say(f"{label}: {result.nodata_share:.2%} of all input window pixels")
    for path in result.outputs:
        _say(f"Wrote {path}")
    if result.run_id is not None:
        _say(f"Recorded catalog run {result.run_id} ({result.n_tiles} tile results)")
    _say(f"Done in {result.timings.get('total', 0.0):.1f} s")


#: the classes listed in the repeat-factor line, highest r_c first
TOP_REPEAT_FACTORS = 5


def _repeat_line(result: BalancedResult) -> str:
    """``Repeat factors r_c (highest first): 3 x4.47, 2 x1.58 …; 2 of 4 classes above 1``."""
    ranked = sorted(result.repeat_factors.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(
        f"{class_label(c, result.class_names)} x{r:.2f}" for c, r in ranked[:TOP_REPEAT_FACTORS]
    )
    more = " …" if len(ranked) > TOP_REPEAT_FACTORS else ""
    above = sum(r > 1.0 for r in result.repeat_factors.values())
    return (
        f"Repeat factors r_c (highest first): {shown}{more}; {above} of {len(ranked)} "
        "classes above 1"
    )


def register(app: typer.Typer) -> None:
    app.command("build-balanced-dataset")(build_balanced_dataset)
