"""A small training loop: fixed steps per epoch, validation with per-class IoU, checkpoints a
run resumes from, a metrics CSV and a plot. Everything it writes is written atomically."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from smt_tools._worker_errors import unwrap_worker_errors
from smt_tools.atomic import atomic_path
from smt_tools.errors import InputDataError
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.train._base import _WindowDataset
from smt_tools.train._report import LoopTimings, plot_history
from smt_tools.train._report import epoch_line as epoch_line
from smt_tools.train.checkpoint import FORMAT, rng_state, set_rng_state
from smt_tools.train.datasets import prepare_batch
from smt_tools.train.metrics import confusion_matrix, scores_from_confusion
from smt_tools.train.precision import Precision, resolve_precision


@dataclass
class LoopResult:
    """What :func:`fit` produced. ``history``: one row per epoch (see :func:`fit`)."""

    history: pd.DataFrame
    best_epoch: int
    best_miou: float
    files: list[Path] = field(default_factory=list)
    start_epoch: int = 1  # first epoch this call trained (> epochs: a finished run resumed)
    precision: str = "fp32"  # what the run computed in: bf16, fp16 or fp32
    timings: LoopTimings = field(default_factory=LoopTimings)


def _hard_target(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """(N, H, W) int64 targets from hard or soft (N, C, H, W) float targets."""
    if target.is_floating_point() and target.dim() == 4:
        hard = target.argmax(dim=1)
        return torch.where(target.sum(dim=1) > 0, hard, torch.full_like(hard, ignore_index))
    return target.long()


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Hard predictions (N, H, W): argmax, or sigmoid > 0.5 for one output channel."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def _set_epoch(loader: Any, epoch: int, repeat: int = 0) -> None:
    """Tell the loader's dataset which epoch (and which pass inside it) comes next."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, _WindowDataset):
        dataset.set_epoch(epoch, repeat)
        return
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def evaluate(
    model: nn.Module,
    loader: Any,
    loss_fn: nn.Module,
    n_classes: int,
    device: torch.device,
    ignore_index: int = 255,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    precision: Precision | None = None,
) -> tuple[float, np.ndarray]:
    """Mean validation loss and the (C, C) int64 confusion matrix over valid pixels.

    n_classes: number of classes scored (2 for a one-channel binary model).
    precision: the forward pass runs under its autocast (default fp32); the loss in float32.
    """
    prec = precision or Precision("fp32", torch.device(device).type)
    model.eval()
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    total, batches = 0.0, 0
    with torch.no_grad():
        for step, batch in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            image, mask = prepare_batch(batch, device)
            logits = prec.forward(model, image)
            total += float(loss_fn(logits, mask))
            batches += 1
            cm += confusion_matrix(
                predict(logits), _hard_target(mask, ignore_index), n_classes, ignore_index
            )
            if progress:
                progress(1)
    return (total / batches if batches else float("nan")), cm


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path, suffix=".part") as tmp:
        torch.save(obj, tmp)


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".part") as tmp:
        frame.to_csv(tmp, index=False)


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a loader draws from: its own (base seed of workers, shuffling) and
    its sampler's (a weighted sampler's draws), each once, in a fixed order."""
    found: list[torch.Generator] = []
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (
        loader,
        sampler,
        getattr(sampler, "sampler", None),  # DrawTaggedSampler wraps a WeightedRandomSampler
        getattr(batch_sampler, "sampler", None),
    ):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _seed_generators(generators: list[tuple[torch.Generator, int]], epoch: int) -> None:
    """Seed each loader generator from (its initial seed, epoch, position): the shuffle order
    and weighted draws of an epoch do not depend on earlier epochs, so a resumed run (and
    persistent workers, which draw their base seed once) get exactly the same batches."""
    for j, (gen, base) in enumerate(generators):
        seq = np.random.SeedSequence([base, epoch, j])
        gen.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))


def _restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[int, list[dict[str, Any]], int, float]:
    """Load model / optimizer / scheduler from a checkpoint; (next epoch, rows, best...)."""
    ts = state["training_state"]
    try:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(ts["optimizer"])
        if scheduler is not None and ts.get("scheduler") is not None:
            scheduler.load_state_dict(ts["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputDataError(
            f"the checkpoint does not fit this model / optimizer ({first[:160]}); resume with "
            "the config it was trained with"
        ) from None
    rows = [dict(r) for r in ts["history"]]
    return int(state["epoch"]) + 1, rows, int(ts["best_epoch"]), float(ts["best_miou"])


def _class_names(class_names: list[str] | None, n_classes: int) -> list[str]:
    """The given class names, or "0", "1", ... where none are given or they do not fit."""
    names = class_names or [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    return names


def _initial_seeds(loader: Any | None) -> list[tuple[torch.Generator, int]]:
    """Each of the loader's generators (:func:`_loader_generators`) with its initial seed."""
    if loader is None:
        return []
    return [(g, g.initial_seed()) for g in _loader_generators(loader)]


def _score(row: dict[str, Any]) -> float:
    """The epoch's mIoU; -inf where there is none (no validation, or no class scored)."""
    miou = row.get("miou", float("nan"))
    return miou if not math.isnan(miou) else -math.inf


def _improves(row: dict[str, Any], best_miou: float, no_validation: bool) -> bool:
    """Whether the epoch of ``row`` becomes best.pt: the first epoch, a higher mIoU, or any
    epoch without validation."""
    return _score(row) > best_miou or row["epoch"] == 1 or no_validation


def _step_scheduler(scheduler: Any, metric: float) -> None:
    if scheduler is None:
        return
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()


@dataclass
class _Run:
    """What stays fixed over the epochs of one :func:`fit` call."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    epochs: int
    names: list[str]
    device: torch.device
    steps_per_epoch: int | None
    val_steps: int | None
    ignore_index: int
    progress_factory: ProgressFactory
    precision: Precision
    generators: dict[str, list[tuple[torch.Generator, int]]] = field(default_factory=dict)
    timings: LoopTimings = field(default_factory=LoopTimings)


def _train_epoch(run: _Run, epoch: int) -> float:
    """One epoch of ``steps_per_epoch`` optimiser steps (the loader restarts when it runs out;
    default one pass); the mean train loss (NaN for no steps). The time spent waiting for
    batches and in the steps goes to ``run.timings``; the losses stay on the device until the
    end of the epoch, so the host queues the next step while the device computes."""
    model, loader, timings = run.model, run.train_loader, LoopTimings()
    n_steps = run.steps_per_epoch if run.steps_per_epoch is not None else len(loader)
    model.train()
    losses: list[torch.Tensor] = []
    with run.progress_factory(f"Epoch {epoch}/{run.epochs} train", n_steps) as advance:
        it = iter(loader)
        repeat = 0
        for _ in range(n_steps):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                # another pass in this epoch: new crops / augmentations, not a replay
                repeat += 1
                _set_epoch(loader, epoch, repeat)
                it = iter(loader)
                batch = next(it)
            t1 = time.perf_counter()
            image, mask = prepare_batch(batch, run.device)
            losses.append(run.precision.train_step(model, run.loss_fn, run.optimizer, image, mask))
            timings.data_wait_s += t1 - t0
            timings.step_s += time.perf_counter() - t1
            timings.steps += 1
            advance(1)
    del it
    t2 = time.perf_counter()
    # one synchronisation: waits for the device's last step
    values = torch.stack(losses).cpu().double().numpy() if losses else np.empty(0)
    timings.step_s += time.perf_counter() - t2
    run.timings.add(timings)
    return float(np.mean(values)) if values.size else float("nan")


def _validate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Validate after an epoch: the history columns val_loss, miou, micro_iou, pixel_accuracy,
    ``iou_<class>`` and ``pixels_<class>``."""
    loader, val_steps = run.val_loader, run.val_steps
    n_val = len(loader) if val_steps is None else min(val_steps, len(loader))
    with run.progress_factory(f"Epoch {epoch}/{run.epochs} validate", n_val) as advance:
        val_loss, cm = evaluate(
            run.model,
            loader,
            run.loss_fn,
            len(run.names),
            run.device,
            run.ignore_index,
            val_steps,
            advance,
            run.precision,
        )
    scores = scores_from_confusion(cm)
    row: dict[str, Any] = {
        "val_loss": val_loss,
        "miou": scores.miou,
        "micro_iou": scores.micro_iou,
        "pixel_accuracy": scores.pixel_accuracy,
    }
    for name, v in zip(run.names, scores.iou, strict=True):
        row[f"iou_{name}"] = float(v)
    for name, v in zip(run.names, scores.support, strict=True):
        row[f"pixels_{name}"] = int(v)
    return row


def _run_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate it, step the scheduler: the epoch's history row."""
    start = time.perf_counter()
    _seed_generators(run.generators["train"], epoch)
    _set_epoch(run.train_loader, epoch)
    train_loss = _train_epoch(run, epoch)
    row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
    if run.val_loader is not None:
        _seed_generators(run.generators["val"], epoch)
        _set_epoch(run.val_loader, epoch)
        row.update(_validate_epoch(run, epoch))
    row["lr"] = float(run.optimizer.param_groups[0]["lr"])
    _step_scheduler(run.scheduler, row.get("val_loss", train_loss))
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _write_checkpoints(
    run: _Run,
    output_dir: Path,
    row: dict[str, Any],
    improved: bool,
    history: list[dict[str, Any]],
    best: tuple[int, float],
    checkpoint_extra: dict[str, Any] | None,
) -> None:
    """``best.pt`` (when ``improved``), ``last.pt`` (plus everything a run resumes from) and
    ``metrics.csv`` after the epoch of ``row``, each atomically."""
    epoch = row["epoch"]
    state = {
        "format": FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "epoch": epoch,
        "miou": row.get("miou", float("nan")),
        "class_names": run.names,
        **(checkpoint_extra or {}),
    }
    if improved:
        _atomic_save(state, output_dir / "best.pt")
    state["training_state"] = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "history": history,
        "best_epoch": best[0],
        "best_miou": float(best[1]),
        "epochs": run.epochs,
        "dataset_epoch": epoch,
        "rng": rng_state(),
    }
    if run.precision.scaler is not None:  # fp16: a resumed run goes on with the same scale
        state["training_state"]["grad_scaler"] = run.precision.state_dict()
    _atomic_save(state, output_dir / "last.pt")
    _atomic_csv(pd.DataFrame(history), output_dir / "metrics.csv")


@unwrap_worker_errors()
def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    val_loader: Any | None,
    *,
    epochs: int,
    n_classes: int,
    device: torch.device,
    output_dir: Path,
    steps_per_epoch: int | None = None,
    val_steps: int | None = None,
    ignore_index: int = 255,
    class_names: list[str] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress_factory: ProgressFactory | None = None,
    write_plot: bool = True,
    scheduler: Any | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    precision: str | Precision = "auto",
) -> LoopResult:
    """Train ``epochs`` epochs of ``steps_per_epoch`` batches (the train loader restarts when it
    runs out; default one pass), validate after each epoch, keep the best checkpoint by mIoU.

    Writes into ``output_dir``: ``last.pt`` (the model plus everything a run resumes from:
    optimizer, scheduler, history, random state; see :mod:`smt_tools.train.checkpoint`),
    ``best.pt`` ({model_state, epoch, miou, ...}), ``metrics.csv`` (epoch, train_loss,
    val_loss, miou, micro_iou, pixel_accuracy, one ``iou_<class>`` and ``pixels_<class>``
    column per class, lr, seconds) and ``metrics.png``; all after every epoch, atomically.
    n_classes: classes scored (2 for a one-channel binary model).
    val_loader: None trains without validation (train loss only; best.pt = the last epoch).
    scheduler: an LR scheduler stepped once per epoch (ReduceLROnPlateau on the validation loss,
        else the train loss).
    resume: a checkpoint from :func:`~smt_tools.train.checkpoint.load_checkpoint`; training
        goes on after its epoch, giving the weights and history an uninterrupted run would
        (the loaders' generators are seeded per epoch, the global random state restored). A
        checkpoint at or past ``epochs`` trains nothing and writes nothing.
    on_epoch: called with each new history row once its checkpoint is written.
    precision: ``auto``, ``bf16``, ``fp16``, ``fp32`` (see :mod:`smt_tools.train.precision`;
        auto = fp32 on the CPU) or a :class:`~smt_tools.train.precision.Precision`; the result
        names it and holds the time spent waiting for batches and in steps (``timings``).
    An :class:`~smt_tools.errors.SmtError` raised in a DataLoader worker reaches the caller
    with the worker's own one-line message (not PyTorch's wrapped traceback).
    """
    resolved = resolve_precision(precision, device)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = _class_names(class_names, n_classes)
    model.to(device)
    rows: list[dict[str, Any]] = []
    best_miou, best_epoch, start_epoch = -math.inf, 0, 1
    if resume is not None:
        start_epoch, rows, best_epoch, best_miou = _restore(resume, model, optimizer, scheduler)
    run = _Run(
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        epochs=epochs,
        names=names,
        device=device,
        steps_per_epoch=steps_per_epoch,
        val_steps=val_steps,
        ignore_index=ignore_index,
        progress_factory=progress_factory or no_progress,
        precision=resolved,
    )
    run.generators = {"train": _initial_seeds(train_loader), "val": _initial_seeds(val_loader)}
    if resume is not None:
        set_rng_state(resume["training_state"]["rng"])
        run.precision.load_state_dict(resume["training_state"].get("grad_scaler"))
    best = _train_epochs(
        run, start_epoch, rows, (best_epoch, best_miou), output_dir, checkpoint_extra, on_epoch
    )
    return _finish(run, output_dir, rows, best[0], best[1], start_epoch, write_plot)


def _train_epochs(
    run: _Run,
    start_epoch: int,
    rows: list[dict[str, Any]],
    best: tuple[int, float],
    output_dir: Path,
    checkpoint_extra: dict[str, Any] | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> tuple[int, float]:
    """Epochs ``start_epoch`` .. ``run.epochs``: train, validate, checkpoint; each row is
    appended to ``rows``; the (best epoch, best mIoU) at the end."""
    best_epoch, best_miou = best
    for epoch in range(start_epoch, run.epochs + 1):
        row = _run_epoch(run, epoch)
        rows.append(row)
        improved = _improves(row, best_miou, run.val_loader is None)
        if improved:
            best_miou, best_epoch = _score(row), epoch
        _write_checkpoints(
            run, output_dir, row, improved, rows, (best_epoch, best_miou), checkpoint_extra
        )
        if on_epoch is not None:
            on_epoch(dict(row))
    return best_epoch, best_miou


def _finish(
    run: _Run,
    output_dir: Path,
    rows: list[dict[str, Any]],
    best_epoch: int,
    best_miou: float,
    start_epoch: int,
    write_plot: bool,
) -> LoopResult:
    """The history frame, the files written and (when this call trained) the plot."""
    names, epochs = run.names, run.epochs
    history = pd.DataFrame(rows)
    names_out = ("best.pt", "last.pt", "metrics.csv")
    files = [output_dir / n for n in names_out if (output_dir / n).is_file()]
    if write_plot and start_epoch <= epochs:
        plot_history(history, names, output_dir / "metrics.png")
        files.append(output_dir / "metrics.png")
    return LoopResult(
        history=history,
        best_epoch=best_epoch,
        best_miou=float(best_miou),
        files=files,
        start_epoch=start_epoch,
        precision=run.precision.name,
        timings=run.timings,
    )
