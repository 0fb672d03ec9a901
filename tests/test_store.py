"""One TileStore, two backends: PostGIS and a Parquet tile table answer alike.

The same demo scenes are ingested into a fresh PostGIS catalog and into a Parquet file through
``catalog ingest``; every protocol method is then called on both and compared: tiles (with a
filter and a run), class names, fingerprints, runs written and read back, stats. A PostGIS store
holds one server connection for everything a run does and releases it at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools.catalog.store import (
    RESULT_COLUMNS,
    RunRecord,
    StoreRef,
    TileQuery,
    TileStore,
    open_store,
    store_ref,
)
from smt_tools.cli.app import app
from smt_tools.errors import CatalogError, ConfigError, EmptySelectionError, UnsafeQueryError

runner = CliRunner()
INGEST = ["--patch-size", "128", "--workers", "1", "--nodata-class", "0"]


@pytest.fixture
def both(
    fresh_database_url: str, demo_pairs: Path, demo_dir: Path, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The demo scenes ingested into PostGIS and into a Parquet table, with class names."""
    table = str(tmp_path / "tiles.parquet")
    names = demo_dir / "classes.csv"
    assert runner.invoke(app, ["catalog", "init", "--catalog", fresh_database_url]).exit_code == 0
    for target in (fresh_database_url, table):
        args = ["catalog", "ingest", str(demo_pairs), *INGEST, "--catalog", target]
        res = runner.invoke(app, [*args, "--class-names", str(names)])
        assert res.exit_code == 0, res.output
    yield {"postgis": fresh_database_url, "parquet": table}


def _run(store: TileStore, tile_ids: np.ndarray, command: str = "split") -> RunRecord:
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    results = pd.DataFrame(
        {
            "tile_id": tile_ids,
            "fold": np.arange(len(tile_ids)) % 3,
            "excluded": np.arange(len(tile_ids)) % 4 == 0,
            "sampler_weight": np.linspace(0.5, 2.0, len(tile_ids)),
        }
    )
    return RunRecord(command, {"k": 3}, {"tiles": len(tile_ids)}, results, now, now)


def test_both_backends_give_the_same_tiles_classes_and_runs(both: dict[str, str]) -> None:
    seen: dict[str, dict[str, object]] = {}
    where = "nodata_ratio < 0.5 and row_off >= 128 and (col_off between 0 and 256 or id < 0)"
    for kind, ref in both.items():
        with open_store(ref) as store:
            assert store.kind == kind
            tiles = store.read_tiles()
            order = np.argsort(tiles.frame["tile_id"].to_numpy())
            filtered = store.read_tiles(TileQuery(where_clause=where))
            run_ids = tiles.frame["tile_id"].to_numpy(np.int64)[order][:20]
            first = store.record_run(_run(store, run_ids))
            second = store.record_run(_run(store, run_ids[:5], "select-coreset"))
            command, results = store.read_run(first)
            in_run = store.read_tiles(TileQuery(run_id=first, included_only=True))
            seen[kind] = {
                "ids": tiles.frame["tile_id"].to_numpy()[order],
                "counts": tiles.counts[order],
                "class_values": tiles.class_values,
                "nodata": tiles.nodata_class,
                "filtered": sorted(filtered.frame["tile_id"].tolist()),
                "names": store.class_names(),
                "sources": len(store.source_fingerprints()),
                "rows": store.count_rows(),
                "run": (command, results["fold"].tolist(), results["excluded"].tolist()),
                "in_run": sorted(in_run.frame["tile_id"].tolist()),
                "stats": {k: v for k, v in store.stats().items() if k != "last_ingest"},
                "run_ids": second - first,
            }
    pg, pq_ = seen["postgis"], seen["parquet"]
    np.testing.assert_array_equal(pg["ids"], pq_["ids"])
    np.testing.assert_array_equal(pg["counts"], pq_["counts"])
    np.testing.assert_array_equal(pg["class_values"], pq_["class_values"])
    for key in ("nodata", "filtered", "names", "sources", "rows", "run", "in_run", "stats"):
        assert pg[key] == pq_[key], key
    assert pg["run_ids"] == 1
    # the filter selected a proper, non-empty part; the run kept its 15 included tiles
    assert 0 < len(pg["filtered"]) < len(pg["ids"])  # type: ignore[arg-type]
    assert len(pg["in_run"]) == 15  # type: ignore[arg-type]
    assert pg["run"][0] == "split"  # type: ignore[index]


def test_parquet_runs_are_files_beside_the_table(both: dict[str, str]) -> None:
    table = Path(both["parquet"])
    with open_store(table) as store:
        ids = store.read_tiles().frame["tile_id"].to_numpy(np.int64)
        run_id = store.record_run(_run(store, ids[:3]))
        assert store.stats()["runs"] == 1
    names = sorted(p.name for p in (table.parent / "tiles.parquet.runs").iterdir())
    assert names == ["last_run_id", f"run-{run_id:06d}.parquet"]
    with open_store(table) as store:
        command, results = store.read_run(run_id)
    assert command == "split"
    assert list(results.columns) == ["tile_id", *RESULT_COLUMNS]
    assert results["coreset_score"].isna().all()  # not recorded by this run: null, as in PostGIS


@pytest.mark.parametrize("kind", ["postgis", "parquet"])
def test_a_run_with_unknown_tiles_writes_nothing(both: dict[str, str], kind: str) -> None:
    with open_store(both[kind]) as store:
        before = store.stats()["runs"]
        with pytest.raises(CatalogError, match="nothing was written"):
            store.record_run(_run(store, np.array([1, 2, 3], np.int64)))
        assert store.stats()["runs"] == before
        with pytest.raises(EmptySelectionError, match="no run with id 999"):
            store.read_run(999)


@pytest.mark.parametrize("kind", ["postgis", "parquet"])
def test_filters_are_checked_before_they_run(both: dict[str, str], kind: str) -> None:
    with open_store(both[kind]) as store:
        with pytest.raises(UnsafeQueryError, match="pg_read_file"):
            store.read_tiles(TileQuery(where_clause="pg_read_file('/etc/passwd') is not null"))
        with pytest.raises(EmptySelectionError):
            store.read_tiles(TileQuery(where_clause="nodata_ratio > 2"))


def test_parquet_filter_uses_sql_null_logic(both: dict[str, str]) -> None:
    """``not (x)`` leaves out rows where x is unknown, as PostgreSQL does."""
    with open_store(both["parquet"]) as store:
        all_ids = set(store.read_tiles().frame["tile_id"])
        low = set(store.read_tiles(TileQuery(where_clause="nodata_ratio < 0.1")).frame["tile_id"])
        high = set(
            store.read_tiles(TileQuery(where_clause="not (nodata_ratio < 0.1)")).frame["tile_id"]
        )
        with pytest.raises(UnsafeQueryError, match="PostGIS catalog"):
            store.read_tiles(TileQuery(where_clause="nodata_ratio ~ 1"))
        with pytest.raises(ConfigError, match="one table"):
            store.read_tiles(TileQuery(table="tile_view"))
    assert low and high and low | high == all_ids and not low & high


def test_postgis_store_holds_one_connection_for_a_run(both: dict[str, str]) -> None:
    with open_store(both["postgis"]) as store:
        tiles = store.read_tiles()
        store.class_names()
        store.source_fingerprints()
        run_id = store.record_run(_run(store, tiles.frame["tile_id"].to_numpy(np.int64)[:4]))
        store.read_run(run_id)
        store.read_tiles(TileQuery(run_id=run_id))
        store.stats()
        engine = store.engine  # type: ignore[attr-defined]
        assert store.connections_opened == 1  # type: ignore[attr-defined]
    assert engine.pool.checkedout() == 0
    assert engine.pool.checkedin() == 0  # disposed when the block ended


def test_store_refs_resolve_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMT_DATABASE_URL", str(tmp_path / "env.parquet"))
    assert store_ref() == StoreRef(path=tmp_path / "env.parquet")
    assert store_ref("postgresql://h/db").kind == "postgis"
    assert store_ref(path="x.parquet", key="split.catalog").kind == "parquet"
    monkeypatch.delenv("SMT_DATABASE_URL")
    with pytest.raises(CatalogError, match=r"split\.catalog\.url .* split\.catalog\.path"):
        store_ref(key="split.catalog")
    with pytest.raises(ConfigError, match="tile table not found"):
        with open_store(tmp_path / "missing.parquet"):
            pass


def test_parquet_store_imports_no_database_library(both: dict[str, str]) -> None:
    import subprocess

    code = (
        "import sys\nfrom smt_tools.catalog import open_store\n"
        f"with open_store({both['parquet']!r}) as s:\n    s.read_tiles(); s.stats()\n"
        "print(sorted(m for m in ('sqlalchemy', 'psycopg', 'geoalchemy2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_readme_open_store_example_runs(
    both: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "open_store(" in b
    ]
    assert len(blocks) == 1
    (tmp_path / "demo").mkdir()
    shutil.copy(both["parquet"], tmp_path / "demo" / "tiles.parquet")
    with open_store(tmp_path / "demo" / "tiles.parquet") as store:
        ids = store.read_tiles().frame["tile_id"].to_numpy(np.int64)
        store.record_run(_run(store, ids[:6]))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # exactly the README's code
    tiles, results = scope["tiles"], scope["results"]
    assert scope["command"] == "split" and len(results) == 6  # type: ignore[arg-type]
    assert (tiles.frame["nodata_ratio"] < 0.05).all()  # type: ignore[attr-defined]


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


@pytest.mark.parametrize("kind", ["postgis", "parquet"])
def test_coreset_from_a_catalog_run_equals_coreset_from_its_csv(
    both: dict[str, str], kind: str, tmp_path: Path
) -> None:
    """build-balanced-dataset on the catalog records run R; select-coreset from
    ``catalog: {run_id: R}`` picks exactly what it picks from the balanced CSV of that run."""
    import yaml

    where = "url" if kind == "postgis" else "path"
    balanced = tmp_path / "balanced.yaml"
    balanced.write_text(
        yaml.safe_dump(
            {
                "balanced_dataset": {
                    "mode": "masks_only",
                    "input": {"catalog": {where: both[kind]}},
                    "clustering": {"k_selection": "fixed", "k": 3},
                    "output": {"csv_path": str(tmp_path / "b.csv")},
                }
            }
        )
    )
    code, out = _cli("build-balanced-dataset", str(balanced))
    assert code == 0, out
    run_id = int(out.split("Recorded catalog run ")[1].split()[0].rstrip(".;,"))
    picks = {}
    for name, source in (
        ("csv", {"input_csv_path": str(tmp_path / "b.csv")}),
        ("run", {"catalog": {where: both[kind], "run_id": run_id}}),
    ):
        conf = tmp_path / f"c_{name}.yaml"
        body = {"method": "cb", "budget": 0.3, **source}
        body["output"] = {"csv_path": str(tmp_path / f"c_{name}.csv")}
        conf.write_text(yaml.safe_dump({"coreset": body}))
        code, out = _cli("select-coreset", str(conf))
        assert code == 0, out
        frame = pd.read_csv(tmp_path / f"c_{name}.csv").sort_values("tile_id")
        picks[name] = frame.loc[frame["coreset_selected"], "tile_id"].tolist()
        assert ("Recorded catalog run" in out) == (name == "run")
    assert picks["csv"] and picks["csv"] == picks["run"]
    with open_store(both[kind]) as store:
        assert store.stats()["runs"] == 2  # the balanced run and the coreset run


def test_pipelines_reach_the_catalog_only_through_the_store() -> None:
    """No pipeline imports the SQL modules or the Parquet file format, or builds a connection;
    only ``catalog init`` and ``doctor`` (server administration) name the PostGIS backend."""
    import re

    root = Path(__file__).resolve().parents[1] / "smt_tools" / "pipelines"
    inner = re.compile(
        r"smt_tools\.catalog\.(engine|bulk|queries|runs|spatial|migrate|parquet_io|parquet_store)\b"
    )
    offenders = []
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if inner.search(text) or re.search(r"\b(connect|create_engine)\(", text):
            offenders.append(path.name)
        if "postgis_store" in text and path.name not in ("catalog_init.py", "doctor.py"):
            offenders.append(path.name)
    assert offenders == []


def test_no_catalog_block_records_a_password(both: dict[str, str], tmp_path: Path) -> None:
    """A password in any catalog: block's url is masked in every record of the run: the run
    record beside the outputs and the catalog's run row (trust auth ignores the password)."""
    import json

    import yaml

    url = both["postgis"].replace("postgresql://postgres@", "postgresql://postgres:pw-9f3k@")
    configs = {
        "build-balanced-dataset": {
            "balanced_dataset": {
                "input": {"catalog": {"url": url}},
                "clustering": {"k_selection": "fixed", "k": 2},
                "output": {"csv_path": str(tmp_path / "b.csv")},
            }
        },
        "split": {
            "split": {
                "catalog": {"url": url},
                "n_splits": 2,
                "output": {"csv_path": str(tmp_path / "s.csv")},
            }
        },
    }
    for command, body in configs.items():
        conf = tmp_path / f"{command}.yaml"
        conf.write_text(yaml.safe_dump(body))
        code, out = _cli(command, str(conf))
        assert code == 0, out
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.run.json"))]
    records = [r for r in records if r["command"] in configs]
    assert len(records) == 2
    with open_store(both["postgis"]) as store:
        rows = [store.run_info(int(r["run_id"])) for r in store.list_runs().to_dict("records")]
    text = json.dumps(records) + json.dumps([r["config"] for r in rows], default=str)
    assert "pw-9f3k" not in text and text.count("postgres:***@") == 4


def test_batched_reads_equal_plain_reads_with_categorical_texts(both: dict[str, str]) -> None:
    """Both stores' batched read (what build-balanced-dataset uses at 10M tiles) gives the same
    rows, numbers and texts as the plain read; the per-image texts come as sorted categories."""
    for kind, ref in both.items():
        with open_store(ref) as store:
            plain, batched = store.read_tiles(), store.read_tiles_batched()  # type: ignore[attr-defined]
        a, b = plain.frame, batched.frame
        assert list(b.columns[: len(a.columns)]) == list(a.columns), kind
        for col in ("group_id", "image_path", "mask_path", "crs"):
            assert isinstance(b[col].dtype, pd.CategoricalDtype), (kind, col)
            cats = list(b[col].cat.categories)
            assert cats == sorted(cats), (kind, col)
            assert b[col].astype(object).tolist() == a[col].astype(object).tolist(), (kind, col)
        numeric = [c for c in a.columns if c not in ("group_id", "image_path", "mask_path", "crs")]
        pd.testing.assert_frame_equal(a[numeric], b[numeric], check_dtype=False, obj=kind)
        assert np.array_equal(plain.counts, batched.counts), kind
        assert np.array_equal(plain.class_values, batched.class_values), kind
