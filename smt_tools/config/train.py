"""The ``train`` command's config (top-level keys, like the documented trainer configs).

```yaml
train_dataset:                       # any dataset class path; smt_tools.train.* are built in
  _target_: smt_tools.train.CSVWindowedSegmentationDataset
  input_csv_path: demo/balanced_train.csv
  n_classes: 6
  class_values: [1, 2, 3, 4, 5, 6]   # raw mask value of each class; others -> ignore (255)
  augmentation_list:                 # albumentations transforms (``train`` extra)
    - {_target_: albumentations.HorizontalFlip, p: 0.5}
  data_loader: {batch_size: 8, shuffle: true, num_workers: 2, weighted_sampler: true}
val_dataset: {...}                   # or val_fold: k / val_groups: [...] on the train CSV
model: {_target_: smt_tools.train.UNet, in_channels: 3, n_classes: 6}
loss: {_target_: smt_tools.train.losses.DiceFocalLoss}
optimizer: {_target_: torch.optim.AdamW, lr: 0.001}
scheduler: {_target_: torch.optim.lr_scheduler.StepLR, step_size: 2}   # optional, per epoch
epochs: 3
steps_per_epoch: 50
precision: auto                      # bf16 / fp16 autocast on a CUDA GPU, fp32 on the CPU
output_dir: runs/demo
```

The older tool's dataset class paths (``pytorch_segmentation_models_trainer.dataset_loader.
dataset.CSVWindowedSegmentationDataset`` / ``RandomCropSegmentationDataset``) are mapped to
``smt_tools.train.*`` with a warning; any other ``pytorch_segmentation_models_trainer`` path is
a config error. :func:`load_train_config` also imports every ``_target_`` and checks its keys
against the constructor, so a typo fails before any data is read.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smt_tools.choices import DEFAULT_TRAIN_PRECISION, TrainPrecision
from smt_tools.config._loader import (
    MAX_INT32,
    MAX_SEED,
    MAX_SIDE,
    MAX_WORKERS,
    StrictModel,
    read_yaml,
    validate_mapping,
)
from smt_tools.config._targets import check_kwargs, check_target, resolve_target
from smt_tools.errors import ConfigError, SmtDeprecationWarning

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Target(BaseModel):
    """``_target_`` + free keyword arguments (checked against the constructor on load)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    target: str = Field(alias="_target_")

    @field_validator("target", mode="before")
    @classmethod
    def _check(cls, v: Any) -> str:
        return check_target(v)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        """``{"_target_": path, **kwargs}`` as written in YAML."""
        return {"_target_": self.target, **self.kwargs}


class DataLoaderConfig(StrictModel):
    """``torch.utils.data.DataLoader`` keys plus the weighted sampler (training loader only)."""

    batch_size: int = Field(default=8, gt=0, le=65_536)
    shuffle: bool = False
    num_workers: int = Field(
        default=0,
        ge=0,
        le=MAX_WORKERS,
        description="DataLoader reader processes; 0 = read in the main process (torch's meaning)",
    )
    pin_memory: bool = False
    drop_last: bool = False
    persistent_workers: bool = False
    weighted_sampler: bool = False
    weighted_sampler_num_samples: int | None = Field(default=None, gt=0, le=MAX_INT32)
    weighted_sampler_replacement: bool = True


class DatasetConfig(_Target):
    """A dataset: ``_target_``, its constructor keys, ``augmentation_list`` and ``data_loader``."""

    augmentation_list: list[dict[str, Any]] | None = None
    data_loader: DataLoaderConfig = Field(default_factory=DataLoaderConfig)

    @field_validator("augmentation_list")
    @classmethod
    def _check_augs(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is None:
            return v
        for i, item in enumerate(v):
            if "_target_" not in item:
                raise ValueError(
                    f"item [{i}] needs a _target_ (e.g. albumentations.HorizontalFlip)"
                )
            try:
                item["_target_"] = check_target(item["_target_"])
            except ValueError as exc:
                raise ValueError(f"item [{i}] _target_ {exc}") from None
        return v


class TrainConfig(StrictModel):
    """The whole ``train`` config file."""

    train_dataset: DatasetConfig
    val_dataset: DatasetConfig | None = None
    val_fold: int | None = Field(
        default=None,
        ge=-1,
        le=1_000,
        description="validate on rows with fold == k, train on the others",
    )
    val_groups: list[str] | None = Field(
        default=None, description="validate on these group_id values, train on the others"
    )
    model: _Target
    loss: _Target = Field(
        default_factory=lambda: _Target.model_validate(
            {"_target_": "smt_tools.train.losses.DiceFocalLoss"}
        )
    )
    optimizer: _Target = Field(
        default_factory=lambda: _Target.model_validate(
            {"_target_": "torch.optim.AdamW", "lr": 1e-3}
        )
    )
    scheduler: _Target | None = Field(
        default=None,
        description="LR scheduler built on the optimizer, stepped once per epoch "
        "(ReduceLROnPlateau on the validation loss)",
    )
    epochs: int = Field(default=1, gt=0, le=1_000_000)
    steps_per_epoch: int | None = Field(
        default=None,
        gt=0,
        le=MAX_INT32,
        description="training batches per epoch (the loader restarts)",
    )
    val_steps: int | None = Field(
        default=None, gt=0, le=MAX_INT32, description="cap on validation batches"
    )
    device: str = "auto"
    precision: TrainPrecision = Field(
        default=DEFAULT_TRAIN_PRECISION,
        description="autocast of the forward pass: auto (bf16 on a CUDA GPU that has it, else "
        "fp16 with a gradient scaler; fp32 on the CPU), bf16, fp16 or fp32",
    )
    torch_threads: int | None = Field(
        default=None,
        gt=0,
        le=MAX_WORKERS,
        description="CPU threads of torch (default: torch's own choice)",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    output_dir: Path = Path("runs/train")
    class_names: list[str] | None = None
    rare_class: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="class index reported as the rare class (default: smallest)",
    )
    allow_shared_images: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _split_rules(self) -> TrainConfig:
        if self.val_fold is not None and self.val_groups is not None:
            raise ValueError("give val_fold or val_groups, not both")
        if self.val_dataset is None and self.val_fold is None and self.val_groups is None:
            raise ValueError(
                "no validation data: add val_dataset, or val_fold / val_groups to validate on "
                "part of the train CSV (whole source images)"
            )
        return self


#: constructor keys of the built-in datasets and model whose size would allocate or hang
#: when absurd (checked in every dataset / model section, whatever its ``_target_``)
_SIZE_KEYS: dict[str, int] = {
    "crop_size": MAX_SIDE,
    "patch_size": MAX_SIDE,
    "grid_step": MAX_SIDE,
    "samples_per_epoch": MAX_INT32,
    "n_first_rows_to_read": MAX_INT32,
    "lru_cache_size": 65_536,
    "histogram_size": 65_536,
    "n_classes": 65_536,
    "in_channels": 65_535,
    "base_channels": 4_096,
    "depth": 16,
}
_EXPONENT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+\s*$")


def _finite_everywhere(value: Any, where: str) -> None:
    """Every number inside ``value`` (nested mappings / lists) must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number; got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_everywhere(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _finite_everywhere(v, f"{where}[{i}]")


def _check_size(value: Any, where: str, limit: int) -> None:
    if value is None or isinstance(value, bool):
        return
    number = float(value) if isinstance(value, str) and _EXPONENT.match(value) else value
    if not isinstance(number, int | float):
        return  # the constructor reports wrong types itself
    if not float(number).is_integer() or abs(number) > limit:
        raise ConfigError(f"{where}: must be a whole number <= {limit}; got {value!r}")


def _check_numbers(cfg: TrainConfig, source: str) -> None:
    """Constructor keyword arguments are free-form: reject NaN/inf anywhere in them, and
    absurd sizes (:data:`_SIZE_KEYS`) in the dataset and model sections, naming the key."""
    sections: list[tuple[str, _Target]] = [
        (name, spec)
        for name, spec in (
            ("train_dataset", cfg.train_dataset),
            ("val_dataset", cfg.val_dataset),
            ("model", cfg.model),
            ("loss", cfg.loss),
            ("optimizer", cfg.optimizer),
            ("scheduler", cfg.scheduler),
        )
        if spec is not None
    ]
    for name, spec in sections:
        _finite_everywhere(spec.kwargs, f"{source}: {name}")
        if isinstance(spec, DatasetConfig):
            _finite_everywhere(spec.augmentation_list or [], f"{source}: {name}.augmentation_list")
        if name in ("train_dataset", "val_dataset", "model"):
            for key, limit in _SIZE_KEYS.items():
                if key in spec.kwargs:
                    _check_size(spec.kwargs[key], f"{source}: {name}.{key}", limit)


def _check_targets(cfg: TrainConfig, source: str) -> None:
    """Import every ``_target_`` and check its keys against the constructor (one-line errors)."""

    def check(section: str, spec: _Target, skip: int = 0, extra: tuple[str, ...] = ()) -> None:
        where = f"{source}: {section}"
        obj = resolve_target(spec.target, where)
        kwargs = {k: v for k, v in spec.kwargs.items() if k not in extra}
        check_kwargs(obj, kwargs, where, skip=skip)

    for name in ("train_dataset", "val_dataset"):
        ds = getattr(cfg, name)
        if ds is None:
            continue
        check(name, ds)
        for i, aug in enumerate(ds.augmentation_list or []):
            spec = _Target.model_validate(aug)
            check(f"{name}.augmentation_list[{i}]", spec)
    check("model", cfg.model)
    check("loss", cfg.loss)
    check("optimizer", cfg.optimizer, skip=1)  # the first argument is the model's parameters
    if cfg.scheduler is not None:
        check("scheduler", cfg.scheduler, skip=1)  # the first argument is the optimizer


def load_train_config(
    path: str | Path, check_imports: bool = True, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Read and validate a train config (``--set`` ``overrides`` applied first); with
    ``check_imports`` every ``_target_`` is imported."""
    data = read_yaml(path)
    if data is None and not overrides:
        raise ConfigError(f"{path}: the file is empty; see conf/examples/ for a complete config")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = validate_mapping(data, TrainConfig, str(path), overrides)
    for w in caught:  # re-emit with the file name (older spellings already name it)
        if issubclass(w.category, SmtDeprecationWarning):
            warnings.warn(str(w.message), SmtDeprecationWarning, stacklevel=2)
        else:
            warnings.warn(f"{path}: {w.message}", UserWarning, stacklevel=2)
    _check_numbers(cfg, str(path))
    if check_imports:
        _check_targets(cfg, str(path))
    return cfg
