"""Bulk writes of an ingest: source images, classes and tiles via COPY, in ONE transaction.

A failure anywhere (constraint, lost connection, Ctrl-C) rolls everything back, so the
catalog is either fully updated or exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.engine import db_cause, engine_label, scrub
from smt_tools.errors import CatalogError, SmtError
from smt_tools.geo import footprints_lonlat, rings_to_wkt
from smt_tools.raster.scan import SourceRecord
from smt_tools.tiletable import TileTable

_INGEST_LOCK_KEY = 0x5A7_7002

#: Columns of the "sources frame" used for incremental decisions (catalog and Parquet alike).
FINGERPRINT_COLUMNS: tuple[str, ...] = (
    "source_image_id",
    "image_path",
    "mask_path",
    "group_id",
    "image_size",
    "image_mtime",
    "mask_size",
    "mask_mtime",
    "nodata_class",
    "patch_size",
    "stride",
    "edge_policy",
    "black_tolerance",
)

_TILE_COPY = (
    "COPY tile (id, source_image_id, row_off, col_off, height, width, footprint, class_counts, "
    "valid_pixels, nodata_ratio, class_entropy, has_mask_border_nodata, has_image_black_border) "
    "FROM STDIN"
)
_SOURCE_COPY = (
    "COPY source_image (id, image_path, mask_path, group_id, crs, transform, width, height, "
    "band_count, dtype, nodata, mask_dtype, nodata_class, patch_size, stride, edge_policy, "
    "black_tolerance, image_size, image_mtime, mask_size, mask_mtime, tile_count, footprint) "
    "FROM STDIN"
)


@dataclass(frozen=True)
class WriteStats:
    """What an ingest wrote: rows and seconds spent inside the transaction."""

    tiles_written: int
    sources_written: int
    sources_deleted: int
    classes_added: int
    seconds: float


def source_fingerprints(engine: Engine) -> pd.DataFrame:
    """One row per catalogued source image, columns :data:`FINGERPRINT_COLUMNS`."""
    sql = f"select {', '.join('id' if c == 'source_image_id' else c for c in FINGERPRINT_COLUMNS)} from source_image"
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(sql)).all()
    except SQLAlchemyError as exc:
        raise _db_error(engine, exc, "reading source images") from None
    return pd.DataFrame([tuple(r) for r in rows], columns=list(FINGERPRINT_COLUMNS))


def _db_error(engine: Engine, exc: SQLAlchemyError, doing: str) -> CatalogError:
    cause = db_cause(exc)
    label = engine_label(engine)
    return CatalogError(
        f"catalog {label}: {doing} failed: {scrub(str(cause), label)}; the catalog was not changed"
    )


def _fmt_float(x: float) -> str:
    return "\\N" if math.isnan(x) else repr(x)


def _tile_copy_text(table: TileTable, class_pos: Mapping[int, int], n_positions: int) -> bytes:
    """The COPY text payload for ``table`` (columns of :data:`_TILE_COPY`)."""
    n = len(table)
    counts = np.zeros((n, n_positions), np.int64)
    for j, v in enumerate(table.class_values):
        counts[:, class_pos[int(v)] - 1] = table.counts[:, j]
    f = table.frame
    wkt = rings_to_wkt(footprints_lonlat(f))
    cols = [
        f["tile_id"].astype(np.int64).astype(str).tolist(),
        f["source_image_id"].astype(np.int64).astype(str).tolist(),
        f["row_off"].astype(np.int64).astype(str).tolist(),
        f["col_off"].astype(np.int64).astype(str).tolist(),
        f["height"].astype(np.int64).astype(str).tolist(),
        f["width"].astype(np.int64).astype(str).tolist(),
        ["SRID=4326;" + w for w in wkt],
        ["{" + ",".join(map(str, row)) + "}" for row in counts.tolist()],
        f["valid_pixels"].astype(np.int64).astype(str).tolist(),
        [_fmt_float(x) for x in f["nodata_ratio"].astype(np.float64).tolist()],
        [_fmt_float(x) for x in f["class_entropy"].astype(np.float64).tolist()],
        ["t" if b else "f" for b in f["has_mask_border_nodata"].astype(bool).tolist()],
        ["t" if b else "f" for b in f["has_image_black_border"].astype(bool).tolist()],
    ]
    lines = ["\t".join(parts) for parts in zip(*cols, strict=True)]
    return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")


def _source_rows(
    sources: Sequence[SourceRecord], tile_counts: Mapping[int, int], params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    frame = pd.DataFrame(
        {
            "minx": [s.image.bounds[0] for s in sources],
            "miny": [s.image.bounds[1] for s in sources],
            "maxx": [s.image.bounds[2] for s in sources],
            "maxy": [s.image.bounds[3] for s in sources],
            "crs": [s.image.crs for s in sources],
        }
    )
    wkt = rings_to_wkt(footprints_lonlat(frame, densify=16)) if len(frame) else []
    rows = []
    for s, w in zip(sources, wkt, strict=True):
        rows.append(
            (
                s.source_image_id,
                s.image.path,
                s.mask.path,
                s.group_id,
                s.image.crs,
                list(s.image.transform),
                s.image.width,
                s.image.height,
                s.image.band_count,
                s.image.dtype,
                s.image.nodata,
                s.mask.dtype,
                params.get("nodata_class"),
                int(params["patch_size"]),
                int(params["stride"]),
                str(params["edge_policy"]),
                float(params["black_tolerance"]),
                s.image.file_size,
                s.image.file_mtime,
                s.mask.file_size,
                s.mask.file_mtime,
                int(tile_counts.get(s.source_image_id, 0)),
                "SRID=4326;" + w,
            )
        )
    return rows


def _sync_classes(
    conn: Connection,
    class_values: Sequence[int],
    class_names: Mapping[int, tuple[str | None, str | None]],
    nodata_class: int | None,
) -> tuple[dict[int, int], int]:
    """Append unknown classes to catalog_class, set names; pad tile arrays. -> (value->pos, added)."""
    rows = conn.execute(text("select class_value, position from catalog_class")).all()
    pos = {int(r[0]): int(r[1]) for r in rows}
    old_n = max(pos.values(), default=0)
    wanted = {int(v) for v in class_values} | {int(v) for v in class_names}
    wanted.discard(-1 if nodata_class is None else int(nodata_class))
    new_values = sorted(wanted - set(pos))
    for v in new_values:
        pos[v] = max(pos.values(), default=0) + 1
        conn.execute(
            text("insert into catalog_class (position, class_value) values (:p, :v)"),
            {"p": pos[v], "v": v},
        )
    for v, (name, colour) in class_names.items():
        if v not in pos:
            continue
        conn.execute(
            text(
                "update catalog_class set name = coalesce(:n, name), colour = coalesce(:c, colour) "
                "where class_value = :v"
            ),
            {"n": name, "c": colour, "v": int(v)},
        )
    n = max(pos.values(), default=0)
    if new_values and old_n > 0:
        conn.execute(
            text(
                "update tile set class_counts = class_counts || "
                "array_fill(0::bigint, array[:n - cardinality(class_counts)]) "
                "where cardinality(class_counts) < :n"
            ),
            {"n": n},
        )
    return pos, len(new_values)


def write_ingest(
    engine: Engine,
    table: TileTable,
    sources: Sequence[SourceRecord],
    params: Mapping[str, Any],
    replace_ids: Sequence[int] = (),
    class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
) -> WriteStats:
    """Replace ``replace_ids`` and write ``sources`` with their tiles ``table``, in one transaction.

    params: ``nodata_class, patch_size, stride, edge_policy, black_tolerance`` of the scan.
    class_names: class value -> (name, colour), either may be None.
    """
    import time

    start = time.perf_counter()
    names = dict(class_names or {})
    nodata = params.get("nodata_class")
    written_ids = [int(s.source_image_id) for s in sources]
    delete_ids = sorted(set(int(i) for i in replace_ids) | set(written_ids))
    ids, n_per = np.unique(table.frame["source_image_id"].to_numpy(np.int64), return_counts=True)
    tile_counts = {int(k): int(v) for k, v in zip(ids, n_per, strict=True)}
    try:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _INGEST_LOCK_KEY})
            other = conn.execute(
                text("select distinct nodata_class from source_image where not (id = any(:ids))"),
                {"ids": delete_ids},
            ).all()
            others = {r[0] for r in other}
            if others and others != {nodata}:
                found = ", ".join("none" if v is None else str(v) for v in sorted(others, key=str))
                raise CatalogError(
                    f"catalog {engine_label(engine)} holds tiles ingested with nodata class {found}; "
                    f"got --nodata-class {nodata}: use the same nodata class (or a separate catalog)"
                )
            pos, added = _sync_classes(conn, [int(v) for v in table.class_values], names, nodata)
            if nodata is not None and int(nodata) in pos:
                raise CatalogError(
                    f"catalog {engine_label(engine)} lists class {nodata} as a class; it cannot also "
                    "be the nodata class: use the nodata class the catalog was built with"
                )
            deleted = conn.execute(
                text("delete from source_image where id = any(:ids)"), {"ids": delete_ids}
            ).rowcount
            raw = conn.connection.driver_connection
            assert raw is not None
            n_pos = max(pos.values(), default=0)
            with raw.cursor() as cur:
                if sources:
                    with cur.copy(_SOURCE_COPY) as cp:
                        for row in _source_rows(sources, tile_counts, params):
                            cp.write_row(row)
                if len(table):
                    payload = _tile_copy_text(table, pos, n_pos)
                    with cur.copy(_TILE_COPY) as cp:
                        step = 8 << 20
                        for i in range(0, len(payload), step):
                            cp.write(payload[i : i + step])
    except SmtError:
        raise
    except SQLAlchemyError as exc:
        raise _db_error(engine, exc, "writing tiles") from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise CatalogError(
                f"catalog {engine_label(engine)}: writing tiles failed: "
                f"{scrub(str(exc), engine_label(engine))}; the catalog was not changed"
            ) from None
        raise
    return WriteStats(
        tiles_written=len(table),
        sources_written=len(sources),
        sources_deleted=int(deleted or 0),
        classes_added=added,
        seconds=time.perf_counter() - start,
    )
