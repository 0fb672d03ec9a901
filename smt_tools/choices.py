"""Every closed list of choices, declared once: the config models, the CLI options and the
library functions all use these (a ``Literal`` type, the tuple of its values, the default).

This module sits at the bottom of the house with :mod:`smt_tools.errors`: it imports nothing
from ``smt_tools``. The order of the values is the order users see them in (``config init``
comments, ``--help``, error messages), so keep it when adding one.

It also holds the one rule that ties ``balanced_dataset.mode`` to ``sampling_method``
(:func:`mode_signals`, :func:`resolve_sampling_method`; docs/algorithms.md §8).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

# --- build-balanced-dataset ---------------------------------------------------------------

Mode = Literal["masks_only", "embeddings", "embeddings_only"]
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "masks_only"

SamplingMethod = Literal[
    "rank_max",
    "rank_multiply",
    "rank_add",
    "multiplicative",
    "composition_only",
    "uniqueness_only",
    "repeat_factor",
]
SAMPLING_METHODS: tuple[SamplingMethod, ...] = get_args(SamplingMethod)
DEFAULT_SAMPLING_METHOD: SamplingMethod = "rank_max"
#: the methods that combine the composition and the uniqueness signal
TWO_SIGNAL_METHODS: frozenset[SamplingMethod] = frozenset(
    {"rank_max", "rank_multiply", "rank_add", "multiplicative"}
)
#: the methods scored from the class counts alone (no composition, no uniqueness signal):
#: valid in every mode (docs/algorithms.md §8, "Repeat-factor sampling")
COUNT_METHODS: frozenset[SamplingMethod] = frozenset({"repeat_factor"})

KSelection = Literal["elbow", "silhouette", "fixed"]
K_SELECTIONS: tuple[KSelection, ...] = get_args(KSelection)
DEFAULT_K_SELECTION: KSelection = "elbow"

#: ``uniqueness.backend``; ``auto`` is resolved by
#: :func:`smt_tools.curation.uniqueness.resolve_backend` (torch on a GPU, else hnsw / faiss /
#: sklearn, the first one installed)
KnnBackend = Literal["auto", "torch", "hnsw", "faiss", "sklearn"]
KNN_BACKENDS: tuple[KnnBackend, ...] = get_args(KnnBackend)
DEFAULT_KNN_BACKEND: KnnBackend = "auto"
#: ``uniqueness.precision``: the torch backend's matmul on a GPU (tf32/bf16 candidates are
#: re-ranked in fp32; the CPU always computes in fp32)
KnnPrecision = Literal["fp32", "tf32", "bf16"]
KNN_PRECISIONS: tuple[KnnPrecision, ...] = get_args(KnnPrecision)
DEFAULT_KNN_PRECISION: KnnPrecision = "fp32"
#: ``check-leakage --knn-backend``: the same backends, the exact ones (sklearn the default)
#: listed first
AuditKnnBackend = Literal["sklearn", "faiss", "torch", "hnsw", "auto"]
DEFAULT_AUDIT_KNN_BACKEND: AuditKnnBackend = "sklearn"

# --- select-coreset -----------------------------------------------------------------------

#: ``hybrid`` runs the steps of ``coreset.hybrid.steps`` one after another (docs/algorithms.md §10)
CoresetMethod = Literal["lc", "cb", "fa", "fd", "lc_fd", "fa_cb", "kcenter", "random", "hybrid"]
CORESET_METHODS: tuple[CoresetMethod, ...] = get_args(CoresetMethod)
DEFAULT_CORESET_METHOD: CoresetMethod = "cb"
#: methods that need an embedding per candidate tile
EMBEDDING_METHODS: frozenset[str] = frozenset({"fa", "fd", "lc_fd", "fa_cb", "kcenter"})
#: the kinds of step of a hybrid selection, and the methods its embedding step may run
HybridStepType = Literal["vector", "embedding", "entropy"]
HYBRID_STEP_TYPES: tuple[HybridStepType, ...] = get_args(HybridStepType)
HybridEmbeddingMethod = Literal["fd", "kcenter", "fa"]
HYBRID_EMBEDDING_METHODS: tuple[HybridEmbeddingMethod, ...] = get_args(HybridEmbeddingMethod)
#: methods with a feature space that the spatial block can be appended to
SPATIAL_METHODS: frozenset[str] = frozenset({"fd", "lc_fd", "kcenter"})

BudgetMode = Literal["fraction", "count"]
BUDGET_MODES: tuple[BudgetMode, ...] = get_args(BudgetMode)
DEFAULT_BUDGET_MODE: BudgetMode = "fraction"

WeightFormula = Literal["sqrt_inverse_freq", "inverse_freq"]
WEIGHT_FORMULAS: tuple[WeightFormula, ...] = get_args(WeightFormula)
DEFAULT_WEIGHT_FORMULA: WeightFormula = "sqrt_inverse_freq"

#: ``coreset.device``; ``auto`` is resolved to one of :data:`Device` before selection
CoresetDevice = Literal["cpu", "cuda", "auto"]
DEFAULT_CORESET_DEVICE: CoresetDevice = "cpu"
Device = Literal["cpu", "cuda"]

# --- train --------------------------------------------------------------------------------

#: ``precision`` of the train loop; ``auto`` is resolved by
#: :func:`smt_tools.train.precision.resolve_precision` (bf16 on a CUDA GPU that has it, else
#: fp16 with a gradient scaler; fp32 on the CPU)
TrainPrecision = Literal["auto", "bf16", "fp16", "fp32"]
TRAIN_PRECISIONS: tuple[TrainPrecision, ...] = get_args(TrainPrecision)
DEFAULT_TRAIN_PRECISION: TrainPrecision = "auto"

# --- split, catalog ingest, map outputs ---------------------------------------------------

#: ``spatial_blocks``: square blocks of ``split.block_size_m`` are the groups (docs/algorithms.md §11)
SplitStrategy = Literal["group", "stratified_group", "spatial_blocks"]
SPLIT_STRATEGIES: tuple[SplitStrategy, ...] = get_args(SplitStrategy)
DEFAULT_SPLIT_STRATEGY: SplitStrategy = "stratified_group"

EdgePolicy = Literal["drop", "shift", "pad"]
EDGE_POLICIES: tuple[EdgePolicy, ...] = get_args(EdgePolicy)
DEFAULT_EDGE_POLICY: EdgePolicy = "drop"

VectorFormat = Literal["geojson", "gpkg", "fgb"]
VECTOR_FORMATS: tuple[VectorFormat, ...] = get_args(VectorFormat)


# --- the mode x sampling_method rule (docs/algorithms.md §8) ------------------------------


class Signals(NamedTuple):
    """Which of the two scores a run computes."""

    composition: bool
    uniqueness: bool


def mode_signals(mode: str) -> Signals:
    """``masks_only``: composition only; ``embeddings``: both; ``embeddings_only``: uniqueness
    only."""
    return Signals(composition=mode != "embeddings_only", uniqueness=mode != "masks_only")


def resolve_sampling_method(method: str, signals: Signals) -> tuple[SamplingMethod, str | None]:
    """The method actually used with the signals present, and a one-line warning when a
    two-signal method falls back to the one signal there is (else None).

    A one-signal method whose signal is absent (``uniqueness_only`` in ``masks_only``,
    ``composition_only`` in ``embeddings_only``) raises ``ValueError`` with the fix; an unknown
    ``method`` too. ``repeat_factor`` uses the class counts alone: valid in every mode.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(
            f"sampling_method must be one of {', '.join(SAMPLING_METHODS)}; got {method!r}"
        )
    if method in COUNT_METHODS:
        return method, None
    if method == "uniqueness_only" and not signals.uniqueness:
        raise ValueError(
            "sampling_method uniqueness_only needs visual uniqueness; use mode: embeddings or "
            "embeddings_only, or another sampling_method"
        )
    if method == "composition_only" and not signals.composition:
        raise ValueError(
            "sampling_method composition_only needs the composition signal; use mode: "
            "masks_only or embeddings"
        )
    if method in TWO_SIGNAL_METHODS and not (signals.composition and signals.uniqueness):
        only: SamplingMethod
        if signals.composition:
            why = "mode masks_only has no uniqueness signal"
            signal, only = "composition", "composition_only"
        else:
            why = "mode embeddings_only has no composition signal"
            signal, only = "uniqueness", "uniqueness_only"
        warning = f"sampling_method {method}: {why}; weights use the {signal} rank alone ({only})"
        return only, warning
    return method, None
