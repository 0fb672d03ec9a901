"""THE PROOF: does sampling by ``sampler_weight`` help a rare class? Uniform vs four weightings.

The protocol is fixed in README.md ("Benchmarks", "The proof protocol"), written before its
first run; this script runs it with one command and its defaults ARE the protocol:

1. data: ``pytorch-smt-tools make-demo-data DIR --profile longtail`` (8 scenes of 2048 px,
   seed 0; class 6 ``rare_object`` = 0.25 % of pixels, small look-alike objects);
2. windows: every 64-px window of every scene (``patch_records_csv``);
3. weights: one ``pytorch-smt-tools build-balanced-dataset`` run per weighted arm (the real
   command, in a subprocess), masks_only, ``nodata_class: 0`` and the arm's keys (``ARMS``);
4. split: the whole scenes ``scene_003`` and ``scene_006`` are validation (every window of
   them), every other scene is training (``val_groups``: never tiles of a training scene);
5. training: the real ``train`` pipeline (``smt_tools.pipelines.train.run_training``), the same
   steps, batch, model, loss, optimiser and seed in every arm; scored after the last epoch;
6. seeds 0, 1, 2; per class IoU, mIoU and class 6 IoU as mean ± std over seeds, and each arm
   minus uniform paired by seed (mean ± std of the per-seed difference);
7. target: an arm with class 6 IoU >= +5 points over uniform (mean of the seeds) and mIoU at
   most 1 point below uniform; printed as met / not met, appended to BENCHMARKS.md.

    python benchmarks/bench_train_proof.py                        # the protocol (CPU)
    python benchmarks/bench_train_proof.py --device cuda --steps 12000 --base-channels 32
    python benchmarks/bench_train_proof.py --size 512 --scenes 8 --steps 4 --epochs 1 \
        --seeds 0 --no-append                                     # smoke run, ~1 min
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
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RARE_RAW = 6  # class value of the rare class in the long-tail demo masks
NAMES = ["background", "field", "forest", "water", "road", "rare_object"]
RARE_NAME = NAMES[RARE_RAW - 1]
VAL_GROUPS = ["scene_003", "scene_006"]  # no nodata margin, no black border, no revisit
TARGET_RARE_POINTS = 5.0  # class 6 IoU gain over uniform, points (IoU x 100), mean of seeds
TARGET_MIOU_POINTS = 1.0  # mIoU at most this many points below uniform
#: arm -> (build-balanced-dataset keys beside mode/input/exclusion/output, use the weights)
ARMS: dict[str, tuple[dict[str, Any], bool]] = {
    "uniform": ({"sampling_method": "rank_max"}, False),
    "rank_max": ({"sampling_method": "rank_max"}, True),
    "rank_max_t0.5": ({"sampling_method": "rank_max", "weights": {"temperature": 0.5}}, True),
    "repeat_factor": (
        {"sampling_method": "repeat_factor", "weights": {"repeat_threshold": 0.1}},
        True,
    ),
    "boost10": (
        {
            "sampling_method": "rank_max",
            "weights": {"rare_class_boost": 10.0, "rare_class_ids": [RARE_RAW]},
        },
        True,
    ),
}


# --- statistics (pure; tests/test_proof_stats.py) -------------------------------------------


def mean_std(vals: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for one value). NaNs propagate."""
    a = np.asarray(vals, dtype=float)
    if a.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_diff(arm: list[float], base: list[float]) -> tuple[float, float]:
    """Mean ± std of the per-seed differences ``arm[i] - base[i]`` (seeds in the same order)."""
    if len(arm) != len(base):
        raise ValueError(f"paired_diff: {len(arm)} values vs {len(base)} baseline values")
    return mean_std([a - b for a, b in zip(arm, base, strict=True)])


def meets_target(
    rare: list[float], miou: list[float], rare_base: list[float], miou_base: list[float]
) -> tuple[bool, float, float]:
    """(met, class 6 gain in points, mIoU change in points), means over paired seeds.

    Met: gain >= TARGET_RARE_POINTS and mIoU change >= -TARGET_MIOU_POINTS, both inclusive up
    to float rounding (1e-9 points); a NaN never meets it."""
    d_rare = paired_diff(rare, rare_base)[0] * 100.0
    d_miou = paired_diff(miou, miou_base)[0] * 100.0
    eps = 1e-9
    met = bool(d_rare >= TARGET_RARE_POINTS - eps and d_miou >= -TARGET_MIOU_POINTS - eps)
    return met, d_rare, d_miou


def fmt(ms: tuple[float, float], signed: bool = False) -> str:
    """``0.123 ± 0.004`` (``+0.123 ± ...`` when signed)."""
    return f"{ms[0]:+.3f} ± {ms[1]:.3f}" if signed else f"{ms[0]:.3f} ± {ms[1]:.3f}"


# --- data and weights -------------------------------------------------------------------------


def cli(*args: str) -> None:
    """Run ``pytorch-smt-tools ARGS`` (the installed CLI, as a user would); stop on failure."""
    cmd = [sys.executable, "-m", "smt_tools", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")


def make_data(out: Path, scenes: int, size: int, seed: int) -> None:
    if not (out / "pairs.csv").is_file():
        cli("make-demo-data", str(out), "--profile", "longtail", "--scenes", str(scenes),
            "--size", str(size), "--seed", str(seed))  # fmt: skip


def window_records(demo: Path, patch: int) -> Path:
    """Every ``patch``-px window of every scene as a ``patch_records_csv``."""
    from smt_tools.raster import read_info, tile_windows

    records = demo / f"records_{patch}.csv"
    if not records.is_file():
        pairs = pd.read_csv(demo / "pairs.csv")
        rows = []
        for img, msk in zip(pairs["image"], pairs["mask"], strict=True):
            info = read_info(demo / img)
            for r, c, _, _ in tile_windows(info.width, info.height, patch):
                rows.append((str(demo / img), str(demo / msk), int(r), int(c), patch))
        cols = ["image_path", "mask_path", "row_off", "col_off", "patch_size"]
        pd.DataFrame(rows, columns=cols).to_csv(records, index=False)
    return records


def balanced_csv(records: Path, keys: dict[str, Any], out: Path) -> Path:
    """One ``build-balanced-dataset`` run (masks_only, demo nodata 0) with ``keys`` added."""
    import yaml

    section: dict[str, Any] = {
        "mode": "masks_only",
        **{k: v for k, v in keys.items() if k != "weights"},
        "input": {"patch_records_csv": str(records)},
        "exclusion": {"nodata_class": 0},
        "output": {"csv_path": str(out), "write_catalog_run": False},
    }
    if "weights" in keys:
        section["weights"] = keys["weights"]
    conf = out.with_suffix(".yaml")
    conf.write_text(yaml.safe_dump({"balanced_dataset": section}, sort_keys=False))
    cli("build-balanced-dataset", str(conf))
    return out


def training_rows(frame: pd.DataFrame) -> pd.Series:
    """Included rows outside the validation scenes (what the training loader draws from)."""
    excluded = frame["excluded"].astype(str).str.lower().isin(["true", "1"])
    return ~excluded & ~frame["group_id"].isin(VAL_GROUPS)


def exposure(frame: pd.DataFrame, weighted: bool) -> tuple[float, float]:
    """(class 6 pixel share, share of draws holding class 6) per epoch over the training rows
    (docs/algorithms.md §9 items 5-6)."""
    inc = frame[training_rows(frame)]
    counts = inc["class_counts_json"].map(json.loads)
    rare = counts.map(lambda d: float(d.get(str(RARE_RAW), 0))).to_numpy()
    valid = counts.map(lambda d: float(sum(d.values()))).to_numpy()
    w = inc["sampler_weight"].to_numpy(float) if weighted else np.ones(len(inc))
    return float((w * rare).sum() / (w * valid).sum()), float(w[rare > 0].sum() / w.sum())


# --- training ---------------------------------------------------------------------------------

#: --scheduler -> the train config's ``scheduler`` (stepped once per epoch)
SCHEDULERS: dict[str, Any] = {
    "none": lambda args: None,
    "cosine": lambda args: {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "T_max": args.epochs,
    },
}


def train_arm(
    csv: Path, weighted: bool, seed: int, args: argparse.Namespace, out: Path
) -> tuple[dict[str, float], list[list[float]]]:
    """One run of the real train pipeline: the last epoch's mIoU and per-class IoU, and each
    epoch's (mIoU, class 6 IoU), kept to show how stable the run was."""
    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.train import TrainConfig
    from smt_tools.pipelines.train import run_training

    common = {
        "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
        "input_csv_path": str(csv),
        "n_classes": 6,
        "class_values": [1, 2, 3, 4, 5, 6],
    }
    loader = {"num_workers": args.workers, "pin_memory": args.device == "cuda"}
    cfg = {
        "train_dataset": {
            **common,
            "drop_excluded": True,
            "augmentation_list": [
                {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
                {"_target_": "albumentations.RandomRotate90", "p": 0.5},
            ],
            "data_loader": {
                **loader,
                "batch_size": args.batch_size,
                "shuffle": True,
                "drop_last": True,
                "weighted_sampler": weighted,
            },
        },
        "val_dataset": {**common, "data_loader": {**loader, "batch_size": 64}},
        "val_groups": VAL_GROUPS,
        "model": {
            "_target_": "smt_tools.train.UNet",
            "in_channels": 3,
            "n_classes": 6,
            "base_channels": args.base_channels,
            "depth": args.depth,
        },
        "loss": {"_target_": "smt_tools.train.losses.DiceFocalLoss"},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": args.lr},
        "scheduler": SCHEDULERS[args.scheduler](args),
        "epochs": args.epochs,
        "steps_per_epoch": args.steps // args.epochs,
        "device": args.device,
        "seed": seed,
        "output_dir": str(out),
        "class_names": NAMES,
        "rare_class": RARE_RAW - 1,
    }
    res = run_training(validate_mapping(cfg, TrainConfig, "proof"))
    last = res.history.iloc[-1]
    row = {"miou": float(last["miou"])}
    row.update({n: float(last[f"iou_{n}"]) for n in NAMES})
    curve = [
        [float(m), float(r)]
        for m, r in zip(res.history["miou"], res.history[f"iou_{RARE_NAME}"], strict=True)
    ]
    return row, curve


# --- report -----------------------------------------------------------------------------------


def results_table(results: dict[str, list[dict[str, float]]], shares: dict[str, Any]) -> str:
    lines = [
        "| arm | class 6 px / draws per epoch | mIoU | class 6 IoU | Δ mIoU vs uniform (paired) "
        "| Δ class 6 IoU vs uniform (paired) | per seed (mIoU / class 6) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = results["uniform"]
    for arm, runs in results.items():
        miou = [r["miou"] for r in runs]
        rare = [r[RARE_NAME] for r in runs]
        if arm == "uniform":
            d_m = d_r = "-"
        else:
            d_m = fmt(paired_diff(miou, [r["miou"] for r in base]), signed=True)
            d_r = fmt(paired_diff(rare, [r[RARE_NAME] for r in base]), signed=True)
        px, draws = shares[arm]
        per = ", ".join(f"{m:.3f} / {r:.3f}" for m, r in zip(miou, rare, strict=True))
        lines.append(
            f"| {arm} | {px * 100:.2f} % / {draws * 100:.1f} % | {fmt(mean_std(miou))} | "
            f"{fmt(mean_std(rare))} | {d_m} | {d_r} | {per} |"
        )
    return "\n".join(lines)


def class_table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| arm | " + " | ".join(NAMES) + " |", "|---" * (len(NAMES) + 1) + "|"]
    for arm, runs in results.items():
        cells = [fmt(mean_std([r[n] for r in runs])) for n in NAMES]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_lines(curves: dict[str, list[list[float]]]) -> str:
    """One line per run: mIoU / class 6 IoU after each epoch (how stable training was)."""
    lines = []
    for key, curve in curves.items():
        steps = " → ".join(f"{m:.2f}/{r:.2f}" for m, r in curve) if curve else "not recorded"
        lines.append(f"- `{key}`: {steps}")
    return "\n".join(lines)


def verdict(results: dict[str, list[dict[str, float]]]) -> str:
    base = results["uniform"]
    parts, any_met = [], False
    for arm, runs in results.items():
        if arm == "uniform":
            continue
        met, d_rare, d_miou = meets_target(
            [r[RARE_NAME] for r in runs],
            [r["miou"] for r in runs],
            [r[RARE_NAME] for r in base],
            [r["miou"] for r in base],
        )
        any_met |= met
        parts.append(
            f"{arm}: class 6 {d_rare:+.1f} points, mIoU {d_miou:+.1f} points -> "
            f"{'met' if met else 'not met'}"
        )
    head = "TARGET MET" if any_met else "TARGET NOT MET"
    return (
        f"{head} (an arm with class 6 IoU >= +{TARGET_RARE_POINTS:g} points over uniform, mean "
        f"of {len(base)} seeds, and mIoU at most {TARGET_MIOU_POINTS:g} point below). "
        + "; ".join(parts)
        + "."
    )


# --- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048, help="scene side in px")
    ap.add_argument("--data-seed", type=int, default=0, help="make-demo-data --seed")
    ap.add_argument("--patch", type=int, default=64, help="window side in px")
    ap.add_argument("--steps", type=int, default=2400, help="optimisation steps per arm in all")
    ap.add_argument("--epochs", type=int, default=4, help="--steps split into this many epochs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument(
        "--scheduler",
        choices=list(SCHEDULERS),
        default="none",
        help="none: constant lr; cosine: CosineAnnealingLR over the epochs (to 0)",
    )
    ap.add_argument("--label", default="", help="protocol name in the BENCHMARKS.md heading")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    ap.add_argument("--data", type=Path, default=None, help="demo folder (default: temp)")
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument(
        "--state",
        type=Path,
        default=None,
        help="JSON file keeping each finished run; a rerun with it skips them (resume)",
    )
    args = ap.parse_args()
    if args.steps < args.epochs or args.steps % args.epochs:
        ap.error(f"--steps {args.steps} must be a multiple of --epochs {args.epochs}")
    if "uniform" not in args.arms:
        ap.error("--arms must include uniform (the baseline of every difference)")
    return args


def run_arms(
    args: argparse.Namespace, csvs: dict[str, Path], tmp: Path
) -> tuple[dict[str, list[dict[str, float]]], float, dict[str, list[list[float]]]]:
    results: dict[str, list[dict[str, float]]] = {a: [] for a in args.arms}
    same = ["scenes", "size", "data_seed", "patch", "steps", "epochs", "batch_size"]
    same += ["base_channels", "depth", "lr", "scheduler", "device"]
    protocol = {k: getattr(args, k) for k in same}
    done: dict[str, Any] = {"protocol": protocol}
    if args.state and args.state.exists():
        done = json.loads(args.state.read_text(encoding="utf-8"))
        done.get("protocol", {}).setdefault("scheduler", "none")  # files from before --scheduler
        if done.get("protocol") != protocol:
            sys.exit(
                f"{args.state}: its runs used {done.get('protocol')}; delete it or rerun those"
            )
    worst = 0.0
    curves: dict[str, list[list[float]]] = {}
    for seed in args.seeds:
        for arm in args.arms:
            key = f"{arm}/{seed}"
            if key in done:
                results[arm].append(done[key]["result"])
                curves[key] = done[key].get("curve", [])
                worst = max(worst, done[key]["seconds"])
                print(f"seed {seed} {arm:14s} resumed from {args.state}", flush=True)
                continue
            t0 = time.perf_counter()
            r, curve = train_arm(csvs[arm], ARMS[arm][1], seed, args, tmp / f"run_{arm}_{seed}")
            results[arm].append(r)
            curves[key] = curve
            took = time.perf_counter() - t0
            if args.state:
                done[key] = {"result": r, "seconds": took, "curve": curve}
                part = args.state.with_suffix(".tmp")
                part.write_text(json.dumps(done, indent=1), encoding="utf-8")
                part.replace(args.state)
            worst = max(worst, took)
            print(
                f"seed {seed} {arm:14s} mIoU {r['miou']:.4f}  {RARE_NAME} IoU "
                f"{r[RARE_NAME]:.4f}  ({took:.0f} s)",
                flush=True,
            )
    return results, worst, curves


def main() -> None:
    args = parse_args()
    import torch

    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    torch.set_num_threads(threads)
    machine = _machine.machine(f"torch {torch.__version__}, {threads} torch threads")
    if args.device == "cuda":
        machine += f", GPU {torch.cuda.get_device_name(0)}"
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="smt_proof_"))
    demo = args.data or tmp / "demo"
    make_data(demo, args.scenes, args.size, args.data_seed)
    records = window_records(demo, args.patch)
    csvs: dict[str, Path] = {}
    for arm in args.arms:
        keys = ARMS[arm][0]
        same = next((a for a in csvs if ARMS[a][0] == keys), None)  # uniform reuses rank_max's
        csvs[arm] = csvs[same] if same else balanced_csv(records, keys, tmp / f"w_{arm}.csv")
    t_prep = time.perf_counter() - start
    frame = pd.read_csv(csvs["uniform"])
    n_train = int(training_rows(frame).sum())
    shares = {a: exposure(pd.read_csv(csvs[a]), ARMS[a][1]) for a in args.arms}
    results, worst, curves = run_arms(args, csvs, tmp)
    total = time.perf_counter() - start
    table, per_class, verdict_line = (
        results_table(results, shares),
        class_table(results),
        verdict(results),
    )
    label = f" {args.label}" if args.label else ""
    lr_text = f"AdamW lr {args.lr:g}" + (
        ", constant" if args.scheduler == "none" else f", {args.scheduler} decay per epoch to 0"
    )
    arms_cfg = "; ".join(f"`{a}`: {json.dumps(ARMS[a][0])}" for a in args.arms)
    section = f"""
## Proof protocol{label}: uniform vs weighted sampling on the long-tail demo ({dt.date.today().isoformat()})

Machine: {machine}. Command: `{_machine.command()}`. Protocol: README "The proof protocol".

Data: `make-demo-data --profile longtail --scenes {args.scenes} --size {args.size} --seed
{args.data_seed}`; every {args.patch}-px window ({len(frame)}); validation = the whole scenes
{", ".join(VAL_GROUPS)}, training = the {n_train} included windows of the other scenes. Weights
from `build-balanced-dataset` (masks_only, nodata_class 0) per arm: {arms_cfg}; `uniform`
shuffles the same rows unweighted. Training: UNet (base {args.base_channels}, depth
{args.depth}), Dice+Focal, {lr_text}, batch {args.batch_size}, {args.steps} steps
({args.epochs} epochs × {args.steps // args.epochs}), flips + rot90, device {args.device},
scored after the last epoch; seeds {args.seeds}. Total {total / 60:.1f} min (data and weights
{t_prep:.0f} s, slowest run {worst:.0f} s).

{table}

Per-class IoU (mean ± std over seeds):

{per_class}

{verdict_line}

Each run's mIoU / class 6 IoU after each epoch:

{curve_lines(curves)}
"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
