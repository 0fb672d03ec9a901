"""The in-memory tile table every command shares.

Local files, a Parquet tile table and the PostGIS catalog all load into a :class:`TileTable`,
so everything after loading runs one code path.

Identifiers are stable 63-bit integers derived from the (absolute) image path and the window,
so the same tile has the same ``tile_id`` whether it came from a local scan or the catalog,
and the embedding cache can be joined by key in both cases. Remote rasters (``s3://``,
``https://``, ``/vsicurl/`` …) are identified by their URL as written, without credentials
(:mod:`smt_tools.raster.paths`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError

#: Columns of :attr:`TileTable.frame`, in output order.
TILE_COLUMNS: tuple[str, ...] = (
    "tile_id",
    "source_image_id",
    "group_id",
    "image_path",
    "mask_path",
    "row_off",
    "col_off",
    "height",
    "width",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "crs",
    "valid_pixels",
    "nodata_ratio",
    "class_entropy",
    "has_mask_border_nodata",
    "has_image_black_border",
)


def stable_id(*parts: object) -> int:
    """A positive 63-bit integer id from ``parts`` (blake2b; stable across runs and machines)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "big") >> 1


def canonical_path(path: str | os.PathLike[str]) -> str:
    """The stored form of a raster path: local paths absolute and normalised (POSIX, no symlink
    resolution: users see their path); GDAL paths (``s3://``, ``https://``, ``/vsicurl/`` …)
    as written (:func:`smt_tools.raster.paths.normalize_path`)."""
    from smt_tools.raster.paths import normalize_path  # raster imports this module

    return normalize_path(path)


def path_identity(path: str | os.PathLike[str]) -> str:
    """The form of a raster path ids are derived from: :func:`canonical_path`, without the
    credentials of a URL (:func:`smt_tools.raster.paths.path_identity`)."""
    from smt_tools.raster.paths import path_identity as identity

    return identity(path)


def source_image_key(image_path: str | os.PathLike[str]) -> int:
    return stable_id("source_image", path_identity(image_path))


def tile_key(
    image_path: str | os.PathLike[str], row_off: int, col_off: int, height: int, width: int
) -> int:
    return stable_id(
        "tile", path_identity(image_path), int(row_off), int(col_off), int(height), int(width)
    )


def tile_keys(
    image_path: str, row_off: np.ndarray, col_off: np.ndarray, height: np.ndarray, width: np.ndarray
) -> np.ndarray:
    """Vectorised :func:`tile_key` for many windows of one image: (n,) int64."""
    img = path_identity(image_path)
    return np.fromiter(
        (
            stable_id("tile", img, int(r), int(c), int(h), int(w))
            for r, c, h, w in zip(row_off, col_off, height, width, strict=True)
        ),
        dtype=np.int64,
        count=len(row_off),
    )


def entropy_from_counts(counts: np.ndarray) -> np.ndarray:
    """Natural-log Shannon entropy of each row of ``counts`` (n, C); NaN where the row sums to 0."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / total[:, None]
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
        ent = -(p * logp).sum(axis=1)
    ent[total == 0] = np.nan
    return ent


@dataclass
class TileTable:
    """Tiles with their statistics.

    frame: one row per tile, columns :data:`TILE_COLUMNS` (plus any extra input columns).
    counts: (n_tiles, n_classes) int64 pixel counts per class, rows aligned with ``frame``.
    class_values: (n_classes,) int64, the mask value of each column of ``counts``
        (``nodata_class`` excluded).
    nodata_class: the mask value treated as nodata, or None.
    """

    frame: pd.DataFrame
    counts: np.ndarray
    class_values: np.ndarray
    nodata_class: int | None = 0

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.class_values = np.asarray(self.class_values, dtype=np.int64)
        if self.counts.ndim != 2 or self.counts.shape[0] != len(self.frame):
            raise InputDataError(
                f"tile table: counts has shape {self.counts.shape}, expected ({len(self.frame)}, n_classes)"
            )
        if self.counts.shape[1] != len(self.class_values):
            raise InputDataError(
                f"tile table: {self.counts.shape[1]} count columns but {len(self.class_values)} class values"
            )

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_classes(self) -> int:
        return int(self.class_values.shape[0])

    def take(self, index: np.ndarray) -> TileTable:
        """Rows ``index`` (positional) as a new table with a fresh RangeIndex."""
        idx = np.asarray(index)
        return TileTable(
            frame=self.frame.iloc[idx].reset_index(drop=True),
            counts=self.counts[idx],
            class_values=self.class_values.copy(),
            nodata_class=self.nodata_class,
        )

    def sorted_by_id(self) -> TileTable:
        """Rows in ascending ``tile_id`` order: the canonical order that makes results
        independent of input row order."""
        order = np.argsort(self.frame["tile_id"].to_numpy(), kind="stable")
        return self.take(order)

    def proportions(self) -> np.ndarray:
        """(n, C) float64 class proportions over valid pixels; rows with no valid pixel are 0."""
        valid = self.counts.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(valid > 0, self.counts / np.where(valid > 0, valid, 1.0), 0.0)
        return p

    def with_classes(self, class_values: np.ndarray) -> TileTable:
        """Re-index ``counts`` onto ``class_values`` (missing classes get 0 columns)."""
        target = np.asarray(class_values, dtype=np.int64)
        out = np.zeros((len(self), len(target)), dtype=np.int64)
        pos = {int(v): i for i, v in enumerate(target)}
        for j, v in enumerate(self.class_values):
            if int(v) not in pos:
                raise InputDataError(
                    f"tile table: class value {int(v)} not in the target class list"
                )
            out[:, pos[int(v)]] = self.counts[:, j]
        return TileTable(self.frame, out, target, self.nodata_class)

    @staticmethod
    def concat(tables: list[TileTable]) -> TileTable:
        """Stack tables, merging their class lists (sorted union)."""
        if not tables:
            raise InputDataError("no tiles to combine")
        values = np.unique(np.concatenate([t.class_values for t in tables])).astype(np.int64)
        aligned = [t.with_classes(values) for t in tables]
        return TileTable(
            frame=pd.concat([t.frame for t in aligned], ignore_index=True),
            counts=np.concatenate([t.counts for t in aligned], axis=0)
            if aligned
            else np.zeros((0, len(values)), np.int64),
            class_values=values,
            nodata_class=tables[0].nodata_class,
        )
