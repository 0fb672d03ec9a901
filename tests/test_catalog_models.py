"""The ORM models of smt_tools.catalog.models against a really migrated PostGIS catalog.

Column by column (name and order, SQL type, nullability, keys), then rows: a query through the
models returns what the raw SQL returns, and the README's "tiles of one run inside an area of
interest" example, run as printed, finds the tiles shapely finds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.catalog import CatalogClass, Run, SourceImage, Tile, TileResult
from smt_tools.catalog.models import CatalogBase

README = Path(__file__).resolve().parents[1] / "README.md"
MODELS = (SourceImage, Tile, CatalogClass, Run, TileResult)


def _engine(url: str) -> Iterator[Any]:
    from smt_tools.catalog import connect

    engine = connect(url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def migrated(fresh_database_url: str) -> Iterator[Any]:
    from smt_tools.catalog import apply_migrations

    for engine in _engine(fresh_database_url):
        apply_migrations(engine)
        yield engine


@pytest.fixture
def catalog_with_run(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The demo ingested at 128 px (64 tiles) and one build-balanced-dataset run (id 1) over
    the tiles with nodata_ratio < 0.05."""
    from smt_tools.cli.app import app
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    monkeypatch.setenv("SMT_DATABASE_URL", fresh_database_url)
    run_catalog_init()
    run_ingest(demo_pairs, patch_size=128, nodata_class=0, workers=1)
    conf = tmp_path / "balanced.yaml"
    data = {
        "balanced_dataset": {
            "mode": "masks_only",
            "input": {"dsn": "${SMT_DATABASE_URL}", "where_clause": "nodata_ratio < 0.05"},
            "clustering": {"k_selection": "fixed", "k": 4, "random_state": 0},
            "output": {"csv_path": str(tmp_path / "balanced.csv")},
        }
    }
    conf.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    yield from _engine(fresh_database_url)


def _db_columns(conn: Any, table: str) -> list[tuple[str, str, bool]]:
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
            "from pg_attribute a where a.attrelid = cast(:t as regclass) "
            "and a.attnum > 0 and not a.attisdropped order by a.attnum"
        ),
        {"t": table},
    ).all()
    return [(r[0], r[1], bool(r[2])) for r in rows]


def _db_constraint_columns(conn: Any, table: str, kind: str) -> set[tuple[str, ...]]:
    """Column tuples of the table's constraints of ``kind`` (p primary, u unique, f foreign)."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "select array(select a.attname from unnest(c.conkey) with ordinality k(n, i) "
            "join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) "
            "from pg_constraint c where c.conrelid = cast(:t as regclass) and c.contype = :k"
        ),
        {"t": table, "k": kind},
    ).all()
    return {tuple(r[0]) for r in rows}


def _model_type(column: Any) -> str:
    from sqlalchemy.dialects import postgresql

    return str(column.type.compile(dialect=postgresql.dialect()))


@pytest.mark.db
def test_models_match_the_migrated_schema_column_by_column(migrated: Any) -> None:
    assert {m.__tablename__ for m in MODELS} == set(CatalogBase.metadata.tables)
    with migrated.connect() as conn:
        for model in MODELS:
            table = model.__table__
            db = _db_columns(conn, table.name)
            # names, in the migrated order (ALTER TABLE ADD COLUMN appends)
            assert [c[0] for c in db] == [c.name for c in table.columns], table.name
            for (name, db_type, not_null), col in zip(db, table.columns, strict=True):
                # the same SQL type (PostGIS writes geometry(Polygon,4326), SQLAlchemy POLYGON)
                assert _model_type(col).upper() == db_type.upper(), f"{table.name}.{name}"
                assert col.nullable is not not_null, f"{table.name}.{name} nullability"
            pk = tuple(c.name for c in table.primary_key.columns)
            assert _db_constraint_columns(conn, table.name, "p") == {pk}, table.name
            model_fks = {
                (fk.parent.name, fk.column.table.name, fk.column.name) for fk in table.foreign_keys
            }
            db_fks = {
                (cols[0], ref.split(".")[0], ref.split(".")[1])
                for cols, ref in _db_foreign_keys(conn, table.name)
            }
            assert model_fks == db_fks, table.name
            model_unique = {(c.name,) for c in table.columns if c.unique}
            db_unique = {u for u in _db_constraint_columns(conn, table.name, "u") if len(u) == 1}
            assert model_unique == db_unique, table.name
    # the geometry columns: lon/lat polygons, as the migrations declare them
    for model in (SourceImage, Tile):
        geom = model.__table__.c.footprint.type
        assert (geom.geometry_type, geom.srid) == ("POLYGON", 4326)


def _db_foreign_keys(conn: Any, table: str) -> list[tuple[tuple[str, ...], str]]:
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "select a.attname, cf.relname || '.' || af.attname from pg_constraint c "
            "join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1] "
            "join pg_class cf on cf.oid = c.confrelid "
            "join pg_attribute af on af.attrelid = c.confrelid and af.attnum = c.confkey[1] "
            "where c.conrelid = cast(:t as regclass) and c.contype = 'f'"
        ),
        {"t": table},
    ).all()
    return [((r[0],), r[1]) for r in rows]


def _comparable(value: Any) -> Any:
    """Geometry as its EWKB bytes (what the raw SQL selects), everything else as is."""
    from geoalchemy2 import WKBElement

    if isinstance(value, WKBElement):
        return bytes(value.data)
    return value


@pytest.mark.db
def test_orm_queries_return_the_raw_sql_rows(catalog_with_run: Any) -> None:
    from sqlalchemy import select, text
    from sqlalchemy.orm import Session

    counts = {}
    with Session(catalog_with_run) as session:
        for model in MODELS:
            table = model.__table__
            names = [c.name for c in table.columns]
            pk = [c.name for c in table.primary_key.columns]
            raw_cols = ", ".join(f"ST_AsEWKB({n})" if n == "footprint" else n for n in names)
            raw = session.execute(
                text(f"select {raw_cols} from {table.name} order by {', '.join(pk)}")
            ).all()
            order = [getattr(model, n) for n in pk]
            objs = session.scalars(select(model).order_by(*order)).all()
            via_orm = [tuple(_comparable(getattr(o, n)) for n in names) for o in objs]
            raw_rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in raw]
            assert via_orm == raw_rows, table.name
            counts[table.name] = len(objs)
        # relationships follow the foreign keys
        tile = session.scalars(select(Tile).order_by(Tile.id)).first()
        assert tile is not None and tile.source_image.id == tile.source_image_id
        run = session.get(Run, 1)
        assert run is not None and run.command == "build-balanced-dataset"
        assert len(run.results) == counts["tile_result"]
    assert counts["source_image"] == 4 and counts["tile"] == 64 and counts["run"] == 1
    assert counts["catalog_class"] == 6
    assert 0 < counts["tile_result"] < 64  # the where_clause dropped the nodata tiles


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    found = [b for b in blocks if "ST_Intersects" in b and "pd.read_sql" in b]
    assert len(found) == 1, "README: one python example with ST_Intersects and pd.read_sql"
    return found[0]


@pytest.mark.db
def test_readme_area_of_interest_example_matches_shapely(catalog_with_run: Any) -> None:
    import shapely
    from sqlalchemy import text

    code = _readme_example()
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # exactly the README's code
    tiles = scope["tiles"]
    scope["engine"].dispose()

    aoi = shapely.from_wkt(re.search(r'"(POLYGON\(\(.*?\)\))"', code).group(1))  # type: ignore[union-attr]
    with catalog_with_run.connect() as conn:
        rows = conn.execute(
            text(
                "select t.id, ST_AsText(t.footprint) from tile t join tile_result r "
                "on r.tile_id = t.id where r.run_id = 1 order by t.id"
            )
        ).all()
    inside = [tid for tid, wkt in rows if aoi.intersects(shapely.from_wkt(wkt))]
    assert 0 < len(inside) < len(rows)  # the area of interest picks some of the run's tiles
    assert tiles["tile_id"].tolist() == inside
    assert list(tiles.columns) == [
        "tile_id",
        "group_id",
        "row_off",
        "col_off",
        "nodata_ratio",
        "sampler_weight",
        "excluded",
        "wkt",
    ]
    # the area lies where scene 0 and its revisit overlap
    assert set(tiles["group_id"]) == {"scene_000", "scene_003_revisit_of_000"}
    assert (tiles["nodata_ratio"] < 0.05).all()  # only the run's tiles
    assert tiles["sampler_weight"].notna().all()


def test_importing_the_catalog_does_not_import_geoalchemy2() -> None:
    code = (
        "import sys, smt_tools.catalog\n"
        "print('geoalchemy2' in sys.modules)\n"
        "from smt_tools.catalog import Tile\n"
        "print('geoalchemy2' in sys.modules, Tile.__tablename__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    assert out[:2] == ["False", "True tile"]
