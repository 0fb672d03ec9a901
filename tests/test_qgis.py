"""Our map layers (GeoJSON / GeoPackage / FlatGeobuf) and the catalog's run views open STYLED
in real QGIS, with legends that read right.

The QGIS tests run ``scripts/qgis_check.py`` under the system Python that has the ``qgis``
bindings (Debian: ``apt-get install python3-qgis qgis-providers``, which .ci/run does); they
skip where it cannot import qgis, except under ``CI=true`` where that is a failure. Each test
renders its layer to a PNG and checks the legend labels (exact strings) and the features per
label. The .qml class edges test needs no QGIS.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from smt_tools.export.geojson import write_geojson
from smt_tools.export.qgis_style import qml_text, write_qml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "qgis_check.py"
SYSTEM_PYTHON = "/usr/bin/python3"
EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # write_qml's default breaks
LABELS = [f"sampler_weight {lo:g} – {hi:g}" for lo, hi in itertools.pairwise(EDGES)]
#: 10 tiles: weights (excluded tiles have weight 0) and the expected class of each
WEIGHTS = [0.0, 0.1, 0.2, 0.35, 0.4, 0.0, 0.6, 0.8, 0.95, 1.0]
EXCLUDED = [True, False, False, False, False, True, False, False, False, False]
EXPECTED = dict(zip([*LABELS, "excluded"], [1, 2, 1, 1, 3, 2], strict=True))


def _env() -> dict[str, str]:
    """Environment for the system Python: offscreen Qt, none of this interpreter's paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


@pytest.fixture(scope="session")
def qgis_python() -> str:
    """/usr/bin/python3 when it can import qgis; skip otherwise (QGIS is optional)."""
    if not Path(SYSTEM_PYTHON).exists() and os.environ.get("CI") != "true":
        pytest.skip(f"{SYSTEM_PYTHON} not found (QGIS check is optional)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"],
        env=_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        why = f"{SYSTEM_PYTHON} cannot import qgis (apt-get install python3-qgis qgis-providers)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)  # .ci/run installs QGIS: missing there is a failure
        pytest.skip(why)
    return SYSTEM_PYTHON


def qgis_check(python: str, *args: str | Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [python, str(SCRIPT), *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, f"rc {proc.returncode}; stdout {proc.stdout!r}; stderr {proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


def hand_frame() -> pd.DataFrame:
    """10 adjacent 100 m tiles (2 rows x 5) in EPSG:32631 with known weights."""
    i = np.arange(len(WEIGHTS))
    minx = 500_000.0 + 100.0 * (i % 5)
    miny = 5_000_000.0 + 100.0 * (i // 5)
    return pd.DataFrame(
        {
            "tile_id": 1000 + i,
            "minx": minx,
            "miny": miny,
            "maxx": minx + 100.0,
            "maxy": miny + 100.0,
            "crs": "EPSG:32631",
            "sampler_weight": WEIGHTS,
            "excluded": EXCLUDED,
        }
    )


@pytest.fixture
def styled_geojson(tmp_path: Path) -> Path:
    path = tmp_path / "tiles.geojson"
    write_geojson(hand_frame(), path, ["tile_id", "sampler_weight", "excluded"])
    write_qml(path.with_suffix(".qml"))
    return path


def test_qml_class_edges_are_exact() -> None:
    """Edges are written with repr (round-trip), not rounded to 6 digits; no NaN/inf edges."""
    root = ET.fromstring(
        qml_text("score", None, (0.0, 1e-7, 0.1234564, 1234567.0)).split("\n", 1)[1]
    )
    filters = [r.get("filter") for r in root.findall(".//rules/rule")]
    assert filters == [
        '"score" < 1e-07',
        '"score" >= 1e-07 AND "score" < 0.1234564',
        '"score" >= 0.1234564 AND "score" <= 1234567.0',
    ]
    for bad in ((0.0, float("nan")), (0.0, float("inf")), (0.5,)):
        with pytest.raises(ValueError, match="finite, strictly increasing"):
            qml_text(breaks=bad)


def test_geojson_opens_styled(qgis_python: str, styled_geojson: Path, tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    rc, out = qgis_check(qgis_python, styled_geojson, "--expect-count", 10, "--png", png)
    assert rc == 0 and out["ok"], out
    (layer,) = out["layers"]
    assert layer["valid"] and layer["features"] == 10 and layer["crs"] == "EPSG:4326"
    assert layer["style"] == f"{styled_geojson.with_suffix('.qml')} (default)"
    assert layer["renderer"] == "RuleRenderer" and layer["classes"] == 6
    assert layer["style_fields"] == ["excluded", "sampler_weight"]
    assert layer["features_per_class"] == EXPECTED
    assert layer["unstyled"] == 0 and layer["excluded"] == layer["excluded_hatched"] == 2
    assert layer["included_solid"] == 8 and layer["colours_used"] == 5
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert layer["drawn_fraction"] > 0.5  # the tiles fill the extent (+5 % margin)


def test_unstyled_layers_fail(qgis_python: str, styled_geojson: Path, tmp_path: Path) -> None:
    """Without its .qml the layer is single-symbol (a problem); with edges that stop at 0.9 the
    two tiles above match no rule (a problem)."""
    bare = tmp_path / "bare" / "tiles.geojson"
    bare.parent.mkdir()
    shutil.copy(styled_geojson, bare)
    rc, out = qgis_check(qgis_python, bare)
    assert rc == 1 and not out["ok"]
    assert out["layers"][0]["renderer"] == "singleSymbol" and out["layers"][0]["style"] is None
    assert any("style not loaded" in p for p in out["layers"][0]["problems"])

    short = tmp_path / "short.qml"
    write_qml(short, breaks=(0.0, 0.5, 0.9))
    rc, out = qgis_check(qgis_python, styled_geojson, "--style", short)
    assert rc == 1 and out["layers"][0]["unstyled"] == 2  # 0.95 and 1.0 are above 0.9
    assert "2 feature(s) match no rule/class (drawn with no symbol)" in out["layers"][0]["problems"]


@pytest.mark.db
def test_tile_result_map_opens_styled(
    qgis_python: str, fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    """A catalog run seen through the view tile_result_map (key run_id, tile_id; filter on the
    run) with the run's .qml: same classes as the run's CSV, excluded tiles hatched; the tile
    table opens too (unstyled: it has no run results)."""
    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.balanced import BalancedFile
    from smt_tools.pipelines.balanced import run_balanced
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    run_catalog_init(fresh_database_url)
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=128, nodata_class=0, workers=1)
    cfg = {
        "balanced_dataset": {
            "mode": "masks_only",
            "input": {"dsn": fresh_database_url, "table": "tile"},
            "clustering": {"k_min": 2, "k_max": 6, "random_state": 0},
            "output": {
                "csv_path": str(tmp_path / "b.csv"),
                "geojson_path": str(tmp_path / "b.geojson"),
            },
        }
    }
    res = run_balanced(validate_mapping(cfg, BalancedFile, "t.yaml").balanced_dataset)
    csv = pd.read_csv(tmp_path / "b.csv")
    included = csv.loc[~csv["excluded"], "sampler_weight"].to_numpy()
    cls = np.minimum(np.searchsorted(EDGES[1:-1], included, side="right"), 4)
    expected = dict(zip(LABELS, np.bincount(cls, minlength=5).tolist(), strict=True))
    expected["excluded"] = int(csv["excluded"].sum())

    rc, out = qgis_check(
        qgis_python,
        tmp_path / "b.geojson",
        "--pg-url",
        fresh_database_url,
        "--pg-layer",
        "tile_result_map",
        "--pg-key",
        "run_id,tile_id",
        "--pg-filter",
        f"run_id = {res.run_id}",
        "--pg-style",
        tmp_path / "b.qml",
        "--expect-count",
        len(csv),
        "--png",
        tmp_path / "map.png",
    )
    assert rc == 0 and out["ok"], out
    gj, view = out["layers"]
    assert view["valid"] and view["crs"] == "EPSG:4326" and view["renderer"] == "RuleRenderer"
    assert view["features_per_class"] == gj["features_per_class"] == expected
    assert expected["excluded"] > 0 and view["excluded_hatched"] == expected["excluded"]
    assert (tmp_path / "map_tile_result_map.png").is_file()
    assert (tmp_path / "map_geojson.png").is_file()

    rc, out = qgis_check(
        qgis_python,
        "--pg-url",
        fresh_database_url,
        "--pg-layer",
        "public.tile",
        "--pg-key",
        "id",
        "--expect-renderer",
        "any",
        "--expect-count",
        64,
    )
    assert rc == 0 and out["layers"][0]["renderer"] == "singleSymbol", out


# ------------------------------------------------------------------ categorical styles (issue 12)

FOLD_LEGEND = [
    *(f"fold {k}" for k in range(5)),
    "holdout test",
    "no fold",
    "dropped from a training set by the buffer",
]
FORMATS = ["geojson", "gpkg", "fgb"]


def grid(n: int, cols: int = 6) -> pd.DataFrame:
    """n adjacent 100 m tiles in rows of ``cols`` (EPSG:32631)."""
    i = np.arange(n)
    minx = 500_000.0 + 100.0 * (i % cols)
    miny = 5_000_000.0 + 100.0 * (i // cols)
    return pd.DataFrame(
        {
            "tile_id": 1000 + i,
            "minx": minx,
            "miny": miny,
            "maxx": minx + 100.0,
            "maxy": miny + 100.0,
            "crs": "EPSG:32631",
        }
    )


def layer_file(tmp_path: Path, frame: pd.DataFrame, props: list[str], qml: str, fmt: str) -> Path:
    from smt_tools.export.vector import EXTENSIONS, write_vector

    path = tmp_path / fmt / f"tiles{EXTENSIONS[fmt]}"
    written = write_vector(frame, path, props, qml, fmt=fmt)
    assert written.features == len(frame) and written.left_out == 0
    return path


def style_of(path: Path) -> str:
    """What qgis_check reports as the style QGIS loaded by itself for a layer file."""
    return (
        "layer_styles: tiles" if path.suffix == ".gpkg" else f"{path.with_suffix('.qml')} (default)"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_layer_is_categorical(qgis_python: str, tmp_path: Path, fmt: str) -> None:
    """5 folds get 5 different colours (+ holdout), labelled ``fold N``; holdout tiles and
    tiles the buffer drops from a training set are drawn and have their own legend entries;
    a fold outside 0..4 falls in ``no fold`` (every tile has a symbol)."""
    from smt_tools.export.qgis_style import fold_qml

    fold = [0, 1, 2, 3, 4, -1] * 3 + [7]  # 19 tiles; 7 is not a fold of a 5-fold split
    frame = grid(len(fold)).assign(
        fold=fold, buffer_excluded_folds=["", "0;2", "", "-1", "", ""] * 3 + [""]
    )
    path = layer_file(
        tmp_path, frame, ["tile_id", "fold", "buffer_excluded_folds"], fold_qml(5), fmt
    )
    png = tmp_path / "folds.png"
    args = (path, "--field", "fold", "--excluded-field", "", "--png", png, "--expect-count", 19)
    rc, out = qgis_check(qgis_python, *args)
    assert rc == 0 and out["ok"], out
    (layer,) = out["layers"]
    assert layer["style"] == style_of(path)
    assert layer["legend"] == FOLD_LEGEND
    assert layer["features_per_class"] == {
        **{f"fold {k}": 3 for k in range(5)},
        "holdout test": 3,
        "no fold": 1,
        "dropped from a training set by the buffer": 6,
    }
    assert layer["unstyled"] == 0
    assert layer["colours_used"] == 7  # 5 folds, holdout, no fold: all different
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and layer["drawn_fraction"] > 0.5


@pytest.mark.parametrize("fmt", ["geojson", "gpkg"])
def test_leak_layer_reads_by_check_and_side(qgis_python: str, tmp_path: Path, fmt: str) -> None:
    """Legend ``<check>: <side>``; a tile flagged by two checks is counted under both."""
    from smt_tools.export.qgis_style import leak_qml

    reasons = ["source_image", "source_image,spatial", "spatial", "near_duplicate"] * 2
    split = ["train"] * 4 + ["val"] * 4
    frame = grid(8, cols=4).assign(leak_reasons=reasons, split=split)
    qml = leak_qml(["train", "val"])
    path = layer_file(tmp_path, frame, ["tile_id", "leak_reasons", "split"], qml, fmt)
    rc, out = qgis_check(
        qgis_python,
        path,
        "--field",
        "leak_reasons",
        "--excluded-field",
        "",
        "--png",
        tmp_path / "l.png",
    )
    assert rc == 0 and out["ok"], out
    (layer,) = out["layers"]
    assert layer["style"] == style_of(path)
    assert layer["legend"] == [
        "same source image: train",
        "same source image: val",
        "overlap or within buffer: train",
        "overlap or within buffer: val",
        "near-duplicate: train",
        "near-duplicate: val",
    ]
    assert list(layer["features_per_class"].values()) == [2, 2, 2, 2, 1, 1]
    assert layer["unstyled"] == 0 and layer["style_fields"] == ["leak_reasons", "split"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_coreset_layer_shows_selection(qgis_python: str, tmp_path: Path, fmt: str) -> None:
    """Not selected (grey) / selected by score class / excluded (hatched)."""
    from smt_tools.export.qgis_style import coreset_qml, score_breaks

    selected = [True, False, True, True, False, True, False, False, True, False]
    excluded = [False, False, False, False, False, False, True, True, False, False]
    score = [0.9, 0.1, 0.5, 0.7, 0.2, 0.3, float("nan"), float("nan"), 0.6, 0.05]
    frame = grid(10, cols=5).assign(
        coreset_selected=selected, excluded=excluded, coreset_score=score
    )
    breaks = score_breaks(np.array(score)[selected], n_classes=2)
    assert breaks == [0.3, 0.6, 0.9]
    props = ["tile_id", "coreset_selected", "excluded", "coreset_score"]
    path = layer_file(tmp_path, frame, props, coreset_qml(breaks), fmt)
    rc, out = qgis_check(
        qgis_python, path, "--field", "coreset_selected", "--png", tmp_path / "c.png"
    )
    assert rc == 0 and out["ok"], out
    (layer,) = out["layers"]
    assert layer["style"] == style_of(path)
    assert layer["features_per_class"] == {
        "not selected": 3,
        "selected, score 0.3 – 0.6": 2,  # 0.3, 0.5
        "selected, score 0.6 – 0.9": 3,  # 0.6, 0.7, 0.9
        "selected, score outside 0.3 – 0.9": 0,
        "excluded": 2,
    }
    assert layer["excluded_hatched"] == 2 and layer["unstyled"] == 0


@pytest.mark.db
def test_run_views_open_styled_without_a_key(
    qgis_python: str, fresh_database_url: str, demo_pairs: Path, tmp_path: Path
) -> None:
    """Each catalog run has a view run_<id>_<kind>: QGIS's browser opens it with key tile_id
    (nothing typed) and the default style from layer_styles, whose legend reads right."""
    from sqlalchemy import create_engine
    from sqlalchemy import text as sql

    from smt_tools.config._loader import validate_mapping
    from smt_tools.config.balanced import BalancedFile
    from smt_tools.config.coreset import CoresetFile
    from smt_tools.config.split import SplitFile
    from smt_tools.export.qgis_style import score_breaks
    from smt_tools.pipelines.balanced import run_balanced
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.coreset import run_coreset
    from smt_tools.pipelines.ingest import run_ingest
    from smt_tools.pipelines.split import run_split

    run_catalog_init(fresh_database_url)
    run_ingest(demo_pairs, catalog=fresh_database_url, patch_size=128, nodata_class=0, workers=1)
    bal = validate_mapping(
        {
            "balanced_dataset": {
                "input": {"dsn": fresh_database_url, "table": "tile"},
                "clustering": {"k_min": 2, "k_max": 6, "random_state": 0},
                "output": {"csv_path": str(tmp_path / "b.csv")},
            }
        },
        BalancedFile,
        "b.yaml",
    ).balanced_dataset
    b_run = run_balanced(bal).run_id
    split = validate_mapping(
        {
            "split": {
                "catalog": {"url": fresh_database_url, "run_id": b_run},
                "n_splits": 5,
                "strategy": "group",
                "group_column": "tile_id",
                "holdout": 0.2,
                "buffer_m": 10.0,
                "output": {
                    "csv_path": str(tmp_path / "f.csv"),
                    "geojson_path": str(tmp_path / "f.gpkg"),
                },
            }
        },
        SplitFile,
        "s.yaml",
    ).split
    s_run = run_split(split).run_id
    core = validate_mapping(
        {
            "coreset": {
                "catalog": {"url": fresh_database_url, "run_id": b_run},
                "budget": 0.5,
                "output": {
                    "csv_path": str(tmp_path / "c.csv"),
                    "geojson_path": str(tmp_path / "c.fgb"),
                },
            }
        },
        CoresetFile,
        "c.yaml",
    ).coreset
    c_run = run_coreset(core).run_id
    assert (tmp_path / "f.gpkg").is_file() and not (tmp_path / "f.qml").exists()
    assert (tmp_path / "c.fgb").is_file() and (tmp_path / "c.qml").is_file()

    engine = create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        views = dict(conn.execute(sql("select command, map_view from run order by id")).all())
    engine.dispose()
    assert views == {
        "build-balanced-dataset": f"run_{b_run}_balanced",
        "split": f"run_{s_run}_folds",
        "select-coreset": f"run_{c_run}_coreset",
    }

    def browse(view: str, field: str, count: int, *extra: str | Path) -> dict[str, Any]:
        rc, out = qgis_check(
            qgis_python,
            "--pg-url",
            fresh_database_url,
            "--pg-layer",
            view,
            "--pg-browser",
            "--field",
            field,
            "--expect-count",
            count,
            "--png",
            tmp_path / f"{view}.png",
            *extra,
        )
        assert rc == 0 and out["ok"], out["layers"][0]["problems"]
        (layer,) = out["layers"]
        assert layer["key"] == "tile_id" and layer["unstyled"] == 0
        assert (tmp_path / f"{view}.png").is_file()  # (the script fails under 5 % drawn)
        return layer

    b_csv = pd.read_csv(tmp_path / "b.csv")
    layer = browse(views["build-balanced-dataset"], "sampler_weight", 64)
    assert layer["style"] == "layer_styles: smt-tools build-balanced-dataset"
    assert layer["legend"] == [*LABELS, "excluded"]
    assert layer["excluded"] == layer["excluded_hatched"] == int(b_csv["excluded"].sum())

    folds = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    dropped = int((folds["buffer_excluded_folds"].astype(str) != "").sum())
    expected = {f"fold {k}": int((folds["fold"] == k).sum()) for k in range(5)}
    expected |= {"holdout test": int((folds["fold"] == -1).sum()), "no fold": 0}
    expected["dropped from a training set by the buffer"] = dropped
    assert dropped > 0 and expected["holdout test"] > 0 and min(expected.values()) >= 0
    # the split ran on the balanced run's included tiles only
    assert len(folds) == 64 - int(b_csv["excluded"].sum())
    layer = browse(views["split"], "fold", len(folds), "--excluded-field", "")
    assert layer["style"] == "layer_styles: smt-tools split"
    assert layer["legend"] == FOLD_LEGEND and layer["features_per_class"] == expected
    rc, out = qgis_check(
        qgis_python, tmp_path / "f.gpkg", "--field", "fold", "--excluded-field", ""
    )
    assert rc == 0 and out["layers"][0]["features_per_class"] == expected

    cs = pd.read_csv(tmp_path / "c.csv")
    sel, exc = cs["coreset_selected"].astype(bool), cs["excluded"].astype(bool)
    edges = score_breaks(cs.loc[sel, "coreset_score"])
    layer = browse(views["select-coreset"], "coreset_selected", len(cs))
    assert layer["style"] == "layer_styles: smt-tools select-coreset"
    assert layer["legend"] == [
        "not selected",
        *(f"selected, score {a:.3g} – {b:.3g}" for a, b in itertools.pairwise(edges)),
        f"selected, score outside {edges[0]:.3g} – {edges[-1]:.3g}",
        "excluded",
    ]
    per = layer["features_per_class"]
    assert per["not selected"] == int((~sel & ~exc).sum()) and per["excluded"] == int(exc.sum())
    assert sum(v for k, v in per.items() if k.startswith("selected, score ")) == int(sel.sum())
    assert sel.sum() > 0 and per[layer["legend"][-2]] == 0
