"""Why a tile was excluded, in every output: ``exclusion_reason`` (docs/algorithms.md §5 codes)
and the booleans ``has_low_entropy`` / ``has_high_nodata`` in the balanced CSV and Parquet, the
map layers (GeoJSON, GeoPackage) and their QGIS style, the catalog's ``tile_result`` rows; and
``coreset.exclude_low_entropy: false`` re-admitting a tile excluded for low entropy alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.config.coreset import CoresetFile
from smt_tools.curation.exclusion import (
    FLAG_COLUMNS,
    REASON_VALUES,
    exclusion_flags,
    readmit,
)
from smt_tools.errors import InputDataError
from smt_tools.export.csv_out import BALANCED_COLUMNS
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.pipelines.coreset import run_coreset
from tests.catalog_data import write_pairs_csv
from tests.rasters import write_pair

P = 16
#: one 16x16 window per letter, left to right: its mask / image content and the flags the
#: rules of CONFIG (nodata class 0, min_entropy 0.1, max_nodata_ratio 0.5) give it
EXPECTED: dict[str, tuple[str, bool, bool]] = {
    "A": ("low_entropy", True, False),  # one class: entropy 0
    "B": ("", False, False),  # classes 1 | 2 halves
    "N": ("high_nodata", False, True),  # 14x14 nodata inside: 196/256 > 0.5
    "D": ("border_nodata", False, False),  # nodata on the left column (the ring)
    "L": ("border_nodata;low_entropy", True, False),  # one class + nodata on the ring
    "Z": ("no_valid_pixel;high_nodata;border_nodata", False, True),  # all nodata
    "C": ("", False, False),  # class 2 top quarter, class 3 below
    "K": ("black_border", False, False),  # like B; its IMAGE has a black left column
}
LAYOUT = "ABNDLZCKBC"


def _window(kind: str) -> np.ndarray:
    w = np.ones((P, P), np.uint8)
    if kind in "BK":
        w[:, P // 2 :] = 2
    elif kind == "N":
        w[: P // 2] = 1
        w[P // 2 :] = 2
        w[1:-1, 1:-1] = 0
    elif kind == "D":
        w[:, : P // 2] = 3
        w[:, P // 2 :] = 4
        w[:, 0] = 0
    elif kind == "L":
        w[:] = 4
        w[:, 0] = 0
    elif kind == "Z":
        w[:] = 0
    elif kind == "C":
        w[:] = 3
        w[: P // 4] = 2
    return w


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("flags")
    mask = np.concatenate([_window(k) for k in LAYOUT], axis=1)
    image = np.full((3, P, P * len(LAYOUT)), 128, np.uint8)
    k = LAYOUT.index("K")
    image[:, :, k * P] = 0  # a 16-pixel black run along the window's left edge
    img, msk = write_pair(folder, "flags", mask, image)
    write_pairs_csv(folder / "pairs.csv", [(img.name, msk.name)])
    return img, msk


def _balanced(tmp: Path, inp: dict[str, Any], **output: Any) -> dict[str, Any]:
    return {
        "balanced_dataset": {
            "mode": "masks_only",
            "sampling_method": "rank_max",
            "input": inp,
            "clustering": {"k_selection": "fixed", "k": 2, "k_min": 2, "k_max": 2},
            "exclusion": {"nodata_class": 0, "min_entropy": 0.1, "max_nodata_ratio": 0.5},
            "output": {"csv_path": str(tmp / "b.csv"), **output},
        }
    }


def _records(img: Path, msk: Path) -> list[dict[str, Any]]:
    return [
        {
            "image_path": str(img),
            "mask_path": str(msk),
            "row_off": 0,
            "col_off": i * P,
            "patch_size": P,
        }
        for i in range(len(LAYOUT))
    ]


def _run(data: dict[str, Any]) -> Any:
    return run_balanced(validate_mapping(data, BalancedFile, "t.yaml").balanced_dataset)


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    """EXPECTED for each row of ``frame`` (by its col_off)."""
    kinds = [LAYOUT[int(c) // P] for c in frame["col_off"]]
    return pd.DataFrame([EXPECTED[k] for k in kinds], columns=list(FLAG_COLUMNS), index=frame.index)


def _check(frame: pd.DataFrame) -> None:
    want = _expected(frame)
    assert (
        frame["exclusion_reason"].fillna("").astype(str).tolist()
        == want["exclusion_reason"].tolist()
    )
    for col in ("has_low_entropy", "has_high_nodata"):
        assert frame[col].astype(bool).tolist() == want[col].tolist()
    assert frame["excluded"].astype(bool).tolist() == (want["exclusion_reason"] != "").tolist()


# ----------------------------------------------------------------------------- pure functions


def test_flags_codes_and_order() -> None:
    keys = ["no_valid_pixel", "nodata_ratio", "mask_border_nodata", "image_black_border"]
    reasons = {k: np.array([0, 0, 1, 0], bool) for k in keys}
    reasons["low_entropy"] = np.array([0, 1, 1, 0], bool)
    reasons["nodata_ratio"] = np.array([0, 0, 1, 1], bool)
    flags = exclusion_flags(reasons)
    assert list(flags) == list(FLAG_COLUMNS)
    assert list(flags["exclusion_reason"]) == [
        "",
        "low_entropy",
        "no_valid_pixel;high_nodata;border_nodata;black_border;low_entropy",
        "high_nodata",
    ]
    assert flags["has_low_entropy"].tolist() == [False, True, True, False]
    assert flags["has_high_nodata"].tolist() == [False, False, True, True]
    # a batch of rows: the same 32-value dictionary, one byte a row
    part = exclusion_flags(reasons, np.array([3, 1]))["exclusion_reason"]
    assert list(part) == ["high_nodata", "low_entropy"]
    assert list(part.categories) == list(REASON_VALUES) and part.codes.dtype == np.int8


def test_readmit_drops_low_entropy_only() -> None:
    reason = pd.Series(["", "low_entropy", "border_nodata;low_entropy", "high_nodata", None])
    excluded = np.array([False, True, True, True, True])
    back, new = readmit(excluded, reason, "low_entropy")
    assert back.tolist() == [False, False, True, True, True]
    assert new.astype(str).tolist() == ["", "", "border_nodata", "high_nodata", ""]


# ----------------------------------------------------------------------------- outputs


def test_csv_parquet_and_map_layers(scene: tuple[Path, Path], tmp_path: Path) -> None:
    from pyogrio.raw import read

    data = _balanced(
        tmp_path,
        {"patch_records": _records(*scene), "scan_workers": 1},
        parquet_path=str(tmp_path / "b.parquet"),
        geojson_path=str(tmp_path / "b.geojson"),
    )
    res = _run(data)
    assert res.exclusion_counts == {
        "no_valid_pixel": 1,
        "mask_border_nodata": 3,
        "image_black_border": 1,
        "low_entropy": 2,
        "nodata_ratio": 2,
    }
    csv = pd.read_csv(tmp_path / "b.csv")
    assert list(csv.columns) == list(BALANCED_COLUMNS)
    i = BALANCED_COLUMNS.index("excluded")
    assert BALANCED_COLUMNS[i + 1 : i + 4] == FLAG_COLUMNS
    _check(csv)
    assert csv["exclusion_reason"].isna().sum() == 4  # included tiles: an empty field

    pq = pd.read_parquet(tmp_path / "b.parquet")
    assert isinstance(pq["exclusion_reason"].dtype, pd.CategoricalDtype)  # dictionary-encoded
    assert pq["has_low_entropy"].dtype == bool and pq["has_high_nodata"].dtype == bool
    _check(pq)

    layer = json.loads((tmp_path / "b.geojson").read_text())
    props = pd.DataFrame([f["properties"] for f in layer["features"]])
    assert len(props) == len(LAYOUT)
    _check(props)
    qml = (tmp_path / "b.qml").read_text()
    assert '<mapTip>[% CASE WHEN coalesce("excluded", false) THEN' in qml
    assert "coalesce(&quot;exclusion_reason&quot;" not in qml  # text, not attribute-escaped
    assert "coalesce(\"exclusion_reason\", '')" in qml

    data["balanced_dataset"]["output"]["geojson_path"] = str(tmp_path / "b.gpkg")
    _run(data)
    meta, _, _, fields = read(tmp_path / "b.gpkg", layer="b", read_geometry=False)
    gpkg = pd.DataFrame(dict(zip(meta["fields"], fields, strict=True)))
    assert len(gpkg) == len(LAYOUT)
    _check(gpkg)


@pytest.mark.db
def test_catalog_tile_result_rows(
    scene: tuple[Path, Path], fresh_database_url: str, tmp_path: Path
) -> None:
    import psycopg

    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    url = fresh_database_url
    run_catalog_init(url)
    run_ingest(scene[0].parent / "pairs.csv", catalog=url, patch_size=P, nodata_class=0, workers=1)
    res = _run(_balanced(tmp_path, {"dsn": url}))
    assert res.run_id is not None
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select t.col_off, r.excluded, r.exclusion_reason, r.has_low_entropy, "
            "r.has_high_nodata from tile_result r join tile t on t.id = r.tile_id "
            "where r.run_id = %s order by t.col_off",
            (res.run_id,),
        ).fetchall()
        view = conn.execute(
            f"select count(*) from run_{res.run_id}_balanced where exclusion_reason = '' "
            "and not excluded"
        ).fetchone()
    frame = pd.DataFrame(rows, columns=["col_off", "excluded", *FLAG_COLUMNS])
    assert len(frame) == len(LAYOUT)
    _check(frame)
    assert frame["exclusion_reason"].notna().all()  # '' for included tiles, never NULL
    assert view == (4,)

    # select-coreset from the run: the reasons carried into its own tile_result rows
    out = tmp_path / "c.csv"
    cfg = {"method": "lc", "budget": 1.0, "catalog": {"url": url, "run_id": res.run_id}}
    result = run_coreset(_coreset(cfg, out))
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select t.col_off, r.excluded, r.exclusion_reason, r.has_low_entropy, "
            "r.has_high_nodata from tile_result r join tile t on t.id = r.tile_id "
            "where r.run_id = %s order by t.col_off",
            (result.run_id,),
        ).fetchall()
    _check(pd.DataFrame(rows, columns=["col_off", "excluded", *FLAG_COLUMNS]))


# ----------------------------------------------------------------------------- select-coreset


def _coreset(body: dict[str, Any], out: Path) -> Any:
    data = {"coreset": {"device": "cpu", "output": {"csv_path": str(out)}, **body}}
    return validate_mapping(data, CoresetFile, "c.yaml").coreset


def test_exclude_low_entropy_false_readmits(scene: tuple[Path, Path], tmp_path: Path) -> None:
    _run(_balanced(tmp_path, {"patch_records": _records(*scene), "scan_workers": 1}))
    body = {"method": "lc", "budget": 1.0, "input_csv_path": str(tmp_path / "b.csv")}
    a_col = LAYOUT.index("A") * P

    strict = run_coreset(_coreset(body, tmp_path / "strict.csv"))
    s = pd.read_csv(tmp_path / "strict.csv")
    assert strict.n_included == 4 and int(s["coreset_selected"].sum()) == 4
    _check(s)  # passed through unchanged
    a = s.loc[s["col_off"] == a_col].iloc[0]
    assert not a["coreset_selected"] and a["excluded"]

    loose = run_coreset(_coreset({**body, "exclude_low_entropy": False}, tmp_path / "loose.csv"))
    lo = pd.read_csv(tmp_path / "loose.csv")
    assert loose.n_included == 5 and int(lo["coreset_selected"].sum()) == 5
    a = lo.loc[lo["col_off"] == a_col].iloc[0]
    assert a["coreset_selected"] and not a["excluded"] and a["has_low_entropy"]
    assert pd.isna(a["exclusion_reason"])  # now included: no reason left
    # L (low entropy AND a nodata border) stays out, its reason without low_entropy
    lrow = lo.loc[lo["col_off"] == LAYOUT.index("L") * P].iloc[0]
    assert lrow["excluded"] and lrow["exclusion_reason"] == "border_nodata"
    assert not lrow["coreset_selected"] and lrow["has_low_entropy"]


def test_exclude_low_entropy_false_needs_reasons(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "tile_id": [1, 2],
            "class_counts_json": ['{"1": 4}', '{"1": 2, "2": 2}'],
            "excluded": [True, False],
        }
    )
    frame.to_csv(tmp_path / "old.csv", index=False)
    body = {"method": "lc", "budget": 1.0, "input_csv_path": str(tmp_path / "old.csv")}
    cfg = _coreset({**body, "exclude_low_entropy": False}, tmp_path / "c.csv")
    with pytest.raises(
        InputDataError, match="exclude_low_entropy: false needs the exclusion_reason"
    ):
        run_coreset(cfg)
    assert not (tmp_path / "c.csv").exists()


def test_parquet_catalog_run_and_coreset_readmission(
    scene: tuple[Path, Path], tmp_path: Path
) -> None:
    """The Parquet catalog records the same columns in its run file; select-coreset started
    from that run re-admits the low-entropy-only tile and records why the others stay out."""
    from smt_tools.catalog.parquet_store import ParquetStore
    from smt_tools.pipelines.ingest import run_ingest

    tiles = tmp_path / "tiles.parquet"
    run_ingest(scene[0].parent / "pairs.csv", catalog=str(tiles), patch_size=P, nodata_class=0)
    res = _run(_balanced(tmp_path, {"tiles": str(tiles)}))
    assert res.run_id is not None
    store = ParquetStore(tiles)
    _, results = store.read_run(res.run_id)
    csv = pd.read_csv(tmp_path / "b.csv")
    frame = results.merge(csv[["tile_id", "col_off", "excluded"]], on="tile_id")
    _check(frame.drop(columns="excluded_x").rename(columns={"excluded_y": "excluded"}))
    assert (frame["excluded_x"].astype(bool) == frame["excluded_y"]).all()

    body = {"method": "lc", "budget": 1.0, "exclude_low_entropy": False}
    out = tmp_path / "c.csv"
    result = run_coreset(_coreset({**body, "catalog": {"path": str(tiles), "run_id": 1}}, out))
    assert result.n_included == 5 and result.run_id == 2
    _, rec = store.read_run(2)
    rec = rec.merge(csv[["tile_id", "col_off"]], on="tile_id").set_index("col_off")
    a, low = LAYOUT.index("A") * P, LAYOUT.index("L") * P
    assert rec.loc[a, "coreset_selected"] and not rec.loc[a, "excluded"]
    assert rec.loc[a, "exclusion_reason"] == "" and rec.loc[a, "has_low_entropy"]
    assert rec.loc[low, "excluded"] and rec.loc[low, "exclusion_reason"] == "border_nodata"
