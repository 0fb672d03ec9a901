"""What the train loop measures, shows and draws: where the training time went, the one-line
epoch summary and the metrics plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from smt_tools.atomic import atomic_path


@dataclass
class LoopTimings:
    """Where the training steps of one :func:`fit` call spent their time (validation and
    checkpoints excluded), in seconds: ``data_wait_s`` waiting for the loader's next batch,
    ``step_s`` in everything else of a step (moving the batch to the device, forward, loss,
    backward, optimiser, and the one synchronisation per epoch). ``steps``: optimiser steps."""

    steps: int = 0
    data_wait_s: float = 0.0
    step_s: float = 0.0
    #: one entry per epoch trained (empty inside an epoch's own entry)
    per_epoch: list[LoopTimings] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        """Training steps per second of step + wait time (NaN before any step)."""
        busy = self.data_wait_s + self.step_s
        return self.steps / busy if busy > 0 else float("nan")

    def add(self, epoch: LoopTimings) -> None:
        """Count one epoch's timings in the totals and keep them in ``per_epoch``."""
        self.steps += epoch.steps
        self.data_wait_s += epoch.data_wait_s
        self.step_s += epoch.step_s
        self.per_epoch.append(epoch)


def plot_history(history: pd.DataFrame, class_names: list[str], path: Path) -> None:
    """Loss curves and mIoU / per-class IoU per epoch as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    if "val_loss" in history:
        ax1.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.set_title("Loss")
    for name in class_names:
        col = f"iou_{name}"
        if col in history:
            ax2.plot(history["epoch"], history[col], lw=1, alpha=0.7, label=name)
    if "miou" in history:
        ax2.plot(history["epoch"], history["miou"], color="black", lw=2.5, marker="o", label="mIoU")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("IoU")
    ax2.set_ylim(0, 1)
    if "miou" in history:
        ax2.legend(fontsize=7, ncol=2)
    ax2.set_title("Validation IoU (ignored pixels excluded)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".part.png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def _fmt(value: Any) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{float(value):.4f}")
    )


def epoch_line(row: dict[str, Any], epochs: int, verbose: bool = False) -> str:
    """One line for a row of the history: ``epoch 3/10  train loss 0.4123  val loss 0.5012
    mIoU 0.4471  12.3 s``; the per-class IoU is added when ``verbose``; train loss only
    without validation."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {_fmt(row['train_loss'])}"]
    if "val_loss" in row:
        parts += [f"val loss {_fmt(row['val_loss'])}", f"mIoU {_fmt(row.get('miou'))}"]
        if verbose:
            ious = ", ".join(f"{k[4:]} {_fmt(v)}" for k, v in row.items() if k.startswith("iou_"))
            parts.append(f"IoU {ious}")
    parts.append(f"{float(row['seconds']):.1f} s")
    return "  ".join(parts)
