"""``make-demo-data``: synthetic georeferenced scenes, masks and pairs.csv."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import typer

from smt_tools.cli._common import console, guard, progress_bar

#: ``--profile`` (smt_tools.raster.synthetic / synthetic_longtail)
DemoProfile = Literal["default", "longtail"]


def register(app: typer.Typer) -> None:
    @app.command("make-demo-data")
    @guard(outputs=("out_dir",))
    def make_demo_data(
        out_dir: Path = typer.Argument(
            ..., help="Folder to write images/, masks/ and pairs.csv into."
        ),
        scenes: int = typer.Option(
            8, "--scenes", min=1, help="Number of scenes (rows of pairs.csv)."
        ),
        size: int = typer.Option(2048, "--size", min=64, help="Every scene is SIZE x SIZE pixels."),
        seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same files."),
        zlevel: int = typer.Option(6, "--zlevel", min=1, max=9, help="Deflate level."),
        profile: DemoProfile = typer.Option(
            "default",
            "--profile",
            help="default, or longtail: a 2.5 % class and a 0.25 % class of small objects in "
            "4 % of the 256-px tiles that look like the background but for shape and texture.",
        ),
    ) -> object:
        """Write seeded synthetic scenes (3-band uint8 images, 6-class uint8 masks, UTM 31N)."""
        from smt_tools.pipelines.demo import run_make_demo_data

        start = time.perf_counter()
        with progress_bar("Writing scenes", total=scenes, unit="scenes") as advance:
            result = run_make_demo_data(
                out_dir,
                scenes=scenes,
                size=size,
                seed=seed,
                zlevel=zlevel,
                progress=advance,
                profile=profile,
            )
        console.print(
            f"Wrote {result.scenes} scenes of {size}x{size} px ({result.bytes_written / 1e6:.1f} MB) "
            f"and {result.pairs_csv} in {time.perf_counter() - start:.1f} s"
        )
        return result
