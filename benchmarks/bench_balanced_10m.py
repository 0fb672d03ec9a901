"""build-balanced-dataset at scale: 10,000,000 tiles, masks_only, Parquet in -> Parquet out.

The tile table comes from :mod:`gen_tiles` (written once, reused when ``--tiles`` exists). The
real pipeline then runs in a fresh process (``mode: masks_only``, elbow k 4..16, rank_max;
output ``parquet_path`` only: no CSV, no map layer, no report), and this script reports the
time of every stage and the peak memory (max RSS of that process), and appends a dated section
to BENCHMARKS.md. Targets (issue 14): <= 60 s and <= 4 GiB from a Parquet tile table.

With ``--postgis`` the same tiles are also COPYed into a fresh PostGIS database (not timed) and
the run is repeated from it (target <= 5 min and <= 4 GiB, the run's tile_result rows
included).

    python benchmarks/bench_balanced_10m.py                            # 10M, appends
    python benchmarks/bench_balanced_10m.py --n 1000000 --no-append    # 1M, print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import gen_tiles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = [
    ("load", "read the tile table (batched)"),
    ("exclusion", "exclusion (docs/algorithms.md §5)"),
    ("composition", "composition: CLR + distinct rows + KMeans (elbow on the sample, §6)"),
    ("weights", "ranks + weights (§8-§9)"),
    ("diagnostics", "diagnostics (class shares, ESS, nodata)"),
    ("write_csv", "write the Parquet output (batched)"),
    ("catalog_run", "record the run beside the tile table (tile_id + results)"),
    ("total", "end to end (pipeline)"),
]


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
                "cluster_sizes": res.cluster_sizes,
                "tiles": res.n_tiles,
                "excluded": res.n_excluded,
                "rows": res.rows_written,
                "ess": res.ess,
            }
        )
    )


def run_child(inp: dict[str, Any], workdir: Path, name: str) -> Any:
    import yaml

    cfg = {
        "balanced_dataset": {
            "mode": "masks_only",
            "sampling_method": "rank_max",
            "input": inp,
            "clustering": {"k_min": 4, "k_max": 16, "k_selection": "elbow", "random_state": 42},
            "exclusion": {"exclude_border_nodata": True, "exclude_black_border": True},
            "output": {"parquet_path": str(workdir / f"{name}.parquet")},
        }
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ)
    env.pop("SMT_DATABASE_URL", None)
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


def load_postgis(tiles: Path, admin_url: str) -> tuple[str, float]:
    """COPY the tile table into a fresh PostGIS database: (url, seconds)."""
    import psycopg
    from psycopg import sql

    from smt_tools import catalog
    from smt_tools.catalog.parquet_io import read_tile_table
    from smt_tools.ingest_params import IngestParams

    db = f"smt_bench10m_{os.getpid()}"
    url = f"{admin_url.rsplit('/', 1)[0]}/{db}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists postgis")
    table = read_tile_table(tiles)
    sources = gen_tiles.source_records(table)
    engine = catalog.connect(url)
    t = time.perf_counter()
    try:
        catalog.apply_migrations(engine)
        params = IngestParams(
            patch_size=gen_tiles.PATCH, stride=gen_tiles.PATCH, edge_policy="drop", nodata_class=0
        )
        catalog.write_ingest(engine, table, sources, params)
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return url, time.perf_counter() - t


def drop_db(url: str, admin_url: str) -> None:
    import psycopg
    from psycopg import sql

    db = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))


def report(args: argparse.Namespace, runs: dict[str, Any], gen_s: float | None) -> str:
    names = list(runs)
    first = runs[names[0]]
    lines = [
        "",
        f"## build-balanced-dataset at scale, masks_only, {first['tiles']:,} tiles — "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {_machine.machine()}. Command: `{_machine.command()}`.",
        "",
        f"Data: {first['tiles']:,} synthetic tiles of 256x256 px from `benchmarks/gen_tiles.py` "
        f"(scenes of {args.tiles_per_side}² tiles in two UTM zones, every 7th scene a shifted "
        f"re-acquisition, per-scene Dirichlet class mixtures, 10 % pure-class tiles)"
        + (f", generated in {gen_s:.0f} s" if gen_s is not None else "")
        + f"; {first['excluded']:,} excluded, {first['rows']:,} rows written. Elbow k 4..16 on "
        f"the seeded 20,000-row sample: k = {first['k']}; ESS {first['ess']:,.0f}. Output: "
        "`output.parquet_path` only.",
        "",
        "| stage | " + " | ".join(f"{n} input (s)" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label in STAGES:
        cells = []
        for n in names:
            v = runs[n]["timings"].get(key)
            cells.append(f"{v:.2f}" if v is not None else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| process wall time incl. imports | "
        + " | ".join(f"{runs[n]['wall_with_imports']:.2f}" for n in names)
        + " |"
    )
    lines.append(
        "| peak memory (max RSS) | "
        + " | ".join(f"{runs[n]['peak_mib'] / 1024:.2f} GiB" for n in names)
        + " |"
    )
    pq_run = runs.get("Parquet")
    if pq_run is not None:
        ok = pq_run["wall_with_imports"] <= 60 and pq_run["peak_mib"] <= 4096
        lines += [
            "",
            f"Target (Parquet -> Parquet <= 60 s, <= 4 GiB): {'met' if ok else 'NOT met'} "
            f"({pq_run['wall_with_imports']:.1f} s, {pq_run['peak_mib'] / 1024:.2f} GiB).",
        ]
    pg_run = runs.get("PostGIS")
    if pg_run is not None:
        ok = pg_run["wall_with_imports"] <= 300 and pg_run["peak_mib"] <= 4096
        lines.append(
            f"Target (PostGIS incl. the run's tile_result rows <= 5 min, <= 4 GiB): "
            f"{'met' if ok else 'NOT met'} "
            f"({pg_run['wall_with_imports']:.1f} s, {pg_run['peak_mib'] / 1024:.2f} GiB)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="tiles (default 10,000,000)")
    ap.add_argument("--tiles", type=Path, default=None, help="tile table (made when missing)")
    ap.add_argument("--tiles-per-side", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--postgis", action="store_true", help="also run from a fresh PostGIS db")
    ap.add_argument(
        "--admin-url",
        default=os.environ.get(
            "SMT_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    ap.add_argument("--no-append", action="store_true", help="print only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench_balanced_10m_"))
    tiles = args.tiles or workdir / "tiles.parquet"
    gen_s = None
    if not tiles.exists():
        t = time.perf_counter()
        gen_tiles.write_tiles(tiles, args.n, args.tiles_per_side, args.seed)
        gen_s = time.perf_counter() - t
        print(f"generated {args.n:,} tiles in {gen_s:.0f} s")
    runs = {"Parquet": run_child({"tiles": str(tiles)}, workdir, "parquet")}
    print(json.dumps(runs["Parquet"]))
    if args.postgis:
        url, copy_s = load_postgis(tiles, args.admin_url)
        print(f"loaded into PostGIS in {copy_s:.0f} s")
        try:
            runs["PostGIS"] = run_child({"dsn": url}, workdir, "postgis")
        finally:
            drop_db(url, args.admin_url)
        print(json.dumps(runs["PostGIS"]))
    text = report(args, runs, gen_s)
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}")
    shutil.rmtree(workdir)  # outputs, configs and a generated table (never --tiles)


if __name__ == "__main__":
    main()
