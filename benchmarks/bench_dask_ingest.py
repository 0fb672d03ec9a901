"""``catalog ingest --scheduler``: the scan on a Dask ``LocalCluster`` with 1 and 2 worker
processes, against the local process pool with the same number of processes.

The same scenes as ``bench_ingest.py`` (generated once under ``bench_data/``, the rest hard
links; page cache warmed first). For each process count N, interleaved ``--repeats`` times,
best of each:

* ``pool``: ``run_ingest(workers=N)`` into a fresh Parquet table (the local process pool), in
  a fresh process;
* ``dask``: ``run_ingest(scheduler=<address>)`` on a ``LocalCluster(n_workers=N,
  threads_per_worker=1)`` started before the timed runs (as a user's cluster is already up).

Reported: scan tiles/s (the scan phase of the ingest, as its summary prints it) and the whole
command. Targets (issue 14): Dask with 2 workers >= 1.7x Dask with 1; Dask's overhead against
the pool with the same processes <= 10 %. Every Dask table is checked equal to the pool's.

    python benchmarks/bench_dask_ingest.py                                 # appends a section
    python benchmarks/bench_dask_ingest.py --scenes 4 --scene-size 2048 --no-append   # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import pandas as pd
from bench_ingest import PATCH, prepare_data, warm_cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.pipelines.ingest import run_ingest  # noqa: E402


def one_run(pairs: Path, out: Path, workers: int, scheduler: str | None) -> dict[str, Any]:
    r = run_ingest(pairs, catalog=str(out), patch_size=PATCH, workers=workers, scheduler=scheduler)
    return {"tiles": r.tiles_written, "scan_s": r.scan_seconds, "total_s": r.elapsed_seconds}


def pool_run(pairs: Path, out: Path, workers: int) -> dict[str, Any]:
    """The local pool in a fresh process: never forked from a process that holds a Dask
    client's threads (fork with running threads is slow and unsafe)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from bench_dask_ingest import one_run; from pathlib import Path; "
        "print(json.dumps(one_run(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), None)))"
    )
    out_text = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            str(pairs),
            str(out),
            str(workers),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out_text.strip().splitlines()[-1]))


def measure(pairs: Path, work: Path, n: int, repeats: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    pool_runs, dask_runs = [], []
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(n)
        for k in range(repeats):
            pool_out, dask_out = work / f"pool_{n}_{k}.parquet", work / f"dask_{n}_{k}.parquet"
            pool_runs.append(pool_run(pairs, pool_out, n))
            dask_runs.append(one_run(pairs, dask_out, n, cluster.scheduler_address))
            a, b = pd.read_parquet(pool_out), pd.read_parquet(dask_out)
            pd.testing.assert_frame_equal(a, b)  # the same tiles either way
            for f in (pool_out, dask_out):
                f.unlink()
    pool = min(pool_runs, key=lambda r: r["scan_s"])
    dsk = min(dask_runs, key=lambda r: r["scan_s"])
    return {
        "workers": n,
        "tiles": pool["tiles"],
        "pool_tps": pool["tiles"] / pool["scan_s"],
        "dask_tps": dsk["tiles"] / dsk["scan_s"],
        "pool_total": pool["total_s"],
        "dask_total": dsk["total_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenes", type=int, default=16, help="source images")
    ap.add_argument("--scene-size", type=int, default=4096, help="scene width = height in px")
    ap.add_argument("--distinct", type=int, default=4, help="scenes actually generated")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs; best of each")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench_data")
    ap.add_argument("--no-append", action="store_true", help="print only")
    args = ap.parse_args()

    import rasterio

    info = _machine.machine(
        f"rasterio {rasterio.__version__} / GDAL {rasterio.__gdal_version__}, "
        f"dask {__import__('distributed').__version__}"
    )
    started = dt.datetime.now(dt.timezone.utc)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    pairs = prepare_data(args.data_dir, args.scene_size, args.scenes, args.distinct, 1)
    warm_cache(pairs)
    work = Path(tempfile.mkdtemp(prefix="bench_dask_", dir=args.data_dir))
    rows = [measure(pairs, work, n, max(1, args.repeats)) for n in (1, 2)]
    work.rmdir()
    one, two = rows
    speedup = two["dask_tps"] / one["dask_tps"]
    lines = []
    for r in rows:
        overhead = r["pool_tps"] / r["dask_tps"] - 1
        r["overhead"] = overhead
        lines.append(
            f"| {r['workers']} | {r['tiles']:,} | {r['pool_tps']:,.0f} | {r['dask_tps']:,.0f} | "
            f"{100 * overhead:+.1f} % | {r['pool_total']:.1f} s | {r['dask_total']:.1f} s |"
        )
        print(lines[-1], flush=True)
    verdict = (
        f"Dask 2 workers / 1 worker: **{speedup:.2f}x** (target >= 1.7); Dask overhead vs the "
        f"pool: {100 * one['overhead']:+.1f} % (1 process), {100 * two['overhead']:+.1f} % "
        "(2 processes) (target <= 10 %)."
    )
    print(verdict)
    if args.no_append:
        return
    section = "\n".join(
        [
            "",
            f"## catalog ingest on Dask: LocalCluster 1 vs 2 workers ({started:%Y-%m-%d})",
            "",
            f"Machine: {info}.",
            f"Command: `{_machine.command()}` ({args.scenes} scenes of {args.scene_size} px, "
            f"{PATCH} px tiles, page cache warm, best of {args.repeats}; every Dask table "
            "checked equal to the pool's).",
            "",
            "| processes | tiles | pool scan tiles/s | Dask scan tiles/s | Dask overhead | "
            "pool command | Dask command |",
            "|---|---|---|---|---|---|---|",
            *lines,
            "",
            verdict,
            "",
        ]
    )
    with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as fh:
        fh.write(section)


if __name__ == "__main__":
    main()
