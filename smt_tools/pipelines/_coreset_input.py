"""select-coreset's input: a balanced CSV or the catalog (a run), tile positions and embeddings.

Every reader checks what select-coreset needs (columns, tile_id once, an embedding for every
included tile) and says what is missing in one line naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from smt_tools.config._source import CatalogSource
from smt_tools.config.coreset import CoresetConfig
from smt_tools.curation.exclusion import readmit
from smt_tools.errors import ConfigError, EmptySelectionError, InputDataError
from smt_tools.export.csv_out import parse_class_counts_json
from smt_tools.pipelines._sources import tile_query

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileStore

#: Columns a balanced CSV must have for select-coreset.
REQUIRED_COLUMNS: tuple[str, ...] = ("tile_id", "class_counts_json", "excluded")
#: Columns needed for the spatial block and the GeoJSON.
BOUNDS_COLUMNS: tuple[str, ...] = ("minx", "miny", "maxx", "maxy", "crs")


@dataclass
class CoresetInput:
    """The tile table select-coreset works on (rows in input order).

    frame: the input table (all its columns); counts: (n, C) int64 class pixel counts;
    class_values: (C,) int64; excluded: (n,) bool; source: a label for messages.
    """

    frame: pd.DataFrame
    counts: np.ndarray
    class_values: np.ndarray
    excluded: np.ndarray
    source: str
    store: TileStore | None = None  # the catalog the tiles came from (the run is recorded there)
    #: catalog input: the JSON count columns are made when the CSV is written, after this column
    json_after: str | None = None


def readmit_low_entropy(data: CoresetInput) -> None:
    """``coreset.exclude_low_entropy: false``: tiles excluded for low entropy alone become
    candidates (``excluded`` false, ``low_entropy`` dropped from ``exclusion_reason``;
    ``has_low_entropy`` stays true), docs/algorithms.md §10."""
    if not data.excluded.any():
        return
    col = data.frame.get("exclusion_reason")
    if col is None or col[data.excluded].isna().all():
        raise InputDataError(
            f"{data.source}: coreset.exclude_low_entropy: false needs the exclusion_reason of "
            "each excluded tile, which this input lacks (written before it existed); rebuild it "
            "with `pytorch-smt-tools build-balanced-dataset CONFIG` or remove the key"
        )
    data.excluded, data.frame["exclusion_reason"] = readmit(data.excluded, col, "low_entropy")
    data.frame["excluded"] = data.excluded


def _bool_column(col: pd.Series, name: str, source: str) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    text = col.astype(str).str.strip().str.lower()
    ok = text.isin(["true", "false", "1", "0", "t", "f"])
    if not ok.all():
        bad = col[~ok].iloc[0]
        raise InputDataError(f"{source}: column {name} must be true/false; got {bad!r}")
    return text.isin(["true", "1", "t"]).to_numpy()


def read_balanced_csv(path: Path) -> CoresetInput:
    """Read a balanced CSV (docs/algorithms.md §15); missing columns are one clear line."""
    source = str(path)
    if not path.is_file():
        raise InputDataError(
            f"{source}: balanced CSV not found; create it with "
            "`pytorch-smt-tools build-balanced-dataset CONFIG` or fix coreset.input_csv_path"
        )
    try:
        if path.suffix.lower() == ".parquet":  # output.parquet_path: the same table, typed
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={"class_counts_json": str, "class_dist_json": str})
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # pandas and pyarrow errors
        raise InputDataError(f"{source}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    return balanced_input(frame, source)


def balanced_input(frame: pd.DataFrame, source: str) -> CoresetInput:
    """A balanced table already in memory (``frame`` is used as is: pass a copy to keep
    yours); ``source`` names it in messages."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{source}: missing column(s) {', '.join(missing)}; expected a balanced CSV "
            "written by build-balanced-dataset (needs tile_id, class_counts_json, excluded)"
        )
    if frame.empty:
        raise EmptySelectionError(f"{source}: the CSV has no rows")
    if frame["tile_id"].isna().any():
        raise InputDataError(f"{source}: tile_id has empty values")
    frame["tile_id"] = frame["tile_id"].astype(np.int64)
    dup = frame["tile_id"].duplicated()
    if dup.any():
        raise InputDataError(
            f"{source}: tile_id {int(frame.loc[dup, 'tile_id'].iloc[0])} appears twice"
        )
    counts, class_values = parse_class_counts_json(
        frame["class_counts_json"], source, empty_is_zero=False
    )
    excluded = _bool_column(frame["excluded"], "excluded", source)
    return CoresetInput(frame, counts, class_values, excluded, source)


def read_catalog_tiles(store: TileStore, src: CatalogSource) -> CoresetInput:
    """Tiles of the ``catalog`` block from ``store``. With ``run_id`` (a build-balanced-dataset
    run): the run's tiles with its results (weights, clusters, exclusions); without: every tile
    the block selects, none excluded."""
    command, results = (None, None) if src.run_id is None else store.read_run(src.run_id)
    query = tile_query(src, included_only=False)
    if store.kind == "parquet":  # bounded memory: path columns stay categorical
        tiles = store.read_tiles(query, batched=True)  # type: ignore[call-arg]
    else:
        tiles = store.read_tiles(query)
    frame = tiles.frame.copy(deep=False)
    frame.insert(5, "patch_size", frame["height"])
    json_after = str(frame.columns[-1])  # class_dist_json, class_counts_json go here (CSV)
    label = f"catalog {store.label}"
    if results is None:
        excluded = np.zeros(len(frame), dtype=bool)
    else:
        split_cols = {"coreset_score", "coreset_selected", "coreset_step", "fold"}
        split_cols.add("buffer_excluded_folds")
        keep = [c for c in results.columns if c not in split_cols]
        frame = frame.merge(results[keep], on="tile_id", how="left", validate="one_to_one")
        excluded = frame["excluded"].fillna(False).astype(bool).to_numpy()
        label += f" run {src.run_id} ({command})"
    frame["excluded"] = excluded
    return CoresetInput(
        frame, tiles.counts, tiles.class_values, excluded, label, store, json_after=json_after
    )


def projected_centroids(frame: pd.DataFrame, source: str) -> np.ndarray:
    """Tile centres in metres: (n, 2) float64.

    One projected CRS for all tiles: its native coordinates. Otherwise every centre goes to
    lon/lat and then to an azimuthal equidistant projection centred on the mean position.
    """
    from pyproj import CRS, Transformer

    missing = [c for c in BOUNDS_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{source}: spatial_weight > 0 needs column(s) {', '.join(missing)} (tile bounds)"
        )
    from smt_tools.geo import has_crs, no_crs_message

    if not has_crs(frame).all():  # pixel-space tiles (slide scans) have no place on the Earth
        raise InputDataError(
            f"{source}: "
            + no_crs_message(
                frame,
                "coreset.spatial_weight > 0 needs every tile's position; set spatial_weight: 0",
            )
        )
    cx = ((frame["minx"] + frame["maxx"]) / 2).to_numpy(dtype=np.float64)
    cy = ((frame["miny"] + frame["maxy"]) / 2).to_numpy(dtype=np.float64)
    crs_values = frame["crs"].astype(str).to_numpy()
    distinct = sorted(set(crs_values.tolist()))
    if len(distinct) == 1 and CRS.from_user_input(distinct[0]).is_projected:
        return np.column_stack([cx, cy])
    lon = np.empty_like(cx)
    lat = np.empty_like(cy)
    for crs in distinct:
        rows = crs_values == crs
        tr = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
        lon[rows], lat[rows] = tr.transform(cx[rows], cy[rows])
    aeqd = CRS.from_proj4(
        f"+proj=aeqd +lat_0={float(np.mean(lat))} +lon_0={float(np.mean(lon))} +units=m"
    )
    x, y = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True).transform(lon, lat)
    return np.column_stack([np.asarray(x), np.asarray(y)])


def load_embeddings(cfg: CoresetConfig, tile_ids: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Embeddings for every row (NaN where missing); missing ones among the included tiles are
    an error that names the count and the `embed` command."""
    from smt_tools.embeddings.cache import cache_files, read_embeddings

    if cfg.parquet_path is None:
        raise ConfigError(
            f"coreset.method {cfg.method} needs tile embeddings: set coreset.parquet_path to the "
            "embedding cache (fill it with `pytorch-smt-tools embed CONFIG`)"
        )
    if not cache_files(cfg.parquet_path):
        raise InputDataError(
            f"all {int(eligible.sum())} included tiles have no embedding: there is no embedding "
            f"cache at {cfg.parquet_path}; compute them with `pytorch-smt-tools embed CONFIG` "
            "(the balanced-dataset config that produced the input)"
        )
    emb, found = read_embeddings(cfg.parquet_path, tile_ids, model_id=cfg.model_id)
    missing = int((eligible & ~found).sum())
    if missing:
        raise InputDataError(
            f"{missing} of {int(eligible.sum())} included tiles have no embedding in "
            f"{cfg.parquet_path}; compute them with `pytorch-smt-tools embed CONFIG` "
            "(the balanced-dataset config that produced the input)"
        )
    return emb


@contextmanager
def selection_errors(source: str) -> Iterator[None]:
    """A ValueError from a selection method becomes one line naming the input; the project's
    own errors pass through."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, InputDataError | ConfigError | EmptySelectionError):
            raise
        raise ConfigError(f"{source}: coreset: {exc}") from None
