"""Which tiles are excluded from sampling (docs/algorithms.md §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from smt_tools.config.balanced import ExclusionConfig
    from smt_tools.tiletable import TileTable

#: The stable code of each rule of :func:`exclusion_reasons` as the outputs write it
#: (``exclusion_reason``), most important first: the order of a ';'-joined list.
REASON_CODES: dict[str, str] = {
    "no_valid_pixel": "no_valid_pixel",
    "nodata_ratio": "high_nodata",
    "mask_border_nodata": "border_nodata",
    "image_black_border": "black_border",
    "low_entropy": "low_entropy",
}
REASON_SEPARATOR = ";"
#: every ``exclusion_reason`` value, indexed by its bit mask (bit j: the j-th code of
#: :data:`REASON_CODES`); value 0 is ``""`` (an included tile)
REASON_VALUES: tuple[str, ...] = tuple(
    REASON_SEPARATOR.join(c for j, c in enumerate(REASON_CODES.values()) if m >> j & 1)
    for m in range(1 << len(REASON_CODES))
)
#: the columns :func:`exclusion_flags` adds to every output, in order
FLAG_COLUMNS: tuple[str, ...] = ("exclusion_reason", "has_low_entropy", "has_high_nodata")


def exclusion_reasons(
    has_mask_border_nodata: np.ndarray,
    has_image_black_border: np.ndarray,
    class_entropy: np.ndarray,
    nodata_ratio: np.ndarray,
    valid_pixels: np.ndarray,
    *,
    exclude_border_nodata: bool = True,
    exclude_black_border: bool = True,
    min_entropy: float | None = None,
    max_nodata_ratio: float = 1.0,
) -> dict[str, np.ndarray]:
    """Each exclusion rule separately: {reason: (n,) bool}; a tile may match several.

    Reasons: ``no_valid_pixel``, ``mask_border_nodata``, ``image_black_border``,
    ``low_entropy``, ``nodata_ratio``. All inputs are (n,) arrays: two bool flags,
    class_entropy float64 (NaN when valid = 0), nodata_ratio float64, valid_pixels int64.
    """
    mask_border = np.asarray(has_mask_border_nodata, dtype=bool)
    black = np.asarray(has_image_black_border, dtype=bool)
    entropy = np.asarray(class_entropy, dtype=np.float64)
    nodata = np.asarray(nodata_ratio, dtype=np.float64)
    valid = np.asarray(valid_pixels, dtype=np.int64)
    n = valid.shape[0]
    for name, arr in (
        ("has_mask_border_nodata", mask_border),
        ("has_image_black_border", black),
        ("class_entropy", entropy),
        ("nodata_ratio", nodata),
    ):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    none = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        low = entropy < min_entropy if min_entropy is not None else none
        high_nodata = nodata > max_nodata_ratio
    return {
        "no_valid_pixel": valid <= 0,
        "mask_border_nodata": mask_border if exclude_border_nodata else none,
        "image_black_border": black if exclude_black_border else none,
        "low_entropy": low,
        "nodata_ratio": high_nodata,
    }


def exclusion_mask(
    has_mask_border_nodata: np.ndarray,
    has_image_black_border: np.ndarray,
    class_entropy: np.ndarray,
    nodata_ratio: np.ndarray,
    valid_pixels: np.ndarray,
    *,
    exclude_border_nodata: bool = True,
    exclude_black_border: bool = True,
    min_entropy: float | None = None,
    max_nodata_ratio: float = 1.0,
) -> np.ndarray:
    """(n,) bool: True where a tile is excluded.

    ``excluded = (exclude_border_nodata and has_mask_border_nodata) or (exclude_black_border
    and has_image_black_border) or class_entropy < min_entropy or nodata_ratio >
    max_nodata_ratio or valid == 0`` (inputs as in :func:`exclusion_reasons`).
    """
    reasons = exclusion_reasons(
        has_mask_border_nodata,
        has_image_black_border,
        class_entropy,
        nodata_ratio,
        valid_pixels,
        exclude_border_nodata=exclude_border_nodata,
        exclude_black_border=exclude_black_border,
        min_entropy=min_entropy,
        max_nodata_ratio=max_nodata_ratio,
    )
    return _any(reasons, np.asarray(valid_pixels).shape[0])


def tile_exclusions(
    table: TileTable, cfg: ExclusionConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """§5 on a tile table with the rules of an ``exclusion:`` config section.

    Returns ({reason: (n,) bool}, (n,) bool excluded), rows aligned with ``table``.
    """
    f = table.frame
    reasons = exclusion_reasons(
        f["has_mask_border_nodata"].to_numpy(bool),
        f["has_image_black_border"].to_numpy(bool),
        f["class_entropy"].to_numpy(np.float64),
        f["nodata_ratio"].to_numpy(np.float64),
        table.counts.sum(axis=1),
        exclude_border_nodata=cfg.exclude_border_nodata,
        exclude_black_border=cfg.exclude_black_border,
        min_entropy=cfg.min_entropy,
        max_nodata_ratio=cfg.max_nodata_ratio,
    )
    return reasons, _any(reasons, len(table))


def _any(reasons: dict[str, np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for flags in reasons.values():
        out |= flags
    return out


def exclusion_flags(
    reasons: dict[str, np.ndarray], rows: np.ndarray | slice | None = None
) -> dict[str, Any]:
    """The columns of :data:`FLAG_COLUMNS` for ``rows`` of ``reasons`` (all rows when None).

    ``exclusion_reason``: the codes of every matching rule, ';'-joined in :data:`REASON_CODES`
    order (``""`` for an included tile), as a categorical over :data:`REASON_VALUES` (one
    byte a row, the same dictionary in every batch); ``has_low_entropy`` /
    ``has_high_nodata``: (m,) bool, the ``low_entropy`` / ``nodata_ratio`` rule matched
    (docs/algorithms.md §5).
    """
    sel = slice(None) if rows is None else rows
    bits: np.ndarray | None = None
    for j, key in enumerate(REASON_CODES):
        flag = np.asarray(reasons[key][sel], dtype=bool).astype(np.int8) << j
        bits = flag if bits is None else bits | flag
    assert bits is not None
    return {
        "exclusion_reason": pd.Categorical.from_codes(bits, categories=pd.Index(REASON_VALUES)),
        "has_low_entropy": np.asarray(reasons["low_entropy"][sel], dtype=bool),
        "has_high_nodata": np.asarray(reasons["nodata_ratio"][sel], dtype=bool),
    }


def readmit(excluded: np.ndarray, reason: pd.Series, code: str) -> tuple[np.ndarray, pd.Series]:
    """Drop the rule ``code`` from a table's exclusions (``coreset.exclude_low_entropy:
    false``): (excluded (n,) bool, exclusion_reason) with ``code`` taken out of every list
    and a tile whose only reason it was included again. ``reason`` holds ';'-joined codes
    (empty or missing: none); the work is on its distinct values, not row by row."""
    cat = reason.astype("category")
    lists = [str(v).split(REASON_SEPARATOR) for v in cat.cat.categories] + [[]]  # + missing
    kept = [REASON_SEPARATOR.join(c for c in parts if c and c != code) for parts in lists]
    values, inverse = np.unique(np.asarray(kept, dtype=object), return_inverse=True)
    codes = cat.cat.codes.to_numpy()  # -1 (missing) picks the last entry: no reason
    new = pd.Series(
        pd.Categorical.from_codes(inverse[codes], categories=pd.Index(values)),
        index=reason.index,
        name=reason.name,
    )
    freed = np.asarray([code in parts and not k for parts, k in zip(lists, kept, strict=True)])
    return np.asarray(excluded, dtype=bool) & ~freed[codes], new
