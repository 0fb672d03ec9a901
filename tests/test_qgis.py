"""Our GeoJSON + .qml outputs and the catalog view ``tile_result_map`` open STYLED in real QGIS.

The QGIS tests run ``scripts/qgis_check.py`` under the system Python that has the ``qgis``
bindings (Debian: ``apt-get install python3-qgis qgis-providers``); they skip where it cannot
import qgis (CI installs no QGIS: this is an optional check). The .qml class edges test needs
no QGIS.
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
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found (QGIS check is optional)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"],
        env=_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} cannot import qgis (apt-get install python3-qgis)")
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
