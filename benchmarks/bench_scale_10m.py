"""split, select-coreset (cb, lc) and check-leakage at 10,000,000 tiles, per stage.

Data: a synthetic Parquet tile table of ``--n`` tiles (benchmarks/gen_tiles.py: scenes of
40x40 tiles of 256x256 px at 0.5 m, in two UTM zones, every 7th scene a shifted second
acquisition; class counts from a Dirichlet mixture), written in row groups. Each stage then
runs the real command code in a fresh process on that table (the catalog ``path`` input):

1. ``split``: group k-fold by source image (5 folds, 50 m buffer), the run recorded beside
   the table; no CSV;
2. ``select-coreset`` cb, budget 30 % (the run recorded; the CSV output goes to a scratch file);
3. ``select-coreset`` lc, budget 30 %;
4. ``check-leakage`` of the split run (spatial check with the same 50 m buffer).

Reports wall time and peak RSS (max RSS of the stage's process) per stage and appends a dated
section to BENCHMARKS.md. Targets on 2 cores, 24 GiB: split <= 3 min, each coreset <= 5 min,
peak RSS <= 4 GiB each.

    flock /tmp/bench.lock python benchmarks/bench_scale_10m.py              # 10M, appends
    python benchmarks/bench_scale_10m.py --n 200000 --no-append              # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"split": 180.0, "coreset cb": 300.0, "coreset lc": 300.0}
RSS_TARGET_MIB = 4096
MEM_CAP_GIB = 12.0
STAGE_TIMEOUT_S = 900.0


def _stage(name: str, table: Path, work: Path, split_run: int | None) -> dict[str, Any]:
    """Run one stage in this process; return its numbers."""
    from smt_tools.config.coreset import CoresetConfig
    from smt_tools.config.split import SplitConfig

    t = time.perf_counter()
    out: dict[str, Any] = {}
    if name == "split":
        from smt_tools.pipelines.split import run_split

        cfg = SplitConfig.model_validate(
            {"catalog": {"path": str(table)}, "n_splits": 5, "strategy": "group", "buffer_m": 50}
        )
        res = run_split(cfg)
        out["run_id"] = res.run_id
        out["note"] = (
            f"{res.n_groups} groups; {sum(f.buffer_dropped for f in res.folds):,} buffer "
            f"exclusions; {res.method.kind if res.method else ''} distances"
        )
    elif name.startswith("coreset"):
        from smt_tools.pipelines.coreset import run_coreset

        method = name.split()[1]
        cfg = CoresetConfig.model_validate(
            {
                "catalog": {"path": str(table)},
                "method": method,
                "budget": 0.3,
                "output": {"csv_path": str(work / f"coreset_{method}.csv")},
            }
        )
        res = run_coreset(cfg)
        out["note"] = (
            f"{res.budget:,} of {res.n_included:,} selected; select {res.timings['select']:.1f} s"
        )
        out["timings"] = res.timings
    else:
        from smt_tools.config._source import CatalogSource
        from smt_tools.pipelines.leakage import run_check_leakage

        res = run_check_leakage(catalog=CatalogSource(path=table, run_id=split_run), buffer_m=50.0)
        out["note"] = f"{res.method.kind if res.method else ''} distances"
    out["wall"] = time.perf_counter() - t
    out["rss_mib"] = _machine.peak_rss_mib()
    return out


def _run_stage(name: str, table: Path, work: Path, split_run: int | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--table", str(table), "--work", str(work)]
    cmd += ["--mem-cap-gib", str(MEM_CAP_GIB)]
    if split_run is not None:
        cmd += ["--split-run", str(split_run)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, check=False, timeout=STAGE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {
            "wall": time.perf_counter() - t,
            "rss_mib": float("nan"),
            "note": f"stopped after {STAGE_TIMEOUT_S:.0f} s",
        }
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {
            "wall": time.perf_counter() - t,
            "rss_mib": float("nan"),
            "note": "FAILED: " + " ".join(last).replace("|", "/")[:160],
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _section(n: int, gen_s: float, rows: list[tuple[str, dict[str, Any]]], stages: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## split / select-coreset / check-leakage at {n:,} tiles — {stamp}",
        "",
        f"Machine: {_machine.machine()}.",
        "",
        f"Data: benchmarks/gen_tiles.py, {n:,} tiles written in row groups"
        + (f" in {gen_s:.0f} s " if gen_s == gen_s else " (table reused) ")
        + "(Parquet tile table, catalog `path` input). Each stage is the real command in a "
        "fresh process; peak RSS is that process's max RSS.",
        "",
        "| stage | wall (s) | peak RSS (MiB) | target | notes |",
        "|---|---:|---:|---|---|",
    ]
    for name, r in rows:
        target = TARGETS.get(name)
        ok = r["wall"] <= target and r["rss_mib"] <= RSS_TARGET_MIB if target else None
        tgt = (
            f"<= {target:.0f} s, <= 4 GiB: {'met' if ok else 'missed'}"
            if target
            else f"<= 4 GiB: {'met' if r['rss_mib'] <= RSS_TARGET_MIB else 'missed'}"
        )
        lines.append(f"| {name} | {r['wall']:.1f} | {r['rss_mib']:.0f} | {tgt} | {r['note']} |")
    lines += ["", f"Command: `{_machine.command()}` (stages: {stages})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--stages", default="split,coreset cb,coreset lc,leakage")
    ap.add_argument("--table", type=Path, help="reuse (or write) this tile table")
    ap.add_argument("--no-append", action="store_true", help="print only")
    ap.add_argument(
        "--mem-cap-gib", type=float, default=12.0, help="address-space cap of each stage"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--split-run", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global MEM_CAP_GIB
    MEM_CAP_GIB = args.mem_cap_gib
    if args.child:
        # fail with MemoryError rather than take the shared machine's memory
        cap = int(args.mem_cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(_stage(args.child, args.table, args.work, args.split_run)))
        return
    from gen_tiles import write_tiles  # benchmarks/gen_tiles.py

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        table = args.table or work / "tiles.parquet"
        t = time.perf_counter()
        gen_s = float("nan")  # a reused table: not timed here
        if not table.exists():
            write_tiles(table, args.n)
            gen_s = time.perf_counter() - t
        print(f"data: {args.n:,} tiles in {gen_s:.1f} s", flush=True)
        rows: list[tuple[str, dict[str, Any]]] = []
        split_run = None
        for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
            if name == "leakage" and split_run is None:
                continue
            r = _run_stage(name, table, work, split_run)
            split_run = r.get("run_id", split_run)
            rows.append((name, r))
            print(f"{name}: {r['wall']:.1f} s, {r['rss_mib']:.0f} MiB; {r['note']}", flush=True)
    section = _section(args.n, gen_s, rows, args.stages)
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + section)


if __name__ == "__main__":
    main()
