"""The ``longtail`` demo profile: a rare class of small look-alike objects (README, "The
long-tail demo profile"; every number below is fixed there).

Same scenes, fields, nodata margins, black borders and revisit as the default profile
(:mod:`smt_tools.raster.synthetic`), with the classes' tail changed:

- classes 1-5 (background, field, forest, water, road) come from the same land field, with
  cuts taken over the pixels of the scenes written (not a wide sample of the world), so the
  shares hold at any size: 59.5 / 15 / 13 / 10 / 2.5 % (road is the "second class");
- no urban buildings; class 6 (``rare_object``) is small compact discs and plus-shaped crosses,
  4-12 px across (bounding box 4-12 px on each side), drawn only on background with a one-pixel
  background ring and at least 2 px between objects, in 4 % of the 256-px tiles (at least one
  tile), to 0.25 % of the valid mask pixels in all;
- class 6 is drawn in nearly the background's colour (+6, +4, -6 per band) with a one-pixel
  checkerboard of amplitude 14 instead of the background's noise texture: only its shape and
  texture tell it apart.

Objects lie only in tiles that no other scene covers (not where scene 0 and its revisit
overlap), away from nodata margins and black borders, and wholly inside their tile.
"""

from __future__ import annotations

import numpy as np

from smt_tools.raster.synthetic import (
    _COLOURS,
    _TEXTURE,
    PIXEL_SIZE,
    SceneSpec,
    _World,
    scene_offset,
)

CLASS_NAMES = ("background", "field", "forest", "water", "road", "rare_object")
#: shares of classes 1..5 on the land field (class 6 then takes its pixels from class 1)
LAND_SHARES = np.array([0.595, 0.15, 0.13, 0.10, 0.025])
RARE_CLASS = 6
RARE_SHARE = 0.0025  # of the valid (non-nodata) mask pixels
TILE_SHARE = 0.04  # share of the tiles that hold rare objects (at least one tile)
TILE = 256  # tile side, as `catalog ingest --patch-size 256`
MIN_BACKGROUND = 0.5  # a tile holds objects only if at least half of it is background
SIZE_RANGE = (4, 12)  # object bounding box side, pixels
COLOUR_DELTA = (6.0, 4.0, -6.0)
CHECKER_AMPLITUDE = 14.0
#: render colours: class 6 is the background's colour shifted by COLOUR_DELTA
COLOURS = _COLOURS.copy()
COLOURS[RARE_CLASS] = _COLOURS[1] + np.asarray(COLOUR_DELTA, dtype=np.float32)
TEXTURE = _TEXTURE.copy()
TEXTURE[RARE_CLASS] = CHECKER_AMPLITUDE
#: classes.csv colours: class 6 shown in magenta so it stands out on a map
DISPLAY_COLOURS = COLOURS.copy()
DISPLAY_COLOURS[RARE_CLASS] = (255, 0, 255)

#: one object: (row, col) of its box's top-left corner in scene pixels, its mask (d, d) bool
_Object = tuple[int, int, np.ndarray]


class LongtailWorld(_World):
    """The default world's fields (same seed, same draws) with the long-tail classes."""

    def __init__(self, seed: int, specs: list[SceneSpec]) -> None:
        super().__init__(seed)
        self.seed = seed
        self.offsets = {s.index: scene_offset(self, s) for s in specs}
        self.cuts = _scene_cuts(self, specs)
        self.objects = _place_objects(self, specs)

    def classes(self, xs: np.ndarray, ys: np.ndarray, offset: float) -> np.ndarray:
        land = self.land(xs, ys) + offset
        return (np.searchsorted(self.cuts, land.ravel()).reshape(land.shape) + 1).astype(np.uint8)

    def paint(self, cls: np.ndarray, spec: SceneSpec, rows: np.ndarray) -> None:
        r_lo, r_hi = int(rows[0]), int(rows[-1]) + 1
        for r, c, stamp in self.objects.get(spec.index, []):
            d = stamp.shape[0]
            lo, hi = max(r, r_lo), min(r + d, r_hi)
            if lo >= hi:
                continue
            part = stamp[lo - r : hi - r]
            view = cls[lo - r_lo : hi - r_lo, c : c + d]
            view[part] = RARE_CLASS

    def render_style(self) -> tuple[np.ndarray, np.ndarray, int | None]:
        return COLOURS, TEXTURE, RARE_CLASS


def _coords(spec: SceneSpec, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World x of columns, y of rows (pixel centres)."""
    return spec.x0 + (cols + 0.5) * PIXEL_SIZE, spec.y0 - (rows + 0.5) * PIXEL_SIZE


def _scene_cuts(world: LongtailWorld, specs: list[SceneSpec]) -> np.ndarray:
    """Land-field cuts giving LAND_SHARES over the valid pixels of the scenes (a grid of about
    256 x 256 points per scene, each shifted by its scene's offset)."""
    values = []
    for spec in specs:
        step = max(1, spec.size // 256)
        cols = np.arange(spec.left_nodata, spec.size, step)
        rows = np.arange(0, spec.size, step)
        xs, ys = _coords(spec, rows, cols)
        values.append((world.land(xs, ys) + world.offsets[spec.index]).ravel())
    return np.quantile(np.concatenate(values), np.cumsum(LAND_SHARES)[:-1])


def _global_box(spec: SceneSpec) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the scene on the world's pixel grid (scenes share it)."""
    r0 = round((5_000_000.0 - spec.y0) / PIXEL_SIZE)
    c0 = round((spec.x0 - 500_000.0) / PIXEL_SIZE)
    return r0, c0, r0 + spec.size, c0 + spec.size


def _candidate_tiles(
    world: LongtailWorld, spec: SceneSpec, others: list[SceneSpec]
) -> list[tuple[float, int, int]]:
    """(background share, row, col) of the scene's tiles that may hold objects, best first."""
    tile = min(TILE, spec.size)
    n = spec.size // tile
    g0, h0, _, _ = _global_box(spec)
    boxes = [_global_box(o) for o in others]
    out = []
    for r0 in range(0, n * tile, tile):
        for c0 in range(0, n * tile, tile):
            if c0 < spec.left_nodata or r0 < spec.top_black:
                continue
            a, b = g0 + r0, h0 + c0
            if any(a < r1 and r0_ < a + tile and b < c1 and c0_ < b + tile
                   for r0_, c0_, r1, c1 in boxes):  # fmt: skip
                continue  # another acquisition covers part of it
            sample = np.arange(0, tile, 4)
            xs, ys = _coords(spec, r0 + sample, c0 + sample)
            share = float((world.classes(xs, ys, world.offsets[spec.index]) == 1).mean())
            if share >= MIN_BACKGROUND:
                out.append((share, r0, c0))
    out.sort(key=lambda t: (-t[0], t[1], t[2]))
    return out


def _stamp(kind: int, d: int, arm: int) -> np.ndarray:
    """(d, d) bool: a disc (kind 0) or a plus-shaped cross with arms ``arm`` px wide (kind 1);
    both touch all four sides of their box."""
    if kind == 0:
        c = (d - 1) / 2
        i, j = np.mgrid[0:d, 0:d]
        return np.asarray((i - c) ** 2 + (j - c) ** 2 <= (d / 2) ** 2)
    out = np.zeros((d, d), dtype=bool)
    lo = (d - arm) // 2
    out[lo : lo + arm, :] = True
    out[:, lo : lo + arm] = True
    return out


def _fill_tile(
    world: LongtailWorld, spec: SceneSpec, r0: int, c0: int, target: int
) -> tuple[list[_Object], int]:
    """Objects in the tile at (r0, c0) until they cover ``target`` pixels (or no room is left
    after 20,000 tries); returns them and the pixels covered."""
    tile = min(TILE, spec.size)
    rows, cols = np.arange(r0, r0 + tile), np.arange(c0, c0 + tile)
    xs, ys = _coords(spec, rows, cols)
    free = world.classes(xs, ys, world.offsets[spec.index]) == 1
    taken = np.zeros_like(free)
    rng = np.random.default_rng([world.seed, 7919, spec.index, r0, c0])
    objects: list[_Object] = []
    covered = 0
    lo_d, hi_d = SIZE_RANGE
    for _ in range(20_000):
        if covered >= target:
            break
        kind = int(rng.integers(2))
        d = int(rng.integers(lo_d + kind, hi_d + 1))  # a cross is at least 5 px
        arm = int(rng.integers(2, 4)) if kind else 0
        r = int(rng.integers(2, tile - d - 1))
        c = int(rng.integers(2, tile - d - 1))
        ring = (slice(r - 1, r + d + 1), slice(c - 1, c + d + 1))
        if not free[ring].all() or taken[ring].any():
            continue
        stamp = _stamp(kind, d, arm)
        taken[ring] = True
        objects.append((r0 + r, c0 + c, stamp))
        covered += int(stamp.sum())
    return objects, covered


def _place_objects(world: LongtailWorld, specs: list[SceneSpec]) -> dict[int, list[_Object]]:
    """Scene index -> its objects: TILE_SHARE of all tiles, picked round-robin over the scenes
    (each scene's most background-rich tile first), filled to RARE_SHARE of the valid pixels."""
    n_tiles = sum((s.size // min(TILE, s.size)) ** 2 for s in specs)
    n_hot = max(1, round(TILE_SHARE * n_tiles))
    valid = sum(s.size * (s.size - s.left_nodata) for s in specs)
    left = round(RARE_SHARE * valid)
    queues = [(s, _candidate_tiles(world, s, [o for o in specs if o is not s])) for s in specs]
    hot: list[tuple[SceneSpec, int, int]] = []
    while len(hot) < n_hot and any(q for _, q in queues):
        for spec, queue in queues:
            if queue and len(hot) < n_hot:
                _, r0, c0 = queue.pop(0)
                hot.append((spec, r0, c0))
    out: dict[int, list[_Object]] = {}
    for k, (spec, r0, c0) in enumerate(hot):
        target = -(-left // (len(hot) - k))  # the pixels still due, shared by the tiles left
        objects, covered = _fill_tile(world, spec, r0, c0, target)
        out.setdefault(spec.index, []).extend(objects)
        left -= covered
    return out
