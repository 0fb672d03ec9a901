"""DataFrame in, DataFrame out: build-balanced-dataset and select-coreset for notebooks.

:func:`balance` and :func:`select_coreset` run the commands' own steps
(:func:`smt_tools.pipelines.balanced.compute_balanced`,
:func:`smt_tools.pipelines.coreset.compute_coreset`) on a tile table held in a
:class:`pandas.DataFrame` and return the table the command writes (its CSV's columns and rows).
Files are written only when the config names them (``output.csv_path`` / ``parquet_path``,
then GeoJSON and report as named); the catalog is never written. Bad input raises the
commands' one-line errors (:class:`~smt_tools.errors.ConfigError`,
:class:`~smt_tools.errors.InputDataError`, ...). The numbers follow docs/algorithms.md §5-§10.

A tile table is what ``catalog ingest --catalog FILE.parquet`` writes: the columns of
:data:`~smt_tools.tiletable.TILE_COLUMNS` and ``class_counts`` (one list of pixel counts per row,
entry j counting mask value ``class_values[j]``). The class values live in the file's metadata,
so :func:`read_tiles` puts them in ``df.attrs`` (``class_values``, ``nodata_class``,
``class_names``); a table made another way passes ``class_values=`` instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import numpy as np
import pandas as pd

from smt_tools.config.balanced import BalancedDatasetConfig, BalancedFile, InputConfig
from smt_tools.config.coreset import CoresetConfig, CoresetFile
from smt_tools.errors import ConfigError, EmptySelectionError, InputDataError
from smt_tools.tiletable import TILE_COLUMNS, TileTable

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileQuery, TileStore
    from smt_tools.pipelines._balanced_steps import Exclusion, Loaded
    from smt_tools.progress import ProgressFactory

__all__ = ["balance", "read_tiles", "select_coreset"]

#: how a config is given: a YAML path, a mapping (the section or the whole file), the model
ConfigLike: TypeAlias = (
    str
    | os.PathLike[str]
    | Mapping[str, Any]
    | BalancedDatasetConfig
    | BalancedFile
    | CoresetConfig
    | CoresetFile
)
#: embeddings: (n, D) row-aligned with the DataFrame, or the embedding cache's path
EmbeddingsLike: TypeAlias = np.ndarray | str | os.PathLike[str] | None

#: the input a DataFrame stands for in configs and messages
SOURCE = "DataFrame"
_PLACEHOLDER = Path("<DataFrame>")
_FROM_ATTRS: Any = object()


# ----------------------------------------------------------------------------- tile tables


def read_tiles(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A Parquet tile table (``catalog ingest --catalog FILE.parquet``) as a DataFrame:
    :data:`~smt_tools.tiletable.TILE_COLUMNS`, ``mask_band``, any extra columns and
    ``class_counts`` ((C,) int64 per row); ``attrs`` holds ``class_values``, ``nodata_class``
    and ``class_names`` from the file's metadata. Read by the commands' own reader."""
    from smt_tools.catalog.parquet_io import read_class_names, read_tile_table

    table = read_tile_table(path)
    frame = table.frame.copy()
    frame["class_counts"] = list(table.counts)
    frame.attrs["class_values"] = [int(v) for v in table.class_values]
    frame.attrs["nodata_class"] = table.nodata_class
    names = {int(v): n for v, (n, _) in read_class_names(path).items() if n}
    frame.attrs["class_names"] = names
    return frame


def _class_values(df: pd.DataFrame, given: Any) -> np.ndarray:
    values = given if given is not None else df.attrs.get("class_values")
    if values is None:
        raise InputDataError(
            f"{SOURCE}: the class values of class_counts are unknown (df.attrs['class_values'] "
            "is not set); pass class_values=[...] (the mask value of each entry) or read the "
            "table with smt_tools.read_tiles(PATH)"
        )
    try:
        return np.asarray([int(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputDataError(
            f"{SOURCE}: class_values must be integers (mask values); got {values!r}"
        ) from None


def _counts(col: pd.Series, n_classes: int) -> np.ndarray:
    """(n, C) int64 from a column of per-row count lists."""
    import pyarrow as pa

    try:
        lists = pa.array(list(col), type=pa.list_(pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        raise InputDataError(
            f"{SOURCE}: class_counts must hold one list of integer pixel counts per row"
        ) from None
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(pd.isna(lengths) | (lengths != n_classes))
    if bad.size:
        raise InputDataError(
            f"{SOURCE}: row {int(bad[0])}: class_counts must have {n_classes} entries "
            f"(one per class value); got {col.iloc[int(bad[0])]!r}"
        )
    flat = lists.flatten()
    if flat.null_count:
        raise InputDataError(f"{SOURCE}: class_counts has empty entries")
    return flat.to_numpy(zero_copy_only=False).astype(np.int64).reshape(len(col), n_classes)


def _tile_table(df: pd.DataFrame, class_values: Any, nodata_class: Any) -> TileTable:
    """``df`` (a tile table) as the reader of a Parquet tile table returns it: the tile
    columns, ``mask_band`` (1 when absent), the extra columns; the fingerprint columns of
    ``catalog ingest`` (``patch_size`` among them) left out, as the reader does."""
    from smt_tools.catalog.parquet_io import SOURCE_COLUMNS

    _require_frame(df)
    missing = [c for c in (*TILE_COLUMNS, "class_counts") if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{SOURCE}: missing column(s) {', '.join(missing)}; a tile table (as written by "
            "`catalog ingest --catalog FILE.parquet`, read by smt_tools.read_tiles) has "
            f"{', '.join(TILE_COLUMNS)} and class_counts"
        )
    if df["tile_id"].isna().any():
        raise InputDataError(f"{SOURCE}: column tile_id has empty values")
    values = _class_values(df, class_values)
    counts = _counts(df["class_counts"], len(values))
    drop = {"class_counts", *SOURCE_COLUMNS} - {"mask_band"}
    extra = [c for c in df.columns if c not in drop and c not in TILE_COLUMNS and c != "mask_band"]
    frame = df[list(TILE_COLUMNS)].reset_index(drop=True)
    band = df["mask_band"] if "mask_band" in df.columns else None
    frame["mask_band"] = 1 if band is None else band.fillna(1).to_numpy(np.int64)
    for c in extra:
        frame[c] = df[c].to_numpy()
    if nodata_class is _FROM_ATTRS:
        nodata_class = df.attrs.get("nodata_class")
    nodata = None if nodata_class is None else int(nodata_class)
    return TileTable(frame, counts, values, nodata)


def _require_frame(df: object) -> None:
    if not isinstance(df, pd.DataFrame):
        raise InputDataError(f"expected a pandas DataFrame (a tile table); got {type(df).__name__}")


class _FrameStore:
    """A read-only store holding one in-memory tile table: what the commands read from a
    Parquet tile table, served to their own loading steps (no run is ever recorded)."""

    kind: Literal["parquet"] = "parquet"
    label = SOURCE

    def __init__(self, table: TileTable, class_names: Mapping[int, str]) -> None:
        self._table = table
        self._names = {int(v): (str(n), None) for v, n in class_names.items()}

    def read_tiles(self, query: TileQuery | None = None, *, batched: bool = False) -> TileTable:
        return self._table

    def read_tiles_batched(self, query: TileQuery | None = None) -> TileTable:
        return self._table

    def class_names(self) -> dict[int, tuple[str | None, str | None]]:
        return dict(self._names)


def _store(table: TileTable, df: pd.DataFrame) -> TileStore:
    names = df.attrs.get("class_names") or {}
    return cast("TileStore", _FrameStore(table, names if isinstance(names, Mapping) else {}))


# ----------------------------------------------------------------------------- configs


def _mapping(config: Any, key: str) -> tuple[dict[str, Any], str]:
    """(the ``key`` section as a dict, a label for messages) of a YAML path or a mapping
    (the section itself or the whole file)."""
    from smt_tools.config import read_yaml

    if isinstance(config, str | os.PathLike):
        label = str(config)
        if not Path(config).is_file():
            raise ConfigError(f"{label}: config file not found; check the path")
        data = read_yaml(Path(config))
    elif isinstance(config, Mapping):
        label, data = "config", config
    else:
        raise ConfigError(
            f"config: expected a YAML path, a mapping or a {key} config object; "
            f"got {type(config).__name__}"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys; got {type(data).__name__}")
    if key in data:
        section = data[key]
        if not isinstance(section, Mapping):
            raise ConfigError(f"{label}: {key} must be a mapping of keys")
        return dict(section), label
    return dict(data), label


def _output_section(section: dict[str, Any], label: str, tables: tuple[str, ...]) -> bool:
    """Whether the config names a table to write; without one, a placeholder stands in for
    validation (nothing is written) and other outputs are an error."""
    out = dict(section.get("output") or {})
    if any(out.get(k) is not None for k in tables):
        section["output"] = out
        return True
    named = [k for k in ("geojson_path", "report_dir") if out.get(k) is not None]
    if named:
        raise ConfigError(
            f"{label}: output.{named[0]} needs output.{' or output.'.join(tables)}: the Python "
            "API writes outputs only when the config names the table"
        )
    section["output"] = {**out, tables[0]: str(_PLACEHOLDER)}
    return False


def _balanced_config(config: Any) -> tuple[BalancedDatasetConfig, bool]:
    """(the config with the DataFrame as its input and no catalog run, whether to write)."""
    from smt_tools.config import validate_mapping

    if isinstance(config, BalancedFile):
        config = config.balanced_dataset
    if isinstance(config, BalancedDatasetConfig):
        cfg, write = config, True
    else:
        section, label = _mapping(config, "balanced_dataset")
        section["input"] = {"tiles": str(_PLACEHOLDER)}
        write = _output_section(section, label, ("csv_path", "parquet_path"))
        cfg = validate_mapping({"balanced_dataset": section}, BalancedFile, label).balanced_dataset
    out = {"write_catalog_run": False} if write else {"write_catalog_run": False, "csv_path": None}
    update = {"input": InputConfig(tiles=_PLACEHOLDER), "output": cfg.output.model_copy(update=out)}
    return cfg.model_copy(update=update), write


def _coreset_config(config: Any) -> tuple[CoresetConfig, bool]:
    """(the config with the DataFrame as its input and no catalog run, whether to write)."""
    from smt_tools.config import validate_mapping

    if isinstance(config, CoresetFile):
        config = config.coreset
    if isinstance(config, CoresetConfig):
        cfg, write = config, True
    else:
        section, label = _mapping(config, "coreset")
        for key in ("catalog", "catalog_url", "catalog_run_id"):
            section.pop(key, None)
        section["input_csv_path"] = str(_PLACEHOLDER)
        write = _output_section(section, label, ("csv_path",))
        cfg = validate_mapping({"coreset": section}, CoresetFile, label).coreset
    update: dict[str, Any] = {"input_csv_path": _PLACEHOLDER, "catalog": None}
    update["output"] = cfg.output.model_copy(update={"write_catalog_run": False})
    return cfg.model_copy(update=update), write


def _embedding_rows(embeddings: np.ndarray, n: int) -> np.ndarray:
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise InputDataError(
            f"embeddings: expected an (n_rows, dim) array row-aligned with the {SOURCE} "
            f"({n} rows); got shape {emb.shape}"
        )
    if not np.issubdtype(emb.dtype, np.number):
        raise InputDataError(f"embeddings: expected numbers; got dtype {emb.dtype}")
    return emb.astype(np.float32)  # the embedding cache's dtype


def _check_finite(emb: np.ndarray, rows: np.ndarray) -> None:
    """Every row ``rows`` (the tiles that take part) must have a finite embedding."""
    bad = rows[~np.isfinite(emb[rows]).all(axis=1)]
    if bad.size:
        raise InputDataError(
            f"embeddings: row {int(bad[0])} of the {SOURCE} (an included tile) has NaN or "
            f"infinite values ({bad.size} such rows); give every included tile an embedding"
        )


# ----------------------------------------------------------------------------- balance


def _uniqueness_of(emb: np.ndarray) -> Any:
    """The §7 step of build-balanced-dataset scoring ``emb`` (rows of the input) instead of
    the embedding cache's vectors."""
    from smt_tools.pipelines import _balanced_steps as steps
    from smt_tools.pipelines.embed import uniqueness_from_embeddings

    def step(
        cfg: BalancedDatasetConfig, loaded: Loaded, ex: Exclusion, _: ProgressFactory
    ) -> np.ndarray:
        rows = ex.included_rows  # input rows of the included tiles, canonical order
        _check_finite(emb, rows)
        inc = steps.included_table(loaded, ex)
        u = uniqueness_from_embeddings(emb[rows], inc.frame["tile_id"].to_numpy(np.int64), cfg)
        out = np.full(loaded.n, np.nan)
        out[ex.included_idx] = u
        return out

    return step


def balance(
    df: pd.DataFrame,
    config: ConfigLike,
    *,
    embeddings: EmbeddingsLike = None,
    class_values: Any = None,
    nodata_class: Any = _FROM_ATTRS,
) -> pd.DataFrame:
    """build-balanced-dataset on the tile table ``df``: the balanced table (the CSV's columns
    and rows: ``sampler_weight``, ``freq_cluster_id``, ``excluded``, ...; docs/algorithms.md
    §5-§9, §15), in ``df``'s row order. ``df`` is not modified.

    config: the ``balanced_dataset:`` section or the whole file (a mapping or a YAML path), or
    the config object; its ``input`` is replaced by ``df``. Files are written only when it
    names ``output.csv_path`` or ``output.parquet_path``. embeddings (modes with uniqueness):
    an (n, D) array row-aligned with ``df``, or the embedding cache's path
    (``embeddings.parquet_path``); None: the config's cache. class_values / nodata_class:
    the mask values of the ``class_counts`` entries and the nodata class, when ``df.attrs``
    (set by :func:`read_tiles`) does not hold them.
    """
    from smt_tools.pipelines import _balanced_steps as steps
    from smt_tools.pipelines import balanced
    from smt_tools.progress import no_progress

    table = _tile_table(df, class_values, nodata_class)
    cfg, write = _balanced_config(config)
    uniqueness = steps.uniqueness
    if isinstance(embeddings, str | os.PathLike):
        cfg = cfg.model_copy(
            update={
                "embeddings": cfg.embeddings.model_copy(update={"parquet_path": Path(embeddings)})
            }
        )
    elif embeddings is not None:
        uniqueness = _uniqueness_of(_embedding_rows(embeddings, len(table)))
    balanced._validate_before_work(cfg)
    if write:
        from smt_tools.pipelines._preflight import preflight_balanced

        preflight_balanced(cfg)
    t0 = time.perf_counter()
    run = balanced.compute_balanced(
        cfg,
        _store(table, df),
        no_progress,
        started=datetime.now(timezone.utc),
        t0=t0,
        uniqueness=uniqueness,
    )
    result = balanced.finish_balanced(run, no_progress, t0, write_outputs=write)
    out = run.out.copy()
    out.attrs = {"summary": result.summary()}  # the command's run summary (run.json)
    return out


# ----------------------------------------------------------------------------- coreset


def _coreset_input(df: pd.DataFrame, class_values: Any, nodata_class: Any) -> Any:
    """select-coreset's input from ``df``: a balanced table (``class_counts_json`` and
    ``excluded``: what :func:`balance` returns) or a tile table (``class_counts``, no tile
    excluded), read as the commands read a balanced CSV / a catalog without a run."""
    from smt_tools.config._source import CatalogSource
    from smt_tools.pipelines._coreset_input import (
        REQUIRED_COLUMNS,
        balanced_input,
        read_catalog_tiles,
    )

    _require_frame(df)
    if "class_counts" in df.columns and "class_counts_json" not in df.columns:
        table = _tile_table(df, class_values, nodata_class)
        data = read_catalog_tiles(_store(table, df), CatalogSource(path=_PLACEHOLDER))
        data.store, data.source = None, SOURCE
        return data
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{SOURCE}: missing column(s) {', '.join(missing)}; expected a balanced table "
            "(what smt_tools.balance returns: tile_id, class_counts_json, excluded) or a tile "
            "table (with class_counts)"
        )
    if df.empty:
        raise EmptySelectionError(f"{SOURCE}: the table has no rows")
    data = balanced_input(df.reset_index(drop=True).copy(), SOURCE)
    if "exclusion_reason" in data.frame.columns:  # as from a CSV: empty = an included tile
        data.frame["exclusion_reason"] = data.frame["exclusion_reason"].fillna("")
    return data


def _with_count_json(out: pd.DataFrame, data: Any) -> pd.DataFrame:
    """A tile-table input's output with ``class_dist_json`` / ``class_counts_json`` where the
    CSV writer puts them (:mod:`smt_tools.pipelines._coreset_csv`)."""
    from smt_tools.export.csv_out import class_counts_json, class_dist_json

    if data.json_after is None:
        return out
    at = list(out.columns).index(data.json_after) + 1
    out.insert(at, "class_dist_json", class_dist_json(data.counts, data.class_values).to_numpy())
    out.insert(
        at + 1, "class_counts_json", class_counts_json(data.counts, data.class_values).to_numpy()
    )
    return out


def select_coreset(
    df: pd.DataFrame,
    config: ConfigLike,
    *,
    embeddings: EmbeddingsLike = None,
    class_values: Any = None,
    nodata_class: Any = _FROM_ATTRS,
) -> pd.DataFrame:
    """select-coreset on ``df``: the input table plus ``coreset_score``, ``coreset_selected``
    and ``sampler_weight`` (0 for tiles not selected), as in the command's CSV
    (docs/algorithms.md §10), in ``df``'s row order. ``df`` is not modified.

    df: a balanced table (:func:`balance`'s result, or a balanced CSV read with pandas) or a
    tile table (:func:`read_tiles`; no tile excluded). config: the ``coreset:`` section or the
    whole file (mapping or YAML path) or the config object; its input is replaced by ``df``;
    files are written only when it names ``output.csv_path``. embeddings (embedding methods):
    an (n, D) array row-aligned with ``df``, or the embedding cache's path
    (``coreset.parquet_path``); None: the config's cache.
    """
    from smt_tools.coreset import EMBEDDING_METHODS
    from smt_tools.coreset.gpu import resolve_device
    from smt_tools.pipelines import coreset

    data = _coreset_input(df, class_values, nodata_class)
    cfg, write = _coreset_config(config)
    emb = None
    if isinstance(embeddings, str | os.PathLike):
        cfg = cfg.model_copy(update={"parquet_path": Path(embeddings)})
    elif embeddings is not None:
        emb = _embedding_rows(embeddings, len(data.frame))
    if write:
        from smt_tools.pipelines._preflight import preflight_coreset

        preflight_coreset(cfg)
    data = coreset.prepare_input(cfg, data)
    if emb is not None and cfg.method in EMBEDDING_METHODS:
        _check_finite(emb, np.flatnonzero(~data.excluded))
    device = resolve_device(cfg.device)
    run = coreset.compute_coreset(
        cfg,
        data,
        device,
        lambda _: None,
        started=datetime.now(timezone.utc),
        timings={},
        embeddings=emb,
    )
    record = coreset._config_for_record(cfg)
    if write:
        coreset._write(run, record)  # staged, then moved in together, as the command does
    result = coreset.finish_coreset(run, record)
    assert run.out is not None
    out = _with_count_json(run.out.copy(), data)
    out.attrs = {"summary": result.summary()}  # the command's run summary (run.json)
    return out
