"""WeightedRandomSampler from the balanced CSV's ``sampler_weight`` column (training loader only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.errors import ConfigError, InputDataError

if TYPE_CHECKING:
    from torch.utils.data import WeightedRandomSampler


class DrawTaggedSampler:
    """Yields ``(row, draw)`` for each draw of a weighted sampler, ``draw`` being its position
    in the epoch, so a dataset of smt_tools.train gives every draw of a row its own
    augmentation (a rare tile drawn five times is not five identical copies). Deterministic:
    the same sampler seed and epoch give the same pairs with any ``num_workers``."""

    def __init__(self, sampler: WeightedRandomSampler) -> None:
        self.sampler = sampler

    @property
    def num_samples(self) -> int:
        return int(self.sampler.num_samples)

    @property
    def weights(self) -> Any:
        return self.sampler.weights

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for draw, row in enumerate(self.sampler):
            yield int(row), draw

    def __len__(self) -> int:
        return len(self.sampler)


def sampler_weights(frame: pd.DataFrame, source: str, column: str = "sampler_weight") -> np.ndarray:
    """Validated weights (n,) float64 from ``frame[column]``; one-line errors naming ``source``."""
    if column not in frame.columns:
        raise InputDataError(
            f"{source}: weighted_sampler: true needs a '{column}' column; build the CSV with "
            "`pytorch-smt-tools build-balanced-dataset` or set data_loader.weighted_sampler: false"
        )
    w = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"{source}: {column} must be a finite number >= 0; row {row} has "
            f"{frame[column].iloc[row]!r}"
        )
    if w.sum() <= 0:
        raise InputDataError(f"{source}: every {column} is 0; nothing can be sampled")
    return w


def _refuse(obj: Any, source: str, why: str) -> ConfigError:
    return ConfigError(
        f"{source}: weighted_sampler cannot weight a {type(obj).__name__} ({why}); pass a "
        "DataFrame with a sampler_weight column, a dataset with a .frame of one row per item "
        "(CSVWindowedSegmentationDataset over the balanced CSV) or a 1-D array of weights"
    )


def _weights_of(obj: Any, source: str, column: str) -> np.ndarray:
    """(n,) float64 weights of a DataFrame, a dataset's ``.frame`` or a 1-D numeric array.

    Decides from the type alone: never reads a dataset item (``np.asarray`` on a dataset would
    read every item, and a random-crop dataset has no end)."""
    if isinstance(obj, pd.DataFrame):
        return sampler_weights(obj, source, column)
    frame = getattr(obj, "frame", None)
    if frame is not None:
        if not isinstance(frame, pd.DataFrame):
            raise _refuse(obj, source, f"its .frame is a {type(frame).__name__}, not a DataFrame")
        mismatch = None
        n_items = len(obj) if hasattr(obj, "__len__") else len(frame)
        if getattr(obj, "items_are_rows", True) is False:  # random crops: virtual items
            mismatch = f"{n_items} items from {len(frame)} rows (random crops, not rows)"
        elif n_items != len(frame):
            mismatch = f"{n_items} items from {len(frame)} rows"
        if mismatch is not None:
            raise InputDataError(
                f"{source}: weighted_sampler draws one item per CSV row by {column}, but "
                f"{type(obj).__name__} has {mismatch}; use CSVWindowedSegmentationDataset for "
                "the balanced CSV (random crops choose scenes themselves: class_balanced_sampling)"
            )
        return sampler_weights(frame, source, column)
    values: Any = obj
    if isinstance(obj, pd.Series):
        values = obj.to_numpy()
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        values = obj.detach().cpu().numpy()  # a torch.Tensor of weights
    elif isinstance(obj, list | tuple):
        bad = next((v for v in obj if not isinstance(v, int | float | np.number)), None)
        if bad is not None:
            raise _refuse(obj, source, f"it holds a {type(bad).__name__}, not numbers")
        values = np.asarray(obj, dtype=np.float64)
    if not isinstance(values, np.ndarray):
        raise _refuse(obj, source, "not a DataFrame, a dataset with .frame, or weights")
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        raise _refuse(
            obj,
            source,
            f"an array of shape {values.shape} and dtype {values.dtype}, not 1-D numbers",
        )
    return sampler_weights(pd.DataFrame({column: values.astype(np.float64)}), source, column)


def build_weighted_sampler(
    dataset_or_weights: Any,
    num_samples: int | None = None,
    replacement: bool = True,
    seed: int | None = None,
    source: str = "train_dataset",
    column: str = "sampler_weight",
    tag_draws: bool = False,
) -> WeightedRandomSampler | DrawTaggedSampler:
    """A ``torch.utils.data.WeightedRandomSampler`` over the rows of a dataset.

    dataset_or_weights: a dataset with a ``frame`` DataFrame holding ``column`` (one row per
        item, e.g. :class:`~smt_tools.train.CSVWindowedSegmentationDataset`), a DataFrame, or
        1-D numeric weights (n,) (array, Series, tensor, list). Anything else (a random-crop
        dataset, a dataset without ``.frame``, a list of dicts) is a one-line
        :class:`~smt_tools.errors.ConfigError` / :class:`~smt_tools.errors.InputDataError`,
        raised before any item is read.
    num_samples: draws per epoch (default: the number of rows).
    replacement: draw with replacement (default True; False needs num_samples <= rows with w > 0).
    seed: seeds the sampler's own generator (same seed, same draws).
    tag_draws: wrap it in :class:`DrawTaggedSampler` (indices become ``(row, draw)``; for the
        datasets of smt_tools.train, which the train command uses it with).
    """
    import torch
    from torch.utils.data import WeightedRandomSampler

    w = _weights_of(dataset_or_weights, source, column)
    n = len(w) if num_samples is None else int(num_samples)
    if n < 1:
        raise InputDataError(f"{source}: weighted_sampler_num_samples must be >= 1; got {n}")
    if not replacement and n > int((w > 0).sum()):
        raise InputDataError(
            f"{source}: weighted_sampler_num_samples={n} without replacement exceeds the "
            f"{int((w > 0).sum())} rows with a positive weight; lower it or set "
            "weighted_sampler_replacement: true"
        )
    gen = None
    if seed is not None:
        gen = torch.Generator()
        gen.manual_seed(int(seed))
    sampler = WeightedRandomSampler(
        [float(x) for x in w],
        num_samples=n,
        replacement=replacement,
        generator=gen,
    )
    return DrawTaggedSampler(sampler) if tag_draws else sampler
