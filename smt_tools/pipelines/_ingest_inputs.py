"""``catalog ingest``'s inputs: the image/mask pairs CSV and the class-names CSV.

Errors name the file, line and column (URLs redacted) and say what was expected.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from smt_tools.errors import InputDataError
from smt_tools.raster import PairSpec
from smt_tools.raster.paths import is_gdal_path, path_identity, redact, resolve_path


def read_pairs_csv(path: str | os.PathLike[str], check_exists: bool = True) -> list[PairSpec]:
    """Pairs from a CSV with columns ``image``, ``mask`` and optional ``group``.

    Relative paths are resolved against the CSV's folder; GDAL paths (``s3://``, ``https://``,
    ``/vsicurl/`` …) are kept as written and checked by opening them through rasterio
    (:mod:`smt_tools.raster.paths`). Errors name the file, row and column (URLs redacted).
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: pairs CSV not found; give a CSV with columns image, mask[, group]"
        )
    base = p.resolve().parent
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(
            f"{p}: not a readable CSV ({exc}); expected columns image, mask[, group]"
        ) from None
    if not header:
        raise InputDataError(f"{p}: pairs CSV is empty; expected a header row image, mask[, group]")
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("image", "mask") if c not in names]
    if missing:
        raise InputDataError(
            f"{p}: pairs CSV lacks column(s) {', '.join(missing)}; expected columns image, mask[, group]; "
            f"found: {', '.join(h.strip() for h in header) or 'none'}"
        )
    ii, mi = names.index("image"), names.index("mask")
    gi = names.index("group") if "group" in names else None
    pairs: list[PairSpec] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {
            c: (row[i].strip() if i < len(row) else "") for c, i in (("image", ii), ("mask", mi))
        }
        for col, value in cells.items():
            if not value:
                raise InputDataError(
                    f"{p}: line {line}: empty '{col}' value; every row needs an image and a mask path"
                )
        image = resolve_path(cells["image"], base)
        mask = resolve_path(cells["mask"], base)
        if check_exists:
            for col, full in (("image", image), ("mask", mask)):
                _check_raster(p, line, col, full, base)
        key = path_identity(image)
        if key in seen:
            raise InputDataError(
                f"{p}: line {line}: image {redact(image)} is already listed on line {seen[key]}; "
                "list each image once"
            )
        seen[key] = line
        group = row[gi].strip() if gi is not None and gi < len(row) and row[gi].strip() else None
        pairs.append(PairSpec(image, mask, group))
    if not pairs:
        raise InputDataError(
            f"{p}: pairs CSV has a header but no rows; add one row per image/mask pair"
        )
    return pairs


def _check_raster(csv_path: Path, line: int, col: str, path: str, base: Path) -> None:
    """A local file must exist; a GDAL path must open (one line with GDAL's cause if not)."""
    if not is_gdal_path(path):
        if not Path(path).is_file():
            raise InputDataError(
                f"{csv_path}: line {line}: {col} file {path} not found "
                f"(relative paths are resolved against {base})"
            )
        return
    from smt_tools.errors import RasterOpenError
    from smt_tools.raster.handles import probe_raster

    try:
        probe_raster(path)
    except RasterOpenError as exc:
        raise InputDataError(f"{csv_path}: line {line}: {col} {exc}") from None


def read_class_names_csv(path: str | os.PathLike[str]) -> dict[int, tuple[str | None, str | None]]:
    """Class value -> (name, colour) from a CSV with columns ``class_value, name[, colour]``."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: class names CSV not found; expected columns class_value, name[, colour]"
        )
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        rows = list(reader)
    if "color" in header and "colour" not in header:
        header[header.index("color")] = "colour"
    missing = [c for c in ("class_value", "name") if c not in header]
    if missing:
        raise InputDataError(
            f"{p}: class names CSV lacks column(s) {', '.join(missing)}; expected class_value, name[, colour]"
        )
    vi, ni = header.index("class_value"), header.index("name")
    ci = header.index("colour") if "colour" in header else None
    out: dict[int, tuple[str | None, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue
        raw = row[vi].strip() if vi < len(row) else ""
        try:
            value = int(raw)
        except ValueError:
            raise InputDataError(
                f"{p}: line {line}: class_value must be an integer; got {raw!r}"
            ) from None
        name = row[ni].strip() if ni < len(row) and row[ni].strip() else None
        colour = row[ci].strip() if ci is not None and ci < len(row) and row[ci].strip() else None
        out[value] = (name, colour)
    return out
