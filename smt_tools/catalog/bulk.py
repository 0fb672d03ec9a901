"""Bulk writes of an ingest: source images, classes and tiles via COPY, in ONE transaction.

A failure anywhere (constraint, lost connection, Ctrl-C) rolls everything back, so the
catalog is either fully updated or exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from smt_tools.catalog.engine import db_failure, engine_label, is_db_error
from smt_tools.catalog.store_types import WriteStats
from smt_tools.errors import CatalogError, InputDataError, SmtError
from smt_tools.geo import footprints_lonlat, has_crs, rings_to_wkt
from smt_tools.ingest_params import IngestParams
from smt_tools.raster.maskcheck import first_mask_with, new_classes_message
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
    "mask_band",
    "scan_rules",
)

_TILE_COPY = (
    "COPY tile (id, source_image_id, row_off, col_off, height, width, footprint, class_counts, "
    "valid_pixels, nodata_ratio, class_entropy, has_mask_border_nodata, has_image_black_border) "
    "FROM STDIN (FORMAT binary)"
)
_SOURCE_COPY = (
    "COPY source_image (id, image_path, mask_path, group_id, crs, transform, width, height, "
    "band_count, dtype, nodata, mask_dtype, nodata_class, patch_size, stride, edge_policy, "
    "black_tolerance, image_size, image_mtime, mask_size, mask_mtime, tile_count, footprint, "
    "mask_band, scan_rules) FROM STDIN"
)


def source_fingerprints(engine: Engine) -> pd.DataFrame:
    """One row per catalogued source image, columns :data:`FINGERPRINT_COLUMNS`."""
    sql = f"select {', '.join('id' if c == 'source_image_id' else c for c in FINGERPRINT_COLUMNS)} from source_image"
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(sql)).all()
    except SQLAlchemyError as exc:
        raise _db_error(engine, exc, "reading source images") from None
    return pd.DataFrame([tuple(r) for r in rows], columns=list(FINGERPRINT_COLUMNS))


def _db_error(engine: Engine, exc: BaseException, doing: str) -> CatalogError:
    return db_failure(exc, engine_label(engine), doing, "; the catalog was not changed")


_EWKB_POLYGON_SRID = 0x20000003  # wkbPolygon with the EWKB SRID flag
_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PGCOPY_TRAILER = b"\xff\xff"
_INT8_OID = 20


def _tile_record_dtype(
    n_points: int, n_positions: int, entropy: bool, footprint: bool = True
) -> np.dtype:
    """One tile row in PostgreSQL's binary COPY format (big-endian lengths and values; the
    footprint is little-endian EWKB, as geometry_recv reads it, or NULL when ``footprint`` is
    False: a tile of a raster without a CRS has no lon/lat outline)."""
    fields: list[tuple[Any, ...]] = [
        ("n_fields", ">i2"),
        ("id_len", ">i4"),
        ("id", ">i8"),
        ("src_len", ">i4"),
        ("src", ">i8"),
        ("row_len", ">i4"),
        ("row", ">i4"),
        ("col_len", ">i4"),
        ("col", ">i4"),
        ("h_len", ">i4"),
        ("h", ">i4"),
        ("w_len", ">i4"),
        ("w", ">i4"),
        ("geom_len", ">i4"),
    ]
    if footprint:
        fields += [
            ("geom_order", "u1"),
            ("geom_type", "<u4"),
            ("geom_srid", "<u4"),
            ("geom_rings", "<u4"),
            ("geom_points", "<u4"),
            ("geom_xy", "<f8", (n_points, 2)),
        ]
    fields += [("cc_len", ">i4"), ("cc_ndim", ">i4"), ("cc_hasnull", ">i4"), ("cc_oid", ">i4")]
    if n_positions:
        fields += [("cc_dim", ">i4"), ("cc_lbound", ">i4")]
        fields += [("cc", [("len", ">i4"), ("value", ">i8")], (n_positions,))]
    fields += [("valid_len", ">i4"), ("valid", ">i8"), ("ndr_len", ">i4"), ("ndr", ">f8")]
    fields += [("ent_len", ">i4")] + ([("ent", ">f8")] if entropy else [])
    fields += [("mb_len", ">i4"), ("mb", "u1"), ("bb_len", ">i4"), ("bb", "u1")]
    return np.dtype(fields)


def _tile_records(
    sub: pd.DataFrame, rings: np.ndarray, counts: np.ndarray, entropy: bool, footprint: bool = True
) -> np.ndarray:
    n, m = rings.shape[0], rings.shape[1]
    p = counts.shape[1]
    rec = np.zeros(n, dtype=_tile_record_dtype(m, p, entropy, footprint))
    rec["n_fields"] = 13
    for name, size in (("id", 8), ("src", 8), ("row", 4), ("col", 4), ("h", 4), ("w", 4)):
        rec[f"{name}_len"] = size
    rec["id"] = sub["tile_id"].to_numpy(np.int64)
    rec["src"] = sub["source_image_id"].to_numpy(np.int64)
    rec["row"] = sub["row_off"].to_numpy(np.int64)
    rec["col"] = sub["col_off"].to_numpy(np.int64)
    rec["h"] = sub["height"].to_numpy(np.int64)
    rec["w"] = sub["width"].to_numpy(np.int64)
    if footprint:
        rec["geom_len"] = 1 + 4 * 4 + m * 16
        rec["geom_order"] = 1
        rec["geom_type"] = _EWKB_POLYGON_SRID
        rec["geom_srid"] = 4326
        rec["geom_rings"] = 1
        rec["geom_points"] = m
        rec["geom_xy"] = rings
    else:
        rec["geom_len"] = -1  # NULL footprint
    rec["cc_len"] = 12 + (8 + 12 * p if p else 0)
    rec["cc_ndim"] = 1 if p else 0
    rec["cc_oid"] = _INT8_OID
    if p:
        rec["cc_dim"] = p
        rec["cc_lbound"] = 1
        rec["cc"]["len"] = 8
        rec["cc"]["value"] = counts
    rec["valid_len"] = 8
    rec["valid"] = sub["valid_pixels"].to_numpy(np.int64)
    rec["ndr_len"] = 8
    rec["ndr"] = sub["nodata_ratio"].to_numpy(np.float64)
    if entropy:
        rec["ent_len"] = 8
        rec["ent"] = sub["class_entropy"].to_numpy(np.float64)
    else:
        rec["ent_len"] = -1  # NULL
    rec["mb_len"] = 1
    rec["mb"] = sub["has_mask_border_nodata"].to_numpy(bool)
    rec["bb_len"] = 1
    rec["bb"] = sub["has_image_black_border"].to_numpy(bool)
    return rec


def _tile_copy_chunks(
    table: TileTable, class_pos: Mapping[int, int], n_positions: int, chunk_rows: int = 16384
) -> Iterator[bytes]:
    """``COPY tile ... (FORMAT binary)`` payload for ``table``: signature, rows, trailer.

    Built vectorised with numpy (no per-row Python); streamed in chunks of ``chunk_rows`` rows
    so the server parses one chunk while the next is built. Rows go in tile id order: the
    primary key index then grows at its right edge instead of at random pages.
    """
    n = len(table)
    f, table_counts = table.frame, table.counts
    ids = f["tile_id"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    if not bool(np.all(ids[1:] > ids[:-1])):  # sorted once: contiguous chunks below
        order = np.argsort(ids, kind="stable")
        f = f[[c for c in f.columns if c not in ("image_path", "mask_path")]].iloc[order]
        table_counts = table_counts[order]
    counts = np.zeros((n, n_positions), np.int64)
    for j, v in enumerate(table.class_values):
        counts[:, class_pos[int(v)] - 1] = table_counts[:, j]
    yield _PGCOPY_SIGNATURE
    for start in range(0, n, chunk_rows):
        sub = f.iloc[start : start + chunk_rows]
        rings = footprints_lonlat(sub, missing="nan")  # NaN rings: no CRS -> NULL footprint
        sub_counts = counts[start : start + chunk_rows]
        has_ent = ~np.isnan(sub["class_entropy"].to_numpy(np.float64))
        has_fp = has_crs(sub)
        for keep, entropy, fp in (
            (has_ent & has_fp, True, True),
            (~has_ent & has_fp, False, True),
            (has_ent & ~has_fp, True, False),
            (~has_ent & ~has_fp, False, False),
        ):
            if keep.any():
                idx = np.flatnonzero(keep)
                yield _tile_records(
                    sub.iloc[idx], rings[idx], sub_counts[idx], entropy, fp
                ).tobytes()
    yield _PGCOPY_TRAILER


def _source_rows(
    sources: Sequence[SourceRecord], tile_counts: Mapping[int, int], params: IngestParams
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
    # a raster without a CRS has no lon/lat outline: NULL footprint (None), crs ""
    georef = has_crs(frame) if len(frame) else np.zeros(0, bool)
    wkt: list[str | None] = [None] * len(frame)
    if georef.any():
        idx = np.flatnonzero(georef)
        for k, text_ in zip(
            idx, rings_to_wkt(footprints_lonlat(frame.iloc[idx], densify=16)), strict=True
        ):
            wkt[k] = "SRID=4326;" + text_
    fp = params.fingerprint()
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
                fp["nodata_class"],
                fp["patch_size"],
                fp["stride"],
                fp["edge_policy"],
                fp["black_tolerance"],
                s.image.file_size,
                s.image.file_mtime,
                s.mask.file_size,
                s.mask.file_mtime,
                int(tile_counts.get(s.source_image_id, 0)),
                w,
                int(s.mask_band),
                fp["scan_rules"],
            )
        )
    return rows


def _renumber_classes(conn: Connection, nodata_class: int | None) -> None:
    """No tile is left: rewrite catalog_class as the sorted known classes (names and colours
    kept) without the nodata class, so a re-ingest of everything may change the nodata rule."""
    rows = conn.execute(text("select class_value, name, colour from catalog_class")).all()
    keep = sorted(
        (int(v), n, c) for v, n, c in rows if nodata_class is None or int(v) != int(nodata_class)
    )
    conn.execute(text("delete from catalog_class"))
    for p, (v, n, c) in enumerate(keep, start=1):
        conn.execute(
            text(
                "insert into catalog_class (position, class_value, name, colour) "
                "values (:p, :v, :n, :c)"
            ),
            {"p": p, "v": v, "n": n, "c": c},
        )


def _sync_classes(
    conn: Connection,
    class_values: Sequence[int],
    class_names: Mapping[int, tuple[str | None, str | None]],
    nodata_class: int | None,
    refuse_new: str | None = None,
    table: TileTable | None = None,
) -> tuple[dict[int, int], int]:
    """Append unknown classes to catalog_class, set names; pad tile arrays. -> (value->pos, added).

    refuse_new: the catalog label; when set and the catalog already lists classes, values it
    does not list raise :class:`InputDataError` naming each and the first mask of ``table``
    holding it (nothing written: the caller's transaction rolls back).
    """
    rows = conn.execute(text("select class_value, position from catalog_class")).all()
    pos = {int(r[0]): int(r[1]) for r in rows}
    old_n = max(pos.values(), default=0)
    wanted = {int(v) for v in class_values} | {int(v) for v in class_names}
    wanted.discard(-1 if nodata_class is None else int(nodata_class))
    new_values = sorted(wanted - set(pos))
    if new_values and pos and refuse_new is not None:
        first = first_mask_with(table, new_values) if table is not None else {}
        raise InputDataError(new_classes_message(refuse_new, sorted(pos), new_values, first))
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
    table: TileTable | None,
    sources: Sequence[SourceRecord],
    params: IngestParams,
    replace_ids: Sequence[int] = (),
    class_names: Mapping[int, tuple[str | None, str | None]] | None = None,
    allow_new_classes: bool = False,
) -> WriteStats:
    """Replace ``replace_ids`` and write ``sources`` with their tiles ``table``, in one transaction.

    ``table`` None (nothing scanned) still applies ``class_names``.

    Classes: while other source images stay in the catalog, class values (of ``table`` or
    ``class_names``) that ``catalog_class`` does not list are refused unless
    ``allow_new_classes`` (then appended, tile arrays padded). When this write replaces every
    source image, the class list is rebuilt (sorted, names kept, the nodata class left out) and
    any class is accepted.

    params: the ingest's settings (stored with each source image as its fingerprint).
    class_names: class value -> (name, colour), either may be None.
    """
    start = time.perf_counter()
    names = dict(class_names or {})
    nodata = params.nodata_class
    written_ids = [int(s.source_image_id) for s in sources]
    delete_ids = sorted(set(int(i) for i in replace_ids) | set(written_ids))
    if table is None:
        table = TileTable(
            pd.DataFrame({"source_image_id": np.zeros(0, np.int64)}), np.zeros((0, 0)), np.zeros(0)
        )
    ids, n_per = np.unique(table.frame["source_image_id"].to_numpy(np.int64), return_counts=True)
    tile_counts = {int(k): int(v) for k, v in zip(ids, n_per, strict=True)}
    try:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _INGEST_LOCK_KEY})
            first_load = not conn.execute(text("select exists (select 1 from tile)")).scalar()
            others = _other_nodata_classes(conn, engine, delete_ids, nodata)
            deleted = conn.execute(
                text("delete from source_image where id = any(:ids)"), {"ids": delete_ids}
            ).rowcount
            if not others:  # no tile is left: the class list starts again
                _renumber_classes(conn, nodata)
            pos, added = _sync_classes(
                conn,
                [int(v) for v in table.class_values],
                names,
                nodata,
                refuse_new=None if allow_new_classes else engine_label(engine),
                table=table,
            )
            if nodata is not None and int(nodata) in pos:
                raise CatalogError(
                    f"catalog {engine_label(engine)} lists class {nodata} as a class; it cannot also "
                    "be the nodata class: use the nodata class the catalog was built with"
                )
            _copy_rows(conn, sources, table, tile_counts, params, pos, first_load)
    except SmtError:
        raise
    except Exception as exc:
        if not is_db_error(exc):
            raise
        raise _db_error(engine, exc, "writing tiles") from None
    return WriteStats(
        tiles_written=len(table),
        sources_written=len(sources),
        sources_deleted=int(deleted or 0),
        classes_added=added,
        seconds=time.perf_counter() - start,
    )


def _other_nodata_classes(
    conn: Connection, engine: Engine, delete_ids: Sequence[int], nodata: int | None
) -> set[Any]:
    """The nodata classes of the source images this write keeps; CatalogError when they
    differ from ``nodata`` (the caller's transaction rolls back)."""
    other = conn.execute(
        text("select distinct nodata_class from source_image where not (id = any(:ids))"),
        {"ids": delete_ids},
    ).all()
    others = {r[0] for r in other}
    if others and others != {nodata}:
        found = ", ".join("none" if v is None else str(v) for v in sorted(others, key=str))
        raise CatalogError(
            f"catalog {engine_label(engine)} holds tiles ingested with nodata class {found}; "
            f"got --nodata-class {'none' if nodata is None else nodata}: use the same "
            "nodata class, re-ingest all of its source images in one run, or use a "
            "separate catalog"
        )
    return others


#: (name, drop, rebuild) of what a first bulk load of ``tile`` drops and rebuilds: its secondary
#: indexes (not the primary key, none a foreign key relies on) and its own foreign keys
_BULK_LOAD_DROPS = """
select coalesce(c.conname, i.relname),
    case when c.conname is null then 'DROP INDEX ' || quote_ident(i.relname)
         else 'ALTER TABLE tile DROP CONSTRAINT ' || quote_ident(c.conname) end,
    case when c.conname is null then pg_get_indexdef(x.indexrelid)
         else 'ALTER TABLE tile ADD CONSTRAINT ' || quote_ident(c.conname) || ' '
             || pg_get_constraintdef(c.oid) end
from pg_index x join pg_class i on i.oid = x.indexrelid
left join pg_constraint c on c.conindid = x.indexrelid and c.conrelid = x.indrelid
    and c.contype in ('u', 'x')
where x.indrelid = 'tile'::regclass and not x.indisprimary and not exists (
    select 1 from pg_constraint f where f.contype = 'f' and f.conindid = x.indexrelid)
union all
select conname, 'ALTER TABLE tile DROP CONSTRAINT ' || quote_ident(conname),
    'ALTER TABLE tile ADD CONSTRAINT ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid)
from pg_constraint where conrelid = 'tile'::regclass and contype = 'f'
order by 1
"""


def _drop_for_bulk_load(conn: Connection) -> list[str]:
    """Drop the secondary indexes and foreign keys of ``tile`` (a first bulk load fills it
    faster without them, then builds each index once and checks each key in one query);
    return the statements that rebuild them."""
    statements = conn.execute(text(_BULK_LOAD_DROPS)).all()
    for _name, drop, _create in statements:
        conn.exec_driver_sql(drop)
    return [str(create) for _name, _drop, create in statements]


def _copy_rows(
    conn: Connection,
    sources: Sequence[SourceRecord],
    table: TileTable,
    tile_counts: Mapping[int, int],
    params: IngestParams,
    pos: Mapping[int, int],
    first_load: bool = False,
) -> None:
    """COPY the source image rows, then the tile rows (class counts at ``pos``; one COPY, a
    writer thread sends one chunk while the next is encoded), inside the caller's transaction.

    first_load (``tile`` was empty before this ingest): the secondary indexes of ``tile``
    (GiST on footprint, the window UNIQUE constraint, any a user added; not the primary key)
    and its foreign key are dropped before the COPY and rebuilt after it, same transaction."""
    from psycopg.copy import QueuedLibpqWriter

    raw = conn.connection.driver_connection
    assert raw is not None
    n_pos = max(pos.values(), default=0)
    rebuild = _drop_for_bulk_load(conn) if first_load and len(table) else []
    with raw.cursor() as cur:
        if sources:
            with cur.copy(_SOURCE_COPY) as cp:
                for row in _source_rows(sources, tile_counts, params):
                    cp.write_row(row)
        if len(table):
            with cur.copy(_TILE_COPY, writer=QueuedLibpqWriter(cur)) as cp:
                for chunk in _tile_copy_chunks(table, pos, n_pos):
                    cp.write(chunk)
        if rebuild:
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for statement in rebuild:
            cur.execute(statement)
