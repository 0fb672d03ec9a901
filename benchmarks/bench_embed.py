"""Embedding extraction throughput: full pipeline vs bare model forward, same batch, same run.

The full pipeline is what ``embed`` runs: DataLoader workers read 256 x 256 windows of 3-band
uint8 GeoTIFFs through the raster layer in on-disk order and hand over raw uint8 batches
(pinned on GPU), the main process copies them to the device (non_blocking, one batch ahead)
and scales / crops / normalises them there, the model runs under ``torch.inference_mode()``
(bf16 autocast on GPU), and embeddings are appended to the Parquet cache in chunks. The bare
forward runs the same model on pre-made float32 tensors of the model's input shape and batch
size. The loader-only rate is the pipeline without the model (read, pin, copy, preprocess on
the device): what the reader side could feed. Target: pipeline >= 90 % of bare (the reader is never the
bottleneck). Models have random weights (DINOv2 architecture; ``base`` = Dinov2Config
defaults = dinov2-base, ``small`` = dinov2-small shape, ``tiny`` = ViT-Ti/14 shape), saved with
save_pretrained and loaded through the real loader.

    python benchmarks/bench_embed.py                                   # CPU: tiny + base
    python benchmarks/bench_embed.py --device cuda --models base --batch-size 256 --num-workers 12
    python benchmarks/bench_embed.py --n 64 --models tiny --no-append  # quick check

``--n`` defaults to 512 images per model on CPU (a 155,000-tile run would take hours on CPU;
images/s is what is compared) and 16,384 on GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
import time
from pathlib import Path

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.config.balanced import EmbeddingsConfig  # noqa: E402
from smt_tools.embeddings.dataset import preprocess_batch  # noqa: E402
from smt_tools.embeddings.extract import device_batches, forward_cls, make_loader  # noqa: E402
from smt_tools.embeddings.model import load_model, make_preprocess  # noqa: E402
from smt_tools.pipelines.embed import ensure_embeddings  # noqa: E402
from smt_tools.raster.demo_data import make_demo_data  # noqa: E402
from smt_tools.raster.tiling import tile_windows  # noqa: E402
from smt_tools.tiletable import tile_keys  # noqa: E402

MODELS = {
    "tiny": {
        "hidden_size": 192,
        "num_hidden_layers": 12,
        "num_attention_heads": 3,
        "intermediate_size": 768,
    },
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
    },
    "base": {},  # Dinov2Config defaults = dinov2-base
}


def make_tiles(folder: Path, n: int, patch: int = 256, scene: int = 2048) -> pd.DataFrame:
    """Demo scenes with at least ``n`` windows of ``patch`` px; frame of the first ``n``."""
    per_scene = (scene // patch) ** 2
    csv = make_demo_data(folder, scenes=max(1, math.ceil(n / per_scene)), size=scene, seed=0)
    pairs = pd.read_csv(csv)
    frames = []
    for image in pairs["image"]:
        path = str(csv.parent / image)
        w = tile_windows(scene, scene, patch)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": tile_keys(path, w[:, 0], w[:, 1], w[:, 2], w[:, 3]),
                    "image_path": path,
                    "row_off": w[:, 0],
                    "col_off": w[:, 1],
                    "height": w[:, 2],
                    "width": w[:, 3],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).head(n)


def save_model(folder: Path, name: str) -> Path:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**MODELS[name])).save_pretrained(folder)
    return folder


def bare_forward(model: object, n: int, batch: int, device: str, crop: int) -> float:
    """images/s of the model alone on pre-made (batch, 3, crop, crop) tensors."""
    import torch

    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch, 3, crop, crop, generator=g) for _ in range(2)]
    if device.startswith("cuda"):
        batches = [b.pin_memory() for b in batches]
    done = 0
    start = time.perf_counter()
    i = 0
    while done < n:
        m = min(batch, n - done)
        forward_cls(model, batches[i % 2][:m], device)
        done += m
        i += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def loader_only(frame: pd.DataFrame, geometry: object, args: argparse.Namespace) -> float:
    """images/s of the pipeline without the model: read, pin, copy, preprocess on the device."""
    import torch

    spec = make_preprocess(geometry, [1, 2, 3], (0.0, 255.0))  # type: ignore[arg-type]
    loader = make_loader(frame, spec, args.batch_size, args.num_workers, args.device)
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for pos, raw, cropped in device_batches(loader, args.device):
            preprocess_batch(raw, spec, cropped=cropped)
            done += len(pos)
        if args.device == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def machine(device: str) -> str:
    text = _machine.machine()
    if device.startswith("cuda"):
        import torch

        text += f", GPU {torch.cuda.get_device_name(0)}"
    import torch

    return text + f", torch {torch.__version__}, {torch.get_num_threads()} torch threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--n", type=int, default=None, help="images per model (default 512 CPU, 16384 GPU)"
    )
    ap.add_argument("--models", default="tiny,base", help="comma list of tiny, small, base")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument(
        "--rounds", type=int, default=4, help="alternating bare/pipeline rounds (ABBA order)"
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--work-dir", type=Path, default=None, help="keep data here (default: temp)")
    ap.add_argument(
        "--no-append", action="store_true", help="print only, do not touch BENCHMARKS.md"
    )
    args = ap.parse_args()
    n = args.n or (16384 if args.device == "cuda" else 512)
    use_gpu = args.device == "cuda"

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        frame = make_tiles(work / "data", n)
        print(f"{len(frame)} tiles of 256 px ready in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = []
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            folder = save_model(work / f"model_{name}", name)
            loaded = load_model(str(folder), args.device)
            crop = loaded.geometry.crop
            loader_only(frame.head(args.batch_size * 2), loaded.geometry, args)  # warm
            loader = loader_only(frame, loaded.geometry, args)
            print(f"{name}: loader only (no model) {loader:,.1f} images/s", flush=True)
            bare_forward(loaded.model, args.batch_size, args.batch_size, args.device, crop)  # warm
            # Interleave bare and pipeline in rounds (ABBA order) so load drift cancels out.
            bare_s = pipe_s = 0.0
            bounds = np.linspace(0, n, args.rounds + 1).astype(int)
            for r in range(args.rounds):
                part = frame.iloc[bounds[r] : bounds[r + 1]]
                if len(part) == 0:
                    continue
                cfg = EmbeddingsConfig(
                    dino_model=str(folder),
                    batch_size=args.batch_size,
                    num_workers=args.num_workers,
                    use_gpu=use_gpu,
                    parquet_path=work / f"emb_{name}_{r}.parquet",
                )
                steps = ["bare", "pipe"] if r % 2 == 0 else ["pipe", "bare"]
                for step in steps:
                    if step == "bare":
                        rate = bare_forward(
                            loaded.model, len(part), args.batch_size, args.device, crop
                        )
                        bare_s += len(part) / rate
                    else:
                        _, res = ensure_embeddings(part, cfg, rebuild=True)
                        pipe_s += len(part) / res.images_per_s
            bare = n / bare_s
            pipe = n / pipe_s
            ratio = pipe / bare
            rows.append((name, loaded.dim, loader, bare, pipe, ratio))
            print(
                f"{name}: bare {bare:,.1f} images/s, pipeline {pipe:,.1f} images/s = {ratio:.0%}",
                flush=True,
            )

    header = (
        f"\n## Embedding extraction — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n\n"
        f"Machine: {machine(args.device)}; device {args.device}"
        f"{' (bf16 autocast)' if use_gpu else ' (float32)'}.\n"
        f"{n:,} windows of 256 x 256 px (3-band uint8 GeoTIFF, deflate) -> centre crop 224 "
        "(shortest edge already 256: no resize); "
        f"batch {args.batch_size}, {args.num_workers} reader workers, {args.rounds} alternating "
        "bare/pipeline rounds; uint8 windows through the loader, preprocessing on the device; "
        "random-weight DINOv2 "
        f"architectures. Command: `{_machine.command()}`\n\n"
        "| model | dim | loader only, no model (images/s) | bare forward (images/s) "
        "| full pipeline (images/s) | pipeline / bare |\n"
        "|---|---:|---:|---:|---:|---:|\n"
    )
    table = "".join(
        f"| {m} | {d} | {lo:,.1f} | {b:,.1f} | {p:,.1f} | {r:.0%} |\n" for m, d, lo, b, p, r in rows
    )
    print(header + table)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + table)


if __name__ == "__main__":
    main()
