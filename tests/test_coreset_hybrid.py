"""select-coreset ``method: hybrid`` (docs/algorithms.md §10, "Hybrid selection") on hand-made
tiles and a hand-made map layer written with pyogrio: tiles the layer covers are picked first
(most covered first), each step takes exactly its share of the budget, ``coreset_step`` names
the step of every pick, the embedding step keeps to tiles of its classes, the entropy sweep
fills the rest, and a bad config is one line naming the key.

Tiles: 100 m squares. Zone 31 (EPSG:32631): a 5 x 4 grid from (500000, 5000000), tile ids
100..119 row by row (x first). Zone 32 (EPSG:32632): four tiles in a row from (300000, 5000000),
ids 200..203. The layer is in lon/lat (EPSG:4326), so every tile CRS reprojects it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer
from typer.testing import CliRunner

import smt_tools
from smt_tools.cli.app import app
from smt_tools.config import validate_mapping
from smt_tools.config.coreset import CoresetFile
from smt_tools.coreset.hybrid import step_quotas
from smt_tools.errors import ConfigError
from smt_tools.pipelines._coreset_vector import covered_shares

CLASSES = (1, 2, 3)


def _tiles() -> pd.DataFrame:
    rows = []
    for k in range(20):  # zone 31 grid, 5 columns x 4 rows
        x, y = 500_000.0 + 100.0 * (k % 5), 5_000_000.0 + 100.0 * (k // 5)
        rows.append((100 + k, x, y, "EPSG:32631"))
    for k in range(4):  # zone 32, one row
        rows.append((200 + k, 300_000.0 + 100.0 * k, 5_000_000.0, "EPSG:32632"))
    frame = pd.DataFrame(rows, columns=["tile_id", "minx", "miny", "crs"])
    frame["maxx"] = frame["minx"] + 100.0
    frame["maxy"] = frame["miny"] + 100.0
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 500, size=(len(frame), 3))
    counts[:, 2] = 0
    counts[[3, 7, 12, 16, 19, 22], 2] = [40, 300, 5, 120, 60, 80]  # class 3 in six tiles
    frame["class_counts_json"] = [
        json.dumps({str(c): int(v) for c, v in zip(CLASSES, row, strict=True)}) for row in counts
    ]
    frame["excluded"] = False
    frame["image_path"] = "img.tif"
    return frame


def _lonlat_polygon(crs: str, x0: float, y0: float, x1: float, y1: float) -> Any:
    """A rectangle given in ``crs`` metres as a densified lon/lat polygon."""
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), 2.0)
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.transform(ring, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


#: building A covers 72 % of tile 100, 80 % of 101, 40 % of 102; field F covers 64 % of 110;
#: building B covers 64 % of tile 201
LAYER = [
    ("building", ("EPSG:32631", 500_010.0, 5_000_010.0, 500_250.0, 5_000_090.0)),
    ("field", ("EPSG:32631", 500_010.0, 5_000_210.0, 500_090.0, 5_000_290.0)),
    ("building", ("EPSG:32632", 300_110.0, 5_000_010.0, 300_190.0, 5_000_090.0)),
]


def _write_layer(path: Path, driver: str) -> Path:
    geoms = [_lonlat_polygon(*box) for _cls, box in LAYER]
    pyogrio.raw.write(
        path,
        geometry=np.asarray(shapely.to_wkb(geoms)),
        field_data=[np.array([cls for cls, _box in LAYER], dtype=object)],
        fields=["class"],
        geometry_type="Polygon",
        crs="EPSG:4326",
        driver=driver,
    )
    return path


@pytest.fixture(params=["GPKG", "GeoJSON"])
def layer(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    suffix = ".gpkg" if request.param == "GPKG" else ".geojson"
    return _write_layer(tmp_path / f"areas{suffix}", request.param)


def _config(steps: list[dict[str, Any]], budget: float = 10, **extra: Any) -> dict[str, Any]:
    return {
        "method": "hybrid",
        "budget": budget,
        "budget_mode": "count",
        "hybrid": {"steps": steps},
        "random_state": 0,
        **extra,
    }


def _select(frame: pd.DataFrame, cfg: dict[str, Any], **kw: Any) -> pd.DataFrame:
    out = smt_tools.select_coreset(frame, cfg, **kw)
    assert int(out["coreset_selected"].sum()) == cfg["budget"]
    return out


def _picks(out: pd.DataFrame, step: str) -> list[int]:
    """tile ids picked by ``step``, in pick order (score descending)."""
    rows = out[out["coreset_step"] == step].sort_values("coreset_score", ascending=False)
    return rows["tile_id"].tolist()


def test_covered_shares_exact() -> None:
    minx = np.array([0.0, 100.0, 200.0, 300.0])
    boxes = (minx, np.zeros(4), minx + 100.0, np.full(4, 100.0))
    geoms = np.array(
        [
            shapely.box(10, 10, 150, 90),  # 72 % of tile 0, 40 % of tile 1
            shapely.box(120, 10, 180, 90),  # overlaps the first inside tile 1: union counts
            shapely.box(300, 0, 300, 0).buffer(0).union(shapely.box(200, 0, 300, 100)),  # tile 2
            shapely.box(400, 0, 500, 100),  # touches tile 3 along x = 400 only
        ]
    )
    shares = covered_shares(boxes, geoms)
    np.testing.assert_allclose(shares[:3], [0.72, 0.64, 1.0])
    assert np.isnan(shares[3])  # an edge in common is no cover


def test_covered_shares_equal_the_union_brute_force() -> None:
    """Overlapping discs, from 2 to ~50 per tile (both the grid union and the one-tile one)."""
    rng = np.random.default_rng(1)
    minx = np.arange(6) * 100.0
    boxes = (minx, np.zeros(6), minx + 100.0, np.full(6, 100.0))
    n = 300 - np.r_[0, 290]  # 300 discs over six tiles, then 10
    for m in n:
        xy = rng.uniform([0, 0], [600, 100], size=(m, 2))
        geoms = shapely.buffer(shapely.points(xy), rng.uniform(2, 15, m))
        union = shapely.union_all(geoms)
        want = [shapely.area(shapely.box(x, 0, x + 100, 100) & union) / 1e4 for x in minx]
        got = covered_shares(boxes, geoms)
        np.testing.assert_allclose(np.nan_to_num(got), want, atol=1e-12)


def test_step_quotas_add_up_exactly() -> None:
    assert step_quotas([0.3, 0.3, None], 10) == [3, 3, 0]
    assert step_quotas([0.5, 0.5], 3) == [2, 1]  # round(1.5) = 2, round(3) - 2 = 1
    assert step_quotas([1 / 3, 1 / 3, 1 / 3], 10) == [3, 4, 3]
    assert sum(step_quotas([0.25, 0.25], 7)) == 4  # round(0.5 * 7) = 4; the rest: entropy


def test_vector_step_picks_covered_tiles_first(layer: Path) -> None:
    frame = _tiles()
    cfg = _config(
        [
            {"type": "vector", "share": 0.4, "path": str(layer), "where": "class = 'building'"},
            {"type": "entropy"},
        ]
    )
    out = _select(frame, cfg)
    # both zones: 101 (80 %), 100 (72 %), 201 (64 %), 102 (40 %); field 110 filtered out
    assert _picks(out, "vector") == [101, 100, 201, 102]
    assert out["coreset_step"].value_counts().to_dict() == {"": 14, "entropy": 6, "vector": 4}
    # the four vector picks score highest, then the entropy sweep by lc score
    ordered = out.sort_values("coreset_score", ascending=False)["tile_id"].tolist()
    assert ordered[:4] == [101, 100, 201, 102]
    rest = out[out["coreset_step"] == "entropy"]
    left = out[(out["coreset_step"] == "") & ~out["excluded"]]
    assert rest["coreset_score"].min() > left["coreset_score"].max()
    # the score is the position in the pick order: 1 - k / (n - 1)
    np.testing.assert_allclose(sorted(out["coreset_score"], reverse=True), 1 - np.arange(24) / 23)


def test_min_share_and_no_filter(layer: Path) -> None:
    frame = _tiles()
    step = {"type": "vector", "share": 0.5, "path": str(layer), "min_share": 0.5}
    out = _select(frame, _config([step]))
    # every feature (no where) covering at least half a tile: 101 (80 %), 100 (72 %), then
    # 110 (the field) and 201 (64 % each); 102 (40 %) is below min_share
    picks = _picks(out, "vector")
    assert picks[:2] == [101, 100] and set(picks[2:]) == {110, 201}
    # the share was 5 tiles; the one the layer could not fill goes to the entropy sweep
    assert (out["coreset_step"] == "entropy").sum() == 6
    assert not out.loc[out["tile_id"] == 102, "coreset_step"].eq("vector").any()


def test_layer_of_a_geopackage(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    for name, (cls, box) in (("buildings", LAYER[0]), ("fields", LAYER[1])):
        pyogrio.raw.write(
            path,
            geometry=np.asarray(shapely.to_wkb([_lonlat_polygon(*box)])),
            field_data=[np.array([cls], dtype=object)],
            fields=["class"],
            geometry_type="Polygon",
            crs="EPSG:4326",
            driver="GPKG",
            layer=name,
        )
    step = {"type": "vector", "share": 0.3, "path": str(path), "layer": "fields"}
    assert _picks(_select(_tiles(), _config([step])), "vector") == [110]
    step["layer"] = "roads"
    with pytest.raises(ConfigError, match=r"steps\[0\]: .*layer 'roads' does not work"):
        smt_tools.select_coreset(_tiles(), _config([step]))


def test_exclusions_are_respected(layer: Path) -> None:
    frame = _tiles()
    frame.loc[frame["tile_id"] == 101, "excluded"] = True
    step = {"type": "vector", "share": 0.3, "path": str(layer), "where": "class = 'building'"}
    out = _select(frame, _config([step]))
    assert _picks(out, "vector") == [100, 201, 102]
    row = out[out["tile_id"] == 101].iloc[0]
    assert (
        not row["coreset_selected"] and row["coreset_step"] == "" and np.isnan(row["coreset_score"])
    )


@pytest.mark.parametrize("method", ["fd", "kcenter", "fa"])
def test_embedding_step_keeps_to_its_classes(layer: Path, method: str) -> None:
    frame = _tiles()
    emb = np.random.default_rng(3).normal(size=(len(frame), 16)).astype(np.float32)
    steps = [
        {"type": "vector", "share": 0.2, "path": str(layer), "where": "class = 'building'"},
        {"type": "embedding", "name": "rare", "share": 0.4, "method": method, "classes": [3]},
        {"type": "entropy", "share": 0.4},
    ]
    out = _select(frame, _config(steps, pca_dim=None, fd={"k": 2}), embeddings=emb)
    with_class3 = {103, 107, 112, 116, 119, 202}
    assert _picks(out, "vector") == [101, 100]
    rare = _picks(out, "rare")
    assert len(rare) == 4 and set(rare) <= with_class3
    assert (out["coreset_step"] == "entropy").sum() == 4
    # the same method on the six class-3 tiles alone picks the same four
    alone = frame[frame["tile_id"].isin(with_class3)].reset_index(drop=True)
    solo = smt_tools.select_coreset(
        alone,
        {
            "method": method,
            "budget": 4,
            "budget_mode": "count",
            "random_state": 0,
            "pca_dim": None,
            "fd": {"k": 2},
        },
        embeddings=emb[frame["tile_id"].isin(with_class3).to_numpy()],
    )
    assert set(solo.loc[solo["coreset_selected"], "tile_id"]) == set(rare)


def test_entropy_sweep_fills_by_label_complexity(layer: Path) -> None:
    frame = _tiles()
    step = {"type": "vector", "share": 0.1, "path": str(layer), "where": "class = 'field'"}
    out = _select(frame, _config([step], budget=5))
    assert _picks(out, "vector") == [110]
    counts = np.array(
        [[v for v in json.loads(t).values()] for t in frame["class_counts_json"]], dtype=float
    )
    p = counts / counts.sum(axis=1, keepdims=True)
    h = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis=1)
    ids = frame["tile_id"].to_numpy()
    rest = [i for i in np.lexsort((ids, -h)) if ids[i] != 110][:4]
    assert set(_picks(out, "entropy")) == set(ids[rest].tolist())


def test_cli_writes_coreset_step_and_counts(layer: Path, tmp_path: Path) -> None:
    import yaml

    frame = _tiles()
    csv = tmp_path / "balanced.csv"
    frame.to_csv(csv, index=False)
    cfg = _config(
        [
            {
                "type": "vector",
                "name": "buildings",
                "share": 0.3,
                "path": str(layer),
                "where": "class = 'building'",
            }
        ],
        input_csv_path=str(csv),
        output={"csv_path": str(tmp_path / "c.csv"), "geojson_path": str(tmp_path / "c.geojson")},
    )
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"coreset": cfg}))
    res = CliRunner().invoke(app, ["select-coreset", str(conf)])
    assert res.exit_code == 0, res.output
    assert "steps: buildings 3 of 3, entropy 7 of 7" in res.stdout
    out = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    assert _picks(out, "buildings") == [101, 100, 201]
    gj = json.loads((tmp_path / "c.geojson").read_text())
    steps = {f["properties"]["tile_id"]: f["properties"]["coreset_step"] for f in gj["features"]}
    assert steps == dict(zip(out["tile_id"], out["coreset_step"], strict=True))


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"type": "vectr", "share": 0.5, "path": "a.gpkg"}],
            "coreset.hybrid.steps[0].type: must be 'vector', 'embedding' or 'entropy'; "
            "got 'vectr'; did you mean 'vector'?",
        ),
        (
            [
                {"type": "vector", "share": 0.7, "path": "a.gpkg"},
                {"type": "embedding", "share": 0.4, "method": "fd", "classes": [1]},
            ],
            "the shares of the steps add up to 1.1 (0.7 + 0.4); they must add up to at most 1",
        ),
        (
            [{"type": "embedding", "share": 0.4, "method": "fd"}],
            "an embedding step needs method (fd, kcenter or fa) and classes",
        ),
        (
            [{"type": "entropy"}, {"type": "vector", "share": 0.2, "path": "a.gpkg"}],
            "give at most one, as the last step",
        ),
        (
            [{"type": "vector", "share": 0.2, "path": "a.gpkg", "classes": [1]}],
            "classes belongs to an embedding step, not to a vector step",
        ),
        (
            [{"type": "vector", "name": "entropy", "share": 0.2, "path": "a.gpkg"}],
            "name 'entropy' is the entropy sweep's",
        ),
        (
            [{"type": "vector", "share": 1.5, "path": "a.gpkg"}],
            "coreset.hybrid.steps[0].share: must be <= 1; got 1.5",
        ),
    ],
)
def test_bad_config_is_one_line(steps: list[dict[str, Any]], message: str) -> None:
    cfg = _config(steps, input_csv_path="x.csv", output={"csv_path": "o.csv"})
    with pytest.raises(ConfigError) as err:
        validate_mapping({"coreset": cfg}, CoresetFile, "h.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("h.yaml: coreset.")
    assert message in text


def test_bad_where_names_the_step(layer: Path) -> None:
    step = {"type": "vector", "share": 0.3, "path": str(layer), "where": "klass = 'x'"}
    with pytest.raises(ConfigError, match=r"coreset\.hybrid\.steps\[0\]: .*where \"klass = 'x'\""):
        smt_tools.select_coreset(_tiles(), _config([step]))


# --- the catalog: a PostGIS table as the layer, the same picks as a file layer -------------------


def _catalog_layer(frame: pd.DataFrame) -> tuple[list[tuple[str, Any]], dict[str, int]]:
    """Three features inside tiles of the scene at x >= 501256 (no other scene overlaps it):
    building 'far' covers 60 x 60 m of the tile at (501448, 4999936) (88 %), building 'near'
    44 x 44 m of the tile at (501320, 4999936) (47 %), a road 50 x 50 m of the one at 501384."""
    top = frame[(frame["maxy"] == 5_000_000.0) & (frame["minx"] >= 501_256.0)]
    by_x = {float(x): int(t) for x, t in zip(top["minx"], top["tile_id"], strict=True)}
    feats = [
        ("building", _lonlat_polygon("EPSG:32631", 501_450, 4_999_938, 501_510, 4_999_998)),
        ("building", _lonlat_polygon("EPSG:32631", 501_330, 4_999_946, 501_374, 4_999_990)),
        ("road", _lonlat_polygon("EPSG:32631", 501_390, 4_999_940, 501_440, 4_999_990)),
    ]
    return feats, {"far": by_x[501_448.0], "near": by_x[501_320.0], "road": by_x[501_384.0]}


@pytest.mark.db
def test_postgis_table_layer_matches_the_file_layer(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    import psycopg
    import yaml

    from smt_tools.catalog.store import open_store

    runner = CliRunner()
    table = str(tmp_path / "tiles.parquet")
    assert runner.invoke(app, ["catalog", "init", "--catalog", fresh_database_url]).exit_code == 0
    for target in (fresh_database_url, table):
        args = ["catalog", "ingest", str(demo_pairs), "--patch-size", "128", "--workers", "1"]
        res = runner.invoke(app, [*args, "--nodata-class", "0", "--catalog", target])
        assert res.exit_code == 0, res.output
    with open_store(table) as store:
        frame = store.read_tiles().frame
    feats, tiles = _catalog_layer(frame)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("create table areas (id serial, class text, geom geometry(Polygon, 4326))")
        for cls, geom in feats:
            conn.execute(
                "insert into areas (class, geom) values (%s, st_geomfromtext(%s, 4326))",
                (cls, shapely.to_wkt(geom)),
            )
    gpkg = tmp_path / "areas.gpkg"
    pyogrio.raw.write(
        gpkg,
        geometry=np.asarray(shapely.to_wkb([g for _c, g in feats])),
        field_data=[np.array([c for c, _g in feats], dtype=object)],
        fields=["class"],
        geometry_type="Polygon",
        crs="EPSG:4326",
        driver="GPKG",
    )
    where = "class = 'building'"
    outputs = {}
    for kind, source, layer in (
        ("postgis", {"url": fresh_database_url}, {"table": "areas"}),
        ("parquet", {"path": table}, {"path": str(gpkg)}),
    ):
        step = {"type": "vector", "share": 0.25, "where": where, **layer}
        cfg = _config([step], budget=8, catalog=source)
        cfg["output"] = {"csv_path": str(tmp_path / f"{kind}.csv")}
        conf = tmp_path / f"{kind}.yaml"
        conf.write_text(yaml.safe_dump({"coreset": cfg}))
        res = runner.invoke(app, ["select-coreset", str(conf)])
        assert res.exit_code == 0, res.output
        assert "steps: vector 2 of 2, entropy 6 of 6" in res.stdout
        outputs[kind] = pd.read_csv(tmp_path / f"{kind}.csv", keep_default_na=False)
    pg, pq = (outputs[k].sort_values("tile_id").reset_index(drop=True) for k in outputs)
    assert _picks(pg, "vector") == [tiles["far"], tiles["near"]]  # 88 % before 47 %; no road
    assert pg["coreset_step"].tolist() == pq["coreset_step"].tolist()
    # the catalog run records the step of every tile
    with open_store(fresh_database_url) as store:
        run_id = int(store.list_runs()["run_id"].max())
        _cmd, results = store.read_run(run_id)
    recorded = dict(zip(results["tile_id"], results["coreset_step"], strict=True))
    assert recorded[tiles["far"]] == "vector" and recorded[tiles["road"]] in ("", "entropy")
    assert sorted(set(recorded.values())) == ["", "entropy", "vector"]
    # a PostGIS table needs a PostGIS catalog
    step = {"type": "vector", "share": 0.25, "table": "areas"}
    cfg = _config([step], budget=8, catalog={"path": table}, output={"csv_path": "x.csv"})
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump({"coreset": cfg}))
    res = runner.invoke(app, ["select-coreset", str(conf)])
    assert res.exit_code == 1
    assert "coreset.hybrid.steps[0].table 'areas' needs a PostGIS catalog" in res.output


# --- conf/examples/coreset_hybrid.yaml on the demo data -----------------------------------------


def test_hybrid_example_runs_on_demo_data(demo_pairs: Path, demo_dir: Path, tmp_path: Path) -> None:
    """The example as shipped (paths re-pointed), then with its embedding step switched on
    (random embeddings in a real cache)."""
    import yaml

    from smt_tools.embeddings.cache import write_chunk
    from tests.test_examples_coreset import EXAMPLES, _demo_balanced_csv

    data = yaml.safe_load((EXAMPLES / "coreset_hybrid.yaml").read_text())
    cfg = data["coreset"]
    assert cfg["method"] == "hybrid" and cfg["input_csv_path"] == "demo/balanced_train.csv"
    steps = cfg["hybrid"]["steps"]
    assert [s["type"] for s in steps] == ["vector", "entropy"]
    assert steps[0]["path"] == "demo/areas.geojson"
    balanced = _demo_balanced_csv(demo_pairs, tmp_path)
    cfg["input_csv_path"] = str(balanced)
    steps[0]["path"] = str(demo_dir / "areas.geojson")  # written by make-demo-data
    for key in ("csv_path", "geojson_path"):
        cfg["output"][key] = str(tmp_path / cfg["output"][key])
    conf = tmp_path / "hybrid.yaml"
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    res = CliRunner().invoke(app, ["select-coreset", str(conf)])
    assert res.exit_code == 0, res.output
    src = pd.read_csv(balanced)
    n_ok = int((~src["excluded"]).sum())
    b = int(np.floor(0.3 * n_ok + 0.5))
    out = pd.read_csv(cfg["output"]["csv_path"], keep_default_na=False)
    n_vec = int((out["coreset_step"] == "vector").sum())
    assert 0 < n_vec <= int(np.floor(0.4 * b + 0.5))
    assert f"steps: vector {n_vec} of {int(np.floor(0.4 * b + 0.5))}" in res.stdout
    assert int(out["coreset_selected"].sum()) == b
    assert set(out.loc[out["coreset_selected"], "coreset_step"]) == {"vector", "entropy"}
    assert (out.loc[~out["coreset_selected"], "coreset_step"] == "").all()
    # the embedding step of the example's comment, on random embeddings of every tile
    cache = tmp_path / "emb.parquet"
    emb = np.random.default_rng(0).normal(size=(len(src), 8)).astype(np.float32)
    write_chunk(cache, src["tile_id"].to_numpy(np.int64), emb, "test-model", "h")
    cfg["parquet_path"] = str(cache)
    urban = {"type": "embedding", "name": "urban", "share": 0.3, "method": "fd", "classes": [6]}
    steps.insert(1, urban)
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    res = CliRunner().invoke(app, ["select-coreset", str(conf)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(cfg["output"]["csv_path"], keep_default_na=False)
    has6 = out["class_counts_json"].map(lambda t: json.loads(t).get("6", 0) > 0)
    picked = out["coreset_step"] == "urban"
    assert picked.sum() > 0 and has6[picked].all()
