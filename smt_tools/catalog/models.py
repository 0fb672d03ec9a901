"""SQLAlchemy ORM models of the tile catalog, with GeoAlchemy2 geometry columns.

The tables are those of ``smt_tools/migrations/*.sql`` after every migration (the migrations
own the schema: these classes map it, they never create it; ``tests/test_catalog_models.py``
checks that both agree column by column). Use them to query the catalog from Python::

    from sqlalchemy import select
    from smt_tools.catalog import Tile, TileResult, connect, resolve_url

    query = select(Tile.id, TileResult.sampler_weight).join(TileResult).where(
        TileResult.run_id == 1, Tile.footprint.ST_Intersects(aoi_wkt_element)
    )
    frame = pandas.read_sql(query, connect(resolve_url()))

Footprints are lon/lat polygons (EPSG:4326); NULL for rasters without a CRS (migration 0003).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: lon/lat polygons, as in the migrations; the GiST indexes are created by the migrations
_FOOTPRINT = Geometry(geometry_type="POLYGON", srid=4326, spatial_index=False)

__all__ = ["CatalogBase", "CatalogClass", "Run", "SourceImage", "Tile", "TileResult"]


class CatalogBase(DeclarativeBase):
    """Declarative base of the catalog tables (its ``metadata`` lists the five tables)."""


class SourceImage(CatalogBase):
    """One ingested image/mask pair (a row of the pairs CSV)."""

    __tablename__ = "source_image"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    image_path: Mapped[str] = mapped_column(Text, unique=True)
    mask_path: Mapped[str] = mapped_column(Text)
    group_id: Mapped[str] = mapped_column(Text)
    crs: Mapped[str] = mapped_column(Text)
    transform: Mapped[list[float]] = mapped_column(ARRAY(Double))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    band_count: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(Text)
    nodata: Mapped[float | None] = mapped_column(Double)
    mask_dtype: Mapped[str] = mapped_column(Text)
    nodata_class: Mapped[int | None] = mapped_column(Integer)
    patch_size: Mapped[int] = mapped_column(Integer)
    stride: Mapped[int] = mapped_column(Integer)
    edge_policy: Mapped[str] = mapped_column(Text)
    black_tolerance: Mapped[float] = mapped_column(Double)
    image_size: Mapped[int] = mapped_column(BigInteger)
    image_mtime: Mapped[float] = mapped_column(Double)
    mask_size: Mapped[int] = mapped_column(BigInteger)
    mask_mtime: Mapped[float] = mapped_column(Double)
    tile_count: Mapped[int] = mapped_column(Integer)
    footprint: Mapped[WKBElement | None] = mapped_column(_FOOTPRINT, nullable=True)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mask_band: Mapped[int] = mapped_column(Integer)  # 0002
    scan_rules: Mapped[int] = mapped_column(Integer)  # 0004

    tiles: Mapped[list[Tile]] = relationship(back_populates="source_image")


class CatalogClass(CatalogBase):
    """A mask class; ``position`` p is element p of ``Tile.class_counts`` (1-based)."""

    __tablename__ = "catalog_class"

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    class_value: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    colour: Mapped[str | None] = mapped_column(Text)


class Tile(CatalogBase):
    """One tile (pixel window) of a source image, with its mask statistics."""

    __tablename__ = "tile"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    source_image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("source_image.id", ondelete="CASCADE")
    )
    row_off: Mapped[int] = mapped_column(Integer)
    col_off: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    footprint: Mapped[WKBElement | None] = mapped_column(_FOOTPRINT, nullable=True)
    class_counts: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    valid_pixels: Mapped[int] = mapped_column(BigInteger)
    nodata_ratio: Mapped[float] = mapped_column(Double)
    class_entropy: Mapped[float | None] = mapped_column(Double)
    has_mask_border_nodata: Mapped[bool] = mapped_column(Boolean)
    has_image_black_border: Mapped[bool] = mapped_column(Boolean)

    source_image: Mapped[SourceImage] = relationship(back_populates="tiles")
    results: Mapped[list[TileResult]] = relationship(back_populates="tile")


class Run(CatalogBase):
    """One command run that recorded per-tile results (build-balanced-dataset, ...)."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # bigserial
    command: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tool_version: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB)
    map_view: Mapped[str | None] = mapped_column(Text)  # 0005

    results: Mapped[list[TileResult]] = relationship(back_populates="run")


class TileResult(CatalogBase):
    """One tile's result in one run (NULL where the command does not compute the value)."""

    __tablename__ = "tile_result"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
    )
    tile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tile.id", ondelete="CASCADE"), primary_key=True
    )
    sampler_weight: Mapped[float | None] = mapped_column(Double)
    freq_cluster_id: Mapped[int | None] = mapped_column(Integer)
    uniqueness_score: Mapped[float | None] = mapped_column(Double)
    excluded: Mapped[bool | None] = mapped_column(Boolean)
    coreset_score: Mapped[float | None] = mapped_column(Double)
    coreset_selected: Mapped[bool | None] = mapped_column(Boolean)
    fold: Mapped[int | None] = mapped_column(Integer)
    buffer_excluded_folds: Mapped[str | None] = mapped_column(Text)  # 0005
    exclusion_reason: Mapped[str | None] = mapped_column(Text)  # 0008
    has_low_entropy: Mapped[bool | None] = mapped_column(Boolean)  # 0008
    has_high_nodata: Mapped[bool | None] = mapped_column(Boolean)  # 0008
    coreset_step: Mapped[str | None] = mapped_column(Text)  # 0009

    run: Mapped[Run] = relationship(back_populates="results")
    tile: Mapped[Tile] = relationship(back_populates="results")
