"""Leakage-safe splits: group / stratified-group k-fold, spatial buffer, leakage audit.

Pure modules (arrays, DataFrames and shapely geometries in and out); see docs/algorithms.md §11-§12.
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
    pixel_space_exclusions,
)
from smt_tools.splits.distance import (
    PLANAR_SCALE_TOLERANCE,
    DistanceMethod,
    TileFootprints,
    distance_method,
    measure_pairs,
    overlap_areas,
    tile_footprints,
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
    "PLANAR_SCALE_TOLERANCE",
    "TEST_FOLD",
    "DistanceMethod",
    "Finding",
    "FoldReport",
    "GroupKFoldSplitter",
    "LeakageAudit",
    "StratifiedGroupKFoldSplitter",
    "TileFootprints",
    "assign_folds",
    "audit_splits",
    "buffer_exclusions",
    "close_pairs",
    "crop_level_smell",
    "distance_method",
    "encode_groups",
    "exclusions_from_pairs",
    "fold_report",
    "holdout_mask",
    "measure_pairs",
    "metric_crs",
    "metric_footprints",
    "overlap_areas",
    "pixel_space_exclusions",
    "tile_footprints",
]
