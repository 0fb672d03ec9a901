"""The catalog at 10M tiles (PostGIS): ``tile_result`` partitioned by run, bulk tile loads.

Catalog version 7 (``0007_tile_result_partitions.sql``) turns ``tile_result`` into a table
LIST-partitioned by ``run_id``: a catalog made at version 6 keeps every row, each run in its
own partition ``tile_result_run_<id>``; ``record_run`` builds a run's partition and
``delete_run`` drops it. ``write_ingest`` drops the secondary indexes and the foreign key of
``tile`` before a first load and rebuilds them after, in the same transaction; an incremental
ingest keeps them; a failure anywhere leaves the catalog as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from smt_tools import catalog as cat
from smt_tools.catalog import bulk, layers
from smt_tools.catalog.layers import create_run_layer
from smt_tools.catalog.migrate import apply_migrations, migration_files
from smt_tools.catalog.runs import delete_run, load_run_results
from smt_tools.curation.exclusion import FLAG_COLUMNS
from smt_tools.errors import CatalogError
from smt_tools.ingest_params import IngestParams
from smt_tools.raster.scan import (
    PairSpec,
    SourceRecord,
    close_cached_handles,
    inspect_pair,
    scan,
)
from smt_tools.raster.tiling import tile_windows
from smt_tools.tiletable import TileTable
from tests.catalog_data import two_scenes
from tests.rasters import write_pair

pytestmark = pytest.mark.db

PARAMS = IngestParams(patch_size=4, stride=4, edge_policy="drop", nodata_class=0)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def scanned(*pairs: tuple[Path, Path]) -> tuple[TileTable, list[SourceRecord]]:
    """The real scan of ``pairs`` (4x4 tiles, nodata class 0; files rewritten are re-read)."""
    close_cached_handles()
    sources = [inspect_pair(PairSpec(str(img), str(msk))) for img, msk in pairs]
    windows = [tile_windows(s.image.width, s.image.height, 4, 4, "drop") for s in sources]
    return scan(sources, windows, nodata_class=0, workers=1), sources


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[TileTable, list[SourceRecord]]:
    """Two 8x8 scenes a and b: 8 tiles."""
    two_scenes(tmp_path)
    return scanned(*((tmp_path / f"{n}_img.tif", tmp_path / f"{n}_mask.tif") for n in "ab"))


@pytest.fixture
def engine(fresh_database_url: str) -> Iterator[Engine]:
    eng = cat.connect(fresh_database_url)
    try:
        yield eng
    finally:
        eng.dispose()


PARTITIONS = (
    "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i "
    "join pg_class c on c.oid = i.inhrelid where i.inhparent = 'tile_result'::regclass order by 1"
)
WHERE_ROWS = (
    "select tableoid::regclass::text, run_id, count(*) from tile_result group by 1, 2 order by 2"
)
COLUMN_DOCS = (
    "select a.attname, col_description(a.attrelid, a.attnum) from pg_attribute a "
    "where a.attrelid = 'tile_result'::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum"
)
TILE_INDEXES = (
    "select c.relname, c.oid::bigint, pg_get_indexdef(c.oid) from pg_index x "
    "join pg_class c on c.oid = x.indexrelid where x.indrelid = 'tile'::regclass order by 1"
)
TILE_FK = (
    "select conname, convalidated, pg_get_constraintdef(oid) from pg_constraint "
    "where conrelid = 'tile'::regclass and contype in ('f', 'u') order by 1"
)


def _sql_run(engine: Engine, command: str, results: str) -> int:
    """A run recorded with plain SQL: ``results`` selects (tile_id, fold) from ``tile``."""
    with engine.begin() as conn:
        run_id = int(
            conn.execute(
                text(
                    "insert into run (command, started_at, finished_at, tool_version) "
                    "values (:c, now(), now(), 'test') returning id"
                ),
                {"c": command},
            ).scalar_one()
        )
        conn.execute(
            text(
                "insert into tile_result (run_id, tile_id, fold, sampler_weight, excluded, "
                f"buffer_excluded_folds) select :r, id, f, f / 10.0, f > 1, f || ';-1' from ({results}) q"
            ),
            {"r": run_id},
        )
    return run_id


def test_migration_partitions_a_version_6_catalog(
    engine: Engine, scenes: tuple[TileTable, list[SourceRecord]], tmp_path: Path
) -> None:
    six = tmp_path / "migrations_0006"
    six.mkdir()
    for m in migration_files()[:6]:
        (six / m.filename).write_text(m.sql, encoding="utf-8")
    assert apply_migrations(engine, six).applied[-1] == "0006_comment_references.sql"
    table, sources = scenes
    cat.write_ingest(engine, table, sources, PARAMS)
    tiles = "select id, (row_number() over (order by id))::int % 3 as f from tile"
    assert _sql_run(engine, "split", tiles) == 1
    assert _sql_run(engine, "build-balanced-dataset", f"{tiles} order by id limit 5") == 2
    assert _sql_run(engine, "split", f"{tiles} limit 0") == 3  # a run without rows
    later = (*FLAG_COLUMNS, "coreset_step")  # columns of 0008 and 0009
    v6 = tuple(c for c in layers.VIEW_COLUMNS if c not in later)  # before 0008
    with engine.begin() as conn, pytest.MonkeyPatch.context() as mp:
        mp.setattr(layers, "VIEW_COLUMNS", v6)  # the run view as version 6 made it
        assert create_run_layer(conn, 1, "split", None, "x") == "run_1_folds"
    every = "select * from tile_result order by run_id, tile_id"
    mapped = "select * from tile_result_map order by run_id, tile_id"
    before = (
        rows(engine, every),
        rows(engine, mapped),
        rows(engine, "select * from run_1_folds order by 1"),
    )
    docs = rows(engine, COLUMN_DOCS)
    assert len(before[0]) == 13 and all(d for _, d in docs)

    seven = tmp_path / "migrations_0007"  # version 7 alone (0008 adds columns, below)
    seven.mkdir()
    for m in migration_files()[:7]:
        (seven / m.filename).write_text(m.sql, encoding="utf-8")
    assert apply_migrations(engine, seven).applied == ["0007_tile_result_partitions.sql"]
    assert rows(engine, "select relkind from pg_class where relname = 'tile_result'") == [("p",)]
    assert rows(engine, PARTITIONS) == [
        ("tile_result_default", "DEFAULT"),
        ("tile_result_run_1", "FOR VALUES IN ('1')"),
        ("tile_result_run_2", "FOR VALUES IN ('2')"),
        ("tile_result_run_3", "FOR VALUES IN ('3')"),
    ]
    after = (
        rows(engine, every),
        rows(engine, mapped),
        rows(engine, "select * from run_1_folds order by 1"),
    )
    assert after == before
    assert rows(engine, WHERE_ROWS) == [("tile_result_run_1", 1, 8), ("tile_result_run_2", 2, 5)]
    assert rows(engine, COLUMN_DOCS) == docs
    assert (
        "LIST-partitioned by run_id"
        in rows(engine, "select obj_description('tile_result'::regclass, 'pg_class')")[0][0]
    )
    assert rows(engine, "select to_regclass('tile_result_0006')") == [(None,)]
    doc = "select obj_description('{}'::regclass, 'pg_class')"
    assert rows(engine, doc.format("tile_result_run_3")) == [("Rows of run 3 (dropped with it).",)]
    fks = "select conname, confrelid::regclass::text, confdeltype from pg_constraint where conrelid = '{}'::regclass and contype = 'f' order by 1"
    expected = [("tile_result_run_id_fkey", "run", "c"), ("tile_result_tile_id_fkey", "tile", "c")]
    assert rows(engine, fks.format("tile_result")) == expected
    assert rows(engine, fks.format("tile_result_run_2")) == expected
    # the cascade from tile still takes a re-ingested tile's results, in every partition
    with engine.begin() as conn:
        conn.execute(text("delete from tile where id = (select min(id) from tile)"))
    assert rows(engine, WHERE_ROWS) == [("tile_result_run_1", 1, 7), ("tile_result_run_2", 2, 4)]
    # version 8 adds the exclusion columns to every partition (NULL for the runs before it)
    assert apply_migrations(engine).applied[0] == "0008_exclusion_reasons.sql"
    cat.require_schema(engine)
    new_cols = "select count(*) from tile_result_run_2 where exclusion_reason is null"
    assert rows(engine, new_cols) == [(4,)]


def test_runs_live_in_their_own_partitions(
    engine: Engine, scenes: tuple[TileTable, list[SourceRecord]]
) -> None:
    apply_migrations(engine)
    table, sources = scenes
    cat.write_ingest(engine, table, sources, PARAMS)
    ids = np.sort(table.frame["tile_id"].to_numpy(np.int64))
    first = pd.DataFrame(
        {"tile_id": ids, "sampler_weight": np.arange(8) / 8, "fold": [None, *range(7)]}
    )
    second = pd.DataFrame({"tile_id": ids[:3], "excluded": [True, False, None]})
    assert cat.record_run(engine, "split", {}, {}, first, T0, T0) == 1
    assert cat.record_run(engine, "select-coreset", {}, {}, second, T0, T0) == 2
    assert rows(engine, WHERE_ROWS) == [("tile_result_run_1", 1, 8), ("tile_result_run_2", 2, 3)]
    assert rows(
        engine, "select indexdef from pg_indexes where tablename = 'tile_result_run_1' order by 1"
    ) == [
        (
            "CREATE INDEX tile_result_run_1_tile_id_idx ON public.tile_result_run_1 USING btree (tile_id)",
        ),
        (
            "CREATE UNIQUE INDEX tile_result_run_1_pkey ON public.tile_result_run_1 "
            "USING btree (run_id, tile_id)",
        ),
    ]
    doc = "select obj_description('tile_result_run_2'::regclass, 'pg_class')"
    assert rows(engine, doc) == [("Rows of run 2 (dropped with it).",)]
    command, got = load_run_results(engine, 1)
    assert command == "split" and got["tile_id"].tolist() == ids.tolist()
    assert got["sampler_weight"].tolist() == (np.arange(8) / 8).tolist()
    folds = rows(engine, "select fold from tile_result where run_id = 1 order by tile_id")
    assert folds == [(None,), *((f,) for f in range(7))]
    kept = rows(engine, "select * from tile_result where run_id = 2 order by tile_id")
    assert [r[5] for r in kept] == [True, False, None]

    assert delete_run(engine, 1) == 8
    assert rows(engine, "select to_regclass('tile_result_run_1'), to_regclass('run_1_folds')") == [
        (None, None)
    ]
    assert rows(engine, "select * from tile_result order by run_id, tile_id") == kept
    assert [r[0] for r in rows(engine, PARTITIONS)] == ["tile_result_default", "tile_result_run_2"]

    # a run written with plain SQL lands in the default partition; delete takes its rows
    sql_run = _sql_run(engine, "split", "select id, 1 as f from tile order by id limit 4")
    assert rows(engine, WHERE_ROWS)[-1] == ("tile_result_default", sql_run, 4)
    assert delete_run(engine, sql_run) == 4
    assert rows(engine, WHERE_ROWS) == [("tile_result_run_2", 2, 3)]
    # a run deleted with plain SQL takes its partition with it (trigger run_drop_view)
    with engine.begin() as conn:
        conn.execute(text("delete from run where id = 2"))
    assert rows(engine, PARTITIONS) == [("tile_result_default", "DEFAULT")]
    assert rows(engine, "select count(*) from tile_result") == [(0,)]

    # unknown tile ids: nothing written, no partition left behind
    bad = pd.DataFrame({"tile_id": [*ids[:2], 12345], "sampler_weight": [1.0, 1.0, 1.0]})
    with pytest.raises(CatalogError, match="not in the catalog"):
        cat.record_run(engine, "split", {}, {}, bad, T0, T0)
    assert rows(engine, "select count(*) from run") == [(0,)]
    assert rows(engine, PARTITIONS) == [("tile_result_default", "DEFAULT")]
    assert rows(engine, "select count(*) from pg_class where relname like 'tile_result_run_%'") == [
        (0,)
    ]


def test_first_load_rebuilds_indexes_and_incremental_ingest_keeps_them(
    engine: Engine, scenes: tuple[TileTable, list[SourceRecord]], tmp_path: Path
) -> None:
    apply_migrations(engine)
    with engine.begin() as conn:  # a user's own index is rebuilt too
        conn.execute(text("create index tile_valid_idx on tile (valid_pixels)"))
    empty = rows(engine, TILE_INDEXES)
    assert [r[0] for r in empty] == [
        "tile_footprint_gist",
        "tile_pkey",
        "tile_valid_idx",
        "tile_window_unique",
    ]
    fk = rows(engine, TILE_FK)
    table, sources = scenes
    cat.write_ingest(engine, table, sources, PARAMS)
    loaded = rows(engine, TILE_INDEXES)
    assert [(r[0], r[2]) for r in loaded] == [(r[0], r[2]) for r in empty]
    rebuilt = {r[0] for r, s in zip(loaded, empty, strict=True) if r[1] != s[1]}
    assert rebuilt == {"tile_footprint_gist", "tile_valid_idx", "tile_window_unique"}
    assert rows(engine, TILE_FK) == fk and all(r[1] for r in fk)
    assert rows(engine, "select count(*), count(footprint) from tile") == [(8, 8)]
    got = cat.load_tiles(engine)
    assert sorted(got.frame["tile_id"].tolist()) == sorted(table.frame["tile_id"].tolist())

    # scene b changes (classes swapped): an incremental ingest replaces its 4 tiles only
    mask_b = np.full((8, 8), 2, np.uint8)
    mask_b[:, 4:] = 1
    write_pair(tmp_path, "b", mask_b, origin=(500_008.0, 5_000_000.0))
    new_b, b_sources = scanned((tmp_path / "b_img.tif", tmp_path / "b_mask.tif"))
    a_id = sources[0].source_image_id
    a_rows = "select * from tile where source_image_id = :s order by id"
    a_before = rows(engine, a_rows, s=a_id)
    stats = cat.write_ingest(engine, new_b, b_sources, PARAMS)
    assert (stats.tiles_written, stats.sources_deleted) == (4, 1)
    assert rows(engine, TILE_INDEXES) == loaded  # the same indexes, not rebuilt
    assert rows(engine, a_rows, s=a_id) == a_before
    b_counts = rows(
        engine,
        "select col_off, class_counts from tile where source_image_id = :s order by row_off, col_off",
        s=b_sources[0].source_image_id,
    )
    assert b_counts == [(0, [0, 16, 0]), (4, [16, 0, 0]), (0, [0, 16, 0]), (4, [16, 0, 0])]


def test_ingest_rolls_back_completely_on_failure(
    engine: Engine, scenes: tuple[TileTable, list[SourceRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_migrations(engine)
    empty = rows(engine, TILE_INDEXES)
    fk = rows(engine, TILE_FK)
    table, sources = scenes
    nothing = "select (select count(*) from tile), (select count(*) from source_image), (select count(*) from catalog_class)"

    # first load, failing in the middle of the COPY (after the indexes were dropped)
    real = bulk._tile_copy_chunks

    def broken(*args: Any, **kw: Any) -> Iterator[bytes]:
        chunks = real(*args, **kw)
        yield next(chunks)
        yield next(chunks)
        raise RuntimeError("connection lost")

    monkeypatch.setattr(bulk, "_tile_copy_chunks", broken)
    with pytest.raises(RuntimeError, match="connection lost"):
        cat.write_ingest(engine, table, sources, PARAMS)
    monkeypatch.undo()
    assert rows(engine, nothing) == [(0, 0, 0)]
    assert rows(engine, TILE_INDEXES) == empty and rows(engine, TILE_FK) == fk

    # first load, failing when the window UNIQUE constraint is rebuilt after the COPY
    dup = TileTable(
        pd.concat([table.frame, table.frame.iloc[[0]].assign(tile_id=12345)], ignore_index=True),
        np.vstack([table.counts, table.counts[:1]]),
        table.class_values,
        table.nodata_class,
    )
    with pytest.raises(CatalogError, match="tile_window_unique"):
        cat.write_ingest(engine, dup, sources, PARAMS)
    assert rows(engine, nothing) == [(0, 0, 0)]
    assert rows(engine, TILE_INDEXES) == empty and rows(engine, TILE_FK) == fk

    # incremental ingest failing on a duplicate tile id: the catalog keeps its rows
    cat.write_ingest(engine, table, sources, PARAMS)
    loaded = rows(engine, TILE_INDEXES)
    every = "select * from tile order by id"
    before = rows(engine, every)
    b = sources[1].source_image_id
    b_tiles = table.frame["source_image_id"].to_numpy() == b
    twice = TileTable(
        pd.concat([table.frame[b_tiles], table.frame[b_tiles].iloc[[0]]], ignore_index=True),
        np.vstack([table.counts[b_tiles], table.counts[b_tiles][:1]]),
        table.class_values,
        table.nodata_class,
    )
    with pytest.raises(CatalogError, match="tile_pkey"):
        cat.write_ingest(engine, twice, [sources[1]], PARAMS)
    assert rows(engine, every) == before
    assert rows(engine, TILE_INDEXES) == loaded
    assert rows(engine, nothing) == [(8, 2, 3)]
