"""``select-coreset CONFIG``: pick an informative budget of tiles and reweight them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from smt_tools.cli._common import console, err_console, guard, progress_bar
from smt_tools.cli._config_opts import dry_run, dry_run_option, set_option
from smt_tools.cli._tables import print_class_table


def _method_note(info: dict[str, Any]) -> str:
    """``; fd clusters k = 4 (Vendi rule); first 3 picks by fd`` from the selection's info."""
    extra = ""
    if "fd_k" in info:
        rule = " (Vendi rule)" if info.get("fd_k_rule") == "vendi" else ""
        extra += f"; fd clusters k = {info['fd_k']}{rule}"
    if "lc_fd_m" in info:
        extra += f"; first {info['lc_fd_m']} picks by fd"
    if "steps" in info:  # method hybrid: tiles picked of each step's share
        extra += "; steps: " + ", ".join(
            f"{s['name']} {s['picked']} of {s['quota']}" for s in info["steps"]
        )
    return extra


def _diversity_line(pool: float | None, selected: float | None) -> str:
    """The Vendi scores (docs/algorithms.md §10: effective number of distinct tiles)."""
    if pool is None or selected is None:
        return "Diversity (Vendi score): n/a (no embeddings; set coreset.parquet_path)"
    return f"Diversity (Vendi score of the embeddings): selected {selected:.2f}, pool {pool:.2f}"


def register(app: typer.Typer) -> None:
    @app.command("select-coreset")
    @guard
    def select_coreset(
        config: Path = typer.Argument(..., help="YAML file with a top-level coreset: section."),
        overrides: list[str] = set_option(),
        dry_run_: bool = dry_run_option(),
    ) -> object:
        """Score the included tiles (lc, cb, fa, fd, lc_fd, fa_cb, kcenter, random or hybrid), select the budget, recompute sampler weights over the selection.

        Writes the input table plus coreset_score, coreset_selected and sampler_weight (0 for tiles not selected), and with hybrid coreset_step; optionally GeoJSON + QGIS style, and (catalog input) a run with tile_result rows.
        """
        from smt_tools.config import load_config
        from smt_tools.config.coreset import CoresetFile
        from smt_tools.pipelines.coreset import run_coreset

        start = time.perf_counter()
        cfg = load_config(config, CoresetFile, overrides).coreset
        if dry_run_:
            from smt_tools.pipelines.plan import plan_coreset

            return dry_run(plan_coreset, cfg, config)
        result = run_coreset(
            cfg,
            progress_factory=lambda desc, total: progress_bar(desc, total, unit="steps"),
            config_path=config,
        )

        def say(text: str) -> None:
            console.print(text, soft_wrap=True)

        extra = _method_note(result.info)
        say(
            f"Selected {result.budget} of {result.n_included} included tiles "
            f"({result.budget / max(result.n_included, 1):.0%}; {result.n_tiles} in the input) "
            f"with {result.method} on {result.device}{extra}"
        )
        weighted = result.weighted_class_shares or [0.0] * len(result.class_values)
        print_class_table(
            console,
            "Class pixel share",
            result.class_values,
            {},
            ["pool", "selected", "selected, weighted"],
            [
                [f"{pool:.2%}", f"{sel:.2%}", f"{w:.2%}"]
                for pool, sel, w in zip(
                    result.pool_class_shares, result.selected_class_shares, weighted, strict=True
                )
            ],
        )
        if result.pool_source_images is not None:
            say(
                f"Source images covered: {result.selected_source_images} of "
                f"{result.pool_source_images}"
            )
        if result.pool_mean_uniqueness is not None:
            say(
                f"Mean uniqueness: selected {result.selected_mean_uniqueness:.4f}, "
                f"pool {result.pool_mean_uniqueness:.4f}"
            )
        else:
            say("Mean uniqueness: n/a (the input has no uniqueness_score)")
        say(_diversity_line(result.pool_vendi, result.selected_vendi))
        say(
            f"Sampler weights over the selection: effective sample size {result.ess:,.1f} "
            f"of {result.budget}"
        )
        for path in result.outputs:
            say(f"Wrote {path}")
        if result.run_id is not None:
            say(f"Recorded catalog run {result.run_id} ({result.n_tiles} tile results)")
        say(f"Done in {time.perf_counter() - start:.1f} s")
        for line in result.warnings:  # e.g. the map layer written as FlatGeobuf, tiles left out
            err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
        return result
