"""Windows of image/mask pairs (``input.patch_records`` / ``patch_records_csv``, and a user's
own table of windows): read the records, plan the scan (one read per window, cached handles,
parallel processes), run it; and the URL of the PostgreSQL input block.

Below :mod:`smt_tools.pipelines._inputs` (which dispatches on the input's source) and
:mod:`smt_tools.pipelines._user_table` (which reads a user's table and scans its windows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pandas as pd

from smt_tools.config._loader import expand_env
from smt_tools.config.balanced import ExclusionConfig, InputConfig, PatchRecord
from smt_tools.errors import ConfigError, InputDataError
from smt_tools.raster.paths import is_gdal_path
from smt_tools.raster.scan import SourceRecord
from smt_tools.tiletable import TileTable, canonical_path

PATCH_COLUMNS: tuple[str, ...] = ("image_path", "mask_path", "row_off", "col_off", "patch_size")


def _records_frame(records: Sequence[PatchRecord]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_path": [r.image_path for r in records],
            "mask_path": [r.mask_path for r in records],
            "row_off": np.array([r.row_off for r in records], np.int64),
            "col_off": np.array([r.col_off for r in records], np.int64),
            "patch_size": np.array([r.patch_size for r in records], np.int64),
        }
    )


def read_patch_records_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a patch-records CSV (columns image_path, mask_path, row_off, col_off, patch_size).

    Relative paths are resolved against the CSV's folder; GDAL paths (``s3://``,
    ``https://``, ``/vsicurl/`` …) are kept as written. Returns a frame with exactly
    :data:`PATCH_COLUMNS` (offsets and size int64).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"input.patch_records_csv: file not found: {p}; check the path")
    try:
        frame = pd.read_csv(p, dtype={"image_path": str, "mask_path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InputDataError(f"{p}: not a readable CSV ({first})") from None
    missing = [c for c in PATCH_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{p}: missing column(s) {', '.join(missing)}; a patch-records CSV needs "
            f"{', '.join(PATCH_COLUMNS)}"
        )
    if frame.empty:
        raise InputDataError(f"{p}: no patch record (the CSV has a header but no rows)")
    out = frame[list(PATCH_COLUMNS)].copy()
    for col in ("image_path", "mask_path"):
        if out[col].isna().any():
            row = int(np.flatnonzero(out[col].isna().to_numpy())[0])
            raise InputDataError(f"{p}: row {row + 2}: {col} is empty")
        out[col] = [
            v if os.path.isabs(v) or is_gdal_path(v) else os.path.join(p.parent, v)
            for v in out[col].astype(str)
        ]
    for col in ("row_off", "col_off", "patch_size"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() | (values != values.round())
        bad |= values < (1 if col == "patch_size" else 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            lim = "a positive integer" if col == "patch_size" else "an integer >= 0"
            raise InputDataError(
                f"{p}: row {row + 2}: {col} must be {lim}; got {frame[col].iloc[row]!r}"
            )
        out[col] = values.astype(np.int64)
    return out


@dataclass
class ScanPlan:
    """Checked patch records, grouped by image/mask pair, ready for :func:`run_scan_plan`."""

    source: str
    records: pd.DataFrame
    sources: list[SourceRecord]
    windows: list[np.ndarray]
    order: np.ndarray  # record index of each scanned row

    def __len__(self) -> int:
        return len(self.records)


def plan_patch_records(
    records: pd.DataFrame, source: str, mask_band: int | None = None
) -> ScanPlan:
    """Check every record (files exist, image and mask agree, the mask holds class values in
    band ``mask_band`` (``input.mask_band``; None: one-band masks), window overlaps the raster)
    before anything is scanned; ``source`` names the records in messages."""
    from smt_tools.raster import PairSpec, inspect_pair

    img = [canonical_path(v) for v in records["image_path"]]
    msk = [canonical_path(v) for v in records["mask_path"]]
    rows = records["row_off"].to_numpy(np.int64)
    cols = records["col_off"].to_numpy(np.int64)
    size = records["patch_size"].to_numpy(np.int64)
    probed: set[str] = set()
    for i, (ip, mp) in enumerate(zip(img, msk, strict=True)):
        for key, path in (("image_path", ip), ("mask_path", mp)):
            if is_gdal_path(path):  # no local file: open it through GDAL, once per path
                if path not in probed:
                    _probe(path, f"{source}[{i}].{key}")
                    probed.add(path)
            elif not os.path.isfile(path):
                raise InputDataError(
                    f"{source}[{i}].{key}: file not found: {path}; fix the patch record"
                )
    pairs: dict[tuple[str, str], list[int]] = {}
    for i, pair in enumerate(zip(img, msk, strict=True)):
        pairs.setdefault(pair, []).append(i)
    sources: list[SourceRecord] = []
    windows: list[np.ndarray] = []
    order: list[int] = []
    for (ip, mp), idx in pairs.items():
        src = inspect_pair(PairSpec(ip, mp), mask_band=mask_band, option="input.mask_band")
        ix = np.asarray(idx, np.int64)
        r, c, s = rows[ix], cols[ix], size[ix]
        outside = (r >= src.mask.height) | (c >= src.mask.width)
        if outside.any():
            j = int(ix[np.flatnonzero(outside)[0]])
            raise InputDataError(
                f"{source}[{j}]: window row_off={rows[j]} col_off={cols[j]} patch_size={size[j]} "
                f"lies outside {mp} ({src.mask.width}x{src.mask.height} px); fix the patch record"
            )
        sources.append(src)
        windows.append(np.stack([r, c, s, s], axis=1))
        order.extend(idx)
    return ScanPlan(source, records, sources, windows, np.asarray(order, np.int64))


def _probe(path: str, label: str) -> None:
    from smt_tools.errors import RasterOpenError
    from smt_tools.raster.handles import probe_raster

    try:
        probe_raster(path)
    except RasterOpenError as exc:
        raise InputDataError(f"{label}: {exc}") from None


def run_scan_plan(
    plan: ScanPlan,
    exclusion: ExclusionConfig,
    cfg: InputConfig,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """Scan the windows of ``plan`` (one read per window, parallel); rows follow the records.

    The nodata class is ``exclusion.nodata_class``: for patch records a config that does not
    name it means none (every mask value is a class), like ``null`` and ``-1``.
    """
    from smt_tools.raster import scan

    table = scan(
        plan.sources,
        plan.windows,
        nodata_class=exclusion.nodata_class,
        black_tolerance=exclusion.black_border_tolerance,
        read_image=exclusion.exclude_black_border,
        workers=cfg.scan_workers,
        progress=progress,
    )
    # scan returns rows grouped by pair; put them back in record order
    back = np.empty(plan.order.size, np.int64)
    back[plan.order] = np.arange(plan.order.size)
    table = table.take(back)
    rec = plan.records
    table.frame["patch_size"] = rec["patch_size"].to_numpy(np.int64)
    dup = table.frame["tile_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        raise InputDataError(
            f"{plan.source}[{j}]: the same window of {rec['image_path'].iloc[j]} is listed twice "
            f"(row_off={rec['row_off'].iloc[j]} col_off={rec['col_off'].iloc[j]} "
            f"patch_size={rec['patch_size'].iloc[j]}); remove the duplicate"
        )
    return table


def scan_patch_records(
    records: pd.DataFrame,
    source: str,
    exclusion: ExclusionConfig,
    cfg: InputConfig,
    progress: Callable[[int], None] | None = None,
) -> TileTable:
    """:func:`plan_patch_records` then :func:`run_scan_plan`."""
    plan = plan_patch_records(records, source, cfg.mask_band)
    return run_scan_plan(plan, exclusion, cfg, progress)


def catalog_url(cfg: InputConfig) -> str:
    """The PostgreSQL URL of the input block.

    ``dsn`` (``${VAR}`` expanded) wins; otherwise ``host/port/database/user/password`` build
    one, each omitted part taken from ``$SMT_DATABASE_URL`` when set. With no password in the
    config or the URL, libpq reads ``$PGPASSWORD`` itself, so it never has to be written down.
    """
    if cfg.dsn is not None:
        return expand_env(cfg.dsn, "input.dsn")
    base = urlsplit(os.environ.get("SMT_DATABASE_URL", "").strip())
    host = cfg.host or base.hostname or "localhost"
    port = cfg.port or base.port or 5432
    database = cfg.database or (base.path.lstrip("/") if base.path else "")
    if not database:
        raise ConfigError(
            "input.database: required with input.host (or set input.dsn / SMT_DATABASE_URL)"
        )
    user = cfg.user or (unquote(base.username) if base.username else None)
    password = cfg.password or (unquote(base.password) if base.password else None)
    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"
    return f"postgresql://{auth}{host}:{port}/{quote(database, safe='')}"
