"""``catalog stats``: tiles, source images and class pixel shares of a catalog or tile table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    runs: int | None  # runs recorded (PostGIS: run rows; Parquet: files in <table>.runs/)
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
    from smt_tools.catalog.store import open_store

    with open_store(catalog) as store:
        raw = store.stats()
        label, kind = store.label, store.kind
    cls = raw["classes"]
    return CatalogStats(
        target=label,
        kind=kind,
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
