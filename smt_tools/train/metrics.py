"""Segmentation metrics from a confusion matrix; ignored pixels never count.

``confusion[t, p]`` = number of valid pixels of true class t predicted as p, (C, C) int64.
Per-class IoU = TP / (TP + FP + FN) (NaN when the class is absent from both truth and
prediction); macro mIoU = mean of the defined per-class IoUs; micro IoU = ΣTP / Σ(TP + FP + FN)
over classes; pixel accuracy = ΣTP / Σ confusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Confusion matrix of hard predictions (N, H, W) against targets (N, H, W); (C, C) int64.

    Target pixels equal to ``ignore_index`` (or outside [0, C)) are excluded.
    """
    import torch

    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    valid = (t >= 0) & (t < n_classes)
    if ignore_index is not None:
        valid &= t != ignore_index
    idx = t[valid] * n_classes + p[valid].clamp(0, n_classes - 1)
    cm = torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return np.asarray(cm.cpu().numpy(), dtype=np.int64)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one confusion matrix. ``iou``: (C,) float64, NaN for undefined classes."""

    iou: np.ndarray
    miou: float
    micro_iou: float
    pixel_accuracy: float
    support: np.ndarray  # (C,) int64 true pixels per class


def scores_from_confusion(confusion: np.ndarray) -> SegmentationScores:
    """Per-class IoU, macro mIoU, micro IoU and pixel accuracy of a (C, C) confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be square (C, C); got shape {cm.shape}")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)
    defined = ~np.isnan(iou)
    miou = float(iou[defined].mean()) if defined.any() else float("nan")
    total_denom = denom.sum()
    micro = float(tp.sum() / total_denom) if total_denom > 0 else float("nan")
    total = cm.sum()
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(
        iou=iou,
        miou=miou,
        micro_iou=micro,
        pixel_accuracy=acc,
        support=np.asarray(cm.sum(axis=1), dtype=np.int64),
    )
