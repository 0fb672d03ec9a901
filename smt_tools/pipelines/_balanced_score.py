"""The sampler weights of build-balanced-dataset: score the included tiles with the
``sampling_method`` (§8), then boost, scale, temper and floor them (§9).

Split from :func:`smt_tools.pipelines._balanced_steps.weigh`, which adds the class and nodata
shares the weights draw. ``repeat_factor`` gathers the class counts of the included tiles in
batches (:mod:`smt_tools.pipelines._balanced_canon`), so ten million tiles need no sorted copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from smt_tools.curation.ranking import combine
from smt_tools.curation.repeat_factor import repeat_factors
from smt_tools.curation.weights import final_weights, rare_class_boost
from smt_tools.pipelines import _balanced_canon as canon_of

if TYPE_CHECKING:
    from smt_tools.config.balanced import BalancedDatasetConfig
    from smt_tools.curation.composition import CompositionResult
    from smt_tools.tiletable import TileTable

#: the note when ``repeat_factor`` runs in a mode that computes visual uniqueness
UNUSED_UNIQUENESS = (
    "sampling_method repeat_factor weighs tiles by their class counts alone; the visual "
    "uniqueness scores are written but not used (mode: masks_only skips the embeddings)"
)


class Included(Protocol):
    """What the weights need of :class:`smt_tools.pipelines._balanced_steps.Exclusion`
    (canonical order): excluded (n,) bool, the included tiles' canonical indexes and input
    rows (m,) int64, and the rare classes to boost (r,) int64."""

    @property
    def excluded(self) -> np.ndarray: ...
    @property
    def included_idx(self) -> np.ndarray: ...
    @property
    def included_rows(self) -> np.ndarray: ...
    @property
    def rare(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Scored:
    """weights: (n,) float64 sampler weights in canonical order (0 for excluded tiles);
    effective_method: the formula used; warnings: one line each; repeat_factors: class value
    -> r_c over the included tiles (``repeat_factor`` only, else empty)."""

    weights: np.ndarray
    effective_method: str
    warnings: list[str] = field(default_factory=list)
    repeat_factors: dict[int, float] = field(default_factory=dict)


def class_repeat_factors(
    cfg: BalancedDatasetConfig, table: TileTable, ex: Included
) -> tuple[np.ndarray, np.ndarray]:
    """``(r, repeat)``: r_c (C,) over the included tiles and each included tile's repeat
    factor (m,) in canonical order (docs/algorithms.md §8, "Repeat-factor sampling")."""
    w, rows = cfg.weights, ex.included_rows
    tiles_with = canon_of.tiles_with_class(table, rows, w.repeat_min_pixels)
    r = repeat_factors(tiles_with, rows.size, w.repeat_threshold)
    return r, canon_of.tile_repeat_factor(table, rows, r, w.repeat_min_pixels)


def sampler_weights(
    cfg: BalancedDatasetConfig,
    table: TileTable,
    ex: Included,
    clustering: CompositionResult | None,
    uniq: np.ndarray | None,
) -> Scored:
    """§8-§9: the score of each included tile, the rare-class boost, the scale to max 1,
    ``weights.temperature`` and ``weights.weight_floor``. ``table``: the input-order tiles;
    ``clustering``: the included tiles' composition (None: no such signal); ``uniq``: (n,)
    uniqueness in canonical order (None: no such signal)."""
    repeat, factors, notes = None, {}, []
    if cfg.sampling_method == "repeat_factor":
        r, repeat = class_repeat_factors(cfg, table, ex)
        factors = {int(c): float(v) for c, v in zip(table.class_values, r, strict=True)}
        if uniq is not None:
            notes.append(UNUSED_UNIQUENESS)
    combined = combine(
        cfg.sampling_method,
        clustering.freq_cluster_weight if clustering is not None else None,
        uniq[ex.included_idx] if uniq is not None else None,
        repeat=repeat,
    )
    boost = (
        rare_class_boost(
            canon_of.proportions_of(table, ex.included_rows),
            table.class_values,
            ex.rare,
            cfg.weights.rare_class_boost,
        )
        if ex.rare.size
        else None
    )
    weights = final_weights(
        combined.score,
        ~ex.excluded,
        boost=boost,
        weight_floor=cfg.weights.weight_floor,
        temperature=cfg.weights.temperature,
    )
    warnings = ([combined.fallback] if combined.fallback else []) + notes
    return Scored(weights, combined.effective_method, warnings, factors)
