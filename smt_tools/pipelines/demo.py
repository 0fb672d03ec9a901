"""make-demo-data: write synthetic scenes (see :mod:`smt_tools.raster.synthetic`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smt_tools.raster.synthetic import make_demo_data


@dataclass(frozen=True)
class DemoResult:
    pairs_csv: Path
    scenes: int
    bytes_written: int


def run_make_demo_data(
    out_dir: str | Path,
    scenes: int = 8,
    size: int = 2048,
    seed: int = 0,
    zlevel: int = 6,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    csv_path = make_demo_data(
        out_dir, scenes=scenes, size=size, seed=seed, zlevel=zlevel, progress=progress
    )
    out = Path(out_dir)
    written = sum(
        p.stat().st_size for sub in ("images", "masks") for p in (out / sub).glob("*.tif")
    )
    return DemoResult(pairs_csv=csv_path, scenes=scenes, bytes_written=written)
