"""build-balanced-dataset benchmark: 155,000 catalog tiles, masks_only, elbow k 4..16.

Synthesises tile rows directly (no rasters): ``--n`` tiles of 256x256 px on a grid of source
images (EPSG:32631), class counts drawn from a Dirichlet mixture (some pure-class tiles, some
nodata at the border, a few black image borders). The rows are loaded into a fresh PostGIS
database with the catalog's own COPY writer and into a local Parquet tile table; then the real
pipeline runs end to end twice, each in a fresh process:

1. PostGIS: load tiles, cluster, weights, write CSV + GeoJSON + QGIS style + tile_result rows;
2. Parquet: the same from the local tile table (no catalog run).

Reports time per stage and peak memory (max RSS of the process) and appends a dated section
to BENCHMARKS.md. Target: PostGIS end to end <= 15 s on 2 cores.

    python benchmarks/bench_balanced.py                         # 155,000 tiles, appends
    python benchmarks/bench_balanced.py --n 5000 --no-append    # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.ingest_params import IngestParams  # noqa: E402
from smt_tools.raster.info import RasterInfo  # noqa: E402
from smt_tools.raster.scan import SourceRecord  # noqa: E402
from smt_tools.tiletable import (  # noqa: E402
    TileTable,
    entropy_from_counts,
    source_image_key,
    tile_keys,
)

PATCH = 256
PIXEL = 0.5
CLASSES = np.arange(1, 7)


def synth_tiles(n: int, per_side: int, seed: int) -> tuple[TileTable, list[SourceRecord]]:
    """``n`` tiles on images of ``per_side`` x ``per_side`` tiles; counts (n, 6) int64."""
    rng = np.random.default_rng(seed)
    per_image = per_side * per_side
    n_images = -(-n // per_image)
    size = per_side * PATCH
    sources: list[SourceRecord] = []
    frames = []
    for i in range(n_images):
        x0 = 500_000.0 + (i % 10) * (size * PIXEL + 1000)
        y0 = 5_000_000.0 - (i // 10) * (size * PIXEL + 1000)
        transform = (PIXEL, 0.0, x0, 0.0, -PIXEL, y0)
        img = RasterInfo(
            f"/bench/images/img_{i:04d}.tif", size, size, 3, "uint8", "EPSG:32631",
            transform, None, 0, 0.0,
        )  # fmt: skip
        msk = RasterInfo(
            f"/bench/masks/img_{i:04d}.tif", size, size, 1, "uint8", "EPSG:32631",
            transform, None, 0, 0.0,
        )  # fmt: skip
        src = SourceRecord(source_image_key(img.path), img, msk, f"img_{i:04d}")
        sources.append(src)
        m = min(per_image, n - i * per_image)
        k = np.arange(m)
        row = (k // per_side) * PATCH
        col = (k % per_side) * PATCH
        h = np.full(m, PATCH, np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": tile_keys(img.path, row, col, h, h),
                    "source_image_id": src.source_image_id,
                    "group_id": src.group_id,
                    "image_path": img.path,
                    "mask_path": msk.path,
                    "row_off": row,
                    "col_off": col,
                    "height": h,
                    "width": h,
                    "minx": x0 + col * PIXEL,
                    "miny": y0 - (row + PATCH) * PIXEL,
                    "maxx": x0 + (col + PATCH) * PIXEL,
                    "maxy": y0 - row * PIXEL,
                    "crs": "EPSG:32631",
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    # Dirichlet mixture: background-heavy, urban, water, mixed, and pure single-class tiles
    alphas = np.array(
        [
            [8.0, 1.0, 1.0, 0.5, 0.3, 0.05],
            [2.0, 4.0, 1.0, 1.0, 0.5, 0.2],
            [1.0, 0.5, 5.0, 0.5, 0.5, 0.05],
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.3],
            [3.0, 0.3, 0.3, 3.0, 2.0, 0.5],
        ]
    )
    comp = rng.choice(len(alphas), size=n, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    p = rng.gamma(alphas[comp])
    p /= p.sum(axis=1, keepdims=True)
    pure = rng.random(n) < 0.1
    p[pure] = 0.0
    p[pure, 0] = 1.0
    window = PATCH * PATCH
    nodata = np.zeros(n, np.int64)
    border = rng.random(n) < 0.05
    nodata[border] = (rng.uniform(0.01, 0.6, border.sum()) * window).astype(np.int64)
    valid = window - nodata
    counts = np.floor(p * valid[:, None]).astype(np.int64)
    counts[:, 0] += valid - counts.sum(axis=1)
    frame["valid_pixels"] = valid
    frame["nodata_ratio"] = nodata / window
    frame["class_entropy"] = entropy_from_counts(counts)
    frame["has_mask_border_nodata"] = border
    frame["has_image_black_border"] = rng.random(n) < 0.02
    return TileTable(frame, counts, CLASSES.copy(), 0), sources


def child(config_path: str) -> None:
    """Run one build-balanced-dataset in this (fresh) process; print timings as JSON."""
    start = time.perf_counter()
    from smt_tools.config import load_config
    from smt_tools.config.balanced import BalancedFile
    from smt_tools.pipelines.balanced import run_balanced

    cfg = load_config(config_path, BalancedFile).balanced_dataset
    res = run_balanced(cfg)
    wall = time.perf_counter() - start
    peak_mib = _machine.peak_rss_mib()
    print(
        json.dumps(
            {
                "timings": res.timings,
                "wall_with_imports": wall,
                "peak_mib": peak_mib,
                "k": res.k,
                "k_range": res.k_range,
                "cluster_sizes": res.cluster_sizes,
                "tiles": res.n_tiles,
                "excluded": res.n_excluded,
                "ess": res.ess,
                "run_id": res.run_id,
            }
        )
    )


def run_child(config: dict[str, Any], workdir: Path, name: str, env: dict[str, str]) -> Any:
    import yaml

    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def config(workdir: Path, name: str, inp: dict[str, Any]) -> dict[str, Any]:
    return {
        "balanced_dataset": {
            "mode": "masks_only",
            "sampling_method": "rank_max",
            "input": inp,
            "clustering": {"k_min": 4, "k_max": 16, "k_selection": "elbow", "random_state": 42},
            "exclusion": {"exclude_border_nodata": True, "exclude_black_border": True},
            "output": {
                "csv_path": str(workdir / f"{name}.csv"),
                "geojson_path": str(workdir / f"{name}.geojson"),
            },
        }
    }


STAGES = [
    ("load", "load tiles"),
    ("cluster", "exclusion + CLR + KMeans (elbow)"),
    ("weights", "ranks + weights + diagnostics"),
    ("prepare", "output table (input order, JSON columns)"),
    ("write_csv", "write CSV"),
    ("write_geojson", "write GeoJSON + .qml"),
    ("catalog_run", "run + tile_result rows (COPY)"),
    ("total", "end to end (pipeline)"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=155_000, help="number of tiles (default 155,000)")
    ap.add_argument("--tiles-per-side", type=int, default=40, help="tiles per image side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--admin-url",
        default=os.environ.get(
            "SMT_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="server URL used to create (and drop) a fresh benchmark database",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="folder for outputs (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the database and output files")
    ap.add_argument(
        "--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    import psycopg
    from psycopg import sql

    from smt_tools import catalog
    from smt_tools.catalog.parquet_io import write_tile_table

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_balanced_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    table, sources = synth_tiles(args.n, args.tiles_per_side, args.seed)
    print(
        f"synthesised {len(table):,} tiles of {len(sources)} images in {time.perf_counter() - t:.1f} s"
    )

    db = f"smt_bench_{uuid.uuid4().hex[:8]}"
    base = args.admin_url.rsplit("/", 1)[0]
    url = f"{base}/{db}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists postgis")
        engine = catalog.connect(url)
        try:
            catalog.apply_migrations(engine)
            t = time.perf_counter()
            params = IngestParams(
                patch_size=PATCH, stride=PATCH, edge_policy="drop", nodata_class=0
            )
            catalog.write_ingest(engine, table, sources, params)
            copy_s = time.perf_counter() - t
        finally:
            engine.dispose()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("vacuum analyze")
        print(f"loaded into PostGIS ({catalog.redact(url)}) with COPY in {copy_s:.1f} s")
        parquet = workdir / "tiles.parquet"
        write_tile_table(table, parquet, sources)

        env = dict(os.environ)
        env.pop("SMT_DATABASE_URL", None)
        pg = run_child(config(workdir, "postgis", {"dsn": url}), workdir, "postgis", env)
        local = run_child(
            config(workdir, "parquet", {"tiles": str(parquet)}), workdir, "parquet", env
        )
    finally:
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db))
                )

    lines = [
        "",
        f"## build-balanced-dataset, masks_only, elbow k 4..16 — {dt.date.today().isoformat()}",
        "",
        f"Machine: {_machine.machine()}.",
        f"Data: {len(table):,} synthetic catalog tiles of {PATCH}x{PATCH} px on {len(sources)} "
        f"source images (Dirichlet-mixture class counts, 10 % pure-class tiles); "
        f"{pg['excluded']:,} excluded. Chosen k = {pg['k']} "
        f"(cluster sizes {', '.join(str(v) for v in pg['cluster_sizes'].values())}); "
        f"ESS {pg['ess']:,.0f}. Loading the rows into PostGIS (COPY, not timed below): "
        f"{copy_s:.1f} s.",
        "",
        f"Command: `python benchmarks/bench_balanced.py --n {args.n}`",
        "",
        "| stage | PostGIS input (s) | Parquet input (s) |",
        "|---|---:|---:|",
    ]
    for key, label in STAGES:
        a = pg["timings"].get(key)
        b = local["timings"].get(key)
        fa = f"{a:.2f}" if a is not None else "–"
        fb = f"{b:.2f}" if b is not None else "–"
        lines.append(f"| {label} | {fa} | {fb} |")
    lines += [
        f"| process wall time incl. imports | {pg['wall_with_imports']:.2f} | "
        f"{local['wall_with_imports']:.2f} |",
        f"| peak memory (max RSS) | {pg['peak_mib']:.0f} MiB | {local['peak_mib']:.0f} MiB |",
        "",
        f"Target: PostGIS end to end <= 15 s: "
        f"{'met' if pg['wall_with_imports'] <= 15 else 'NOT met'} "
        f"({pg['wall_with_imports']:.1f} s).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}")
    if not args.keep and args.workdir is None:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
