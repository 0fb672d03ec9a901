"""Embeddings for tiles through the keyed cache, and visual uniqueness among them.

- :func:`ensure_embeddings`: embeddings of a set of tiles; cached rows are joined by key,
  missing tiles are computed and appended chunk by chunk (an interrupted run resumes), then
  the cache is compacted into one file.
- :func:`uniqueness_for_tiles`: what ``build-balanced-dataset`` (``mode: embeddings`` /
  ``embeddings_only``) calls on the INCLUDED tiles (docs/algorithms.md §7).
- :func:`run_embed`: the ``embed`` command; only fills the cache (for the tiles that
  build-balanced-dataset would include).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.config.balanced import BalancedDatasetConfig, EmbeddingsConfig
from smt_tools.errors import ConfigError, EmbeddingCacheError, EmptySelectionError
from smt_tools.export.run_record import run_json_path
from smt_tools.progress import ProgressFactory, no_progress
from smt_tools.tiletable import TileTable

if TYPE_CHECKING:
    from smt_tools.embeddings.model import LoadedModel, Preprocess

#: Rows per cache chunk; a chunk is also written after :data:`CHUNK_SECONDS` of work.
CHUNK_ROWS = 4096
CHUNK_SECONDS = 60.0


@dataclass
class EmbedResult:
    """What an embedding pass did (the ``embed`` summary)."""

    n_tiles: int
    n_cached: int
    n_computed: int
    model_id: str
    preprocess_hash: str
    dim: int
    images_per_s: float
    seconds: float
    device: str
    cache_path: Path | None
    cache_rows: int = 0
    #: the config as the catalog's ``run`` row would store it (``run.json``)
    config_record: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The printed numbers, JSON-ready (``--json``, ``run.json``)."""
        return {
            "tiles": self.n_tiles,
            "cached": self.n_cached,
            "computed": self.n_computed,
            "model_id": self.model_id,
            "preprocess_hash": self.preprocess_hash,
            "dim": self.dim,
            "images_per_s": self.images_per_s,
            "device": self.device,
            "cache_path": self.cache_path,
            "cache_rows": self.cache_rows,
            "timings_s": {"total": self.seconds},
        }

    def run_json_path(self) -> Path | None:
        """``<cache stem>.run.json`` beside the embedding cache."""
        return run_json_path(self.cache_path)


_WINDOW_COLUMNS = ("tile_id", "image_path", "row_off", "col_off", "height", "width")


def ensure_embeddings(
    frame: pd.DataFrame,
    ecfg: EmbeddingsConfig,
    *,
    rebuild: bool = False,
    progress_factory: ProgressFactory | None = None,
    chunk_rows: int = CHUNK_ROWS,
    scheduler: str | None = None,
) -> tuple[np.ndarray, EmbedResult]:
    """(n, d) float32 embeddings of the rows of ``frame`` (same order), plus what was done.

    frame needs tile_id, image_path, row_off, col_off, height, width. With
    ``ecfg.parquet_path`` set, cached rows are joined by (tile_id, model, preprocessing) and
    only missing tiles are computed and appended (chunks of ``chunk_rows``); a cache of another
    model or preprocessing is refused unless ``rebuild``. Without it, nothing is cached.
    scheduler: a Dask scheduler to embed on (default ``$SMT_DASK_SCHEDULER``; unset: here).
    """
    from smt_tools.embeddings.cache import compact, row_count
    from smt_tools.embeddings.dataset import resolve_scale
    from smt_tools.embeddings.model import describe_model, make_preprocess

    progress_factory = progress_factory or no_progress
    _check_frame(frame)
    t_start = time.perf_counter()
    tile_ids = frame["tile_id"].to_numpy(np.int64)
    model_id, geometry = describe_model(ecfg.dino_model)
    scale = resolve_scale(frame["image_path"].astype(str).unique().tolist(), ecfg.bands, ecfg.scale)
    spec = make_preprocess(geometry, ecfg.bands, scale)
    phash = spec.hash
    path = ecfg.parquet_path

    emb, found, dim = _lookup(path, tile_ids, model_id, phash, rebuild)
    todo = (  # the windows still to embed, each tile once, by tile_id
        frame.loc[~found, list(_WINDOW_COLUMNS)]
        .drop_duplicates("tile_id")
        .sort_values("tile_id", kind="stable")
        .reset_index(drop=True)
    )
    images_per_s = 0.0
    device = "-"
    if len(todo):
        key = (path, model_id, phash)
        ids_new, emb_new, images_per_s, device = _compute(
            todo, ecfg, spec, key, dim, chunk_rows, progress_factory, scheduler
        )
        dim = emb_new.shape[1]
        if emb.shape[1] != dim:
            emb = np.full((len(frame), dim), np.nan, np.float32)
        order = np.argsort(ids_new, kind="stable")
        ids_new, emb_new = ids_new[order], emb_new[order]
        rows = np.flatnonzero(~found)
        pos = np.searchsorted(ids_new, tile_ids[rows])
        emb[rows] = emb_new[pos]
    cache_rows = 0
    if path is not None:
        compact(path)
        cache_rows = row_count(path)
    if dim is None:  # pragma: no cover - every tile was cached, so the cache had a dim
        raise EmbeddingCacheError(f"{path}: cache rows without embeddings; run with --rebuild")
    return emb, EmbedResult(
        n_tiles=len(np.unique(tile_ids)),
        n_cached=len(np.unique(tile_ids[found])),
        n_computed=len(todo),
        model_id=model_id,
        preprocess_hash=phash,
        dim=dim,
        images_per_s=images_per_s,
        seconds=time.perf_counter() - t_start,
        device=device,
        cache_path=Path(path) if path is not None else None,
        cache_rows=cache_rows,
    )


def _compute(
    todo: pd.DataFrame,
    ecfg: EmbeddingsConfig,
    spec: Preprocess,
    key: tuple[Path | None, str, str],
    dim: int | None,
    chunk_rows: int,
    progress_factory: ProgressFactory,
    scheduler: str | None,
) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Embed ``todo`` here or on a Dask cluster: (tile ids, embeddings, images/s, device).

    key: (cache path or None, model id, preprocess hash); the model's width must equal the
    cached ``dim`` (checked before any work)."""
    from smt_tools.dask_cluster import resolve_scheduler

    path, model_id, phash = key
    address = resolve_scheduler(scheduler)
    if address is None:
        from smt_tools.embeddings.extract import pick_device
        from smt_tools.embeddings.model import load_model

        device = pick_device(ecfg.use_gpu)
        loaded = load_model(ecfg.dino_model, device)
        _check_dim(path, dim, loaded.dim)
        writer = _ChunkWriter(path, model_id, phash, chunk_rows)
        ids, emb, rate = _embed_missing(todo, ecfg, loaded, spec, device, writer, progress_factory)
        return ids, emb, rate, device
    from smt_tools.dask_cluster import dask_client
    from smt_tools.embeddings.dask_embed import embed_on_cluster
    from smt_tools.embeddings.model import model_dim

    _check_dim(path, dim, model_dim(ecfg.dino_model))
    with dask_client(address) as client, progress_factory("Embedding tiles", len(todo)) as adv:
        out = embed_on_cluster(
            client,
            todo,
            model_name=ecfg.dino_model,
            use_gpu=ecfg.use_gpu,
            spec=spec,
            batch_size=ecfg.batch_size,
            num_workers=ecfg.num_workers,
            cache=None if path is None else (Path(path), model_id, phash),
            progress=adv,
        )
    return out.ids, out.emb, out.images_per_s, f"{out.device} ({address})"


def _check_dim(path: Path | None, cached: int | None, model: int) -> None:
    if cached is not None and cached != model:
        raise EmbeddingCacheError(
            f"{path}: cached embeddings have {cached} dimensions, the model gives {model}; "
            "run with --rebuild"
        )


def _check_frame(frame: pd.DataFrame) -> None:
    missing_cols = [c for c in _WINDOW_COLUMNS if c not in frame.columns]
    if missing_cols:
        raise ConfigError(f"tile frame lacks columns {', '.join(missing_cols)}")
    if len(frame) == 0:
        raise EmptySelectionError("no tiles to embed")


def _lookup(
    path: Path | None, tile_ids: np.ndarray, model_id: str, phash: str, rebuild: bool
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(embeddings (n, d) float32, found (n,) bool, d or None) from the cache, if any."""
    from smt_tools.embeddings.cache import check_cache, lookup

    n = len(tile_ids)
    if path is None:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool), None
    check_cache(path, model_id, phash, rebuild=rebuild)
    return lookup(path, tile_ids, model_id, phash)


class _ChunkWriter:
    """Appends new embeddings to the cache every ``chunk_rows`` rows or CHUNK_SECONDS, so an
    interrupted run keeps what it computed (nothing is written without a cache path)."""

    def __init__(self, path: Path | None, model_id: str, phash: str, chunk_rows: int) -> None:
        self.path, self.model_id, self.phash, self.chunk_rows = path, model_id, phash, chunk_rows
        self.ids: list[np.ndarray] = []
        self.emb: list[np.ndarray] = []
        self.last_flush = time.perf_counter()

    def add(self, ids: np.ndarray, emb: np.ndarray) -> None:
        self.ids.append(ids)
        self.emb.append(emb)
        if (
            sum(len(a) for a in self.ids) >= self.chunk_rows
            or time.perf_counter() - self.last_flush >= CHUNK_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        from smt_tools.embeddings.cache import write_chunk

        if self.path is not None and self.ids:
            write_chunk(
                self.path, np.concatenate(self.ids), np.concatenate(self.emb), self.model_id,
                self.phash,
            )  # fmt: skip
        self.ids, self.emb = [], []
        self.last_flush = time.perf_counter()


def _embed_missing(
    todo: pd.DataFrame,
    ecfg: EmbeddingsConfig,
    loaded: LoadedModel,
    spec: Preprocess,
    device: str,
    writer: _ChunkWriter,
    progress_factory: ProgressFactory,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Embed the ``todo`` tiles: (tile ids (m,) int64, embeddings (m, d) float32, images/s)."""
    from smt_tools.embeddings.extract import ExtractStats, iter_embeddings

    stats = ExtractStats()
    new_ids: list[np.ndarray] = []
    new_emb: list[np.ndarray] = []
    with progress_factory("Embedding tiles", len(todo)) as advance:
        for b_ids, b_emb in iter_embeddings(
            todo,
            loaded,
            spec,
            batch_size=ecfg.batch_size,
            num_workers=ecfg.num_workers,
            device=device,
            stats=stats,
        ):
            if not np.isfinite(b_emb).all():
                raise EmbeddingCacheError(
                    f"the model returned NaN/inf embeddings for tiles {b_ids[:3].tolist()}; "
                    "check embeddings.scale and the image values"
                )
            new_ids.append(b_ids)
            new_emb.append(b_emb)
            writer.add(b_ids, b_emb)
            advance(len(b_ids))
    writer.flush()
    return np.concatenate(new_ids), np.concatenate(new_emb), stats.images_per_s


def uniqueness_for_tiles(
    table: TileTable,
    cfg: BalancedDatasetConfig,
    progress_factory: ProgressFactory | None = None,
) -> np.ndarray:
    """(n,) float64 uniqueness of every row of ``table`` among the rows of ``table``.

    The caller passes only INCLUDED tiles (excluded tiles are not in the pool). Embeddings
    come from the cache (missing ones computed and appended). Rows are searched in tile_id
    order, so the result does not depend on the table's row order. With fewer than
    ``k_neighbors + 1`` tiles, k is lowered to n - 1 (a warning says so). A table of the
    user's own may bring its scores (a ``uniqueness_score`` column): they are used as they are.
    """
    if "uniqueness_score" in table.frame.columns:  # precomputed in a table of the user's own
        from smt_tools.pipelines._user_table import precomputed_uniqueness

        return precomputed_uniqueness(table)
    _need_two(len(table))
    emb, _ = ensure_embeddings(table.frame, cfg.embeddings, progress_factory=progress_factory)
    return uniqueness_from_embeddings(emb, table.frame["tile_id"].to_numpy(np.int64), cfg)


def uniqueness_from_embeddings(
    emb: np.ndarray, tile_ids: np.ndarray, cfg: BalancedDatasetConfig
) -> np.ndarray:
    """(n,) float64 uniqueness (docs/algorithms.md §7) of each row of ``emb`` (n, d) among
    the rows, searched in ``tile_ids`` (n,) int64 order; k lowered to n - 1 when needed."""
    from smt_tools.curation.uniqueness import uniqueness_scores

    n = len(emb)
    _need_two(n)
    u = cfg.uniqueness
    k = u.k_neighbors
    if k > n - 1:
        warnings.warn(
            f"uniqueness.k_neighbors = {k} but only {n} tiles are included; using k = {n - 1}",
            RuntimeWarning,
            stacklevel=2,
        )
        k = n - 1
    order = np.argsort(tile_ids, kind="stable")
    scores = uniqueness_scores(
        emb[order],
        k,
        u.backend,
        ids=tile_ids[order],
        M=u.M,
        ef_construction=u.ef_construction,
        ef=u.ef,
        pca_dim=u.pca_dim,
        random_state=cfg.clustering.random_state,
        num_threads=u.num_threads,
        precision=u.precision,
        tail_fraction=u.tail_fraction,
    )
    out = np.empty(n, dtype=np.float64)
    out[order] = scores
    return out


def _need_two(n: int) -> None:
    if n < 2:
        raise EmptySelectionError(
            f"visual uniqueness needs at least 2 included tiles; got {n} "
            "(use mode: masks_only or include more tiles)"
        )


def tiles_to_embed(cfg: BalancedDatasetConfig, table: TileTable) -> TileTable:
    """The tiles build-balanced-dataset would include (the ones it needs embeddings for)."""
    from smt_tools.curation.exclusion import tile_exclusions

    _, excluded = tile_exclusions(table, cfg.exclusion)
    return table.take(np.flatnonzero(~excluded))


def run_embed(
    cfg: BalancedDatasetConfig,
    rebuild: bool = False,
    progress_factory: ProgressFactory | None = None,
    config_path: str | Path | None = None,
    scheduler: str | None = None,
) -> EmbedResult:
    """The ``embed`` command: fill ``embeddings.parquet_path`` for the included tiles
    (on the Dask cluster ``scheduler`` names, default ``$SMT_DASK_SCHEDULER``)."""
    from smt_tools.pipelines._inputs import load_input_tiles, open_input
    from smt_tools.pipelines._preflight import preflight_embed

    if cfg.embeddings.parquet_path is None:
        raise ConfigError(
            "embed needs embeddings.parquet_path (the cache file to fill); add it to the config"
        )
    preflight_embed(cfg, config_path)  # the cache is writable and not an input, before any work
    from smt_tools.dask_cluster import require_dask, resolve_scheduler

    if resolve_scheduler(scheduler) is not None:
        require_dask()
    progress_factory = progress_factory or no_progress
    with open_input(cfg.input) as store:
        table = load_input_tiles(cfg.input, cfg.exclusion, store)
    included = tiles_to_embed(cfg, table)
    if len(included) == 0:
        raise EmptySelectionError(
            f"all {len(table)} tiles are excluded (see the exclusion section); nothing to embed"
        )
    _, result = ensure_embeddings(
        included.frame,
        cfg.embeddings,
        rebuild=rebuild,
        progress_factory=progress_factory,
        scheduler=scheduler,
    )
    from smt_tools.pipelines._config_record import balanced_config_record

    result.config_record = balanced_config_record(cfg)
    return result
