"""Training throughput on a GPU: does the loader keep the GPU busy?

Builds the ``train`` command's own datasets, loaders, model, loss and optimizer (through
``smt_tools.pipelines.train``) on synthetic scenes (``smt_tools.raster.synthetic``) read as
random crops (``RandomCropSegmentationDataset``, compact uint8 batches, no augmentation) and
measures, in this order:

1. **loader alone**: one pass of the training loader without a model: crops decoded per second,
   in all and per worker;
2. **step only**: the loop's optimiser step (``Precision.train_step``: forward under autocast,
   float32 loss, backward, optimiser) on batches already on the device, the loader taken out;
   per precision (fp32, and the mixed precision ``auto`` picks on a GPU);
3. **full loop**: the real :func:`smt_tools.train.loop.fit`, 2 epochs at ``auto`` precision
   without validation; epoch 1 is the warm-up (workers start, kernels are chosen); epoch 2 is
   measured with the loop's own timings (``LoopResult.timings.per_epoch``): steps/s and the time
   it waited for the next batch.

It prints the ratio full loop / mixed-precision step (target >= 80 %), the GPU utilisation
sampled during each measurement (``torch.cuda.utilization()``, else ``nvidia-smi``; n/a on the
CPU) and appends a dated section to BENCHMARKS.md.

    # the maintainers' setting (GPU): UNet base 32, depth 3, batch 32, 256 px, 8 workers
    python benchmarks/bench_train_step.py
    # small, on the CPU (proves the script)
    python benchmarks/bench_train_step.py --device cpu --steps 6 --no-append
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: defaults per device: (base, depth, batch, crop, workers, steps, warmup, scenes, size)
GPU_DEFAULTS = {"base": 32, "depth": 3, "batch": 32, "crop": 256, "workers": 8, "steps": 200,
                "warmup": 20, "scenes": 4, "size": 4096}  # fmt: skip
CPU_DEFAULTS = {"base": 16, "depth": 3, "batch": 4, "crop": 128, "workers": 1, "steps": 8,
                "warmup": 2, "scenes": 2, "size": 1024}  # fmt: skip
CLASSES = 6


class UtilSampler:
    """GPU utilisation (%) sampled every ``period`` s in a thread: (time, percent) pairs."""

    def __init__(self, device: Any, period: float = 0.1) -> None:
        self.device, self.period = device, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self) -> Any:
        import torch

        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.utilization(self.device)
            return lambda: float(torch.cuda.utilization(self.device))
        except Exception:  # pynvml missing or NVML unavailable: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None
        index = self.device.index or 0
        cmd = [smi, f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

        def read() -> float:
            return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

        try:
            read()
        except (OSError, ValueError, subprocess.CalledProcessError):
            return None
        return read

    @property
    def source(self) -> str:
        return "n/a" if self._read is None else "sampled every 0.1 s"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self._read()))
            except Exception:
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> UtilSampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, windows: list[tuple[float, float]]) -> str:
        """Mean utilisation inside (start, end) perf_counter windows ('n/a' without samples)."""
        vals = [u for t, u in self.samples if any(a <= t <= b for a, b in windows)]
        return f"{sum(vals) / len(vals):.0f} %" if vals else "n/a"


def _config(args: argparse.Namespace, pairs: Path, out: Path) -> Any:
    """The ``train`` config of the measurement (validated as the command validates it)."""
    import pandas as pd

    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.train import TrainConfig

    groups = sorted(pd.read_csv(pairs)["group"].astype(str))
    cuda = args.device.startswith("cuda")
    cfg = {
        "train_dataset": {
            "_target_": "smt_tools.train.RandomCropSegmentationDataset",
            "input_csv_path": str(pairs),
            "crop_size": args.crop,
            "samples_per_epoch": args.steps * args.batch,
            "n_classes": CLASSES,
            "class_values": list(range(1, CLASSES + 1)),
            "compact_batches": True,
            "data_loader": {
                "batch_size": args.batch,
                "shuffle": True,
                "drop_last": True,
                "num_workers": args.workers,
                "pin_memory": cuda,
                "persistent_workers": args.workers > 0,
            },
        },
        "val_groups": groups[-1:],
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 3,
            "n_classes": CLASSES,
            "base_channels": args.base,
            "depth": args.depth,
        },
        "epochs": 2,
        "steps_per_epoch": args.steps,
        "device": args.device,
        "precision": "auto",
        "output_dir": str(out),
        "torch_threads": args.threads,
        "seed": 0,
    }
    return validate_mapping(cfg, TrainConfig, "bench_train_step")


def loader_alone(loader: Any, steps: int, workers: int) -> tuple[float, float]:
    """(crops/s, batches/s) of one pass over ``loader`` after its first ``workers`` batches
    (the pass starting up)."""
    skip = max(workers, 1)
    it = iter(loader)
    for _ in range(skip):
        next(it)
    start, crops, batches = time.perf_counter(), 0, 0
    for batch in itertools.islice(it, max(steps - skip, 1)):
        crops += int(batch["image"].shape[0])
        batches += 1
    del it
    elapsed = time.perf_counter() - start
    return crops / elapsed, batches / elapsed


def step_only(
    cfg: Any, data: Any, device: Any, precision: str, batches: list[Any], args: argparse.Namespace
) -> tuple[float, list[tuple[float, float]]]:
    """(median steps/s over ``args.rounds`` rounds of ``args.steps`` steps, the rounds' time
    windows) of the loop's step on device-resident batches (a fresh model)."""
    import torch

    from smt_tools.pipelines.train import _build_model
    from smt_tools.train.precision import resolve_precision

    torch.manual_seed(cfg.seed)
    model, loss_fn, optimizer, _, _ = _build_model(cfg, "bench", data.train_ds)
    model.to(device).train()
    prec = resolve_precision(precision, device)
    for i in range(args.warmup):
        prec.train_step(model, loss_fn, optimizer, *batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rates, windows = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        losses = [
            prec.train_step(model, loss_fn, optimizer, *batches[i % len(batches)])
            for i in range(args.steps)
        ]
        torch.stack(losses).cpu()  # waits for the last step
        end = time.perf_counter()
        rates.append(args.steps / (end - start))
        windows.append((start, end))
    return statistics.median(rates), windows


def full_loop(
    cfg: Any, data: Any, device: Any, out: Path, rounds: int
) -> tuple[Any, list[tuple[float, float]]]:
    """(LoopResult of the real fit() over 1 + ``rounds`` epochs, the time windows of the
    epochs after the first)."""
    import torch

    from smt_tools.pipelines.train import _build_model
    from smt_tools.train.loop import fit

    torch.manual_seed(cfg.seed)
    model, loss_fn, optimizer, _, _ = _build_model(cfg, "bench", data.train_ds)
    marks: list[float] = []
    result = fit(
        model, loss_fn, optimizer, data.train_loader, None, epochs=1 + rounds,
        n_classes=CLASSES, device=device, output_dir=out, steps_per_epoch=cfg.steps_per_epoch,
        write_plot=False, precision=cfg.precision,
        on_epoch=lambda row: marks.append(time.perf_counter()),
    )  # fmt: skip
    seconds = result.history["seconds"].to_numpy(dtype=float)
    # epoch e + 1 starts once epoch e's checkpoint is written (on_epoch) and lasts its seconds
    return result, [(marks[e], marks[e] + seconds[e + 1]) for e in range(rounds)]


def _resolve_args(args: argparse.Namespace) -> None:
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = GPU_DEFAULTS if args.device.startswith("cuda") else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _device_line(device: Any) -> str:
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"GPU {name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    threads = torch.get_num_threads()
    return f"{device.type.upper()} (no GPU), torch {torch.__version__}, {threads} threads"


def measure(args: argparse.Namespace, pairs: Path, work: Path) -> dict[str, Any]:
    """Run the three measurements; the numbers of the report."""
    import torch

    from smt_tools.pipelines.train import _build_data, _device, _seed_global
    from smt_tools.train.datasets import prepare_batch
    from smt_tools.train.precision import resolve_precision

    cfg = _config(args, pairs, work / "run")
    _seed_global(cfg)
    device = _device(cfg.device)
    data = _build_data(cfg, "bench")
    mixed = resolve_precision("auto", device).name
    precisions = ["fp32"] if mixed == "fp32" else ["fp32", mixed]
    out: dict[str, Any] = {"device": _device_line(device), "mixed": mixed, "steps": {}}
    with UtilSampler(device) as util:
        t0 = time.perf_counter()
        out["loader_crops_s"], out["loader_batches_s"] = loader_alone(
            data.train_loader, args.steps, args.workers
        )
        out["loader_util"] = util.mean([(t0, time.perf_counter())])
        batches = [
            prepare_batch(b, device)
            for b in itertools.islice(iter(data.train_loader), min(4, args.steps))
        ]
        for name in precisions:
            rate, windows = step_only(cfg, data, device, name, batches, args)
            out["steps"][name] = (rate, util.mean(windows))
        del batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result, windows = full_loop(cfg, data, device, work / "run", args.rounds)
        out["loop_util"] = util.mean(windows)
        out["util_source"] = util.source
    measured = result.timings.per_epoch[1:]
    out["loop_precision"] = result.precision
    out["loop_rate"] = statistics.median(e.steps_per_s for e in measured)
    # the waits and step times of all measured epochs together
    out["loop_wait_s"] = sum(e.data_wait_s for e in measured)
    out["loop_step_s"] = sum(e.step_s for e in measured)
    out["loop_steps"] = sum(e.steps for e in measured)
    out["epoch1_wait_s"] = result.timings.per_epoch[0].data_wait_s
    for ds in (data.train_ds, data.val_ds):
        ds.close()
    return out


def _report(args: argparse.Namespace, r: dict[str, Any]) -> tuple[str, str]:
    """(table, verdict line)."""
    b = args.batch
    per_worker = r["loader_crops_s"] / max(args.workers, 1)
    lines = [
        "| measurement | precision | steps/s | crops/s | GPU utilisation | waiting for batches |",
        "|---|---|---:|---:|---|---|",
        f"| loader alone, {args.workers} workers (no model) | - | {r['loader_batches_s']:.2f} "
        f"| {r['loader_crops_s']:.0f} ({per_worker:.0f} per worker) | {r['loader_util']} | - |",
    ]
    for name, (rate, util) in r["steps"].items():
        lines.append(
            f"| step only (batches on the device) | {name} | {rate:.2f} | {rate * b:.0f} "
            f"| {util} | - |"
        )
    wait, step = r["loop_wait_s"], r["loop_step_s"]
    share = 100 * wait / (wait + step) if wait + step > 0 else float("nan")
    lines.append(
        f"| full loop, fit() epochs 2-{1 + args.rounds} | {r['loop_precision']} | {r['loop_rate']:.2f} "
        f"| {r['loop_rate'] * b:.0f} | {r['loop_util']} | {wait:.2f} s of {wait + step:.2f} s "
        f"({share:.0f} %) |"
    )
    mixed_rate = r["steps"][r["mixed"]][0]
    ratio = r["loop_rate"] / mixed_rate
    needed = math.ceil(mixed_rate * b / per_worker) if per_worker > 0 else 0
    ok = "meets" if ratio >= 0.8 else "MISSES"
    busy = r["loop_steps"] / step if step > 0 else float("nan")
    verdict = (
        f"Full loop / {r['mixed']} step only: **{100 * ratio:.0f} %** (target >= 80 %: {ok}); "
        f"the loop's steps without the waits ran at {busy:.2f} steps/s. "
        f"Feeding the {r['mixed']} step ({mixed_rate * b:.0f} crops/s) takes about {needed} "
        f"workers at {per_worker:.0f} crops/s each; epoch 1 (warm-up, workers starting) waited "
        f"{r['epoch1_wait_s']:.2f} s for batches."
    )
    return "\n".join(lines), verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--base", type=int, help="UNet base_channels (GPU 32, CPU 16)")
    ap.add_argument("--depth", type=int, help="UNet depth (3)")
    ap.add_argument("--batch", type=int, help="batch size (GPU 32, CPU 4)")
    ap.add_argument("--crop", type=int, help="crop side in px (GPU 256, CPU 128)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (GPU 8, CPU 1)")
    ap.add_argument("--steps", type=int, help="steps per round / epoch (GPU 200, CPU 8)")
    ap.add_argument("--warmup", type=int, help="untimed steps before step-only (GPU 20, CPU 2)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (loop: epochs after 1)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--scenes", type=int, help="synthetic scenes (GPU 4, CPU 2)")
    ap.add_argument("--size", type=int, help="scene side in px (GPU 4096, CPU 1024)")
    ap.add_argument("--data", type=Path, default=None, help="scene folder (reused if present)")
    ap.add_argument("--note", default="", help="added to the machine line (e.g. shared machine)")
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    _resolve_args(args)

    from smt_tools.raster.demo_data import make_demo_data

    machine = _machine.machine(args.note)
    work = Path(tempfile.mkdtemp(prefix="smt_step_"))
    data_dir = args.data or work / "scenes"
    t0 = time.perf_counter()
    if not (data_dir / "pairs.csv").is_file():
        make_demo_data(data_dir, scenes=args.scenes, size=args.size, seed=0)
    t_data = time.perf_counter() - t0
    r = measure(args, data_dir / "pairs.csv", work)
    data_line = (
        f"{args.scenes} synthetic scenes of {args.size} px (3-band uint8 + mask, deflate; written "
        f"in {t_data:.0f} s), the last one held out; random {args.crop} px crops, compact uint8 "
        "batches, no augmentation"
    )
    table, verdict = _report(args, r)
    section = f"""
## Train step vs full loop: is the GPU kept busy? ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)

Machine: {machine}. Device: {r["device"]}. Command: `{_machine.command()}`.

{data_line}. UNet base {args.base}, depth {args.depth}, {CLASSES} classes, DiceFocalLoss, AdamW
(the `train` defaults), batch {args.batch}, {args.workers} workers (persistent; pin_memory on a
GPU). Step only: the loop's own step (`Precision.train_step`) on {min(4, args.steps)} batches
already on the device, {args.warmup} warm-up steps, then {args.rounds} rounds of {args.steps}
steps (median). Full loop: `fit()` at `precision: auto` ({r["loop_precision"]}),
{1 + args.rounds} epochs of {args.steps} steps without validation; epoch 1 is the warm-up, the
others are measured by the loop's own timings (median steps/s; the wait for the next batch
summed over them). GPU utilisation: {r["util_source"]}.

{table}

{verdict}
"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
