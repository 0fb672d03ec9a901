"""Heavy optional packages are imported only by the code paths that need them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "hnswlib", "faiss", "albumentations", "dask", "distributed")


def _heavy_after(code: str) -> list[str]:
    script = (
        code
        + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_cli_and_pipelines_import_no_heavy_package() -> None:
    code = "\n".join(
        f"import {m}"
        for m in (
            "smt_tools.cli.app",
            "smt_tools.pipelines.balanced",
            "smt_tools.pipelines.coreset",
            "smt_tools.pipelines.split",
            "smt_tools.pipelines.leakage",
            "smt_tools.pipelines.ingest",
        )
    )
    assert _heavy_after(code) == []


def test_masks_only_run_needs_no_heavy_package(demo_dir: Path, tmp_path: Path) -> None:
    code = f"""
from smt_tools.config import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.pipelines.balanced import run_balanced
records = [
    dict(image_path=r"{demo_dir}/images/scene_000.tif", mask_path=r"{demo_dir}/masks/scene_000.tif",
         row_off=r, col_off=c, patch_size=128)
    for r in (0, 128, 256, 384) for c in (0, 128, 256, 384)
]
cfg = validate_mapping(
    {{"balanced_dataset": {{"input": {{"patch_records": records, "scan_workers": 1}},
      "clustering": {{"k_min": 2, "k_max": 4}},
      "output": {{"csv_path": r"{tmp_path}/out.csv", "geojson_path": r"{tmp_path}/out.geojson"}}}}}},
    BalancedFile, "test",
).balanced_dataset
run_balanced(cfg)
"""
    assert _heavy_after(code) == []
    assert (tmp_path / "out.csv").is_file()
