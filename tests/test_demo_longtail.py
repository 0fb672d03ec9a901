"""``make-demo-data --profile longtail``: the numbers README's "The long-tail demo profile"
fixes, measured on the written GeoTIFFs (default size: 8 scenes of 2048 px, 512 tiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from scipy import ndimage
from typer.testing import CliRunner

from smt_tools.cli.app import app

RARE, SECOND, LOOK_ALIKE = 6, 5, 1
TILE = 256  # catalog ingest --patch-size 256 (edge drop: whole windows from (0, 0))


def _make(out: Path, *args: str) -> None:
    result = CliRunner().invoke(app, ["make-demo-data", str(out), "--profile", "longtail", *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask (H, W) uint8, image (3, H, W) uint8) of every scene, default size and seed."""
    out = tmp_path_factory.mktemp("longtail") / "demo"
    _make(out)
    pairs = pd.read_csv(out / "pairs.csv")
    loaded = []
    for image, mask in zip(pairs["image"], pairs["mask"], strict=True):
        with rasterio.open(out / mask) as m, rasterio.open(out / image) as im:
            loaded.append((m.read(1), im.read()))
    return loaded


def test_class_shares(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    counts = sum(np.bincount(m.ravel(), minlength=7) for m, _ in scenes)
    share = counts[1:] / counts[1:].sum()  # of the class pixels (0 is nodata)
    assert 0.002 <= share[RARE - 1] <= 0.003
    assert 0.02 <= share[SECOND - 1] <= 0.03
    # the rest as the default profile's land field: 59.5 % (less the rare pixels), 15, 13, 10
    np.testing.assert_allclose(share[:4], [0.5925, 0.15, 0.13, 0.10], atol=0.002)


def test_rare_class_in_few_tiles(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    tiles = hot = 0
    for mask, _ in scenes:
        n = mask.shape[0] // TILE
        blocks = mask[: n * TILE, : n * TILE].reshape(n, TILE, n, TILE)
        tiles += n * n
        hot += int((blocks == RARE).any(axis=(1, 3)).sum())
    assert tiles == 512
    assert hot == 20  # round(4 % of 512)
    assert hot / tiles <= 0.05


def test_rare_objects_are_small(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    sides = []
    for mask, _ in scenes:
        labels, _ = ndimage.label(mask == RARE)
        for rows, cols in ndimage.find_objects(labels):
            sides.append((rows.stop - rows.start, cols.stop - cols.start))
    sides_arr = np.asarray(sides)
    assert len(sides_arr) > 1000
    assert sides_arr.min() >= 4 and sides_arr.max() <= 12
    # every object sits on background: its one-pixel ring is class 1
    for mask, _ in scenes:
        rare = mask == RARE
        ring = ndimage.binary_dilation(rare, structure=np.ones((3, 3), bool)) & ~rare
        assert (mask[ring] == LOOK_ALIKE).all()


def _mean_colour(image: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, int]:
    """(sum of each band, pixels) over ``where`` minus black (border) pixels."""
    sel = where & (image.max(axis=0) > 0)
    return image[:, sel].astype(np.float64).sum(axis=1), int(sel.sum())


def test_rare_class_looks_like_background(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    sums = {RARE: np.zeros(3), LOOK_ALIKE: np.zeros(3)}
    pixels = {RARE: 0, LOOK_ALIKE: 0}
    with_rare = 0
    for mask, image in scenes:
        per_scene = {}
        for c in (RARE, LOOK_ALIKE):
            s, n = _mean_colour(image, mask == c)
            sums[c] += s
            pixels[c] += n
            per_scene[c] = s / max(n, 1)
        if (mask == RARE).any():  # within one scene (same brightness)
            with_rare += 1
            assert np.abs(per_scene[RARE] - per_scene[LOOK_ALIKE]).max() <= 15
    assert with_rare == len(scenes)
    diff = sums[RARE] / pixels[RARE] - sums[LOOK_ALIKE] / pixels[LOOK_ALIKE]
    assert np.abs(diff).max() <= 15


def test_same_seed_same_files(tmp_path: Path) -> None:
    _make(tmp_path / "a", "--scenes", "3", "--size", "1024", "--seed", "4")
    _make(tmp_path / "b", "--scenes", "3", "--size", "1024", "--seed", "4")
    _make(tmp_path / "c", "--scenes", "3", "--size", "1024", "--seed", "5")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files = [rel for rel in files if rel.name != "run.json"]  # holds the time of the run
    assert len(files) == 8  # 3 images, 3 masks, pairs.csv, classes.csv
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    rel = Path("masks/scene_000.tif")
    assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
    names = pd.read_csv(tmp_path / "a" / "classes.csv")["name"].tolist()
    assert names == ["background", "field", "forest", "water", "road", "rare_object"]
