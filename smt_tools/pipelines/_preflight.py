"""Per-command output pre-flight: which paths each command writes and which it reads.

Every pipeline calls its function here first, so an output that is also an input, or that
cannot be written, is refused with one line before any tile is read (see
:mod:`smt_tools.export.preflight`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smt_tools.choices import mode_signals
from smt_tools.export.preflight import Named, check_outputs

if TYPE_CHECKING:
    from smt_tools.config.balanced import BalancedDatasetConfig
    from smt_tools.config.coreset import CoresetConfig
    from smt_tools.config.split import SplitConfig
    from smt_tools.config.train import TrainConfig

PathLike = str | os.PathLike[str] | None


def _qml(p: PathLike) -> Path | None:
    return None if p is None else Path(p).with_suffix(".qml")


def _balanced_inputs(cfg: BalancedDatasetConfig, config_path: PathLike) -> list[Named]:
    inp = cfg.input
    return [
        ("the config file", config_path),
        ("input.tiles", inp.tiles),
        ("input.patch_records_csv", inp.patch_records_csv),
    ]


def preflight_balanced(cfg: BalancedDatasetConfig, config_path: PathLike = None) -> None:
    """build-balanced-dataset: CSV, GeoJSON + .qml, report folder, embedding cache."""
    out = cfg.output
    inputs = _balanced_inputs(cfg, config_path)
    outputs: list[Named] = [
        ("output.csv_path", out.csv_path),
        ("output.parquet_path", out.parquet_path),
        ("output.geojson_path", out.geojson_path),
        ("the QGIS style beside output.geojson_path", _qml(out.geojson_path)),
    ]
    cache: list[Named] = []
    if mode_signals(cfg.mode).uniqueness:  # written only when tiles are missing: not probed
        cache.append(("embeddings.parquet_path", cfg.embeddings.parquet_path))
    check_outputs(outputs, inputs, [("output.report_dir", out.report_dir)], unprobed=cache)


def preflight_embed(cfg: BalancedDatasetConfig, config_path: PathLike = None) -> None:
    """embed: the embedding cache (a file, plus its ``.parts`` folder)."""
    path = cfg.embeddings.parquet_path
    parts = None if path is None else Path(path).with_name(Path(path).name + ".parts")
    check_outputs(
        [("embeddings.parquet_path", path)],
        _balanced_inputs(cfg, config_path),
        [("the cache's .parts folder", parts)],
    )


def preflight_coreset(cfg: CoresetConfig, config_path: PathLike = None) -> None:
    """select-coreset: CSV, GeoJSON + .qml."""
    check_outputs(
        [
            ("output.csv_path", cfg.output.csv_path),
            ("output.geojson_path", cfg.output.geojson_path),
            ("the QGIS style beside output.geojson_path", _qml(cfg.output.geojson_path)),
        ],
        [
            ("the config file", config_path),
            ("input_csv_path", cfg.input_csv_path),
            ("parquet_path (embedding cache)", cfg.parquet_path),
        ],
    )


def preflight_split(cfg: SplitConfig, config_path: PathLike = None) -> None:
    """split: CSV, GeoJSON + .qml."""
    check_outputs(
        [
            ("output.csv_path", cfg.output.csv_path),
            ("output.geojson_path", cfg.output.geojson_path),
            ("the QGIS style beside output.geojson_path", _qml(cfg.output.geojson_path)),
        ],
        [("the config file", config_path), ("input_csv_path", cfg.input_csv_path)],
    )


def preflight_leakage(report: PathLike, inputs: list[Named]) -> None:
    """check-leakage: the optional report GeoJSON + .qml."""
    if report is None:
        return
    check_outputs([("--report", report), ("the QGIS style beside --report", _qml(report))], inputs)


def _dataset_paths(label: str, kwargs: dict[str, Any]) -> list[Named]:
    return [
        (f"{label}.{k}", v)
        for k, v in kwargs.items()
        if isinstance(v, str | os.PathLike) and ("path" in k or "csv" in k or k.endswith("_dir"))
    ]


def preflight_train(cfg: TrainConfig, config_path: PathLike = None) -> None:
    """train: the output folder and the files written into it."""
    out = Path(cfg.output_dir)
    inputs: list[Named] = [("the config file", config_path)]
    inputs += _dataset_paths("train_dataset", cfg.train_dataset.kwargs)
    if cfg.val_dataset is not None:
        inputs += _dataset_paths("val_dataset", cfg.val_dataset.kwargs)
    files: list[Named] = [
        (f"output_dir/{n}", out / n) for n in ("best.pt", "last.pt", "metrics.csv", "metrics.png")
    ]
    check_outputs(files, inputs, [("output_dir", out)])
