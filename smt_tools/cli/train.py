"""``train CONFIG``: train a small segmentation model from the balanced CSV."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from smt_tools.choices import TrainPrecision
from smt_tools.cli._common import console, err_console, guard, progress_bar, state
from smt_tools.cli._config_opts import dry_run, dry_run_option, set_option

if TYPE_CHECKING:
    from smt_tools.config.train import TrainConfig
    from smt_tools.pipelines.train import TrainResult


@guard(outputs=("output_dir",))
def train(
    config: Path = typer.Argument(..., help="Train config YAML (see conf/examples/)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override epochs."),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", min=1, help="Override steps_per_epoch."
    ),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override output_dir."),
    precision: TrainPrecision | None = typer.Option(
        None,
        "--precision",
        help="Override precision: auto (bf16 autocast on a CUDA GPU that has it, else fp16; "
        "fp32 on the CPU), bf16, fp16 or fp32.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from output_dir/last.pt (same config, more epochs)."
    ),
    resume_from: Path | None = typer.Option(
        None, "--resume-from", metavar="CHECKPOINT", help="Continue from this last.pt."
    ),
    overrides: list[str] = set_option(),
    dry_run_: bool = dry_run_option(),
) -> object:
    """Train with the weighted sampler / random crops; write checkpoints, metrics CSV, plot."""
    from smt_tools.pipelines.train import run_training

    start = time.perf_counter()
    updates = {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "output_dir": output_dir,
        "precision": precision,
    }
    cfg = _load_config(config, overrides, updates)
    if dry_run_:
        from smt_tools.pipelines.plan import plan_train

        return dry_run(plan_train, cfg, config)
    from smt_tools.train.loop import epoch_line

    def on_epoch(row: dict[str, object]) -> None:
        console.print(epoch_line(row, cfg.epochs, state.verbose), markup=False, soft_wrap=True)

    with _precision_warnings_as_lines():
        result = run_training(
            cfg,
            progress_factory=_batch_progress,
            source=str(config),
            resume=resume_from if resume_from is not None else resume,
            on_epoch=on_epoch,
            log=lambda line: console.print(line, markup=False, soft_wrap=True),
        )
    _print_summary(result, start)
    return result


def _load_config(config: Path, overrides: list[str], updates: Mapping[str, object]) -> TrainConfig:
    """The validated config (its warnings on stderr) with the command-line values not None."""
    from smt_tools.config.train import load_train_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        cfg = load_train_config(config, overrides=overrides)
    for w in caught:
        err_console.print(f"warning: {w.message}", markup=False, soft_wrap=True)
    given = {k: v for k, v in updates.items() if v is not None}
    return cfg.model_copy(update=given) if given else cfg


@contextlib.contextmanager
def _precision_warnings_as_lines() -> Iterator[None]:
    """A ``precision: bf16`` / ``fp16`` that falls back to fp32 (no CUDA GPU) as one
    ``warning:`` line on stderr when it happens; other warnings as before."""
    from smt_tools.train.precision import PrecisionFallbackWarning

    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        if issubclass(category, PrecisionFallbackWarning):
            err_console.print(f"warning: {message}", markup=False, soft_wrap=True)
        else:
            shown(message, category, *args, **kw)  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _batch_progress(
    description: str, total: int
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    return progress_bar(description, total, unit="batches")


def _print_summary(result: TrainResult, start: float) -> None:
    """Epochs trained (or that the run had finished already), best mIoU, per-class IoU, files."""
    if result.finished_already:
        console.print(
            f"{result.resumed_from}: the run already finished {result.resumed_epoch} of "
            f"{result.epochs} epoch(s); nothing to train (raise --epochs to go on)",
            markup=False,
            soft_wrap=True,
        )
        return
    rare = "n/a" if math.isnan(result.rare_iou) else f"{result.rare_iou:.3f}"
    sampler = "weighted sampler" if result.weighted_sampler else "uniform sampling"
    console.print(
        f"Trained {result.epochs - result.start_epoch + 1} epoch(s) on {result.device} "
        f"({result.precision}; {sampler}; "
        f"{result.train_items} train / {result.val_items} validation items) "
        f"in {time.perf_counter() - start:.1f} s",
        soft_wrap=True,
    )
    console.print(
        f"best mIoU {result.best_miou:.3f} (epoch {result.best_epoch}); rare class "
        f"{result.rare_class_name} IoU {rare}",
        soft_wrap=True,
    )
    per_class = ", ".join(
        f"{k} {'n/a' if math.isnan(v) else f'{v:.3f}'}" for k, v in result.per_class_iou.items()
    )
    console.print(f"per-class IoU: {per_class}", soft_wrap=True)
    console.print("wrote " + ", ".join(str(p) for p in result.files), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
