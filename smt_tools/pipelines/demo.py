"""make-demo-data: write synthetic scenes (see :mod:`smt_tools.raster.synthetic`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smt_tools.raster.demo_data import make_demo_data


@dataclass(frozen=True)
class DemoResult:
    pairs_csv: Path
    scenes: int
    bytes_written: int
    size: int = 0
    seed: int = 0
    profile: str = "default"

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``, ``run.json``)."""
        return {
            "pairs_csv": self.pairs_csv,
            "scenes": self.scenes,
            "size": self.size,
            "seed": self.seed,
            "profile": self.profile,
            "bytes_written": self.bytes_written,
        }

    def run_json_path(self) -> Path:
        """``run.json`` in the output folder, beside pairs.csv."""
        return self.pairs_csv.parent / "run.json"


def run_make_demo_data(
    out_dir: str | Path,
    scenes: int = 8,
    size: int = 2048,
    seed: int = 0,
    zlevel: int = 6,
    progress: Callable[[int], None] | None = None,
    profile: str = "default",
) -> DemoResult:
    from smt_tools.atomic import reraise_output_error
    from smt_tools.errors import OutputError

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"{out_dir} is a file; give a folder for the demo data")
    try:
        csv_path = make_demo_data(
            out_dir,
            scenes=scenes,
            size=size,
            seed=seed,
            zlevel=zlevel,
            progress=progress,
            profile=profile,
        )
    except OSError as exc:
        reraise_output_error(exc, out_dir)  # not writable, disk full: one line
        raise
    out = Path(out_dir)
    written = sum(
        p.stat().st_size for sub in ("images", "masks") for p in (out / sub).glob("*.tif")
    )
    return DemoResult(
        pairs_csv=Path(csv_path),
        scenes=scenes,
        bytes_written=written,
        size=size,
        seed=seed,
        profile=profile,
    )
