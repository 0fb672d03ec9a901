"""select-coreset with ``method: hybrid``: the inputs of each step, then
:func:`smt_tools.coreset.hybrid.select_hybrid` (docs/algorithms.md §10, "Hybrid selection").

Vector steps get the share of each tile their map layer covers
(:mod:`smt_tools.pipelines._coreset_vector`); embedding steps read the embedding cache (or the
rows the Python API was given) for the tiles that hold their classes.
"""

from __future__ import annotations

import numpy as np

from smt_tools.config.coreset import CoresetConfig
from smt_tools.coreset.hybrid import HybridStepSpec, select_hybrid
from smt_tools.coreset.select import CoresetParams, CoresetSelection
from smt_tools.errors import ConfigError, InputDataError
from smt_tools.pipelines._coreset_input import CoresetInput, selection_errors
from smt_tools.pipelines._coreset_vector import vector_step_shares
from smt_tools.tiletable import entropy_from_counts

#: config key of the steps, in messages
STEPS_KEY = "coreset.hybrid.steps"


def hybrid_specs(cfg: CoresetConfig) -> list[HybridStepSpec]:
    """The steps of ``cfg.hybrid`` as the selector takes them."""
    assert cfg.hybrid is not None
    return [
        HybridStepSpec(
            name=s.label,
            kind=s.type,
            share=s.share,
            method=s.method,
            classes=tuple(s.classes or ()),
            min_share=s.min_share or 0.0,
        )
        for s in cfg.hybrid.steps
    ]


def _class_warnings(cfg: CoresetConfig, class_values: np.ndarray) -> list[str]:
    """One line per embedding step class absent from the input (a warning, not an error: one
    class list serves several regional subsets)."""
    assert cfg.hybrid is not None
    present = {int(v) for v in class_values}
    notes = []
    for i, step in enumerate(cfg.hybrid.steps):
        absent = [c for c in step.classes or () if c not in present]
        if absent:
            notes.append(
                f"{STEPS_KEY}[{i}].classes: class value(s) {', '.join(map(str, absent))} have "
                f"no pixel in the input; the step {step.label!r} looks for the others"
            )
    return notes


def _embeddings(
    cfg: CoresetConfig, data: CoresetInput, eligible: np.ndarray, specs: list[HybridStepSpec]
) -> np.ndarray | None:
    """(n, D) embeddings from the cache when a step needs them (NaN rows where missing); the
    included tiles of an embedding step's classes must all have one."""
    from smt_tools.coreset.hybrid import class_pool

    if not any(s.kind == "embedding" for s in specs):
        return None
    needed = np.zeros(len(data.frame), dtype=bool)
    for spec in specs:
        if spec.kind == "embedding":
            needed |= class_pool(spec, data.counts, data.class_values)
    needed &= eligible
    if cfg.parquet_path is None:
        raise ConfigError(
            f"{STEPS_KEY}: an embedding step needs tile embeddings: set coreset.parquet_path to "
            "the embedding cache (fill it with `pytorch-smt-tools embed CONFIG`)"
        )
    from smt_tools.embeddings.cache import cache_files, read_embeddings

    if not cache_files(cfg.parquet_path):
        raise InputDataError(
            f"{STEPS_KEY}: there is no embedding cache at {cfg.parquet_path}; compute it with "
            "`pytorch-smt-tools embed CONFIG`"
        )
    ids = data.frame["tile_id"].to_numpy(dtype=np.int64)
    emb, found = read_embeddings(cfg.parquet_path, ids, model_id=cfg.model_id)
    missing = int((needed & ~found).sum())
    if missing:
        raise InputDataError(
            f"{missing} of {int(needed.sum())} included tiles of the embedding steps' classes "
            f"have no embedding in {cfg.parquet_path}; compute them with "
            "`pytorch-smt-tools embed CONFIG`"
        )
    return emb


def select_hybrid_run(
    cfg: CoresetConfig,
    data: CoresetInput,
    eligible: np.ndarray,
    params: CoresetParams,
    embeddings: np.ndarray | None = None,
) -> CoresetSelection:
    """The hybrid selection of ``data`` (``selection.step``: the step of each tile;
    ``info["warnings"]``: lines for the summary). ``eligible`` (n,) bool: the candidates;
    ``params``: budget and embedding method settings; ``embeddings`` (n, D) row-aligned with
    ``data`` replace the embedding cache (the Python API)."""
    assert cfg.hybrid is not None
    specs = hybrid_specs(cfg)
    warnings = _class_warnings(cfg, data.class_values)
    shares: dict[str, np.ndarray] = {}
    for i, step in enumerate(cfg.hybrid.steps):
        if step.type == "vector":
            key = f"{STEPS_KEY}[{i}]"
            shares[step.label], notes = vector_step_shares(
                data.frame, step, key, data.store, eligible
            )
            warnings += notes
    emb = embeddings if embeddings is not None else _embeddings(cfg, data, eligible, specs)
    with selection_errors(data.source):
        sel = select_hybrid(
            specs,
            params,
            tile_ids=data.frame["tile_id"].to_numpy(dtype=np.int64),
            eligible=eligible,
            counts=data.counts,
            class_values=data.class_values,
            class_entropy=entropy_from_counts(data.counts),
            vector_shares=shares,
            embeddings=emb,
        )
    sel.info["warnings"] = warnings
    return sel
