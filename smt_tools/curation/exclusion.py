"""Which tiles are excluded from sampling (docs/algorithms.md §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from smt_tools.config.balanced import ExclusionConfig
    from smt_tools.tiletable import TileTable


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
