"""build-balanced-dataset end to end on hand-built GeoTIFFs with exactly known weights,
row-order independence, catalog runs, and bad inputs (exit 1, one line, no output files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.export.csv_out import BALANCED_COLUMNS
from smt_tools.pipelines.balanced import run_balanced
from tests.rasters import write_pair

runner = CliRunner()
PATCH = 16
#: composition of each 16x16 window (2 rows x 8 columns of the 32x128 mask)
GROUPS = "ABCAABDCBAABCABD"
#: expected weights (k = 3 fixed): A (6 tiles) rank 3.5, B (5) rank 9, C (3) rank 13 of 14,
#: r = (rank - 1) / 13, scaled so the max is 1; D (nodata border) is excluded -> 0
EXPECTED = {"A": 2.5 / 12, "B": 8 / 12, "C": 1.0, "D": 0.0}


def _window(kind: str) -> np.ndarray:
    w = np.ones((PATCH, PATCH), np.uint8)
    if kind == "B":
        w[:, PATCH // 2 :] = 2
    elif kind == "C":
        w[:] = 3
        w[: PATCH // 4] = 2
    elif kind == "D":
        w[:] = 4
        w[:, 0] = 0  # nodata on the border ring -> has_mask_border_nodata
    return w


def hand_scene(folder: Path) -> tuple[Path, Path]:
    mask = np.zeros((2 * PATCH, 8 * PATCH), np.uint8)
    for i, kind in enumerate(GROUPS):
        r, c = divmod(i, 8)
        mask[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = _window(kind)
    return write_pair(folder, "hand", mask)


def records(img: Path, msk: Path) -> list[dict[str, Any]]:
    out = []
    for i in range(len(GROUPS)):
        r, c = divmod(i, 8)
        out.append(
            {
                "image_path": str(img),
                "mask_path": str(msk),
                "row_off": r * PATCH,
                "col_off": c * PATCH,
                "patch_size": PATCH,
            }
        )
    return out


def config(tmp: Path, recs: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "mode": "masks_only",
        "sampling_method": "rank_max",
        "input": {"patch_records": recs, "scan_workers": 1},
        "clustering": {"k_min": 2, "k_max": 3, "k_selection": "fixed", "k": 3},
        # the hand scene marks nodata with 0; patch records name it (not given = none)
        "exclusion": {
            "exclude_border_nodata": True,
            "exclude_black_border": True,
            "nodata_class": 0,
        },
        "output": {
            "csv_path": str(tmp / "out" / "b.csv"),
            "geojson_path": str(tmp / "out" / "b.geojson"),
        },
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return {"balanced_dataset": cfg}


def run_cfg(data: dict[str, Any]) -> Any:
    return run_balanced(validate_mapping(data, BalancedFile, "test.yaml").balanced_dataset)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return hand_scene(tmp_path_factory.mktemp("hand"))


def test_known_weights_exclusion_and_csv(scene: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_cfg(config(tmp_path, records(*scene)))
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    assert list(out.columns) == list(BALANCED_COLUMNS)
    expected = np.array([EXPECTED[g] for g in GROUPS])
    assert out["sampler_weight"].to_numpy() == pytest.approx(expected)
    assert out["excluded"].tolist() == [g == "D" for g in GROUPS]
    # the excluded tiles are not in the clustering pool: 3 clusters of 6, 5, 3 included tiles
    assert sorted(result.cluster_sizes.values()) == [3, 5, 6]
    assert (out.loc[out["excluded"], "freq_cluster_id"] == -1).all()
    assert (out.loc[out["excluded"], "freq_cluster_size"] == 0).all()
    sizes = {g: out.loc[[k == g for k in GROUPS], "freq_cluster_size"].unique() for g in "ABC"}
    assert {g: v.tolist() for g, v in sizes.items()} == {"A": [6], "B": [5], "C": [3]}
    assert out.loc[[g == "A" for g in GROUPS], "freq_cluster_weight"].to_numpy() == pytest.approx(
        1 / 6
    )
    # class shares: uniform over the 14 included tiles
    dist = [json.loads(s) for s in out["class_dist_json"]]
    assert dist[GROUPS.index("B")] == {"1": 0.5, "2": 0.5, "3": 0.0, "4": 0.0}
    counts = [json.loads(s) for s in out["class_counts_json"]]
    assert counts[GROUPS.index("D")] == {"1": 0, "2": 0, "3": 0, "4": 240}
    px = PATCH * PATCH
    c1 = 6 * px + 5 * px / 2
    c2 = 5 * px / 2 + 3 * px / 4
    c3 = 3 * px * 3 / 4
    total = 14 * px
    assert result.uniform_share == pytest.approx([c1 / total, c2 / total, c3 / total, 0.0])
    wa, wb, wc = EXPECTED["A"], EXPECTED["B"], EXPECTED["C"]
    wsum = 6 * wa + 5 * wb + 3 * wc
    assert result.weighted_share[0] == pytest.approx((6 * wa + 5 * wb / 2) * px / (wsum * px))
    assert result.ess == pytest.approx(wsum**2 / (6 * wa**2 + 5 * wb**2 + 3 * wc**2))
    assert result.n_excluded == 2 and result.exclusion_counts["mask_border_nodata"] == 2
    assert result.warnings and "masks_only" in result.warnings[0]
    assert result.effective_method == "composition_only"


def test_excluded_tiles_do_not_shape_clusters(scene: tuple[Path, Path], tmp_path: Path) -> None:
    recs = records(*scene)
    with_d = run_cfg(config(tmp_path / "a", recs))
    without_d = run_cfg(
        config(tmp_path / "b", [r for r, g in zip(recs, GROUPS, strict=True) if g != "D"])
    )
    a = pd.read_csv(tmp_path / "a" / "out" / "b.csv").set_index("tile_id")
    b = pd.read_csv(tmp_path / "b" / "out" / "b.csv").set_index("tile_id")
    assert with_d.cluster_sizes == without_d.cluster_sizes
    assert a.loc[b.index, "sampler_weight"].to_numpy() == pytest.approx(b["sampler_weight"])
    # when D is NOT excluded it joins the pool and the weights change
    run_cfg(config(tmp_path / "c", recs, exclusion={"exclude_border_nodata": False}))
    c = pd.read_csv(tmp_path / "c" / "out" / "b.csv").set_index("tile_id")
    assert not c["excluded"].any()
    assert not np.allclose(c.loc[b.index, "sampler_weight"], b["sampler_weight"])


def test_row_order_independent(demo_dir: Path, tmp_path: Path) -> None:
    recs = []
    for scene in ("scene_000", "scene_001", "scene_002"):
        for r in range(0, 512, 128):
            for c in range(0, 512, 128):
                recs.append(
                    {
                        "image_path": str(demo_dir / "images" / f"{scene}.tif"),
                        "mask_path": str(demo_dir / "masks" / f"{scene}.tif"),
                        "row_off": r,
                        "col_off": c,
                        "patch_size": 128,
                    }
                )
    shuffled = [recs[i] for i in np.random.default_rng(5).permutation(len(recs))]
    clus = {"k_min": 2, "k_max": 8, "k_selection": "elbow", "random_state": 3}
    ra = run_cfg(config(tmp_path / "a", recs, clustering=clus))
    rb = run_cfg(config(tmp_path / "b", shuffled, clustering=clus))
    a = pd.read_csv(tmp_path / "a" / "out" / "b.csv")
    b = pd.read_csv(tmp_path / "b" / "out" / "b.csv")
    # outputs keep the input order...
    assert b["row_off"].tolist() == [r["row_off"] for r in shuffled]
    # ...and every number per tile is the same
    a, b = a.set_index("tile_id").sort_index(), b.set_index("tile_id").sort_index()
    pd.testing.assert_frame_equal(a, b)
    assert ra.k == rb.k and ra.ess == pytest.approx(rb.ess)
    assert 0 < ra.n_excluded < ra.n_tiles
    # weights of one cluster are equal
    inc = a[~a["excluded"]]
    assert (inc.groupby("freq_cluster_id")["sampler_weight"].nunique() == 1).all()


def test_rare_boost_and_floor(scene: tuple[Path, Path], tmp_path: Path) -> None:
    res = run_cfg(
        config(
            tmp_path,
            records(*scene),
            weights={"rare_class_boost": 3.0, "rare_class_ids": [3], "weight_floor": 0.5},
        )
    )
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    # C tiles are 3/4 class 3: boost 1 + 2 * .75 = 2.5 -> C dominates; A, B floored at .5
    w = {g: out.loc[[k == g for k in GROUPS], "sampler_weight"].unique().tolist() for g in "ABCD"}
    assert w["C"] == [1.0]
    assert w["A"] == pytest.approx([0.5])
    assert w["B"] == pytest.approx([max(0.5, (8 / 13) / (2.5 * 12 / 13))])
    assert w["D"] == [0.0]
    assert res.rare_classes == [3]


def _write_yaml(tmp: Path, data: dict[str, Any]) -> Path:
    p = tmp / "conf.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _assert_fails(conf: Path, out_dir: Path, *needles: str, after_scan: bool = False) -> str:
    """Exit 1 with one ``error:`` line (the only stderr line unless a scan progress bar ran
    before the failure), naming ``needles``; no output file left behind."""
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if not after_scan:
        assert len(lines) == 1, res.stderr
    err = lines[-1]
    assert err.startswith("error: ") and sum(x.startswith("error") for x in lines) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())
    return err


def _mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data["balanced_dataset"]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "needles"),
    [
        ("clustering.k_mx", 16, ("clustering.k_mx", "unknown key", "k_max")),
        ("exclusion.exclude_border_nodatta", True, ("did you mean 'exclude_border_nodata'",)),
        ("mode", "mask_only", ("balanced_dataset.mode", "masks_only")),
        ("sampling_method", "rank_mx", ("sampling_method", "rank_max")),
        ("sampling_method", "uniqueness_only", ("uniqueness_only",)),
        ("clustering.k_min", 9, ("k_min (9) must be <= k_max (3)",)),
    ],
)
def test_bad_config_one_line(
    scene: tuple[Path, Path], tmp_path: Path, path: str, value: Any, needles: tuple[str, ...]
) -> None:
    data = _mutate(config(tmp_path, records(*scene)), path, value)
    _assert_fails(_write_yaml(tmp_path, data), tmp_path / "out", "conf.yaml", *needles)


def test_missing_file_and_window_outside(scene: tuple[Path, Path], tmp_path: Path) -> None:
    recs = records(*scene)
    recs[3] = {**recs[3], "mask_path": str(tmp_path / "nope.tif")}
    conf = _write_yaml(tmp_path, config(tmp_path, recs))
    _assert_fails(conf, tmp_path / "out", "patch_records[3].mask_path", "nope.tif", "not found")
    recs = records(*scene)
    recs[5] = {**recs[5], "row_off": 4000}
    conf = _write_yaml(tmp_path, config(tmp_path, recs))
    _assert_fails(conf, tmp_path / "out", "patch_records[5]", "row_off=4000", "outside")


def test_patch_records_csv_and_all_excluded(scene: tuple[Path, Path], tmp_path: Path) -> None:
    img, msk = scene
    csv = tmp_path / "records.csv"
    frame = pd.DataFrame(records(img, msk))
    frame["image_path"] = [str(Path(p).relative_to(img.parent.parent)) for p in frame.image_path]
    frame["mask_path"] = [str(Path(p).relative_to(img.parent.parent)) for p in frame.mask_path]
    (img.parent.parent / "records.csv").write_text(frame.to_csv(index=False))
    data = config(tmp_path, records(img, msk))
    data["balanced_dataset"]["input"] = {
        "patch_records_csv": str(img.parent.parent / "records.csv")
    }
    run_cfg(data)
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    assert out["sampler_weight"].to_numpy() == pytest.approx([EXPECTED[g] for g in GROUPS])
    # every tile excluded -> an error, not all-ones, and nothing written
    data = config(
        tmp_path / "x", records(img, msk), exclusion={"max_nodata_ratio": 0.0, "min_entropy": 5.0}
    )
    _assert_fails(
        _write_yaml(tmp_path, data),
        tmp_path / "x" / "out",
        "all 16 tiles are excluded",
        after_scan=True,
    )
    # a bad CSV column
    csv.write_text("image,mask\na.tif,b.tif\n")
    data["balanced_dataset"]["input"] = {"patch_records_csv": str(csv)}
    _assert_fails(_write_yaml(tmp_path, data), tmp_path / "x" / "out", "missing column(s)")


def test_failed_run_keeps_earlier_outputs(scene: tuple[Path, Path], tmp_path: Path) -> None:
    run_cfg(config(tmp_path, records(*scene)))
    before = (tmp_path / "out" / "b.csv").read_bytes()
    recs = records(*scene)
    recs[0] = {**recs[0], "col_off": 9999}
    res = runner.invoke(
        app, ["build-balanced-dataset", str(_write_yaml(tmp_path, config(tmp_path, recs)))]
    )
    assert res.exit_code == 1
    assert (tmp_path / "out" / "b.csv").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.csv", "b.geojson", "b.qml"]


# --- catalog -----------------------------------------------------------------------------


@pytest.fixture
def ingested_catalog(fresh_database_url: str, demo_pairs: Path) -> str:
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    run_catalog_init(fresh_database_url)
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=128, nodata_class=0, workers=1)
    return fresh_database_url


def _pg_config(tmp: Path, url: str, **inp: Any) -> dict[str, Any]:
    data = config(tmp, [])
    data["balanced_dataset"]["input"] = {"dsn": url, **inp}
    data["balanced_dataset"]["clustering"] = {"k_min": 2, "k_max": 8, "random_state": 0}
    return data


@pytest.mark.db
def test_catalog_input_records_run(ingested_catalog: str, tmp_path: Path) -> None:
    import psycopg

    res = run_cfg(_pg_config(tmp_path, ingested_catalog, where_clause="nodata_ratio < 0.5"))
    assert res.run_id is not None
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    with psycopg.connect(ingested_catalog) as conn:
        n_tiles = conn.execute("select count(*) from tile where nodata_ratio < 0.5").fetchone()
        rows = conn.execute(
            "select tile_id, sampler_weight, freq_cluster_id, excluded from tile_result "
            "where run_id = %s order by tile_id",
            (res.run_id,),
        ).fetchall()
        run = conn.execute(
            "select command, summary, config from run where id = %s", (res.run_id,)
        ).fetchone()
        joined = conn.execute(
            "select count(*) from tile t join tile_result r on r.tile_id = t.id where r.run_id = %s",
            (res.run_id,),
        ).fetchone()
    assert n_tiles is not None and len(rows) == n_tiles[0] == len(out) == res.n_tiles
    assert joined is not None and joined[0] == len(rows)
    db = pd.DataFrame(rows, columns=["tile_id", "sampler_weight", "freq_cluster_id", "excluded"])
    merged = out.merge(db, on="tile_id", suffixes=("", "_db"))
    assert merged["sampler_weight"].to_numpy() == pytest.approx(merged["sampler_weight_db"])
    assert (merged["freq_cluster_id"] == merged["freq_cluster_id_db"]).all()
    assert (merged["excluded"] == merged["excluded_db"]).all()
    assert run is not None and run[0] == "build-balanced-dataset"
    assert run[1]["tiles"] == res.n_tiles and run[1]["k"] == res.k


@pytest.mark.db
def test_catalog_same_numbers_as_local_scan(
    ingested_catalog: str, demo_pairs: Path, tmp_path: Path
) -> None:
    from smt_tools.pipelines.ingest import run_ingest

    run_ingest(
        demo_pairs,
        catalog=str(tmp_path / "tiles.parquet"),
        patch_size=128,
        nodata_class=0,
        workers=1,
    )
    data = _pg_config(tmp_path / "pg", ingested_catalog)
    run_cfg(data)
    data["balanced_dataset"]["input"] = {"tiles": str(tmp_path / "tiles.parquet")}
    data["balanced_dataset"]["output"]["csv_path"] = str(tmp_path / "local" / "b.csv")
    data["balanced_dataset"]["output"]["geojson_path"] = None
    run_cfg(data)
    pg = pd.read_csv(tmp_path / "pg" / "out" / "b.csv").set_index("tile_id").sort_index()
    local = pd.read_csv(tmp_path / "local" / "b.csv").set_index("tile_id").sort_index()
    assert pg.index.equals(local.index)
    assert pg["sampler_weight"].to_numpy() == pytest.approx(local["sampler_weight"].to_numpy())


@pytest.mark.db
@pytest.mark.parametrize(
    ("clause", "needles"),
    [
        ("nodata_ratio > 2", ("no tile", "nodata_ratio > 2")),
        ("true; drop table tile", ("';'",)),
        ("true -- comment", ("comment",)),
        ("no_such_column < 1", ("rejected by the database", "no_such_column")),
    ],
)
def test_bad_where_clause(
    ingested_catalog: str, tmp_path: Path, clause: str, needles: tuple[str, ...]
) -> None:
    conf = _write_yaml(tmp_path, _pg_config(tmp_path, ingested_catalog, where_clause=clause))
    _assert_fails(conf, tmp_path / "out", *needles)


@pytest.mark.db
def test_host_block_and_env_password(
    ingested_catalog: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import urlsplit

    u = urlsplit(ingested_catalog)
    monkeypatch.delenv("SMT_DATABASE_URL", raising=False)
    monkeypatch.setenv("PGPASSWORD", "unused-with-trust-auth")
    data = config(tmp_path, [])
    data["balanced_dataset"]["input"] = {
        "host": u.hostname,
        "port": u.port or 5432,
        "database": u.path.lstrip("/"),
        "user": u.username,
        "table": "tile",
    }
    data["balanced_dataset"]["clustering"] = {"k_min": 2, "k_max": 4}
    res = run_cfg(data)
    assert res.n_tiles == 64 and res.run_id is not None


# --- modes with uniqueness: the combination code (uniqueness itself is tested elsewhere) --


def _stub_uniqueness(monkeypatch: pytest.MonkeyPatch, nan: bool = False) -> list[int]:
    """Replace uniqueness_for_tiles with a known score: row_off * 1000 + col_off (+ NaN)."""
    import smt_tools.pipelines.embed as embed

    calls: list[int] = []

    def fake(table: Any, cfg: Any, progress_factory: Any = None) -> np.ndarray:
        calls.append(len(table))
        u = (table.frame["row_off"] * 1000 + table.frame["col_off"]).to_numpy(np.float64)
        if nan:
            u[0] = np.nan
        return u

    monkeypatch.setattr(embed, "uniqueness_for_tiles", fake)
    return calls


@pytest.mark.parametrize("method", ["rank_max", "rank_add", "rank_multiply", "uniqueness_only"])
def test_embeddings_mode_combines_ranks(
    scene: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    from scipy.stats import rankdata

    calls = _stub_uniqueness(monkeypatch)
    res = run_cfg(config(tmp_path, records(*scene), mode="embeddings", sampling_method=method))
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    inc = ~out["excluded"].to_numpy()
    assert calls == [int(inc.sum())]  # only included tiles reach the kNN pool
    assert list(out.columns) == [*BALANCED_COLUMNS, "uniqueness_score"]
    u = (out["row_off"] * 1000 + out["col_off"]).to_numpy(np.float64)
    assert out.loc[inc, "uniqueness_score"].to_numpy() == pytest.approx(u[inc])
    assert out.loc[~inc, "uniqueness_score"].isna().all()
    m = int(inc.sum())
    rc = (rankdata(1.0 / out.loc[inc, "freq_cluster_size"].to_numpy()) - 1) / (m - 1)
    ru = (rankdata(u[inc]) - 1) / (m - 1)
    score = {
        "rank_max": np.maximum(rc, ru),
        "rank_add": (rc + ru) / 2,
        "rank_multiply": rc * ru,
        "uniqueness_only": ru,
    }[method]
    expected = np.maximum(score / score.max(), 0.05)
    assert out.loc[inc, "sampler_weight"].to_numpy() == pytest.approx(expected)
    assert res.warnings == [] and res.effective_method == method
    gj = json.loads((tmp_path / "out" / "b.geojson").read_text())
    assert "uniqueness_score" in gj["features"][0]["properties"]


def test_embeddings_only_and_missing_scores(
    scene: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_uniqueness(monkeypatch)
    res = run_cfg(config(tmp_path, records(*scene), mode="embeddings_only"))
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    assert (out["freq_cluster_id"] == -1).all() and res.k is None
    assert res.effective_method == "uniqueness_only" and "embeddings_only" in res.warnings[0]
    inc = ~out["excluded"]
    assert out.loc[inc, "sampler_weight"].max() == 1.0
    # a missing (NaN) score is an error, never the top rank
    _stub_uniqueness(monkeypatch, nan=True)
    conf = _write_yaml(tmp_path, config(tmp_path / "n", records(*scene), mode="embeddings"))
    _assert_fails(conf, tmp_path / "n" / "out", "NaN", after_scan=True)


def test_include_excluded_false_and_report(scene: tuple[Path, Path], tmp_path: Path) -> None:
    data = config(tmp_path, records(*scene), output={"include_excluded": False})
    data["balanced_dataset"]["output"]["report_dir"] = str(tmp_path / "out" / "report")
    res = run_cfg(data)
    out = pd.read_csv(tmp_path / "out" / "b.csv")
    assert len(out) == res.rows_written == 14 and not out["excluded"].any()
    gj = json.loads((tmp_path / "out" / "b.geojson").read_text())
    assert len(gj["features"]) == 14
    assert sorted(p.name for p in (tmp_path / "out" / "report").iterdir()) == [
        "class_share.png",
        "report.html",
        "weight_hist.png",
        "weight_map.png",
    ]
    # no staging leftovers
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "b.csv",
        "b.geojson",
        "b.qml",
        "report",
    ]
