"""train: config -> datasets + loaders (weighted sampler) -> model, loss, optimizer -> loop.

The image-level split rule: validation rows are chosen by whole source images (``val_fold`` on
the CSV's ``fold`` column, ``val_groups`` on ``group_id`` / ``group``, or a separate
``val_dataset``), and a run whose train and validation sets share a source image is refused
unless ``allow_shared_images: true``.

Resuming (``resume=True`` or a checkpoint path) goes on from ``output_dir/last.pt`` after the
epoch it holds; the config may differ from the checkpoint's only in keys that do not change
the weights (:data:`RESUME_FREE_KEYS`, the loaders' worker keys).
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.config.train import DataLoaderConfig, DatasetConfig, TrainConfig
from smt_tools.errors import ConfigError, InputDataError
from smt_tools.progress import ProgressFactory


@dataclass
class TrainResult:
    """Summary of one training run."""

    epochs: int
    best_epoch: int
    best_miou: float
    rare_class: int
    rare_class_name: str
    rare_iou: float
    per_class_iou: dict[str, float]
    history: pd.DataFrame
    train_items: int
    val_items: int
    weighted_sampler: bool
    device: str
    precision: str = "fp32"  # what the run computed in (bf16, fp16, fp32)
    loader_wait_s: float = 0.0  # training time spent waiting for the next batch (this call)
    files: list[Path] = field(default_factory=list)
    start_epoch: int = 1  # first epoch trained by this call (> epochs: nothing left to train)
    resumed_from: Path | None = None
    resumed_epoch: int = 0  # epochs the checkpoint held
    #: the validated config (``run.json``)
    config_record: dict[str, Any] | None = None

    def run_json_path(self) -> Path | None:
        """``run.json`` in the output folder, beside the checkpoints (None when a resumed run
        had nothing left to train: its outputs stay untouched)."""
        if self.finished_already or not self.files:
            return None
        return self.files[0].parent / "run.json"

    @property
    def finished_already(self) -> bool:
        """A resumed run that had no epoch left to train."""
        return self.resumed_from is not None and self.start_epoch > self.epochs

    def history_rows(self) -> list[dict[str, Any]]:
        """The per-epoch history as plain dicts (NaN -> None), one per epoch."""
        return [
            {str(k): _plain(v) for k, v in row.items()}
            for row in self.history.to_dict(orient="records")
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (``--json``): numbers, strings, lists and dicts only (NaN -> None);
        ``history`` is one dict per epoch (the columns of metrics.csv)."""
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_miou": _plain(self.best_miou),
            "rare_class": self.rare_class,
            "rare_class_name": self.rare_class_name,
            "rare_iou": _plain(self.rare_iou),
            "per_class_iou": {k: _plain(v) for k, v in self.per_class_iou.items()},
            "history": self.history_rows(),
            "train_items": self.train_items,
            "val_items": self.val_items,
            "weighted_sampler": self.weighted_sampler,
            "device": self.device,
            "precision": self.precision,
            "loader_wait_s": round(self.loader_wait_s, 3),
            "files": [str(p) for p in self.files],
            "start_epoch": self.start_epoch,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            "resumed_epoch": self.resumed_epoch,
        }


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; NaN / inf -> None (JSON has neither)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: top-level config keys a resumed run may change: they do not change the weights it trains
RESUME_FREE_KEYS = frozenset(
    {"epochs", "output_dir", "device", "precision", "torch_threads", "val_steps", "rare_class"}
)
#: data_loader keys free on resume: 0 or N workers give the same batches
_LOADER_FREE_KEYS = frozenset({"num_workers", "pin_memory", "persistent_workers"})


def resume_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config keys a resumed run must keep (model, data, classes, loss, ...).

    config: ``TrainConfig.model_dump(mode="json", by_alias=True)``.
    """
    from smt_tools.train.checkpoint import flatten

    return {
        k: v
        for k, v in flatten(config).items()
        if k.split(".")[0].split("[")[0] not in RESUME_FREE_KEYS
        and not (".data_loader." in k and k.rsplit(".", 1)[1] in _LOADER_FREE_KEYS)
    }


def _show(value: Any) -> str:
    text = "absent" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_resumable(state: dict[str, Any], cfg_json: dict[str, Any], path: Path) -> None:
    """Refuse (one line naming the keys) a checkpoint trained with a config that differs in a
    key that changes the weights."""
    from smt_tools.train.checkpoint import config_hash, differences

    new = resume_keys(cfg_json)
    if state.get("config_hash") == config_hash(new):
        return
    old_cfg = state.get("config")
    if not isinstance(old_cfg, dict):
        raise InputDataError(
            f"{path}: the checkpoint does not record its config, so resuming cannot be checked; "
            "train into a new output_dir"
        )
    diff = differences(resume_keys(old_cfg), new)
    if not diff:
        return
    shown = ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, a, b in diff[:4])
    more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
    raise ConfigError(
        f"{path}: cannot resume: the config differs from the checkpoint's in {shown}{more}; "
        "restore those keys, or train into a new output_dir without --resume"
    )


def _dataset_spec(ds: DatasetConfig) -> dict[str, Any]:
    spec = ds.spec()
    if ds.augmentation_list is not None:
        spec["augmentation_list"] = copy.deepcopy(ds.augmentation_list)
    return spec


def _csv_columns(spec: dict[str, Any]) -> list[str]:
    path = spec.get("input_csv_path")
    if path is None or not Path(str(path)).is_file():
        return []
    return list(pd.read_csv(str(path), nrows=0).columns)


def _split_specs(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any], DataLoaderConfig]:
    """Dataset specs for train and validation with the image-level split applied."""
    train = _dataset_spec(cfg.train_dataset)
    if cfg.val_dataset is not None:
        val = _dataset_spec(cfg.val_dataset)
        val_loader = cfg.val_dataset.data_loader
    else:  # validate on part of the train CSV, without augmentation, in order
        val = {k: v for k, v in train.items() if k != "augmentation_list"}
        val_loader = cfg.train_dataset.data_loader.model_copy(
            update={"shuffle": False, "weighted_sampler": False, "drop_last": False}
        )
    if cfg.val_fold is not None or cfg.val_groups is not None:
        values: list[Any]
        if cfg.val_fold is not None:
            column, values = "fold", [cfg.val_fold]
        else:
            cols = _csv_columns(train)
            column = "group_id" if "group_id" in cols or "group" not in cols else "group"
            values = list(cfg.val_groups or [])
        # Training never sees the validation fold nor the holdout test set (fold -1 from `split`).
        train_excluded = [*values, -1] if column == "fold" else values
        for spec, key, vals in ((train, "exclude_folds", train_excluded), (val, "folds", values)):
            if any(k in spec for k in ("folds", "exclude_folds")):
                raise ConfigError(
                    "give val_fold / val_groups or the datasets' folds / exclude_folds, not both"
                )
            spec[key] = vals
            spec["fold_column"] = column
    return train, val, val_loader


def _accepts(obj: Any, name: str) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _build_dataset(spec: dict[str, Any], where: str, seed: int) -> Any:
    from smt_tools.train._targets import instantiate, resolve_target

    cls = resolve_target(str(spec["_target_"]), where)
    spec = dict(spec)
    if "seed" not in spec and _accepts(cls, "seed"):
        spec["seed"] = seed
    if "compact_batches" not in spec and _accepts(cls, "compact_batches"):
        # the loop converts every batch with prepare_batch: compact batches cost nothing here
        spec["compact_batches"] = True
    return instantiate(spec, where)


def _loader(
    dataset: Any,
    dl: DataLoaderConfig,
    *,
    train: bool,
    seed: int,
    source: str,
) -> Any:
    import torch
    from torch.utils.data import DataLoader

    from smt_tools.train.datasets import collate_batch, warm_worker  # batches; worker handles
    from smt_tools.train.sampler import build_weighted_sampler

    gen = torch.Generator().manual_seed(seed)
    sampler: Any = None
    shuffle = dl.shuffle
    if dl.weighted_sampler and train:
        sampler = build_weighted_sampler(
            dataset,
            num_samples=dl.weighted_sampler_num_samples,
            replacement=dl.weighted_sampler_replacement,
            seed=seed,
            source=source,
            # our datasets take (row, draw): repeated draws of a row get distinct augmentations
            tag_draws=bool(getattr(dataset, "accepts_draw_tags", False)),
        )
        shuffle = False  # the sampler provides the randomness
    elif shuffle:
        # its own generator, apart from the loader's (which seeds workers): the order does not
        # depend on how often the loader drew a worker seed (persistent workers draw it once)
        from torch.utils.data import RandomSampler

        order = torch.Generator()
        order.manual_seed(seed)
        sampler = RandomSampler(dataset, generator=order)
        shuffle = False
    if dl.weighted_sampler and not train:
        warnings.warn(
            "val_dataset.data_loader.weighted_sampler is ignored: weighted sampling applies to "
            "the training loader only",
            UserWarning,
            stacklevel=2,
        )
    return DataLoader(
        dataset,
        batch_size=dl.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=dl.num_workers,
        pin_memory=dl.pin_memory,
        drop_last=dl.drop_last if train else False,
        persistent_workers=dl.persistent_workers and dl.num_workers > 0,
        generator=gen,
        worker_init_fn=warm_worker if dl.num_workers > 0 else None,
        collate_fn=collate_batch,
    )


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name} requested but no CUDA device is available; use cpu or auto"
        )
    return torch.device(name)


def run_training(
    cfg: TrainConfig,
    progress_factory: ProgressFactory | None = None,
    source: str = "config",
    *,
    resume: bool | str | Path = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train as configured; write checkpoints, metrics.csv and metrics.png into output_dir.

    resume: True continues from ``output_dir/last.pt``, a path from that checkpoint; the config
        may differ only in :data:`RESUME_FREE_KEYS` and the loaders' worker keys (else a
        one-line :class:`ConfigError` naming the keys). A checkpoint already at ``epochs``
        trains nothing (``result.finished_already``).
    on_epoch: called with each epoch's history row (plain dict) once its checkpoint is saved.
    log: called with lines worth showing before training starts (which checkpoint resumes).
    """
    from smt_tools.pipelines._preflight import preflight_train
    from smt_tools.train.checkpoint import config_hash
    from smt_tools.train.loop import fit

    # output_dir writable and no output file is an input, before any work
    preflight_train(cfg, source if Path(source).is_file() else None)
    cfg_json = cfg.model_dump(mode="json", by_alias=True)
    ckpt_path, checkpoint = _resume_checkpoint(cfg, cfg_json, resume, log)
    _seed_global(cfg)
    data = _build_data(cfg, source)
    model, loss_fn, optimizer, scheduler, n_out = _build_model(cfg, source, data.train_ds)
    scored = 2 if n_out == 1 else n_out
    names = _scored_class_names(cfg, n_out, scored, source)
    device = _device(cfg.device)
    result = fit(
        model,
        loss_fn,
        optimizer,
        data.train_loader,
        data.val_loader,
        epochs=cfg.epochs,
        n_classes=scored,
        device=device,
        output_dir=Path(cfg.output_dir),
        steps_per_epoch=cfg.steps_per_epoch,
        val_steps=cfg.val_steps,
        ignore_index=int(getattr(data.train_ds, "ignore_index", 255)),
        class_names=names,
        checkpoint_extra={"config": cfg_json, "config_hash": config_hash(resume_keys(cfg_json))},
        progress_factory=progress_factory,
        scheduler=scheduler,
        resume=checkpoint,
        on_epoch=on_epoch,
        precision=cfg.precision,
    )
    for ds in (data.train_ds, data.val_ds):
        if hasattr(ds, "close"):
            ds.close()
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    iou = {n: float(best[f"iou_{n}"]) for n in names}
    rare = _rare_class(cfg, best, names, scored, source)
    return TrainResult(
        epochs=cfg.epochs,
        best_epoch=result.best_epoch,
        best_miou=result.best_miou,
        rare_class=rare,
        rare_class_name=names[rare],
        rare_iou=iou[names[rare]],
        per_class_iou=iou,
        history=result.history,
        train_items=len(data.train_ds),
        val_items=len(data.val_ds),
        weighted_sampler=cfg.train_dataset.data_loader.weighted_sampler,
        device=str(device),
        precision=result.precision,
        loader_wait_s=result.timings.data_wait_s,
        files=result.files,
        start_epoch=result.start_epoch,
        resumed_from=ckpt_path,
        resumed_epoch=int(checkpoint["epoch"]) if checkpoint is not None else 0,
        config_record=cfg.model_dump(mode="json"),
    )


def _resume_checkpoint(
    cfg: TrainConfig,
    cfg_json: dict[str, Any],
    resume: bool | str | Path,
    log: Callable[[str], None] | None,
) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, checkpoint) a run resumes from, checked against the config; (None, None) for a
    fresh run."""
    from smt_tools.train.checkpoint import load_checkpoint

    if resume is False:
        return None, None
    ckpt_path = Path(cfg.output_dir) / "last.pt" if resume is True else Path(str(resume))
    checkpoint = load_checkpoint(ckpt_path)
    _check_resumable(checkpoint, cfg_json, ckpt_path)
    done = int(checkpoint["epoch"])
    if log is not None and done < cfg.epochs:
        log(f"Resuming {ckpt_path} after epoch {done} of {cfg.epochs}")
    return ckpt_path, checkpoint


def _seed_global(cfg: TrainConfig) -> None:
    """Torch threads, and the global torch and numpy random states from ``cfg.seed``."""
    import torch

    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))  # noqa: NPY002 - third-party transforms may use it


@dataclass
class _Data:
    """The datasets and loaders of one run."""

    train_ds: Any
    val_ds: Any
    train_loader: Any
    val_loader: Any


def _build_data(cfg: TrainConfig, source: str) -> _Data:
    """Train and validation datasets (image-level split, no shared source image unless
    allowed, neither empty) and their loaders."""
    train_spec, val_spec, val_dl = _split_specs(cfg)
    train_ds = _build_dataset(train_spec, f"{source}: train_dataset", cfg.seed)
    val_ds = _build_dataset(val_spec, f"{source}: val_dataset", cfg.seed + 1)
    shared = set(getattr(train_ds, "source_images", set())) & set(
        getattr(val_ds, "source_images", set())
    )
    if shared and not cfg.allow_shared_images:
        raise InputDataError(
            f"{source}: {len(shared)} source image(s) are in both the training and the validation "
            f"set (e.g. {sorted(shared)[0]}); split by whole images with val_fold / val_groups or "
            "separate CSVs, or set allow_shared_images: true"
        )
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise InputDataError(f"{source}: the training or validation set is empty")
    train_csv = str(train_spec.get("input_csv_path", "train_dataset"))
    train_loader = _loader(
        train_ds, cfg.train_dataset.data_loader, train=True, seed=cfg.seed, source=train_csv
    )
    val_loader = _loader(val_ds, val_dl, train=False, seed=cfg.seed + 1, source="val_dataset")
    return _Data(train_ds, val_ds, train_loader, val_loader)


def _build_model(cfg: TrainConfig, source: str, train_ds: Any) -> tuple[Any, Any, Any, Any, int]:
    """(model, loss, optimizer, scheduler or None, model output channels), in this order
    (the model's initial weights come from the torch random state seeded before)."""
    from smt_tools.train._targets import instantiate, resolve_target

    model = instantiate(cfg.model.spec(), f"{source}: model")
    in_ch = getattr(model, "in_channels", None)
    bands = int(train_ds[0]["image"].shape[0])
    if in_ch is not None and int(in_ch) != bands:
        raise ConfigError(
            f"{source}: model.in_channels is {in_ch} but the dataset yields {bands} band(s); "
            "set model.in_channels or the dataset's bands"
        )
    n_out = int(getattr(model, "n_classes", getattr(train_ds, "n_classes", 2)))
    loss_fn = instantiate(cfg.loss.spec(), f"{source}: loss")
    opt_cls = resolve_target(cfg.optimizer.target, f"{source}: optimizer")
    try:
        optimizer = opt_cls(model.parameters(), **cfg.optimizer.kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: optimizer: {str(exc).splitlines()[0]}") from None
    scheduler = None
    if cfg.scheduler is not None:
        sched_cls = resolve_target(cfg.scheduler.target, f"{source}: scheduler")
        try:
            scheduler = sched_cls(optimizer, **cfg.scheduler.kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{source}: scheduler: {str(exc).splitlines()[0]}") from None
    return model, loss_fn, optimizer, scheduler, n_out


def _scored_class_names(cfg: TrainConfig, n_out: int, scored: int, source: str) -> list[str]:
    """The configured class names (one per scored class), else background / foreground for a
    one-channel model, else "0", "1", ..."""
    names = list(cfg.class_names) if cfg.class_names else None
    if names is not None and len(names) != scored:
        raise ConfigError(
            f"{source}: class_names lists {len(names)} names for {scored} scored classes"
        )
    if names is None:
        names = ["background", "foreground"] if n_out == 1 else [str(i) for i in range(scored)]
    return names


def _rare_class(cfg: TrainConfig, best: Any, names: list[str], scored: int, source: str) -> int:
    """The configured rare class, else the class with the fewest validation pixels (present
    ones only) in the best epoch's row."""
    if cfg.rare_class is not None:
        if cfg.rare_class >= scored:
            raise ConfigError(f"{source}: rare_class {cfg.rare_class} >= {scored} classes")
        return cfg.rare_class
    support = np.array([int(best[f"pixels_{n}"]) for n in names], dtype=np.int64)
    present = np.flatnonzero(support > 0)
    return int(present[np.argmin(support[present])]) if present.size else 0
