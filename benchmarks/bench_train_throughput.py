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

A third regime, **grid** (decode-bound too), reads the rows of a balanced-style CSV of every
block-aligned ``--crop``-px window of the scenes with ``CSVWindowedSegmentationDataset``, in a
seeded shuffled order (what a shuffled training loader asks for), against the bare loop over
the same windows in the same order. Its loaders are persistent (workers started, handles opened
by ``warm_worker`` and first batches read before timing: the steady state of an epoch) and
collate with ``collate_batch`` (as ``train`` does), default and compact output, ``num_workers``
0 and 2. An aligned window decodes one block per file, so
reads are cheap and anything the dataset adds weighs more than with random crops.

Rounds alternate between the readers; the table gives medians over rounds (crops/s, and the
ratio to the bare loop of the same round). Target: ratio >= 0.8 with num_workers 0 and 2.
Appends a dated section to BENCHMARKS.md.

    python benchmarks/bench_train_throughput.py                                # 4 x 8192 px
    python benchmarks/bench_train_throughput.py --size 2048 --crops 320 --rounds 1 --no-append
    python benchmarks/bench_train_throughput.py --regimes grid              # CSV windows only
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


# ----------------------------------------------------------------------------- grid regime

GRID_COLUMNS = ["image_path", "mask_path", "row_off", "col_off", "patch_size", "mask_band"]


def write_grid_csv(data: Path, crop: int) -> Path:
    """A balanced-style CSV of every ``crop``-px window of every scene (row-major per scene;
    ``excluded``, ``sampler_weight`` and ``fold`` as the balanced CSV has them)."""
    import csv

    import rasterio

    out = data / f"grid_{crop}.csv"
    if out.is_file():
        return out
    with open(data / "pairs.csv", encoding="utf-8") as fh:
        pairs = [(r["image"], r["mask"]) for r in csv.DictReader(fh)]
    rows = []
    for image, mask in pairs:
        with rasterio.open(data / image) as ds:
            h, w = ds.height, ds.width
        for r in range(0, h - crop + 1, crop):
            for c in range(0, w - crop + 1, crop):
                rows.append([image, mask, r, c, crop, 1, "false", 1.0, len(rows) % 5])
    with open(out, "w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow([*GRID_COLUMNS, "excluded", "sampler_weight", "fold"])
        wr.writerows(rows)
    return out


class RoundSampler:
    """The windows of the current round (set ``indices`` before iterating the loader)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Any:
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


def grid_bare(ds: Any, indices: list[int]) -> tuple[float, float]:
    """(windows/s, CPU ms per window) of plain rasterio reads of the rows ``indices``
    (handles opened untimed)."""
    import rasterio  # the benchmark's baseline opens rasters directly
    from rasterio.windows import Window

    wins = [ds.window(i) for i in indices]
    handles = {p: rasterio.open(p) for w in wins for p in w[:2]}
    try:
        p0 = time.process_time()
        start = time.perf_counter()
        for image, mask, r, c, s in wins:
            win = Window(c, r, s, s)
            handles[image].read(window=win)
            handles[mask].read(1, window=win)
        wall, cpu = time.perf_counter() - start, time.process_time() - p0
        return len(wins) / wall, cpu / len(wins) * 1e3
    finally:
        for h in handles.values():
            h.close()


def worker_cpu() -> float:
    """CPU seconds (user + system) of this process's live children (the DataLoader workers),
    from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def grid_loader(loader: Any, sampler: RoundSampler, indices: list[int]) -> tuple[float, float]:
    """(windows/s, CPU ms per window of this process + its workers) of one pass of a
    (persistent) loader over the rows ``indices``."""
    sampler.indices = indices
    w0 = worker_cpu()
    p0 = time.process_time()
    start = time.perf_counter()
    seen = sum(int(b["image"].shape[0]) for b in loader)
    wall = time.perf_counter() - start
    cpu = time.process_time() - p0 + worker_cpu() - w0
    return seen / wall, cpu / seen * 1e3


def child_grid(args: argparse.Namespace) -> None:
    """CSVWindowedSegmentationDataset over the grid CSV vs the bare loop; prints JSON."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from smt_tools.train import CSVWindowedSegmentationDataset
    from smt_tools.train.datasets import collate_batch, warm_worker

    torch.set_num_threads(1)
    csv_path = write_grid_csv(args.data, args.crop)
    kw: dict[str, Any] = dict(n_classes=6, class_values=[1, 2, 3, 4, 5, 6], seed=0)
    probe = CSVWindowedSegmentationDataset(csv_path, **kw)
    # a shuffled training loader's order: the bare loop reads the same windows in that order
    order = np.random.default_rng(0).permutation(len(probe)).tolist()
    loaders: dict[str, tuple[Any, RoundSampler]] = {}
    for compact in (False, True):
        for workers in (0, 2):
            sampler = RoundSampler()
            ds = CSVWindowedSegmentationDataset(csv_path, compact_batches=compact, **kw)
            loader = DataLoader(
                ds,
                batch_size=BATCH,
                sampler=sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
                worker_init_fn=warm_worker if workers else None,
                collate_fn=collate_batch,  # as the train pipeline builds its loaders
            )
            loaders[f"{'compact' if compact else 'default'}|{workers}"] = (loader, sampler)
    n = args.crops
    for loader, sampler in loaders.values():  # start the workers, open handles, first touch
        grid_loader(loader, sampler, order[: 4 * BATCH])
    rates: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        indices = [order[(rnd * n + k) % len(order)] for k in range(n)]
        runs = {"bare|0": lambda idx=indices: grid_bare(probe, idx)}
        for key, (loader, sampler) in loaders.items():
            runs[key] = lambda lo=loader, sa=sampler, idx=indices: grid_loader(lo, sa, idx)
        for key, fn in runs.items():
            rate, cpu = fn()
            rates.setdefault(key, []).append(rate)
            rates.setdefault(f"cpu:{key}", []).append(cpu)
    print(json.dumps(rates))


def run_regime(args: argparse.Namespace, regime: str) -> dict[str, list[float]]:
    env = dict(os.environ)
    if regime in ("decode", "grid"):
        env["GDAL_CACHEMAX"] = str(args.cache_mb)
    else:
        env.pop("GDAL_CACHEMAX", None)
    cmd = [sys.executable, __file__, "--child", regime, "--data", str(args.data)]
    cmd += ["--crop", str(args.crop), "--crops", str(args.crops), "--rounds", str(args.rounds)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


SHARED_NOTE = (
    "The machine was shared with other work during this run (see the load average): absolute "
    "rates are low and noisy; the ratios compare readers within the same round.\n"
)

LABELS = {
    "bare": "bare rasterio windowed reads (image + mask)",
    "default": "{ds}, default output (float32, int64)",
    "compact": "{ds}, compact_batches (uint8, uint8)",
    "compact+prepare_batch": "compact_batches + prepare_batch on the CPU",
}


def results_table(args: argparse.Namespace, regimes: list[str]) -> tuple[str, list[str]]:
    """Run each regime in its own process: (markdown table, target verdicts)."""
    lines = [
        "| regime | reader | num_workers | items/s | ratio to bare loop | CPU ms/item |",
        "|---|---|---|---|---|---|",
    ]
    verdict = []
    for regime in regimes:
        rates = run_regime(args, regime)
        bare = rates["bare|0"]
        title = {
            "decode": f"decode-bound random crops (GDAL cache {args.cache_mb} MB)",
            "resident": "cache-resident random crops (2nd pass)",
            "grid": f"decode-bound grid windows (GDAL cache {args.cache_mb} MB)",
        }[regime]
        ds = (
            "CSVWindowedSegmentationDataset"
            if regime == "grid"
            else "RandomCropSegmentationDataset"
        )
        for key, values in rates.items():
            if key.startswith("cpu:"):
                continue
            name, workers = key.split("|")
            ratio = statistics.median(v / b for v, b in zip(values, bare, strict=True))
            cpu = rates.get(f"cpu:{key}")
            lines.append(
                f"| {title} | {LABELS[name].format(ds=ds)} | {workers} "
                f"| {statistics.median(values):.0f} | {ratio:.2f} "
                f"| {f'{statistics.median(cpu):.2f}' if cpu else '-'} |"
            )
            if regime in ("decode", "grid") and name in ("default", "compact"):
                ok = "meets" if ratio >= 0.8 else "MISSES"
                verdict.append(f"{regime} {name} / {workers} workers {ok} ({ratio:.2f})")
        print("\n".join(lines), flush=True)
    return "\n".join(lines), verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=8192, help="scene side in px")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--crops", type=int, default=960, help="crops per reader and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache-mb", type=int, default=64, help="GDAL_CACHEMAX, decode-bound regime")
    ap.add_argument("--data", type=Path, default=None, help="scene folder (reused if present)")
    ap.add_argument(
        "--regimes",
        default="decode,resident,grid",
        help="comma-separated: decode, resident (random crops), grid (CSV windows)",
    )
    ap.add_argument("--child", choices=["decode", "resident", "grid"], help=argparse.SUPPRESS)
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    args.crops = max(BATCH, args.crops // BATCH * BATCH)
    if args.child == "grid":
        child_grid(args)
        return
    if args.child:
        child(args)
        return

    from smt_tools.raster.demo_data import make_demo_data

    machine = _machine.machine()
    shared = os.getloadavg()[0] > 1.0  # other work ran beside this benchmark
    args.data = args.data or Path(tempfile.mkdtemp(prefix="smt_tp_")) / "scenes"
    t0 = time.perf_counter()
    if not (args.data / "pairs.csv").is_file():
        make_demo_data(args.data, scenes=args.scenes, size=args.size, seed=0)
    t_data = time.perf_counter() - t0
    tifs = list(args.data.rglob("*.tif"))
    mb = sum(p.stat().st_size for p in tifs) / 1e6
    decoded_mb = args.scenes * args.size**2 * 4 / 1e6  # 3 image bands + 1 mask band, uint8

    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    table, verdict = results_table(args, regimes)
    crop_text = (
        f"{args.crops} random {args.crop} px crops per reader and round (decode, resident)"
        if {"decode", "resident"} & set(regimes)
        else ""
    )
    grid_text = (
        f"{args.crops} {args.crop} px windows per reader and round from a balanced-style CSV "
        "of every block-aligned window of the scenes, in a seeded shuffled order (grid); "
        "grid loaders are persistent (workers started, handles opened by `warm_worker` and "
        "the first batches read before timing)"
        if "grid" in regimes
        else ""
    )
    what = "; ".join(t for t in (crop_text, grid_text) if t)
    section = f"""
## Training throughput: {", ".join(regimes)} ({dt.date.today().isoformat()})

Machine: {machine}. Command: `{_machine.command()}`.

{args.scenes} synthetic scenes of {args.size} px (3-band uint8 image + uint8 mask, 256 px blocks,
deflate; {mb:.0f} MB on disk, {decoded_mb:.0f} MB decoded; written in {t_data:.0f} s); {what};
{args.rounds} rounds alternating between the readers (medians), batch {BATCH}, torch threads 1.

{table}

Target ratio >= 0.8 in the decode-bound regimes: {", ".join(verdict)}. The default output is
float32 images and int64 masks (5x the bytes of the uint8 reads); compact batches keep the uint8
crops and convert once on the device. Grid loaders use `collate_batch` (as `train` does): the
windowed dataset writes a batch in place, one tensor per key; with workers a batch crosses in
one block of fresh shared memory (pages allocated by the worker, costly on this machine), and a
default-output batch of 8-bit windows crosses as uint8 (0.26 MB per item instead of 1.3 MB) and
is widened to float32 / int64 in the main process. Random-crop loaders use `default_collate`.
In the cache-resident regime a bare read is a copy out of GDAL's cache, so any conversion weighs
more there. CPU ms/item (grid): CPU time of the main process and the workers per item (from
/proc, the round's median): what a reader costs whatever else runs on the machine; with
workers the ratio depends on the cores left free by other work (on 2 free cores 2 workers can
deliver up to 2 / that many items per ms).
{SHARED_NOTE if shared else ""}"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
