"""Embeddings on a Dask cluster (``embed --scheduler``).

The tiles still to embed are cut into partitions of whole source images' windows (in on-disk
order, at most ``partition_rows`` tiles each). A worker plugin loads the model ONCE per worker
(on the worker's GPU when it has one and ``use_gpu`` is set); each task reads its windows on
the worker, embeds them, writes them as one part of the cache (``<cache>.parts/``, the same
part files an interrupted local run leaves) and returns them to the driver, which merges the
parts into the cache as a local run does.

GPU workers: start them with ``--resources GPU=1`` (one worker per GPU; dask-cuda's
``LocalCUDACluster`` does this on a multi-GPU machine) and tasks go only to them. Worker
processes are daemons by default and cannot start DataLoader reader processes, so windows are
read in the task's thread unless the worker runs with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``
(then ``embeddings.num_workers`` readers per worker, as locally).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.embeddings.model import LoadedModel, Preprocess

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PARTITION_ROWS", "ClusterEmbedding", "embed_on_cluster", "partitions"]

#: tiles per task at most (a task also writes one cache part of this many rows)
PARTITION_ROWS = 4096
_PLUGIN = "smt-embed-model"


def partitions(todo: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    """``todo`` cut into pieces of at most ``rows`` tiles, each image's windows together and in
    on-disk order (image, row, column), so a worker reads each file in few, sequential runs."""
    ordered = todo.sort_values(["image_path", "row_off", "col_off"], kind="stable")
    return [ordered.iloc[i : i + rows].reset_index(drop=True) for i in range(0, len(ordered), rows)]


@dataclass(frozen=True)
class _ModelSpec:
    name: str
    use_gpu: bool


def _model_plugin_class() -> type:
    from distributed import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        """Holds the model on a worker: loaded at the first task, kept for the next ones."""

        name = _PLUGIN

        def __init__(self, spec: _ModelSpec) -> None:
            self.spec = spec
            self.loaded: LoadedModel | None = None
            self.device = "cpu"

        def setup(self, worker: Any) -> None:
            import torch

            self.device = "cuda" if self.spec.use_gpu and torch.cuda.is_available() else "cpu"
            if self.device == "cpu":  # one intra-op thread per worker thread: no oversubscription
                torch.set_num_threads(max(1, int(getattr(worker.state, "nthreads", 1))))

        def model(self) -> tuple[LoadedModel, str]:
            if self.loaded is None:
                from smt_tools.embeddings.model import load_model

                self.loaded = load_model(self.spec.name, self.device)
            return self.loaded, self.device

        def teardown(self, worker: Any) -> None:
            self.loaded = None

    return ModelPlugin


@dataclass(frozen=True)
class _Task:
    frame: pd.DataFrame
    spec: Preprocess
    batch_size: int
    num_workers: int
    cache: tuple[Path, str, str] | None  # (cache path, model id, preprocess hash)


@dataclass(frozen=True)
class _TaskResult:
    ids: np.ndarray
    emb: np.ndarray
    seconds: float
    device: str


def embed_partition(task: _Task) -> _TaskResult:
    """The task run on a worker: embed one partition, write it as a cache part, return it."""
    from distributed import get_worker

    from smt_tools.embeddings.extract import iter_embeddings

    plugin: Any = get_worker().plugins[_PLUGIN]
    loaded, device = plugin.model()
    readers = 0 if mp.current_process().daemon else task.num_workers
    t0 = time.perf_counter()
    ids, embs = [], []
    for b_ids, b_emb in iter_embeddings(
        task.frame, loaded, task.spec, batch_size=task.batch_size, num_workers=readers,
        device=device,
    ):  # fmt: skip
        ids.append(b_ids)
        embs.append(b_emb)
    out_ids, out_emb = np.concatenate(ids), np.concatenate(embs)
    if not np.isfinite(out_emb).all():
        from smt_tools.errors import EmbeddingCacheError

        raise EmbeddingCacheError(
            f"the model returned NaN/inf embeddings for tiles of {task.frame['image_path'].iloc[0]}; "
            "check embeddings.scale and the image values"
        )
    if task.cache is not None:
        from smt_tools.embeddings.cache import write_chunk

        write_chunk(task.cache[0], out_ids, out_emb, task.cache[1], task.cache[2])
    return _TaskResult(out_ids, out_emb, time.perf_counter() - t0, device)


@dataclass
class ClusterEmbedding:
    """What a cluster run computed: tile ids (m,), embeddings (m, d), images/s over the wall
    time of the tasks, and where they ran (``dask <workers> workers: cuda|cpu``)."""

    ids: np.ndarray
    emb: np.ndarray
    images_per_s: float
    device: str


def _gpu_resources(client: Client, use_gpu: bool) -> dict[str, float] | None:
    """``{"GPU": 1}`` when ``use_gpu`` and some worker advertises GPU resources, else None (a
    warning says when GPUs were asked for and no worker has them)."""
    if not use_gpu:
        return None
    workers = client.scheduler_info().get("workers", {}).values()
    if any(float(w.get("resources", {}).get("GPU", 0)) > 0 for w in workers):
        return {"GPU": 1}
    import warnings

    warnings.warn(
        "embeddings.use_gpu is true but no Dask worker advertises GPU resources; running on "
        "every worker (start GPU workers with --resources GPU=1 to send the tasks only there)",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def embed_on_cluster(
    client: Client,
    todo: pd.DataFrame,
    *,
    model_name: str,
    use_gpu: bool,
    spec: Preprocess,
    batch_size: int,
    num_workers: int,
    cache: tuple[Path, str, str] | None,
    progress: Callable[[int], None],
    partition_rows: int | None = None,
) -> ClusterEmbedding:
    """Embed the ``todo`` windows on the cluster's workers (see the module doc)."""
    from smt_tools.dask_cluster import run_tasks

    rows = PARTITION_ROWS if partition_rows is None else partition_rows
    resources = _gpu_resources(client, use_gpu)
    client.register_plugin(_model_plugin_class()(_ModelSpec(model_name, use_gpu)), name=_PLUGIN)
    ids: list[np.ndarray] = []
    embs: list[np.ndarray] = []
    devices: set[str] = set()

    def on_result(_task: _Task, res: _TaskResult) -> None:
        ids.append(res.ids)
        embs.append(res.emb)
        devices.add(res.device)
        progress(len(res.ids))

    tasks = [_Task(p, spec, batch_size, num_workers, cache) for p in partitions(todo, rows)]
    t0 = time.perf_counter()
    try:
        run_tasks(
            client,
            embed_partition,
            tasks,
            name="embed",
            describe=lambda t: f"embedding {len(t.frame)} tiles of {t.frame['image_path'].iloc[0]}",
            on_result=on_result,
            resources=resources,
        )
    finally:
        client.unregister_worker_plugin(_PLUGIN)  # frees the models on the workers
    seconds = time.perf_counter() - t0
    n_workers = len(client.scheduler_info().get("workers", {}))
    return ClusterEmbedding(
        np.concatenate(ids),
        np.concatenate(embs),
        sum(len(a) for a in ids) / seconds if seconds > 0 else 0.0,
        f"dask {n_workers} workers: {', '.join(sorted(devices))}",
    )
