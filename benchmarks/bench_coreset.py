"""Benchmark select-coreset: every method on 155,000 tiles, 6 classes, 768-d embeddings, budget 50 %.

Generates a balanced CSV (docs/algorithms.md §15) and an embedding cache (Parquet, the cache
format of `embed`) at realistic scale, then runs the real pipeline (`run_coreset`) once per
method in a fresh process pinned to ``--cores`` cores (BLAS threads limited to match), and
reports wall time (pipeline, and the selection step alone) and peak resident memory per method.
Appends a dated section to BENCHMARKS.md. Target: every method <= 60 s on 2 cores.

Embeddings are a seeded Gaussian mixture (40 clusters in a 24-d latent space, mapped to 768-d,
plus noise), a stand-in with the low intrinsic dimension of real DINOv2 tile embeddings.

    python benchmarks/bench_coreset.py                      # full scale, appends
    python benchmarks/bench_coreset.py --n 5000 --no-append # quick check
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
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("random", "lc", "cb", "fa", "fa_cb", "fd", "lc_fd", "kcenter")
CLASSES = np.arange(1, 7)


def make_data(n: int, dim: int, seed: int, workdir: Path) -> tuple[Path, Path]:
    """Write balanced.csv and embeddings.parquet for n tiles; return their paths."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smt_tools.embeddings.cache import ROW_GROUP_ROWS
    from smt_tools.export.csv_out import class_counts_json, class_dist_json
    from smt_tools.tiletable import entropy_from_counts

    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(1, 2**62, size=n + 1000, dtype=np.int64))[:n]
    ids = rng.permutation(ids)
    n_clusters, latent = 40, 24
    cluster = rng.integers(0, n_clusters, size=n)
    # class composition depends on the cluster: dominant class 1, rare class 6
    prior = rng.dirichlet(np.array([8.0, 3, 2, 1.5, 1, 0.3]), size=n_clusters) * 4
    props = np.vstack([rng.dirichlet(prior[c] + 0.05) for c in cluster])
    counts = np.floor(props * 65536).astype(np.int64)
    per_side = 40
    per_image = per_side * per_side
    src = np.arange(n) // per_image
    k = np.arange(n) % per_image
    row, col = k // per_side, k % per_side
    ox = (src % 20) * 6000.0 + 500_000.0
    oy = 4_000_000.0 - (src // 20) * 6000.0
    excluded = rng.random(n) < 0.05
    frame = pd.DataFrame(
        {
            "image_path": [f"/data/img_{s:04d}.tif" for s in src],
            "mask_path": [f"/data/mask_{s:04d}.tif" for s in src],
            "row_off": row * 256,
            "col_off": col * 256,
            "patch_size": 256,
            "tile_id": ids,
            "source_image_id": src + 1,
            "group_id": [f"img_{s:04d}" for s in src],
            "minx": ox + col * 128.0,
            "miny": oy - (row + 1) * 128.0,
            "maxx": ox + (col + 1) * 128.0,
            "maxy": oy - row * 128.0,
            "crs": "EPSG:32631",
            "valid_pixels": counts.sum(1),
            "class_entropy": entropy_from_counts(counts),
            "nodata_ratio": 0.0,
            "class_dist_json": class_dist_json(counts, CLASSES).to_numpy(),
            "class_counts_json": class_counts_json(counts, CLASSES).to_numpy(),
            "has_mask_border_nodata": False,
            "has_image_black_border": False,
            "excluded": excluded,
            "freq_cluster_id": cluster,
            "freq_cluster_size": 1,
            "freq_cluster_weight": 1.0,
            "sampler_weight": np.where(excluded, 0.0, 1.0),
            "uniqueness_score": rng.random(n),
        }
    )
    csv_path = workdir / "balanced.csv"
    frame.to_csv(csv_path, index=False)
    centres = rng.normal(size=(n_clusters, latent)) * 2.0
    mapping = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    emb_path = workdir / "embeddings.parquet"
    writer = None
    for start in range(0, n, 20_000):
        stop = min(n, start + 20_000)
        z = centres[cluster[start:stop]] + rng.normal(size=(stop - start, latent))
        e = (
            (z.astype(np.float32) @ mapping)
            + rng.normal(size=(stop - start, dim)).astype(np.float32) * 0.1
            + 0.05
        )
        table = pa.table(
            {
                "tile_id": pa.array(ids[start:stop], pa.int64()),
                "model_id": pa.array(["bench/dinov2-like"] * (stop - start), pa.string()),
                "preprocess_hash": pa.array(["bench"] * (stop - start), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(e.astype(np.float32).ravel(), pa.float32()), dim
                ),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(emb_path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)  # as `embed` writes
    assert writer is not None
    writer.close()
    return csv_path, emb_path


def child(config_path: str) -> None:
    """Run one select-coreset in this (fresh) process; print timings as JSON."""
    start = time.perf_counter()
    from smt_tools.config import load_config
    from smt_tools.config.coreset import CoresetFile
    from smt_tools.pipelines.coreset import run_coreset

    cfg = load_config(config_path, CoresetFile).coreset
    res = run_coreset(cfg)
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "wall": wall,
                "timings": res.timings,
                "peak_mib": _machine.peak_rss_mib(),
                "budget": res.budget,
                "n_included": res.n_included,
                "selected_class_shares": res.selected_class_shares,
                "pool_class_shares": res.pool_class_shares,
                "selected_source_images": res.selected_source_images,
                "info": res.info,
            }
        )
    )


def run_method(
    method: str, csv_path: Path, emb_path: Path, workdir: Path, budget: float, cores: int
) -> dict[str, Any]:
    import yaml

    body = {
        "coreset": {
            "method": method,
            "budget": budget,
            "input_csv_path": str(csv_path),
            "parquet_path": str(emb_path),
            "device": "cpu",
            "output": {"csv_path": str(workdir / f"coreset_{method}.csv")},
        }
    }
    conf = workdir / f"coreset_{method}.yaml"
    conf.write_text(yaml.safe_dump(body))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    cmd = [sys.executable, __file__, "--child", str(conf)]
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(avail) > cores:
        cmd = ["taskset", "-c", ",".join(str(c) for c in avail[:cores]), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=155_000, help="number of tiles (default 155,000)")
    ap.add_argument("--dim", type=int, default=768, help="embedding dimension (default 768)")
    ap.add_argument("--budget", type=float, default=0.5, help="fraction selected (default 0.5)")
    ap.add_argument("--cores", type=int, default=2, help="cores per run (default 2)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="folder for data (default: temp)")
    ap.add_argument(
        "--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench_coreset_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        csv_path, emb_path = make_data(args.n, args.dim, args.seed, workdir)
        print(
            f"generated {args.n} tiles + {args.dim}-d embeddings in {time.perf_counter() - t:.1f} s"
        )
        rows = []
        for method in args.methods.split(","):
            r = run_method(method, csv_path, emb_path, workdir, args.budget, args.cores)
            sel = r["timings"].get("select", float("nan"))
            rare = r["selected_class_shares"][-1]
            pool_rare = r["pool_class_shares"][-1]
            print(
                f"{method:8s} wall {r['wall']:6.1f} s  select {sel:6.1f} s  "
                f"peak {r['peak_mib']:7.0f} MiB  rare-class share {rare:.2%} (pool {pool_rare:.2%})",
                flush=True,
            )
            rows.append((method, r))
    ok = all(r["wall"] <= 60 for _, r in rows)
    lines = [
        "",
        f"## select-coreset, {args.n:,} tiles, {args.dim}-d embeddings, budget "
        f"{args.budget:.0%} ({dt.date.today().isoformat()})",
        "",
        f"Machine: {_machine.machine()}; each method in a fresh process on {args.cores} cores "
        f"(`{_machine.command()}`). Target <= 60 s per method: "
        f"{'met' if ok else 'NOT met'}.",
        "",
        "| method | wall (s) | selection step (s) | peak memory (MiB) | selected | rare-class pixel share (pool) | source images covered |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in rows:
        lines.append(
            f"| {method} | {r['wall']:.1f} | {r['timings'].get('select', float('nan')):.1f} | "
            f"{r['peak_mib']:.0f} | {r['budget']:,} of {r['n_included']:,} | "
            f"{r['selected_class_shares'][-1]:.2%} ({r['pool_class_shares'][-1]:.2%}) | "
            f"{r['selected_source_images']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
