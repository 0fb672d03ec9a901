"""Random-crop throughput: RandomCropSegmentationDataset vs a bare rasterio windowed-read loop.

Writes large tiled deflate GeoTIFF scenes with ``smt_tools.raster.synthetic`` (3-band uint8
image + 1-band mask per scene), then reads ``--crops`` random ``--crop``-px crops (image + mask)
from them:

The dataset side is measured with glibc's default allocator settings and again after
``smt_tools.train.perf.tune_malloc()`` (what the ``train`` command applies).

1. bare loop: ``rasterio.open`` once per file, ``read(window=...)`` of image and mask at the
   dataset's own crop positions (no scaling, no tensors) - the floor any dataset pays;
2. ``RandomCropSegmentationDataset`` through a ``DataLoader`` (batch 16) with
   ``num_workers`` 0 and 2 (scaling to float32, class remapping, tensors, collation included).

Reports crops/s and the ratio dataset / bare (target >= 0.8 with num_workers 0), and appends a
dated section to BENCHMARKS.md.

    python benchmarks/bench_train_throughput.py                                # 4 x 8192 px
    python benchmarks/bench_train_throughput.py --size 1024 --crops 300 --no-append  # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_loop(ds: object, n: int) -> float:
    """Crops/s of plain rasterio windowed reads at the dataset's crop positions."""
    import rasterio  # the benchmark's baseline may open rasters directly
    from rasterio.windows import Window

    images = ds.images  # type: ignore[attr-defined]
    masks = ds.masks  # type: ignore[attr-defined]
    s = ds.crop_size  # type: ignore[attr-defined]
    handles = {p: rasterio.open(p) for p in [*images, *masks]}
    try:
        start = time.perf_counter()
        for k in range(n):
            i, r, c = ds.position(k)  # type: ignore[attr-defined]
            win = Window(c, r, s, s)
            handles[images[i]].read(window=win)
            handles[masks[i]].read(1, window=win)
        return n / (time.perf_counter() - start)
    finally:
        for h in handles.values():
            h.close()


def dataset_loop(ds: object, n_batches: int, batch: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=batch, num_workers=workers)  # type: ignore[arg-type]
    start = time.perf_counter()
    seen = 0
    for b in loader:
        seen += int(b["image"].shape[0])
        if seen >= n_batches * batch:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=8192, help="scene side in px")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--crops", type=int, default=3000, help="crops per measurement")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies --crops")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data", type=Path, default=None, help="scene folder (reused if present)")
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()

    import torch

    from smt_tools.raster.synthetic import make_demo_data
    from smt_tools.train import RandomCropSegmentationDataset

    torch.set_num_threads(1)
    data = args.data or Path(tempfile.mkdtemp(prefix="smt_tp_")) / "scenes"
    t0 = time.perf_counter()
    if not (data / "pairs.csv").is_file():
        make_demo_data(data, scenes=args.scenes, size=args.size, seed=0)
    t_data = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in data.rglob("*.tif")) / 1e6
    n = max(args.batch_size, round(args.crops * args.scale))
    n_batches = max(1, n // args.batch_size)
    n = n_batches * args.batch_size

    def make() -> RandomCropSegmentationDataset:
        return RandomCropSegmentationDataset(
            data / "pairs.csv",
            crop_size=args.crop,
            samples_per_epoch=n + 50 * args.batch_size,
            n_classes=6,
            class_values=[1, 2, 3, 4, 5, 6],
            seed=0,
        )

    ds = make()
    bare_loop(ds, 50)  # warm the OS page cache
    lines = [
        "| allocator | reader | crops/s | ratio to bare loop |",
        "|---|---|---|---|",
    ]
    ratio0 = {}
    for tuned in (False, True):
        if tuned:  # what the train command does (smt_tools.train.perf.tune_malloc)
            from smt_tools.train.perf import tune_malloc

            if not tune_malloc():
                break
        label = "tuned (train command)" if tuned else "glibc default"
        bare = bare_loop(ds, n)
        lines.append(
            f"| {label} | bare rasterio windowed reads (image + mask) | {bare:.0f} | 1.00 |"
        )
        for workers in (0, 2):
            r = dataset_loop(make(), n_batches, args.batch_size, workers)
            if workers == 0:
                ratio0[label] = r / bare
            lines.append(
                f"| {label} | RandomCropSegmentationDataset, DataLoader num_workers={workers} "
                f"| {r:.0f} | {r / bare:.2f} |"
            )
    table = "\n".join(lines)
    verdict = ", ".join(
        f"{k}: {'meets' if v >= 0.8 else 'MISSES'} ({v:.2f})" for k, v in ratio0.items()
    )
    section = f"""
## Random-crop throughput ({dt.date.today().isoformat()})

Machine: {_machine.machine()}. Command: `python benchmarks/bench_train_throughput.py {" ".join(sys.argv[1:])}`.

{args.scenes} synthetic scenes of {args.size} px (3-band uint8 image + uint8 mask, tiled 256 px,
deflate; {mb:.0f} MB on disk, written in {t_data:.0f} s); {n} random {args.crop} px crops per
measurement, batch {args.batch_size}, torch threads 1.

{table}

Target ratio >= 0.8 with num_workers=0: {verdict}. The dataset delivers float32 images scaled
to [0, 1] and int64 masks (5x the bytes of the raw uint8 reads) collated into batches; the
allocator row shows how much of the gap is fresh-page faults of those batch buffers.
"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
