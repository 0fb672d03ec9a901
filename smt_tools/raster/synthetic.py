"""Seeded synthetic scenes: georeferenced image + mask GeoTIFFs with known structure.

Used by ``make-demo-data`` (:mod:`smt_tools.raster.demo_data` writes the files), the tests and
the benchmarks. Everything is a function of the seed:

- CRS EPSG:32631 (UTM 31N), 0.5 m pixels, scenes laid out on a grid with gaps;
- masks (uint8, 1 band): class 0 = nodata, 1 background (dominant), 2-4 mid classes, 5 a
  small class and 6 a rare class (about 1 % of pixels) that occurs only in "urban" zones
  (about a fifth of the area), so it is concentrated in few tiles as in real scenes; the class
  field is a smooth function of WORLD coordinates, so two acquisitions of one place share
  their labels;
- images (uint8, 3 bands): colour and texture depend on the class, plus noise and a
  per-acquisition brightness;
- every third scene (1, 4, ...) has a nodata margin on its left edge (mask 0, image black);
  every third scene (2, 5, ...) has a black image border along its top edge (mask labelled);
- the last scene (when there are at least 3) is a second acquisition overlapping scene 0.

``profile="longtail"`` (:mod:`smt_tools.raster.synthetic_longtail`) keeps the same layout and
fields but swaps the classes' tail: a 2.5 % "road" class and a rare class of small objects that
look like the background except for their shape and texture.

Fields are separable sums of sinusoids, written in strips, so scenes of any size are made in
bounded memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

DEMO_CRS = "EPSG:32631"
PIXEL_SIZE = 0.5
N_CLASSES = 6
CLASS_NAMES = ("background", "field", "forest", "water", "road", "building")
#: base colour of class 1..6 (RGB)
_COLOURS = np.array(
    [
        [0, 0, 0],
        [150, 140, 110],
        [200, 180, 90],
        [40, 110, 50],
        [40, 70, 140],
        [120, 120, 125],
        [220, 90, 70],
    ],
    dtype=np.float32,
)
#: texture amplitude of class 0..6
_TEXTURE = np.array([0, 10, 6, 22, 3, 4, 14], dtype=np.float32)
# cumulative class shares of the smooth field (classes 1..5); class 6 is painted on top
_SHARES = np.array([0.56, 0.15, 0.13, 0.10, 0.04])
_URBAN_AREA = 0.2  # share of the world where the rare class (buildings) occurs
_RARE_SHARE = 0.01


@dataclass(frozen=True)
class SceneSpec:
    index: int
    name: str
    x0: float
    y0: float
    size: int
    brightness: float
    left_nodata: int  # columns of nodata margin (mask 0 + black image)
    top_black: int  # rows of black image border (mask labelled)


@dataclass(frozen=True)
class _Field:
    """Separable field sum_k a_k * sin(fx_k*x + px_k) * sin(fy_k*y + py_k)."""

    fx: np.ndarray
    px: np.ndarray
    fy: np.ndarray
    py: np.ndarray
    amp: np.ndarray

    @staticmethod
    def random(rng: np.random.Generator, n: int, wavelengths: tuple[float, float]) -> _Field:
        lo, hi = wavelengths
        wl_x = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        wl_y = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        return _Field(
            fx=2 * np.pi / wl_x,
            px=rng.uniform(0, 2 * np.pi, n),
            fy=2 * np.pi / wl_y,
            py=rng.uniform(0, 2 * np.pi, n),
            amp=rng.uniform(0.5, 1.0, n) / np.sqrt(n),
        )

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Field on the grid ys (rows) x xs (cols), float32 (len(ys), len(xs))."""
        sx = np.sin(np.outer(self.fx, xs) + self.px[:, None]).astype(np.float32)  # (k, W)
        sy = np.sin(np.outer(self.fy, ys) + self.py[:, None]).astype(np.float32)  # (k, H)
        return np.asarray((sy * self.amp[:, None].astype(np.float32)).T @ sx, dtype=np.float32)


class _World:
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.land = _Field.random(rng, 10, (150.0, 1500.0))  # metres
        self.rare = _Field.random(rng, 8, (6.0, 30.0))
        self.urban = _Field.random(rng, 6, (800.0, 3000.0))
        self.texture_seed = int(rng.integers(2**31))
        # thresholds from a sample of the field so class shares hold across scenes
        xs = rng.uniform(0, 50_000, 600)
        ys = rng.uniform(0, 50_000, 600)
        sample = self.land(xs, ys).ravel()
        self.cuts = np.quantile(sample, np.cumsum(_SHARES)[:-1])
        self.urban_cut = float(np.quantile(self.urban(xs, ys).ravel(), 1 - _URBAN_AREA))
        self.rare_cut = float(np.quantile(self.rare(xs, ys).ravel(), 1 - _RARE_SHARE / _URBAN_AREA))

    def classes(self, xs: np.ndarray, ys: np.ndarray, offset: float) -> np.ndarray:
        land = self.land(xs, ys) + offset
        cls = (np.searchsorted(self.cuts, land.ravel()).reshape(land.shape) + 1).astype(np.uint8)
        urban = self.urban(xs, ys) > self.urban_cut
        rare = (self.rare(xs, ys) > self.rare_cut) & urban
        cls[rare & (cls != 4)] = 6  # no buildings on water
        return cls

    def paint(self, cls: np.ndarray, spec: SceneSpec, rows: np.ndarray) -> None:
        """Draw objects into the strip ``cls`` (rows ``rows`` of scene ``spec``); none here."""

    def render_style(self) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(colours (7, 3), texture amplitudes (7,), class drawn with a checkerboard or None)."""
        return _COLOURS, _TEXTURE, None


def scene_offset(world: _World, spec: SceneSpec) -> float:
    """Per-scene shift of the class mix; scene 0 and its revisit share the same land cover."""
    scene_rng = np.random.default_rng(world.texture_seed + spec.index + 1)
    revisit = spec.name.endswith("revisit_of_000")
    return 0.0 if revisit or spec.index == 0 else float(scene_rng.normal(0, 0.08))


def scene_specs(n_scenes: int, size: int, seed: int) -> list[SceneSpec]:
    rng = np.random.default_rng(seed + 1)
    step = size * PIXEL_SIZE + 1_000.0
    specs: list[SceneSpec] = []
    n_grid = n_scenes - 1 if n_scenes >= 3 else n_scenes
    cols = max(1, int(np.ceil(np.sqrt(n_grid))))
    margin = max(1, size // 10)
    for i in range(n_grid):
        specs.append(
            SceneSpec(
                index=i,
                name=f"scene_{i:03d}",
                x0=500_000.0 + (i % cols) * step,
                y0=5_000_000.0 - (i // cols) * step,
                size=size,
                brightness=float(rng.uniform(0.85, 1.15)),
                left_nodata=margin if i % 3 == 1 else 0,
                top_black=margin // 2 if i % 3 == 2 else 0,
            )
        )
    if n_scenes >= 3:  # a second acquisition of scene 0, shifted by a quarter scene
        shift = size * PIXEL_SIZE / 4
        specs.append(
            SceneSpec(
                index=n_grid,
                name=f"scene_{n_grid:03d}_revisit_of_000",
                x0=specs[0].x0 + shift,
                y0=specs[0].y0 - shift,
                size=size,
                brightness=float(rng.uniform(0.7, 0.8)),
                left_nodata=0,
                top_black=0,
            )
        )
    return specs


def write_scene(
    world: _World, spec: SceneSpec, out_dir: Path, strip: int = 512, zlevel: int = 6
) -> tuple[Path, Path]:
    """Write ``<name>_img.tif`` and ``<name>_mask.tif`` into ``out_dir/images|masks``."""
    img_path = out_dir / "images" / f"{spec.name}.tif"
    msk_path = out_dir / "masks" / f"{spec.name}.tif"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    msk_path.parent.mkdir(parents=True, exist_ok=True)
    transform = from_origin(spec.x0, spec.y0, PIXEL_SIZE, PIXEL_SIZE)
    common = dict(
        driver="GTiff",
        width=spec.size,
        height=spec.size,
        crs=CRS.from_string(DEMO_CRS),
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        zlevel=zlevel,
    )
    tex_rng = np.random.default_rng(world.texture_seed)
    noise_tile = tex_rng.normal(0, 1, (3, 512, 512)).astype(np.float32)
    offset = scene_offset(world, spec)
    tmp_img = img_path.with_suffix(".tif.part")
    tmp_msk = msk_path.with_suffix(".tif.part")
    with (
        rasterio.open(tmp_img, "w", count=3, dtype="uint8", predictor=2, **common) as dst_img,
        rasterio.open(tmp_msk, "w", count=1, dtype="uint8", nodata=0, **common) as dst_msk,
    ):
        cols = np.arange(spec.size)
        xs = spec.x0 + (cols + 0.5) * PIXEL_SIZE
        for r0 in range(0, spec.size, strip):
            rows = np.arange(r0, min(r0 + strip, spec.size))
            ys = spec.y0 - (rows + 0.5) * PIXEL_SIZE
            cls = world.classes(xs, ys, offset)
            world.paint(cls, spec, rows)
            img = _render(cls, xs, ys, noise_tile, spec, rows, cols, world.render_style())
            if spec.left_nodata:
                cls[:, : spec.left_nodata] = 0
                img[:, :, : spec.left_nodata] = 0
            if spec.top_black:
                black_rows = rows < spec.top_black
                img[:, black_rows, :] = 0
            win = Window(0, r0, spec.size, len(rows))
            dst_msk.write(cls, 1, window=win)
            dst_img.write(img, window=win)
    os.replace(tmp_img, img_path)
    os.replace(tmp_msk, msk_path)
    return img_path, msk_path


def _render(
    cls: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    noise_tile: np.ndarray,
    spec: SceneSpec,
    rows: np.ndarray,
    cols: np.ndarray,
    style: tuple[np.ndarray, np.ndarray, int | None] = (_COLOURS, _TEXTURE, None),
) -> np.ndarray:
    colours, texture, checker_class = style
    base = colours[cls]  # (h, w, 3)
    amp = texture[cls]  # (h, w)
    noise = noise_tile[:, (rows % 512)[:, None], (cols % 512)[None, :]]  # (3, h, w)
    stripes = np.sin(xs / 2.0)[None, :] * np.cos(ys / 3.0)[:, None]  # crop rows / roof texture
    if checker_class is None:
        tex = amp * np.where((cls == 2) | (cls == 6), stripes, 0.5 * noise[0])
    else:  # a one-pixel checkerboard (+1/-1): fine texture of the small objects
        checker = np.where((rows[:, None] + cols[None, :]) % 2 == 0, 1.0, -1.0)
        other = np.where(cls == 2, stripes, 0.5 * noise[0])
        tex = amp * np.where(cls == checker_class, checker, other).astype(np.float32)
    img = base.transpose(2, 0, 1) * spec.brightness + tex[None] + 6.0 * noise
    return np.clip(img, 1, 255).astype(np.uint8)
