"""``catalog stats``: tiles, source images and class pixel shares of a catalog or tile table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smt_tools.pipelines.ingest import is_parquet_target


@dataclass(frozen=True)
class ClassShare:
    class_value: int
    name: str | None
    colour: str | None
    pixels: int
    share: float  # pixels / all valid pixels (0 when there is none)


@dataclass(frozen=True)
class CatalogStats:
    target: str
    kind: str  # "postgis" or "parquet"
    tiles: int
    source_images: int
    groups: int
    runs: int | None  # None for a Parquet table (no runs there)
    window_pixels: int
    valid_pixels: int
    classes: list[ClassShare]

    @property
    def nodata_share(self) -> float:
        return 1.0 - self.valid_pixels / self.window_pixels if self.window_pixels else 0.0

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``)."""
        return {
            "target": self.target,
            "kind": self.kind,
            "tiles": self.tiles,
            "source_images": self.source_images,
            "groups": self.groups,
            "runs": self.runs,
            "window_pixels": self.window_pixels,
            "valid_pixels": self.valid_pixels,
            "nodata_share": self.nodata_share,
            "classes": [
                {
                    "class_value": c.class_value,
                    "name": c.name,
                    "colour": c.colour,
                    "pixels": c.pixels,
                    "share": c.share,
                }
                for c in self.classes
            ],
        }


def _shares(
    values: list[int], names: list[str | None], colours: list[str | None], pixels: list[int]
) -> list[ClassShare]:
    total = sum(pixels)
    return [
        ClassShare(v, n, c, p, p / total if total else 0.0)
        for v, n, c, p in zip(values, names, colours, pixels, strict=True)
    ]


def run_catalog_stats(catalog: str | None = None) -> CatalogStats:
    """Stats of ``catalog`` (PostgreSQL URL, default ``$SMT_DATABASE_URL``, or a ``.parquet``)."""
    target = catalog if catalog else os.environ.get("SMT_DATABASE_URL", "").strip() or None
    if is_parquet_target(target):
        assert target is not None
        return _parquet_stats(Path(target))
    from smt_tools import catalog as cat

    url = cat.resolve_url(target)
    engine = cat.connect(url)
    try:
        raw = cat.catalog_stats(engine)
        label = cat.engine_label(engine)
    finally:
        engine.dispose()
    cls = raw["classes"]
    return CatalogStats(
        target=label,
        kind="postgis",
        tiles=raw["tiles"],
        source_images=raw["source_images"],
        groups=raw["groups"],
        runs=raw["runs"],
        window_pixels=raw["window_pixels"],
        valid_pixels=raw["valid_pixels"],
        classes=_shares(
            [c["class_value"] for c in cls],
            [c["name"] for c in cls],
            [c["colour"] for c in cls],
            [c["pixels"] for c in cls],
        ),
    )


def _parquet_stats(path: Path) -> CatalogStats:
    from smt_tools.export.tiletable_io import read_class_names, read_tile_table

    table = read_tile_table(path)
    names = read_class_names(path)
    f = table.frame
    pixels = table.counts.sum(axis=0).astype(np.int64).tolist() if len(table) else []
    values = [int(v) for v in table.class_values]
    if not pixels:
        pixels = [0] * len(values)
    return CatalogStats(
        target=str(path),
        kind="parquet",
        tiles=len(table),
        source_images=int(f["source_image_id"].nunique()),
        groups=int(f["group_id"].nunique()),
        runs=None,
        window_pixels=int((f["height"].astype(np.int64) * f["width"].astype(np.int64)).sum()),
        valid_pixels=int(table.counts.sum()),
        classes=_shares(
            values,
            [names.get(v, (None, None))[0] for v in values],
            [names.get(v, (None, None))[1] for v in values],
            [int(p) for p in pixels],
        ),
    )
