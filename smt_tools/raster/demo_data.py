"""``make-demo-data``: write the synthetic scenes of a profile, ``pairs.csv`` and ``classes.csv``.

The scenes come from :mod:`smt_tools.raster.synthetic` (profile ``default``) or
:mod:`smt_tools.raster.synthetic_longtail` (profile ``longtail``, built on the former).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smt_tools.raster import synthetic_longtail as lt
from smt_tools.raster.synthetic import (
    _COLOURS,
    CLASS_NAMES,
    SceneSpec,
    _World,
    scene_specs,
    write_scene,
)


def make_demo_data(
    out_dir: str | Path,
    scenes: int = 8,
    size: int = 2048,
    seed: int = 0,
    zlevel: int = 6,
    progress: Callable[[int], None] | None = None,
    profile: str = "default",
) -> Path:
    """Write ``scenes`` image/mask pairs, ``pairs.csv`` and ``classes.csv`` (class_value, name,
    colour: for ``catalog ingest --class-names``) into ``out_dir``; return the pairs CSV path.

    profile: ``default`` or ``longtail`` (:mod:`smt_tools.raster.synthetic_longtail`)."""
    if scenes < 1:
        raise ValueError("scenes must be >= 1")
    if size < 64:
        raise ValueError("size must be >= 64 pixels")
    if profile not in ("default", "longtail"):
        raise ValueError(f"profile must be default or longtail; got {profile!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = scene_specs(scenes, size, seed)
    world: _World
    names, display = CLASS_NAMES, _COLOURS
    if profile == "longtail":
        world = lt.LongtailWorld(seed, specs)
        names, display = lt.CLASS_NAMES, lt.DISPLAY_COLOURS
    else:
        world = _World(seed)
    rows: list[tuple[object, ...]] = []
    for spec in specs:
        img, msk = write_scene(world, spec, out, zlevel=zlevel)
        # Each acquisition is its own group: the revisit of scene 0 is NOT grouped with it, so
        # only a spatial check (buffer / leakage audit) finds that the two overlap.
        rows.append((img.relative_to(out).as_posix(), msk.relative_to(out).as_posix(), spec.name))
        if progress:
            progress(1)
    _write_csv(
        out / "classes.csv",
        ["class_value", "name", "colour"],
        [
            (v, name, "#{:02x}{:02x}{:02x}".format(*(int(x) for x in display[v])))
            for v, name in enumerate(names, start=1)
        ],
    )
    csv_path = out / "pairs.csv"
    _write_csv(csv_path, ["image", "mask", "group"], rows)
    if profile == "default":
        write_demo_areas(out / "areas.geojson", specs)
    return csv_path


def write_demo_areas(path: Path, specs: list[SceneSpec]) -> None:
    """``areas.geojson``: a small map layer in lon/lat for select-coreset's hybrid vector step
    (conf/examples/coreset_hybrid.yaml): in each scene but the revisit, a ``building`` block over
    its upper-left part and a ``field`` over its lower-right part (attribute ``class``)."""
    import shapely
    from pyproj import Transformer

    from smt_tools.raster.synthetic import DEMO_CRS, PIXEL_SIZE

    to_lonlat = Transformer.from_crs(DEMO_CRS, "EPSG:4326", always_xy=True)
    geoms, classes = [], []
    for spec in specs:
        if "revisit" in spec.name:
            continue
        side = spec.size * PIXEL_SIZE
        for cls, lo, hi in (("building", 0.1, 0.35), ("field", 0.55, 0.9)):
            x0, x1 = spec.x0 + lo * side, spec.x0 + hi * side
            y0, y1 = spec.y0 - hi * side, spec.y0 - lo * side  # y0 is the scene's top edge
            ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), side / 16)
            geoms.append(
                shapely.transform(
                    ring, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
                )
            )
            classes.append(cls)
    # RFC 7946 GeoJSON (lon/lat, no "crs" member) written as JSON: a dozen polygons need no
    # GDAL driver, so the demo data has the same dependencies as the rest of the core
    features = [
        {
            "type": "Feature",
            "properties": {"class": c},
            "geometry": json.loads(shapely.to_geojson(g)),
        }
        for g, c in zip(geoms, classes, strict=True)
    ]
    tmp = path.with_suffix(".geojson.part")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, header: list[str], rows: list[tuple[object, ...]]) -> None:
    tmp = path.with_suffix(".csv.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
