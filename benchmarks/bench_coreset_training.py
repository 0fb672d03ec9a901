"""Does the coreset method matter? mIoU after a short fixed training on a 30 % coreset.

On demo data (``smt_tools.raster.synthetic``: 6 classes, class 6 "building" ~1 % of pixels):

1. build-balanced-dataset (mode ``embeddings``, the real pipeline) over every window: the
   balanced CSV plus the embedding cache. The DINOv2 model is ``--dino-model`` (a hub id or a
   local folder); by default a small RANDOM-initialised DINOv2 is written to a temp folder
   (no download: the embeddings are then image-dependent but not semantic, which handicaps
   fa / fd / lc_fd / fa_cb / kcenter; pass a real model for the real question).
2. select-coreset (the real pipeline) with each method at ``--budget`` (default 30 %).
3. The real ``train`` pipeline with a FIXED schedule (same seed, epochs, steps, batch size,
   model, loss, validation scenes) per arm: ``all`` (every included window, its balanced
   sampler_weight), and one arm per coreset method (WeightedRandomSampler over the coreset's
   recomputed sampler_weight: unselected windows have weight 0 and are never drawn).

Validation: every window of two held-out scenes (whole source images), after the last epoch.
Reports mIoU and class-6 IoU (mean ± std over ``--seeds``) and the rare-class pixel share of
each coreset. Appends a dated section to BENCHMARKS.md.

    python benchmarks/bench_coreset_training.py                         # full run, appends
    python benchmarks/bench_coreset_training.py --scenes 4 --size 512 --scale 0.05 \\
        --seeds 0 --methods random,cb --no-append                       # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS = ("random", "lc", "cb", "fa", "fd", "lc_fd", "fa_cb", "kcenter")
RARE_RAW = 6


def _proof_module() -> Any:
    """bench_train_proof.py: its data, training arm and machine helpers (one training recipe)."""
    spec = importlib.util.spec_from_file_location(
        "bench_train_proof", Path(__file__).with_name("bench_train_proof.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_random_dinov2(folder: Path) -> Path:
    """A small random-initialised DINOv2 (4 layers, hidden 64) with its image processor."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=14,
        image_size=56,
    )
    Dinov2Model(cfg).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 56},
        crop_size={"height": 56, "width": 56},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def balanced_with_embeddings(demo: Path, patch: int, out: Path, cache: Path, model: str) -> Path:
    """build-balanced-dataset (mode embeddings) over every window; fills the embedding cache."""
    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.balanced import BalancedFile
    from smt_tools.pipelines.balanced import run_balanced
    from smt_tools.raster import read_info, tile_windows

    records = demo / f"records_{patch}.csv"
    if not records.is_file():
        pairs = pd.read_csv(demo / "pairs.csv")
        rows = []
        for img, msk in zip(pairs["image"], pairs["mask"], strict=True):
            info = read_info(demo / img)
            for r, c, _, _ in tile_windows(info.width, info.height, patch):
                rows.append((str(demo / img), str(demo / msk), int(r), int(c), patch))
        pd.DataFrame(
            rows, columns=["image_path", "mask_path", "row_off", "col_off", "patch_size"]
        ).to_csv(records, index=False)
    section: dict[str, Any] = {
        "mode": "embeddings",
        "input": {"patch_records_csv": str(records)},
        "embeddings": {"dino_model": model, "parquet_path": str(cache), "num_workers": 0},
        "uniqueness": {"backend": "sklearn"},
        "output": {"csv_path": str(out), "write_catalog_run": False},
    }
    cfg = validate_mapping({"balanced_dataset": section}, BalancedFile, "bench")
    run_balanced(cfg.balanced_dataset)
    return out


def coreset_csv(
    balanced: Path, cache: Path, method: str, budget: float, seed: int, out: Path
) -> Path:
    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.coreset import CoresetFile
    from smt_tools.pipelines.coreset import run_coreset

    body = {
        "method": method,
        "budget": budget,
        "input_csv_path": str(balanced),
        "parquet_path": str(cache),
        "random_state": seed,
        "device": "cpu",
        "output": {"csv_path": str(out)},
    }
    cfg = validate_mapping({"coreset": body}, CoresetFile, "bench")
    run_coreset(cfg.coreset)
    return out


def rare_share_selected(frame: pd.DataFrame) -> float:
    """Pixel share of the rare class over the tiles with sampler_weight > 0."""
    sel = frame[frame["sampler_weight"] > 0]
    counts = sel["class_counts_json"].map(json.loads)
    rare = counts.map(lambda d: float(d.get(str(RARE_RAW), 0))).sum()
    valid = counts.map(lambda d: float(sum(d.values()))).sum()
    return float(rare / valid) if valid else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024, help="scene side in px")
    ap.add_argument("--patch", type=int, default=64, help="window side in px")
    ap.add_argument("--budget", type=float, default=0.3, help="coreset fraction (default 0.3)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--dino-model", default=None, help="hub id or folder (default: tiny random)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="training batches per epoch")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies --steps (quick checks)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--loss", choices=["ce", "dice_focal"], default="dice_focal")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    ap.add_argument("--data", type=Path, default=None, help="demo folder (default: temp)")
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()

    import torch

    proof = _proof_module()
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or (1 if os.getloadavg()[0] >= cores else cores)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="smt_coreset_train_"))
    demo = args.data or tmp / "demo"
    proof.make_data(demo, args.scenes, args.size, seed=0)
    model = args.dino_model or str(tiny_random_dinov2(tmp / "tiny_dinov2"))
    cache = tmp / "embeddings.parquet"
    balanced = balanced_with_embeddings(demo, args.patch, tmp / "balanced.csv", cache, model)
    frame = pd.read_csv(balanced)
    groups = sorted(frame["group_id"].unique())
    candidates = [g for g in groups if "revisit" not in g and g != "scene_000"]
    val_groups = [g for g in candidates if int(g.split("_")[1]) % 3 == 0][:2] or candidates[-1:]
    methods = [m for m in args.methods.split(",") if m]
    arms: dict[str, Path] = {"all": balanced}
    shares: dict[str, float] = {"all": rare_share_selected(frame)}
    for method in methods:
        # select-coreset sees every window; the validation scenes are dropped by val_groups in
        # training, so the coreset budget is spent on the pool the training can use.
        out = coreset_csv(balanced, cache, method, args.budget, 0, tmp / f"coreset_{method}.csv")
        arms[method] = out
        shares[method] = rare_share_selected(pd.read_csv(out))
    results: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    for seed in args.seeds:
        for arm, csv in arms.items():
            t0 = time.perf_counter()
            r = proof.train_arm(csv, True, seed, args, val_groups, tmp / f"run_{arm}_{seed}")
            results[arm].append(r)
            print(
                f"seed {seed} {arm:8s} mIoU {r['miou']:.4f}  building IoU {r['rare_iou']:.4f}  "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    total = time.perf_counter() - start

    lines = [
        "| arm | tiles sampled | class 6 pixel share | mIoU (mean ± std) | class 6 IoU (mean ± std) |",
        "|---|---:|---:|---|---|",
    ]
    for arm, csv in arms.items():
        f = pd.read_csv(csv)
        n_used = int((f["sampler_weight"] > 0).sum())
        lines.append(
            f"| {arm} | {n_used} | {shares[arm] * 100:.2f} % | "
            f"{proof.mean_std([r['miou'] for r in results[arm]])} | {proof.mean_std([r['rare_iou'] for r in results[arm]])} |"
        )
    table = "\n".join(lines)
    model_note = (
        f"`{args.dino_model}`"
        if args.dino_model
        else "a small RANDOM-initialised DINOv2 (no download; not semantic)"
    )
    section = f"""
## Coreset methods vs random vs all tiles: short training on a {args.budget:.0%} coreset ({dt.date.today().isoformat()})

Machine: {proof._machine.machine()}. Command: `{proof._machine.command()}`.

Data: {args.scenes} synthetic scenes of {args.size} px, {len(frame)} windows of {args.patch} px;
balanced CSV + embedding cache from build-balanced-dataset (mode embeddings, model {model_note});
coresets from select-coreset (budget {args.budget:.0%}, default settings). Training: the recipe of
bench_train_proof.py (UNet base {args.base_channels}, depth 3, {args.loss} loss, AdamW lr
{args.lr:g}, batch {args.batch_size}, {args.epochs} epochs × {max(1, round(args.steps * args.scale))}
steps, WeightedRandomSampler over each arm's sampler_weight), validation on the held-out scenes
{", ".join(val_groups)}; seeds {args.seeds}; torch threads {threads}. Total {total / 60:.1f} min.

{table}
"""
    print(section)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
        print("appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
