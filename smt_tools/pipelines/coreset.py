"""select-coreset: balanced CSV or catalog run -> scores -> selection -> weights -> outputs.

The math lives in :mod:`smt_tools.coreset` (docs/algorithms.md §10); this module reads the input
table and the embedding cache, calls it, and writes the outputs: the full input table plus
``coreset_score``, ``coreset_selected`` and a recomputed ``sampler_weight`` (0 for tiles not
selected), an optional GeoJSON + QGIS style, and a catalog run when the input is the catalog.
Outputs are staged and moved into place together, so a failed run leaves earlier files as they were.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.config._loader import expand_env_optional
from smt_tools.config.coreset import CoresetConfig
from smt_tools.coreset import (
    EMBEDDING_METHODS,
    CoresetParams,
    coreset_sampler_weights,
    select_coreset,
)
from smt_tools.curation.diagnostics import effective_sample_size
from smt_tools.errors import ConfigError, EmptySelectionError, InputDataError
from smt_tools.export.csv_out import parse_class_counts_json
from smt_tools.export.qgis_style import coreset_qml, score_breaks
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.tiletable import entropy_from_counts

#: Columns a balanced CSV must have for select-coreset.
REQUIRED_COLUMNS: tuple[str, ...] = ("tile_id", "class_counts_json", "excluded")
#: Columns needed for the spatial block and the GeoJSON.
BOUNDS_COLUMNS: tuple[str, ...] = ("minx", "miny", "maxx", "maxy", "crs")
#: GeoJSON feature properties (those present in the table).
GEOJSON_PROPERTIES: tuple[str, ...] = (
    "tile_id",
    "image_path",
    "mask_path",
    "row_off",
    "col_off",
    "patch_size",
    "coreset_score",
    "coreset_selected",
    "sampler_weight",
    "excluded",
)
STEPS = 5


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
    engine: Any = None


@dataclass
class CoresetResult:
    """Numbers of one run (shares are fractions; timings in seconds)."""

    method: str
    device: str
    n_tiles: int
    n_included: int
    budget: int
    class_values: list[int]
    pool_class_shares: list[float]
    selected_class_shares: list[float]
    weighted_class_shares: list[float]
    pool_source_images: int | None
    selected_source_images: int | None
    pool_mean_uniqueness: float | None
    selected_mean_uniqueness: float | None
    ess: float
    info: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)
    run_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the config as recorded in the catalog's ``run`` row (also in ``run.json``)
    config_record: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (stored in the catalog run)."""
        return {
            "method": self.method,
            "device": self.device,
            "n_tiles": self.n_tiles,
            "n_included": self.n_included,
            "budget": self.budget,
            "class_values": self.class_values,
            "pool_class_shares": self.pool_class_shares,
            "selected_class_shares": self.selected_class_shares,
            "weighted_class_shares": self.weighted_class_shares,
            "pool_source_images": self.pool_source_images,
            "selected_source_images": self.selected_source_images,
            "pool_mean_uniqueness": self.pool_mean_uniqueness,
            "selected_mean_uniqueness": self.selected_mean_uniqueness,
            "ess": self.ess,
            "info": self.info,
            "timings": self.timings,
        }

    def run_json_path(self) -> Path | None:
        """``<stem>.run.json`` beside the main local output (the CSV)."""
        if not self.outputs:
            return None
        from smt_tools.export.run_record import run_json_path

        return run_json_path(self.outputs[0])


# ----------------------------------------------------------------------------- input


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
        frame = pd.read_csv(path, dtype={"class_counts_json": str, "class_dist_json": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{source}: not a readable CSV ({str(exc).splitlines()[0]})") from None
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


def read_catalog_run(cfg: CoresetConfig) -> CoresetInput:
    """Tiles and results of build-balanced-dataset run ``catalog_run_id`` from the catalog."""
    from smt_tools import catalog
    from smt_tools.catalog.runs import load_run_results
    from smt_tools.export.csv_out import class_counts_json, class_dist_json

    assert cfg.catalog_run_id is not None
    run_id = int(cfg.catalog_run_id)
    engine = catalog.connect(
        catalog.resolve_url(expand_env_optional(cfg.catalog_url, "coreset.catalog_url"))
    )
    command, results = load_run_results(engine, run_id)
    tiles = catalog.load_tiles(
        engine,
        "tile",
        statement_timeout_s=cfg.statement_timeout_s,
        run_id=run_id,
    )
    frame = tiles.frame.copy()
    frame.insert(5, "patch_size", frame["height"])
    frame["class_dist_json"] = class_dist_json(tiles.counts, tiles.class_values).to_numpy()
    frame["class_counts_json"] = class_counts_json(tiles.counts, tiles.class_values).to_numpy()
    split_cols = ("coreset_score", "coreset_selected", "fold", "buffer_excluded_folds")
    keep = [c for c in results.columns if c not in split_cols]
    frame = frame.merge(results[keep], on="tile_id", how="left", validate="one_to_one")
    excl = frame["excluded"]
    excluded = excl.fillna(False).astype(bool).to_numpy()
    frame["excluded"] = excluded
    label = f"catalog {catalog.engine_label(engine)} run {run_id} ({command})"
    return CoresetInput(frame, tiles.counts, tiles.class_values, excluded, label, engine)


# ----------------------------------------------------------------------------- helpers


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


def _shares(counts: np.ndarray) -> list[float]:
    tot = counts.sum(axis=0).astype(np.float64)
    s = float(tot.sum())
    return [float(v) for v in (tot / s if s > 0 else tot)]


def _mean_or_none(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else None


def _params(cfg: CoresetConfig, device: str) -> CoresetParams:
    return CoresetParams(
        method=cfg.method,
        budget=cfg.budget,
        budget_mode=cfg.budget_mode,
        spatial_weight=cfg.spatial_weight,
        lc_fd_cutoff_m=cfg.lc_fd_cutoff_m,
        fa_cb_lambda=cfg.fa_cb_lambda,
        cb_growth=cfg.cb_growth,
        kcenter_candidates=cfg.kcenter_candidates,
        pca_dim=cfg.pca_dim,
        fd_k=cfg.fd.k,
        fd_k_min=cfg.fd.k_min,
        fd_k_max=cfg.fd.k_max,
        fd_sample_size=cfg.fd.sample_size,
        random_state=cfg.random_state,
        device="cuda" if device == "cuda" else "cpu",
    )


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="needed"))


def _config_for_record(cfg: CoresetConfig) -> dict[str, Any]:
    """The config as recorded in the catalog's ``run`` row: the URL's password hidden."""
    from smt_tools.catalog import redact

    data = cfg.model_dump(mode="json")
    if data.get("catalog_url"):
        data["catalog_url"] = redact(str(data["catalog_url"]))
    return {"coreset": data}


# ----------------------------------------------------------------------------- pipeline


def run_coreset(
    cfg: CoresetConfig,
    progress_factory: ProgressFactory | None = None,
    config_dump: dict[str, Any] | None = None,
    config_path: str | Path | None = None,
) -> CoresetResult:
    """Run select-coreset for ``cfg`` (the ``coreset:`` section) and write its outputs.

    ``config_path`` (the YAML file) is checked not to be an output."""
    from smt_tools.atomic import StagedOutputs, reraise_output_error
    from smt_tools.coreset.gpu import resolve_device
    from smt_tools.pipelines._preflight import preflight_coreset

    preflight_coreset(cfg, config_path)  # outputs writable and not inputs, before any work

    factory = progress_factory or no_progress
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device)
    with factory(f"select-coreset ({cfg.method})", STEPS) as advance:
        t = time.perf_counter()
        data = (
            read_catalog_run(cfg)
            if cfg.catalog_run_id is not None
            else read_balanced_csv(Path(cfg.input_csv_path or ""))
        )
        frame = data.frame
        tile_ids = frame["tile_id"].to_numpy(dtype=np.int64)
        eligible = ~data.excluded
        n_ok = int(eligible.sum())
        if n_ok == 0:
            raise EmptySelectionError(
                f"{data.source}: every tile is excluded; nothing to select from"
            )
        timings["load"] = time.perf_counter() - t
        advance(1)

        t = time.perf_counter()
        embeddings = None
        if cfg.method in EMBEDDING_METHODS:
            embeddings = load_embeddings(cfg, tile_ids, eligible)
        centroids = projected_centroids(frame, data.source) if cfg.spatial_weight > 0 else None
        timings["embeddings"] = time.perf_counter() - t
        advance(1)

        t = time.perf_counter()
        try:
            sel = select_coreset(
                _params(cfg, device),
                tile_ids=tile_ids,
                eligible=eligible,
                counts=data.counts,
                class_entropy=entropy_from_counts(data.counts),
                embeddings=embeddings,
                centroids_xy=centroids,
            )
        except ValueError as exc:
            if isinstance(exc, InputDataError | ConfigError | EmptySelectionError):
                raise
            raise ConfigError(f"{data.source}: coreset: {exc}") from None
        timings["select"] = time.perf_counter() - t
        advance(1)

        t = time.perf_counter()
        valid = data.counts.sum(axis=1, keepdims=True).astype(np.float64)
        p = np.where(valid > 0, data.counts / np.where(valid > 0, valid, 1.0), 0.0)
        weights = coreset_sampler_weights(
            p, sel.selected, cfg.sampler_weights.formula, cfg.sampler_weights.cap
        )
        out = frame.copy()
        out["coreset_score"] = sel.scores
        out["coreset_selected"] = sel.selected
        out["sampler_weight"] = weights
        timings["weights"] = time.perf_counter() - t
        advance(1)

        # Summary numbers: selected subset vs the pool of included tiles.
        uniq = (
            pd.to_numeric(frame["uniqueness_score"], errors="coerce").to_numpy(dtype=np.float64)
            if "uniqueness_score" in frame.columns
            else np.full(len(frame), np.nan)
        )
        has_src = "source_image_id" in frame.columns
        src = frame["source_image_id"].to_numpy() if has_src else None
        wsum = float((weights * valid[:, 0]).sum())
        weighted = (weights[:, None] * data.counts).sum(axis=0) / wsum if wsum > 0 else None
        result = CoresetResult(
            method=cfg.method,
            device=device,
            n_tiles=len(frame),
            n_included=n_ok,
            budget=sel.budget,
            class_values=[int(v) for v in data.class_values],
            pool_class_shares=_shares(data.counts[eligible]),
            selected_class_shares=_shares(data.counts[sel.selected]),
            weighted_class_shares=[float(v) for v in weighted] if weighted is not None else [],
            pool_source_images=int(np.unique(src[eligible]).size) if src is not None else None,
            selected_source_images=int(np.unique(src[sel.selected]).size)
            if src is not None
            else None,
            pool_mean_uniqueness=_mean_or_none(uniq[eligible]),
            selected_mean_uniqueness=_mean_or_none(uniq[sel.selected]),
            ess=effective_sample_size(weights),
            info=sel.info,
            timings=timings,
        )

        t = time.perf_counter()
        staging = StagedOutputs()
        # selected tiles coloured by score class (quantiles of the selected scores)
        map_style = coreset_qml(score_breaks(sel.scores[sel.selected]))
        try:
            _write_csv(out, staging.file(Path(cfg.output.csv_path)))
            if cfg.output.geojson_path is not None:
                from smt_tools.export.vector import write_vector

                missing = [c for c in BOUNDS_COLUMNS if c not in out.columns]
                if missing:
                    raise InputDataError(
                        f"{data.source}: output.geojson_path needs column(s) {', '.join(missing)}"
                    )
                props = [c for c in GEOJSON_PROPERTIES if c in out.columns]
                write_vector(
                    out,
                    Path(cfg.output.geojson_path),
                    props,
                    map_style,
                    fmt=cfg.output.format,
                    staging=staging,
                )
            if data.engine is not None and cfg.output.write_catalog_run:
                from smt_tools import catalog

                results = pd.DataFrame(
                    {
                        "tile_id": tile_ids,
                        "sampler_weight": weights,
                        "excluded": data.excluded,
                        "coreset_score": sel.scores,
                        "coreset_selected": sel.selected,
                    }
                )
                timings["write"] = time.perf_counter() - t
                result.run_id = catalog.record_run(
                    data.engine,
                    "select-coreset",
                    config_dump or _config_for_record(cfg),
                    result.summary(),
                    results,
                    started,
                    datetime.now(timezone.utc),
                    map_style=map_style,
                )
            result.outputs = staging.commit()
        except BaseException as exc:
            staging.cleanup()
            reraise_output_error(exc)  # disk full etc.: one line naming the output
            raise
        timings["write"] = time.perf_counter() - t
        advance(1)
    if not math.isfinite(result.ess):
        result.ess = 0.0
    result.config_record = config_dump or _config_for_record(cfg)
    return result
