"""Leakage-safe splits: group / stratified-group k-fold, spatial buffer, leakage audit.

Pure modules (arrays, DataFrames and shapely geometries in and out); see ALGORITHMS.md §8.
"""

from __future__ import annotations

from smt_tools.splits.audit import CHECKS, Finding, LeakageAudit, audit_splits, crop_level_smell
from smt_tools.splits.buffer import (
    TEST_FOLD,
    buffer_exclusions,
    close_pairs,
    exclusions_from_pairs,
    metric_crs,
    metric_footprints,
)
from smt_tools.splits.kfold import (
    FoldReport,
    GroupKFoldSplitter,
    StratifiedGroupKFoldSplitter,
    assign_folds,
    encode_groups,
    fold_report,
    holdout_mask,
)

__all__ = [
    "CHECKS",
    "TEST_FOLD",
    "Finding",
    "FoldReport",
    "GroupKFoldSplitter",
    "LeakageAudit",
    "StratifiedGroupKFoldSplitter",
    "assign_folds",
    "audit_splits",
    "buffer_exclusions",
    "close_pairs",
    "crop_level_smell",
    "encode_groups",
    "exclusions_from_pairs",
    "fold_report",
    "holdout_mask",
    "metric_crs",
    "metric_footprints",
]
