"""The band chosen for a multi-band mask (``catalog ingest --mask-band``, ``input.mask_band``)
travels with the tiles: tile table and catalog -> balanced CSV ``mask_band`` column -> the
training datasets read that band, never band 1 by accident (issue 11, A6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine

from smt_tools import catalog as cat
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.errors import ConfigError, InputDataError, SmtError
from smt_tools.pipelines.balanced import run_balanced
from smt_tools.pipelines.ingest import run_ingest
from tests.real_masks_data import building_mask, write_one

torch = pytest.importorskip("torch")

from smt_tools.train import (  # noqa: E402
    CSVWindowedSegmentationDataset,
    RandomCropSegmentationDataset,
)

SIDE = 16


def _bands() -> np.ndarray:
    """uint8 (3, 16, 16): band 1 all 1, band 2 = 2 background / 3 on a 6x6 block (36 px),
    band 3 all 9. Only band 2 holds the two classes a user means."""
    band2 = building_mask()[:SIDE, :SIDE] + 2
    assert int((band2 == 3).sum()) == 36
    return np.stack([np.full((SIDE, SIDE), 1, np.uint8), band2, np.full((SIDE, SIDE), 9, np.uint8)])


def _scene(tmp: Path) -> tuple[Path, Path, Path]:
    return write_one(tmp, "rgbmask", _bands())


def _balanced(tmp: Path, inp: dict[str, Any]) -> pd.DataFrame:
    data = {
        "balanced_dataset": {
            "input": inp,
            "clustering": {"k_min": 1, "k_max": 2},
            "output": {"csv_path": str(tmp / "out" / "b.csv")},
        }
    }
    run_balanced(validate_mapping(data, BalancedFile, "t.yaml").balanced_dataset)
    return pd.read_csv(tmp / "out" / "b.csv")


def _class_totals(frame: pd.DataFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    for js in frame["class_counts_json"]:
        for k, v in json.loads(js).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _masks_of(ds: Any) -> np.ndarray:
    return np.stack([ds[i]["mask"].numpy() for i in range(len(ds))])


def test_tile_table_band_reaches_csv_and_training(tmp_path: Path) -> None:
    _, _, pairs = _scene(tmp_path)
    tiles = tmp_path / "t.parquet"
    run_ingest(pairs, catalog=str(tiles), patch_size=8, mask_band=2, workers=1)
    out = _balanced(tmp_path, {"tiles": str(tiles)})
    assert out["mask_band"].tolist() == [2, 2, 2, 2]
    assert _class_totals(out) == {"2": 256 - 36, "3": 36}
    # the windowed dataset reads band 2 from the CSV's column: class 1 (value 3) is the block
    ds = CSVWindowedSegmentationDataset(tmp_path / "out" / "b.csv", class_values=[2, 3])
    masks = _masks_of(ds)
    assert int((masks == 1).sum()) == 36 and int((masks == 0).sum()) == 256 - 36
    want = (_bands()[1] == 3).astype(np.int64)
    for i in range(len(ds)):
        _, _, r, c, s = ds.window(i)
        assert np.array_equal(masks[i], want[r : r + s, c : c + s])
    # random crops over the same CSV (one row per scene) read band 2 too
    crops = RandomCropSegmentationDataset(
        tmp_path / "out" / "b.csv", crop_size=8, grid_mode=True, class_values=[2, 3]
    )
    assert crops.mask_bands.tolist() == [2]
    assert int((_masks_of(crops) == 1).sum()) == 36


def test_catalog_band_reaches_csv(tmp_path: Path, fresh_database_url: str) -> None:
    _, _, pairs = _scene(tmp_path)
    engine = create_engine(fresh_database_url)
    try:
        cat.apply_migrations(engine)
        run_ingest(pairs, catalog=fresh_database_url, patch_size=8, mask_band=3, workers=1)
        loaded = cat.load_tiles(engine)
    finally:
        engine.dispose()
    assert loaded.frame["mask_band"].tolist() == [3] * 4
    assert loaded.class_values.tolist() == [9]
    out = _balanced(tmp_path, {"dsn": fresh_database_url})
    assert out["mask_band"].tolist() == [3] * 4
    ds = CSVWindowedSegmentationDataset(tmp_path / "out" / "b.csv", class_values=[2, 9])
    assert int((_masks_of(ds) == 1).sum()) == 256  # every pixel is class 1 (raw 9)


def test_patch_records_mask_band_key(tmp_path: Path) -> None:
    img, msk, _ = _scene(tmp_path)
    records = [
        {"image_path": str(img), "mask_path": str(msk), "row_off": r, "col_off": c, "patch_size": 8}
        for r in (0, 8)
        for c in (0, 8)
    ]
    with pytest.raises(InputDataError) as err:
        _balanced(tmp_path, {"patch_records": records})
    assert str(err.value) == (
        f"{msk.as_posix()}: mask has 3 bands; a mask is one band of class values: choose it "
        "with input.mask_band N (1..3), or write a 1-band mask"
    )
    with pytest.raises(InputDataError, match=r"input\.mask_band 4 but the mask has 3 band"):
        _balanced(tmp_path, {"patch_records": records, "mask_band": 4})
    out = _balanced(tmp_path, {"patch_records": records, "mask_band": 2})
    assert out["mask_band"].tolist() == [2] * 4
    assert _class_totals(out) == {"2": 256 - 36, "3": 36}


def test_mask_band_key_refused_with_tiles(tmp_path: Path) -> None:
    with pytest.raises(SmtError, match="mask_band applies to patch records"):
        _balanced(tmp_path, {"tiles": str(tmp_path / "t.parquet"), "mask_band": 2})
    with pytest.raises(SmtError, match="mask_band"):
        _balanced(tmp_path, {"patch_records_csv": str(tmp_path / "r.csv"), "mask_band": 0})


def test_training_refuses_a_multiband_mask_without_a_band(tmp_path: Path) -> None:
    img, msk, _ = _scene(tmp_path)
    csv = tmp_path / "w.csv"
    row = {"image_path": img.name, "mask_path": msk.name, "row_off": 0, "col_off": 0}
    pd.DataFrame([{**row, "patch_size": 8}]).to_csv(csv, index=False)
    ds = CSVWindowedSegmentationDataset(csv, class_values=[2, 3])
    with pytest.raises(InputDataError) as err:
        ds[0]
    assert str(err.value).startswith(f"{msk}: mask has 3 bands; a mask is one band")
    # the dataset's key picks the band when the CSV has no column
    ds = CSVWindowedSegmentationDataset(csv, class_values=[2, 9], mask_band=3)
    assert int((ds[0]["mask"] == 1).sum()) == 64
    with pytest.raises(ConfigError, match="mask_band must be >= 1"):
        CSVWindowedSegmentationDataset(csv, mask_band=0)
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{**row, "patch_size": 8, "mask_band": "x"}]).to_csv(bad, index=False)
    with pytest.raises(
        InputDataError, match=r"row 2: mask_band must be a band number >= 1; got 'x'"
    ):
        CSVWindowedSegmentationDataset(bad)
    scenes = tmp_path / "scenes.csv"
    pd.DataFrame([{"image": img.name, "mask": msk.name}]).to_csv(scenes, index=False)
    with pytest.raises(InputDataError, match=r"mask has 3 band.* and mask_band is not set"):
        RandomCropSegmentationDataset(scenes, crop_size=8)
    with pytest.raises(InputDataError, match=r"mask_band is 5; .* from 1 to 3"):
        RandomCropSegmentationDataset(scenes, crop_size=8, mask_band=5)
    crops = RandomCropSegmentationDataset(
        scenes, crop_size=8, grid_mode=True, class_values=[2, 3], mask_band=2
    )
    assert int((_masks_of(crops) == 1).sum()) == 36
