"""Random-crop throughput: RandomCropSegmentationDataset vs a bare rasterio windowed-read loop.

Writes large tiled deflate GeoTIFF scenes with ``smt_tools.raster.synthetic`` (3-band uint8
image + 1-band mask per scene, 256 px blocks), then reads random ``--crop``-px crops (image +
mask) from them, in two regimes, each in its own process:

- **decode-bound** (the target): GDAL's block cache (``GDAL_CACHEMAX``, ``--cache-mb``) is far
  smaller than the decoded data, as with any mosaic larger than the cache, so every crop
  inflates the deflate blocks it touches. Each round reads crops of a new epoch with fresh
  handles.
- **cache-resident**: the same crops read twice with the same handles; the second pass is timed
  and is served from GDAL's block cache (small data, many epochs).

Readers, at the dataset's own crop positions:

1. bare loop: ``rasterio.open`` once per file, ``read(window=...)`` of image and mask (no
   scaling, no tensors) - the floor any dataset pays;
2. ``RandomCropSegmentationDataset`` through a ``DataLoader`` (batch 16), default output
   (float32 images in [0, 1], int64 masks) and ``compact_batches`` (uint8 image and mask, scaled
   on the device by ``prepare_batch``), ``num_workers`` 0 and 2 (decode-bound regime);
3. compact batches + ``prepare_batch`` on the CPU (the cost when the model runs on the CPU).

Rounds alternate between the readers; the table gives medians over rounds (crops/s, and the
ratio to the bare loop of the same round). Target: ratio >= 0.8 with num_workers 0 and 2.
Appends a dated section to BENCHMARKS.md.

    python benchmarks/bench_train_throughput.py                                # 4 x 8192 px
    python benchmarks/bench_train_throughput.py --size 2048 --crops 320 --rounds 1 --no-append
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 16


def bare_loop(ds: Any, n: int, passes: int = 1) -> float:
    """Crops/s of plain rasterio windowed reads at the dataset's crop positions (last pass)."""
    import rasterio  # the benchmark's baseline opens rasters directly
    from rasterio.windows import Window

    s = ds.crop_size
    positions = [ds.position(k) for k in range(n)]
    handles = {p: rasterio.open(p) for p in [*ds.images, *ds.masks]}
    try:
        rate = 0.0
        for _ in range(passes):
            start = time.perf_counter()
            for i, r, c in positions:
                win = Window(c, r, s, s)
                handles[ds.images[i]].read(window=win)
                handles[ds.masks[i]].read(1, window=win)
            rate = n / (time.perf_counter() - start)
        return rate
    finally:
        for h in handles.values():
            h.close()


def loader_loop(ds: Any, n: int, workers: int, passes: int = 1, prepare: bool = False) -> float:
    """Crops/s through a DataLoader (last pass); ``prepare``: also run prepare_batch (CPU)."""
    from torch.utils.data import DataLoader

    from smt_tools.train import prepare_batch

    loader = DataLoader(ds, batch_size=BATCH, num_workers=workers)
    rate = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        seen = 0
        for b in loader:
            if prepare:
                prepare_batch(b, "cpu")
            seen += int(b["image"].shape[0])
            if seen >= n:
                break
        rate = seen / (time.perf_counter() - start)
    return rate


def child(args: argparse.Namespace) -> None:
    """One regime, in this process (GDAL_CACHEMAX was set by the parent); prints JSON."""
    import torch

    from smt_tools.train import RandomCropSegmentationDataset

    torch.set_num_threads(1)
    n = args.crops

    def make(compact: bool, epoch: int) -> Any:
        ds = RandomCropSegmentationDataset(
            args.data / "pairs.csv",
            crop_size=args.crop,
            samples_per_epoch=n,
            n_classes=6,
            class_values=[1, 2, 3, 4, 5, 6],
            seed=0,
            compact_batches=compact,
        )
        ds.set_epoch(epoch)
        return ds

    resident = args.child == "resident"
    passes = 2 if resident else 1
    readers: list[tuple[str, int, Callable[[int], float]]] = [
        ("bare", 0, lambda e: bare_loop(make(False, e), n, passes)),
        ("default", 0, lambda e: loader_loop(make(False, e), n, 0, passes)),
        ("compact", 0, lambda e: loader_loop(make(True, e), n, 0, passes)),
        ("compact+prepare_batch", 0, lambda e: loader_loop(make(True, e), n, 0, passes, True)),
    ]
    if not resident:  # workers get their own handles and caches: decode-bound only
        readers += [
            ("default", 2, lambda e: loader_loop(make(False, e), n, 2)),
            ("compact", 2, lambda e: loader_loop(make(True, e), n, 2)),
        ]
    loader_loop(make(False, 99), 4 * BATCH, 0)  # imports, first-touch costs
    rates: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        for name, workers, fn in readers:
            rates.setdefault(f"{name}|{workers}", []).append(fn(100 + rnd))
    print(json.dumps(rates))


def run_regime(args: argparse.Namespace, regime: str) -> dict[str, list[float]]:
    env = dict(os.environ)
    if regime == "decode":
        env["GDAL_CACHEMAX"] = str(args.cache_mb)
    else:
        env.pop("GDAL_CACHEMAX", None)
    cmd = [sys.executable, __file__, "--child", regime, "--data", str(args.data)]
    cmd += ["--crop", str(args.crop), "--crops", str(args.crops), "--rounds", str(args.rounds)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=8192, help="scene side in px")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--crops", type=int, default=960, help="crops per reader and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache-mb", type=int, default=64, help="GDAL_CACHEMAX, decode-bound regime")
    ap.add_argument("--data", type=Path, default=None, help="scene folder (reused if present)")
    ap.add_argument("--child", choices=["decode", "resident"], help=argparse.SUPPRESS)
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    args.crops = max(BATCH, args.crops // BATCH * BATCH)
    if args.child:
        child(args)
        return

    from smt_tools.raster.synthetic import make_demo_data

    machine = _machine.machine()
    args.data = args.data or Path(tempfile.mkdtemp(prefix="smt_tp_")) / "scenes"
    t0 = time.perf_counter()
    if not (args.data / "pairs.csv").is_file():
        make_demo_data(args.data, scenes=args.scenes, size=args.size, seed=0)
    t_data = time.perf_counter() - t0
    tifs = list(args.data.rglob("*.tif"))
    mb = sum(p.stat().st_size for p in tifs) / 1e6
    decoded_mb = args.scenes * args.size**2 * 4 / 1e6  # 3 image bands + 1 mask band, uint8

    labels = {
        "bare": "bare rasterio windowed reads (image + mask)",
        "default": "RandomCropSegmentationDataset, default output (float32, int64)",
        "compact": "RandomCropSegmentationDataset, compact_batches (uint8, uint8)",
        "compact+prepare_batch": "compact_batches + prepare_batch on the CPU",
    }
    lines = [
        "| regime | reader | num_workers | crops/s | ratio to bare loop |",
        "|---|---|---|---|---|",
    ]
    verdict = []
    for regime in ("decode", "resident"):
        rates = run_regime(args, regime)
        bare = rates["bare|0"]
        title = (
            f"decode-bound (GDAL cache {args.cache_mb} MB)"
            if regime == "decode"
            else ("cache-resident (2nd pass)")
        )
        for key, values in rates.items():
            name, workers = key.split("|")
            ratio = statistics.median(v / b for v, b in zip(values, bare, strict=True))
            lines.append(
                f"| {title} | {labels[name]} | {workers} | {statistics.median(values):.0f} "
                f"| {ratio:.2f} |"
            )
            if regime == "decode" and name in ("default", "compact"):
                ok = "meets" if ratio >= 0.8 else "MISSES"
                verdict.append(f"{name} / {workers} workers {ok} ({ratio:.2f})")
        print("\n".join(lines), flush=True)
    table = "\n".join(lines)
    section = f"""
## Random-crop throughput ({dt.date.today().isoformat()})

Machine: {machine}. Command: `{_machine.command()}`.

{args.scenes} synthetic scenes of {args.size} px (3-band uint8 image + uint8 mask, 256 px blocks,
deflate; {mb:.0f} MB on disk, {decoded_mb:.0f} MB decoded; written in {t_data:.0f} s); {args.crops}
random {args.crop} px crops per reader and round, {args.rounds} rounds alternating between the
readers (medians), batch {BATCH}, torch threads 1.

{table}

Target ratio >= 0.8 in the decode-bound regime: {", ".join(verdict)}. The default output moves
float32 images and int64 masks (5x the bytes of the uint8 reads) through collation and, with
workers, shared memory; compact batches move the uint8 crops and convert once on the device. In
the cache-resident regime a bare read is a copy out of GDAL's cache, so any conversion weighs
more there.
"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
