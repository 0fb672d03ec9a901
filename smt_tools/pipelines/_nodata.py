"""The nodata rule on the build side: which nodata class a run uses, and the advice it gives.

A class table must never silently drop a class. The mask value treated as nodata is not a
class: its pixels are left out of every class share. So build-balanced-dataset reports how
much of the window pixels that is, warns (with the exact fix) when it is large or when one
exclusion rule removes almost every tile, and the "all tiles excluded" error names the fix
that leads to a right class table: make the value a class again (re-ingest with
``--nodata-class none``, or ``exclusion.nodata_class: null`` for patch records), not merely
``exclude_border_nodata: false`` (which keeps the value out of the class table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from smt_tools.config.balanced import ExclusionConfig, InputConfig

InputKind = Literal["tiles", "catalog", "patch_records"]

#: warn when the nodata class covers more than this share of the input's window pixels
NODATA_WARN_SHARE = 0.5
#: warn when one exclusion rule alone removes at least this share of the tiles
REASON_WARN_SHARE = 0.9


def input_kind(cfg: InputConfig) -> InputKind:
    """``tiles`` (a Parquet tile table), ``catalog`` (PostGIS) or ``patch_records`` (scanned)."""
    if cfg.patch_records is not None or cfg.patch_records_csv is not None:
        return "patch_records"
    parquet = cfg.tiles is not None or (cfg.catalog is not None and cfg.catalog.path is not None)
    return "tiles" if parquet else "catalog"


def _name(value: int | None) -> str:
    return "none" if value is None else str(value)


def nodata_label(nodata_class: int | None) -> str:
    """Row label of the nodata row of the class table (clearly not a class)."""
    return f"nodata ({nodata_class})" if nodata_class is not None else "nodata (outside raster)"


def class_fix(kind: InputKind, value: int) -> str:
    """How to make mask value ``value`` a class again, for this kind of input."""
    if kind == "patch_records":
        return "set `exclusion.nodata_class: null` (or -1) so every mask value is a class"
    where = "a new tile table (--catalog NEW.parquet)" if kind == "tiles" else "a new catalog"
    return (
        f"re-ingest into {where} with `pytorch-smt-tools catalog ingest PAIRS.csv "
        f"--nodata-class none` so every mask value is a class"
    )


def nodata_mismatch(
    exclusion: ExclusionConfig, table_nodata: int | None, kind: InputKind
) -> str | None:
    """The error when the config names a nodata class other than the tiles were ingested with
    (their statistics were measured with that class; only a re-ingest changes them)."""
    if kind == "patch_records" or not exclusion.nodata_given:
        return None
    wanted = exclusion.nodata_class
    if wanted == table_nodata:
        return None
    where = "a new tile table" if kind == "tiles" else "a new catalog"
    return (
        f"exclusion.nodata_class is {_name(wanted)} but the tiles were ingested with nodata "
        f"class {_name(table_nodata)}, and their statistics cannot change without a re-ingest: "
        f"re-ingest into {where} with `--nodata-class {_name(wanted)}`, or remove "
        f"exclusion.nodata_class from the config to use the tiles' {_name(table_nodata)}"
    )


#: exclusion reasons that follow from the nodata class
_NODATA_REASONS = ("mask_border_nodata", "no_valid_pixel", "nodata_ratio")


def _missing_data_advice(reason: str, exclusion: ExclusionConfig) -> str:
    """What to do about ``reason`` when the nodata class really is missing data."""
    if reason == "mask_border_nodata":
        return (
            "set exclusion.exclude_border_nodata: false to keep tiles with some nodata at the "
            "border"
        )
    if reason == "nodata_ratio":
        return f"raise exclusion.max_nodata_ratio (now {exclusion.max_nodata_ratio:g})"
    return "those tiles hold no class pixel at all"


def _other_advice(reason: str, kind: InputKind, exclusion: ExclusionConfig) -> str:
    """What to do about tiles removed by a reason that is not about the nodata class."""
    if reason == "mask_border_nodata":  # nodata class none: only padding is nodata
        return (
            "their windows run past the raster edge (padded); ingest with `--edge shift` "
            "or `--edge drop`, or set exclusion.exclude_border_nodata: false"
        )
    if reason == "no_valid_pixel":
        return "their windows lie outside the raster"
    if reason == "nodata_ratio":
        return f"raise exclusion.max_nodata_ratio (now {exclusion.max_nodata_ratio:g})"
    if reason == "low_entropy":
        return f"lower or remove exclusion.min_entropy (now {exclusion.min_entropy})"
    if reason == "image_black_border":
        tol = (
            f"raise exclusion.black_border_tolerance (now {exclusion.black_border_tolerance})"
            if kind == "patch_records"
            else "re-ingest with a lower `--black-tolerance`"
        )
        return (
            "their image border has pixels that are black in every band: if those are real "
            f"image content, {tol} or set exclusion.exclude_black_border: false"
        )
    return "relax the exclusion rules"


def _advice(
    ranked: list[tuple[str, int]],
    kind: InputKind,
    nodata: int | None,
    exclusion: ExclusionConfig,
    nodata_share: float | None = None,
) -> str:
    """The fixes for the reasons in ``ranked`` ((reason, tiles), most first), one line.

    When the nodata class is behind a reason, the first fix makes it a class again (the only
    fix that gives a right class table when the value is, e.g., background); switching the
    rule off comes second, for the case where the value really is missing data.
    """
    parts: list[str] = []
    nodata_related = [(k, v) for k, v in ranked if nodata is not None and k in _NODATA_REASONS]
    if nodata is not None and nodata_related:
        share = f", {nodata_share:.1%} of window pixels" if nodata_share is not None else ""
        only = "; ".join(f"{k}: {_missing_data_advice(k, exclusion)}" for k, _ in nodata_related)
        parts.append(
            f"mask value {nodata} is the nodata class{share}: if {nodata} is a real class "
            f"(e.g. background), {class_fix(kind, nodata)}; only if {nodata} really is "
            f"missing data: {only}"
        )
    parts += [
        f"{k}: {_other_advice(k, kind, exclusion)}"
        for k, v in ranked
        if (k, v) not in nodata_related
    ]
    return ". ".join(parts)


def _by_count(reasons: Mapping[str, np.ndarray]) -> list[tuple[str, int]]:
    counts = [(k, int(np.count_nonzero(v))) for k, v in reasons.items()]
    return sorted((kv for kv in counts if kv[1]), key=lambda kv: -kv[1])


def all_excluded_message(
    n: int,
    reasons: Mapping[str, np.ndarray],
    kind: InputKind,
    nodata: int | None,
    exclusion: ExclusionConfig,
    nodata_share: float | None = None,
) -> str:
    """One line for :class:`~smt_tools.errors.EmptySelectionError`: tiles per reason, then
    the fixes (the nodata class first, when it is behind a reason)."""
    ranked = _by_count(reasons)
    counts = ", ".join(f"{k}: {v}" for k, v in ranked)
    return (
        f"all {n} tiles are excluded ({counts}). "
        f"{_advice(ranked, kind, nodata, exclusion, nodata_share)}"
    )


def nodata_warnings(
    n: int,
    reasons: Mapping[str, np.ndarray],
    kind: InputKind,
    nodata: int | None,
    nodata_share: float,
    exclusion: ExclusionConfig,
) -> list[str]:
    """Warnings (one line each) when nodata covers more than :data:`NODATA_WARN_SHARE` of the
    window pixels, or one exclusion rule removes at least :data:`REASON_WARN_SHARE` of ``n``
    tiles (not all: that is an error)."""
    out: list[str] = []
    if nodata is not None and nodata_share > NODATA_WARN_SHARE:
        out.append(
            f"{nodata_share:.1%} of window pixels are mask value {nodata}, treated as nodata "
            f"(not a class: left out of the class table); if {nodata} is a real class "
            f"(e.g. background), {class_fix(kind, nodata)}"
        )
    said_fix = bool(out)
    for reason, count in _by_count(reasons):
        if not (n and count < n and count >= REASON_WARN_SHARE * n):
            continue
        head = f"{reason} excludes {count} of {n} tiles ({count / n:.0%})"
        if said_fix and reason in _NODATA_REASONS:
            out.append(
                f"{head}; if {nodata} is a real class, the fix above applies; only if "
                f"{nodata} really is missing data: {_missing_data_advice(reason, exclusion)}"
            )
        else:
            out.append(f"{head}. {_advice([(reason, count)], kind, nodata, exclusion)}")
    return out
