"""Users' own tables and caches (issue 16 part 5): a PostgreSQL tile table read through the
``*_column`` keys, precomputed class_dist / uniqueness_score, and ``embed-import`` of an older
embedding cache (docs/algorithms.md §3, "Tiles from a table of your own")."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile, ExclusionConfig, InputConfig
from smt_tools.errors import ConfigError, InputDataError
from smt_tools.pipelines._inputs import plan_patch_records, scan_patch_records
from smt_tools.pipelines._user_table import table_from_class_dist
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.raster.demo_data import make_demo_data

runner = CliRunner()
PATCH = 64
EXCLUSION = {"exclude_border_nodata": False, "exclude_black_border": False}
STD = ("image_path", "mask_path", "row_off", "col_off", "patch_size")
MINE = ("Img Path", "lbl", "y0", "x0", "sz")  # a space and capitals: quoting matters


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """32 windows of 64 px over two 256 px demo scenes (classes 1, 2, 3, 4, 6; no nodata)."""
    out = tmp_path_factory.mktemp("ut_demo")
    make_demo_data(out, scenes=2, size=256, seed=0)
    pairs = pd.read_csv(out / "pairs.csv")
    rows = [
        (str(out / str(p.image)), str(out / str(p.mask)), r, c, PATCH)
        for p in pairs.itertuples()
        for r in range(0, 256, PATCH)
        for c in range(0, 256, PATCH)
    ]
    return pd.DataFrame(rows, columns=list(STD))


@pytest.fixture(scope="module")
def scanned(records: pd.DataFrame) -> Any:
    """The windows scanned as patch records (the numbers a user's class_dist carries)."""
    cfg = InputConfig(patch_records_csv=Path("unused.csv"), scan_workers=1)
    return scan_patch_records(records, "records", ExclusionConfig(), cfg)


@pytest.fixture(scope="module")
def db(test_database_url: str) -> Iterator[tuple[str, str]]:
    """(url, schema): a schema of this module's own in the test database, dropped at the end."""
    import psycopg
    from psycopg import sql

    url = test_database_url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"smt_ut_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    try:
        yield url, schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))


def make_table(url: str, schema: str, name: str, columns: dict[str, str], rows: list[Any]) -> str:
    """Create ``schema.name`` with ``columns`` {name: SQL type} and insert ``rows``."""
    import psycopg
    from psycopg import sql

    ident = sql.Identifier(schema, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create table {} ({})").format(
                ident,
                sql.SQL(", ").join(
                    sql.SQL("{} " + t).format(sql.Identifier(c)) for c, t in columns.items()
                ),
            )
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("insert into {} values ({})").format(
                    ident, sql.SQL(", ").join(sql.Placeholder() * len(columns))
                ),
                rows,
            )
    return f"{schema}.{name}"


def balanced(tmp: Path, inp: dict[str, Any], mode: str = "masks_only", **over: Any) -> Any:
    cfg: dict[str, Any] = {
        "mode": mode,
        "sampling_method": "rank_max",
        "input": inp,
        "clustering": {"k_selection": "fixed", "k": 3, "k_min": 2, "k_max": 3},
        "exclusion": EXCLUSION,
        "embeddings": {"dino_model": str(tmp / "no-such-model")},  # used: the run fails
        "output": {"csv_path": str(tmp / "b.csv")},
        **over,
    }
    run_balanced(
        validate_mapping({"balanced_dataset": cfg}, BalancedFile, "t.yaml").balanced_dataset
    )
    return pd.read_csv(tmp / "b.csv").sort_values("tile_id").reset_index(drop=True)


def mapped(url: str, table: str, names: tuple[str, ...] = MINE, **extra: str) -> dict[str, Any]:
    keys = {f"{s}_column": n for s, n in zip(STD, names, strict=True)}
    return {"catalog": {"url": url, "table": table, **keys, **extra}, "scan_workers": 1}


def counts_by_value(table: Any, i: int) -> dict[int, int]:
    return {int(v): int(n) for v, n in zip(table.class_values, table.counts[i], strict=True) if n}


# ----------------------------------------------------------------------------- column mapping


@pytest.mark.db
def test_mapped_table_reads_like_patch_records(
    db: tuple[str, str], records: pd.DataFrame, tmp_path: Path
) -> None:
    """A table with other column names, schema-qualified: the same tiles, ids and weights as the
    same windows given as patch records (the windows are scanned: no class_dist column)."""
    url, schema = db
    table = make_table(
        url,
        schema,
        "My Tiles",
        dict(zip(MINE, ("text", "text", "integer", "bigint", "smallint"), strict=True)),
        list(records.itertuples(index=False)),
    )
    # the dry run checks the mapping and counts the rows, reading none
    cfg = tmp_path / "dry.yaml"
    inp = mapped(url, table)
    out = {"csv_path": str(tmp_path / "dry.csv")}
    cfg.write_text(json.dumps({"balanced_dataset": {"input": inp, "output": out}}))
    res = runner.invoke(app, ["build-balanced-dataset", str(cfg), "--dry-run"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert f"table {table}: 32 rows (" in flat and '"Img Path" as image_path' not in flat
    assert "Img Path as image_path, lbl as mask_path, y0 as row_off" in flat
    assert not (tmp_path / "dry.csv").exists()
    got = balanced(tmp_path / "a", inp)
    want = balanced(tmp_path / "b", {"patch_records": records.to_dict("records")})
    assert len(got) == len(records) == 32
    cols = ["tile_id", "image_path", "row_off", "col_off", "class_counts_json", "sampler_weight"]
    pd.testing.assert_frame_equal(got[cols], want[cols])


@pytest.mark.db
def test_precomputed_class_dist_and_uniqueness(
    db: tuple[str, str], records: pd.DataFrame, scanned: Any, tmp_path: Path
) -> None:
    """class_dist and uniqueness_score are used as given: a standard-named table (JSON object
    counts) and a mapped one (SQL array, position = class value) with the same numbers give the
    same run; the counts are the scan's, the uniqueness is the column's, no model is loaded."""
    url, schema = db
    n = len(records)
    uniq = np.round(np.linspace(0.05, 0.95, n)[::-1], 6)  # distinct, known
    as_json = [
        json.dumps({str(v): c for v, c in counts_by_value(scanned, i).items()}) for i in range(n)
    ]
    width = int(scanned.class_values.max()) + 1
    as_array = []
    for i in range(n):
        row = [0.0] * width
        for v, c in counts_by_value(scanned, i).items():
            row[v] = float(c)
        as_array.append(row)
    std = make_table(
        url,
        schema,
        "tiles_std",
        {
            **dict(zip(STD, ("text", "text", "int", "int", "int"), strict=True)),
            "class_dist": "jsonb",
            "uniqueness_score": "double precision",
        },
        [
            (*r, d, u)
            for r, d, u in zip(records.itertuples(index=False), as_json, uniq, strict=True)
        ],
    )
    mine = make_table(
        url,
        schema,
        "tiles_mine",
        {
            **dict(zip(MINE, ("text", "text", "int", "int", "int"), strict=True)),
            "dist": "double precision[]",
            "uq": "real",
        },
        [
            (*r, d, float(u))
            for r, d, u in zip(records.itertuples(index=False), as_array, uniq, strict=True)
        ],
    )
    # the PostgreSQL block of the older config takes the same keys as the catalog block
    pg_block = mapped(url, mine, class_dist_column="dist", uniqueness_score_column="uq")["catalog"]
    pg_block["dsn"] = pg_block.pop("url")
    a = balanced(
        tmp_path / "a",
        {"catalog": {"url": url, "table": std, "image_path_column": "image_path"}},
        mode="embeddings",
    )
    b = balanced(
        tmp_path / "b",
        pg_block,
        mode="embeddings",
    )
    assert len(a) == n
    np.testing.assert_array_equal(a["tile_id"], b["tile_id"])
    np.testing.assert_array_equal(a["class_counts_json"], b["class_counts_json"])
    np.testing.assert_array_equal(a["freq_cluster_id"], b["freq_cluster_id"])
    np.testing.assert_allclose(a["uniqueness_score"], b["uniqueness_score"], rtol=1e-6)
    np.testing.assert_allclose(a["sampler_weight"], b["sampler_weight"], rtol=1e-6)
    # the counts are the scan's, joined by tile id; the uniqueness is the column's
    ids = scanned.frame["tile_id"].to_numpy(np.int64)
    pos = pd.Index(ids).get_indexer(a["tile_id"])
    assert (pos >= 0).all()
    scan_json = [json.dumps(counts_by_value(scanned, int(p))) for p in pos]
    nonzero = [{k: v for k, v in json.loads(s).items() if v} for s in a["class_counts_json"]]
    assert nonzero == [json.loads(s) for s in scan_json]
    np.testing.assert_array_equal(a["uniqueness_score"], uniq[pos])
    assert not (tmp_path / "no-such-model").exists()


@pytest.mark.db
def test_tile_id_column_and_uniqueness_nulls(db: tuple[str, str], records: pd.DataFrame) -> None:
    """The table's ids replace the computed ones; a bad id or a missing uniqueness score of an
    included tile is one line naming the row or tile."""
    from smt_tools.pipelines._inputs import load_input_tiles
    from smt_tools.pipelines._user_table import precomputed_uniqueness

    url, schema = db
    rows = [
        (*r, tid, u)
        for r, tid, u in zip(
            records.head(3).itertuples(index=False), (7, 5, 9), (0.5, None, 0.25), strict=True
        )
    ]
    cols = {
        **dict(zip(MINE, ("text", "text", "int", "int", "int"), strict=True)),
        "tid": "bigint",
        "u": "float8",
    }
    table = make_table(url, schema, "with_ids", cols, rows)
    keys = {"tile_id_column": "tid", "uniqueness_score_column": "u"}
    inp = InputConfig.model_validate(mapped(url, table, **keys))
    t = load_input_tiles(inp, ExclusionConfig(), None)
    assert sorted(t.frame["tile_id"].tolist()) == [5, 7, 9]
    by_id = dict(zip(t.frame["tile_id"], t.frame["uniqueness_score"], strict=True))
    assert by_id[7] == 0.5 and by_id[9] == 0.25 and np.isnan(by_id[5])
    with pytest.raises(InputDataError, match=r"^uniqueness_score is NULL .* for tile_id 5 "):
        precomputed_uniqueness(t)
    inp = InputConfig.model_validate(mapped(url, table, **keys, where_clause="u is not null"))
    t = load_input_tiles(inp, ExclusionConfig(), None)
    np.testing.assert_array_equal(precomputed_uniqueness(t), t.frame["uniqueness_score"])
    assert sorted(t.frame["tile_id"].tolist()) == [7, 9]
    bad = make_table(url, schema, "bad_ids", cols, [(*rows[0][:5], -1, 0.5)])
    inp = InputConfig.model_validate(mapped(url, bad, **keys))
    with pytest.raises(InputDataError, match=rf"^table {bad}\[0\]: tile_id must be a positive"):
        load_input_tiles(inp, ExclusionConfig(), None)


# ----------------------------------------------------------------------------- class_dist rules


def test_class_dist_fractions_counts_and_nodata(records: pd.DataFrame) -> None:
    """§3: fractions of the window -> round(fraction x 4096 px); the nodata class and the share
    not covered are nodata; a table with a row summing past 1 is read as counts."""
    plan = plan_patch_records(records.head(2), "t", None)
    ex = ExclusionConfig(nodata_class=0)
    t = table_from_class_dist(plan, [{"1": 0.25, "2": 0.5}, [0.25, 0.5, 0.25]], ex, "t")
    assert t.class_values.tolist() == [1, 2]
    assert t.counts.tolist() == [[1024, 2048], [2048, 1024]]
    np.testing.assert_allclose(t.frame["nodata_ratio"], [0.25, 0.25])
    assert t.frame["valid_pixels"].tolist() == [3072, 3072]
    assert not t.frame["has_mask_border_nodata"].any()
    c = table_from_class_dist(plan, ['{"3": 4000, "0": 96}', "[0, 10]"], ex, "t")
    assert c.class_values.tolist() == [1, 3] and c.counts.tolist() == [[0, 4000], [10, 0]]
    np.testing.assert_allclose(c.frame["nodata_ratio"], [96 / 4096, 4086 / 4096])


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (["{bad", "[1]"], "t[0]: class_dist is not JSON"),
        ([{"1": -0.5}, [1]], "t[0]: class_dist needs class values >= 0"),
        ([[2.5], [10]], "t[0]: class_dist mixes fractions and counts"),
        ([[5000], [1]], "t[0]: class_dist counts 5000 pixels but the window holds 4096"),
        ([7, [1]], "t[0]: class_dist must be a JSON object"),
    ],
)
def test_class_dist_errors(records: pd.DataFrame, values: list[Any], needle: str) -> None:
    plan = plan_patch_records(records.head(2), "t", None)
    with pytest.raises(InputDataError) as err:
        table_from_class_dist(plan, values, ExclusionConfig(), "t")
    assert needle in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- error lines


@pytest.mark.db
def test_unknown_column_and_table_are_one_line(
    db: tuple[str, str], records: pd.DataFrame, tmp_path: Path
) -> None:
    url, schema = db
    table = make_table(
        url,
        schema,
        "few",
        {"img": "text", "msk": "text", "r": "int", "c": "int", "s": "int"},
        list(records.head(2).itertuples(index=False)),
    )
    inp = mapped(url, table, ("img", "msk", "r", "c", "s"))
    inp["catalog"]["row_off_column"] = "nope"
    with pytest.raises(ConfigError) as err:
        balanced(tmp_path / "a", inp)
    assert str(err.value).endswith(
        f"table {table} has no column 'nope' for input.catalog.row_off_column: 'nope'; set "
        "input.catalog.row_off_column to one of its columns (img, msk, r, c, s)"
    )
    inp = {"catalog": {"url": url, "table": table, "image_path_column": "img"}}
    with pytest.raises(ConfigError, match=r"no column 'mask_path' for input.catalog.mask_path_col"):
        balanced(tmp_path / "b", inp)
    inp = mapped(url, table, ("img", "msk", "r", "c", "s"), uniqueness_score_column="u")
    with pytest.raises(ConfigError, match=r"no column 'u' for input.catalog.uniqueness_score"):
        balanced(tmp_path / "c", inp)
    inp = mapped(url, f"{schema}.absent", ("img", "msk", "r", "c", "s"))
    with pytest.raises(ConfigError, match=rf"table {schema}.absent not found"):
        balanced(tmp_path / "d", inp)
    # through the CLI: one line, exit 1
    cfg = tmp_path / "c.yaml"
    bad = mapped(url, table, ("img", "msk", "r", "oops", "s"))
    cfg.write_text(
        json.dumps(
            {
                "balanced_dataset": {
                    "mode": "masks_only",
                    "input": bad,
                    "output": {"csv_path": str(tmp_path / "o.csv")},
                }
            }
        )
    )
    res = runner.invoke(app, ["build-balanced-dataset", str(cfg)])
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "input.catalog.col_off_column: 'oops'" in lines[0], res.stderr


def test_column_keys_where_they_do_not_apply() -> None:
    from smt_tools.config._source import CatalogSource
    from smt_tools.pipelines._sources import source_ref

    with pytest.raises(ValueError, match=r"with path .* remove them"):
        CatalogSource(path=Path("t.parquet"), image_path_column="img")
    with pytest.raises(ValueError, match="has no runs: remove run_id"):
        CatalogSource(url="postgresql://h/d", run_id=3, image_path_column="img")
    with pytest.raises(ValueError, match="inside it"):
        InputConfig(tiles=Path("t.parquet"), image_path_column="img")
    with pytest.raises(ConfigError, match=r"^split.catalog.tile_id_column: a table of your own"):
        source_ref(CatalogSource(url="postgresql://h/d", tile_id_column="id"), "split.catalog")


# ----------------------------------------------------------------------------- embed-import


def _old_cache(path: Path, records: pd.DataFrame, emb: np.ndarray, layout: str) -> None:
    base = path.parent
    cols: dict[str, Any] = {
        # relative paths are read against the older file's folder
        "image_path": [os.path.relpath(p, base) for p in records["image_path"]],
        "mask_path": records["mask_path"].tolist(),
        "row_off": records["row_off"].to_numpy(np.int64),
        "col_off": records["col_off"].to_numpy(np.int64),
        "patch_size": records["patch_size"].to_numpy(np.int64),
    }
    if layout == "list":
        cols["embedding"] = pa.array(emb.astype(np.float64).tolist(), pa.list_(pa.float64()))
    else:
        for j in range(emb.shape[1]):
            cols[f"emb_{j}"] = emb[:, j]
    pq.write_table(pa.table(cols), path)


@pytest.mark.parametrize("layout", ["list", "columns"])
def test_embed_import_round_trip(
    records: pd.DataFrame, scanned: Any, tmp_path: Path, layout: str
) -> None:
    """The imported vectors come back per tile id through the real cache lookup of `embed`
    (same model and preprocessing key): nothing is computed."""
    pytest.importorskip("transformers")
    from smt_tools.config.balanced import EmbeddingsConfig
    from smt_tools.pipelines.embed import ensure_embeddings
    from tests.test_embeddings import save_tiny_dinov2

    model = save_tiny_dinov2(tmp_path / "tiny")
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(records), 32)).astype(np.float32)
    old = tmp_path / "old" / "emb.parquet"
    old.parent.mkdir()
    _old_cache(old, records, emb, layout)
    out = tmp_path / "cache.parquet"
    res = runner.invoke(
        app, ["embed-import", str(old), "--out", str(out), "--model-id", str(model)]
    )
    assert res.exit_code == 0, res.output
    assert f"Imported: {len(records)} embeddings (32-d" in res.output
    ecfg = EmbeddingsConfig(dino_model=str(model), parquet_path=out)
    # the scan's rows in reverse order: the join is by tile id, not by position
    frame = scanned.frame.iloc[::-1].reset_index(drop=True)
    got, r = ensure_embeddings(frame, ecfg)
    assert r.n_computed == 0 and r.n_cached == len(records) and r.dim == 32
    want = emb[::-1]  # scanned rows follow the records
    np.testing.assert_array_equal(got, want)
    if layout == "columns":
        return
    # a second import into the same cache: its rows win, the others stay
    again = tmp_path / "old" / "again.parquet"
    _old_cache(again, records.head(1), emb[:1] + 1, layout)
    res = runner.invoke(
        app, ["embed-import", str(again), "--out", str(out), "--model-id", str(model)]
    )
    assert res.exit_code == 0, res.output
    got, r = ensure_embeddings(scanned.frame, ecfg)
    assert r.n_computed == 0 and r.cache_rows == len(records)
    np.testing.assert_array_equal(got[0], emb[0] + 1)
    np.testing.assert_array_equal(got[1:], emb[1:])
    # another model's cache is refused, untouched
    other = save_tiny_dinov2(tmp_path / "tiny2")
    before = out.read_bytes()
    res = runner.invoke(
        app, ["embed-import", str(again), "--out", str(out), "--model-id", str(other)]
    )
    assert res.exit_code == 1 and "give another --out" in " ".join(res.stderr.split())
    assert out.read_bytes() == before


def test_embed_import_two_words(records: pd.DataFrame, tmp_path: Path) -> None:
    """``embed import OLD.parquet`` (the issue's and the older tool's spelling) runs
    ``embed-import`` through the console entry point, global options before it allowed."""
    pytest.importorskip("transformers")
    from smt_tools.cli.app import main, spelled_out
    from tests.test_embeddings import save_tiny_dinov2

    assert spelled_out(["--debug", "embed", "import", "a.parquet"]) == [
        "--debug",
        "embed-import",
        "a.parquet",
    ]
    assert spelled_out(["embed", "conf.yaml"]) == ["embed", "conf.yaml"]
    assert spelled_out(["train", "embed", "import"]) == ["train", "embed", "import"]
    model = save_tiny_dinov2(tmp_path / "tiny")
    emb = np.random.default_rng(1).normal(size=(len(records), 8)).astype(np.float32)
    old = tmp_path / "old.parquet"
    _old_cache(old, records, emb, "list")
    outs = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    res = runner.invoke(
        app, ["embed-import", str(old), "--out", str(outs[0]), "--model-id", str(model)]
    )
    assert res.exit_code == 0, res.output
    with pytest.raises(SystemExit) as done:
        main(["embed", "import", str(old), "--out", str(outs[1]), "--model-id", str(model)])
    assert done.value.code == 0
    a, b = (pd.read_parquet(p) for p in outs)
    pd.testing.assert_frame_equal(
        a.drop(columns="created_at", errors="ignore"), b.drop(columns="created_at", errors="ignore")
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("no_patch", "missing window column(s) patch_size; an older embedding cache needs"),
        ("ragged", "ragged embeddings: row 1 of embedding has 2 values but row 0 has 3"),
        ("nan", "row 0: embedding holds NaN or infinity"),
        ("dup", "rows 0 and 1 are the same window"),
        ("no_emb", "no embedding column: expected one list column (embedding)"),
    ],
)
def test_embed_import_errors(
    records: pd.DataFrame, tmp_path: Path, change: str, needle: str
) -> None:
    recs = records.head(2).copy()
    cols: dict[str, Any] = {
        c: recs[c].tolist() for c in ("image_path", "row_off", "col_off", "patch_size")
    }
    cols["embedding"] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    if change == "no_patch":
        del cols["patch_size"]
    elif change == "ragged":
        cols["embedding"] = [[1.0, 2.0, 3.0], [4.0, 5.0]]
    elif change == "nan":
        cols["embedding"] = [[float("nan"), 2.0, 3.0], [4.0, 5.0, 6.0]]
    elif change == "dup":
        cols["row_off"] = [0, 0]
        cols["col_off"] = [0, 0]
    elif change == "no_emb":
        del cols["embedding"]
    old = tmp_path / "old.parquet"
    pq.write_table(pa.table(cols), old)
    res = runner.invoke(app, ["embed-import", str(old), "--model-id", str(tmp_path / "m")])
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not (tmp_path / "old.smt.parquet").exists()
