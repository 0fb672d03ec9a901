"""Slim training module: windowed / random-crop datasets over large GeoTIFFs, a weighted
sampler from the balanced CSV, imbalance-aware losses, a small UNet, metrics and a loop.

Importing this package imports torch (install the ``train`` extra).
"""

from __future__ import annotations

from smt_tools.train import losses
from smt_tools.train.datasets import (
    CSVWindowedSegmentationDataset,
    RandomCropSegmentationDataset,
    prepare_batch,
)
from smt_tools.train.losses import (
    CrossEntropyLoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
)
from smt_tools.train.metrics import SegmentationScores, confusion_matrix, scores_from_confusion
from smt_tools.train.models import UNet, smp_model
from smt_tools.train.sampler import DrawTaggedSampler, build_weighted_sampler

__all__ = [
    "CSVWindowedSegmentationDataset",
    "CrossEntropyLoss",
    "DiceFocalLoss",
    "DiceLoss",
    "DrawTaggedSampler",
    "FocalLoss",
    "RandomCropSegmentationDataset",
    "SegmentationScores",
    "TverskyLoss",
    "UNet",
    "build_weighted_sampler",
    "confusion_matrix",
    "losses",
    "prepare_batch",
    "scores_from_confusion",
    "smp_model",
]
