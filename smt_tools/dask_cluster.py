"""Running work on a Dask cluster (``--scheduler`` / ``$SMT_DASK_SCHEDULER``).

``catalog ingest`` and ``embed`` run their per-image / per-partition tasks on the workers of an
existing ``dask.distributed`` cluster when a scheduler is named, instead of the local process
pool. Without one nothing changes and ``dask`` is never imported.

The scheduler is named as

- ``tcp://host:8786`` (or any address ``distributed.Client`` accepts): an existing cluster;
- a path ending in ``.json``: a scheduler file (``dask scheduler --scheduler-file F``);
- ``local`` or ``local:N``: a ``LocalCluster`` of N worker processes (one thread each; N
  defaults to the cores available) started for this command and closed after it.

Workers must have smt-tools installed (same version) and see the rasters, the pairs CSV's
paths and the embedding cache's folder at the same paths as the driver (a shared file system
or object storage through ``/vsicurl/`` / ``/vsis3/``). docs/scaling.md says more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from smt_tools.errors import ConfigError, SmtError, missing_dependency

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ENV_SCHEDULER",
    "DaskTaskError",
    "dask_client",
    "require_dask",
    "resolve_scheduler",
    "run_tasks",
]

#: environment variable read when no ``--scheduler`` is given
ENV_SCHEDULER = "SMT_DASK_SCHEDULER"
#: seconds to wait for a scheduler to answer before giving up with one line
CONNECT_TIMEOUT_S = 20

T = TypeVar("T")


class DaskTaskError(SmtError, RuntimeError):
    """A task failed on the cluster for a reason other than bad input (a worker kept dying)."""


def resolve_scheduler(option: str | None) -> str | None:
    """The scheduler to use: ``option``, else ``$SMT_DASK_SCHEDULER``; None (run locally) when
    neither is set or both are empty."""
    value = option if option is not None else os.environ.get(ENV_SCHEDULER)
    value = (value or "").strip()
    return value or None


def require_dask() -> None:
    """Fail with the one-line install hint unless ``dask.distributed`` is importable (called
    before any input is read when a scheduler is named)."""
    _import_distributed()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise missing_dependency("dask[distributed]", "dask", "--scheduler") from None
    return distributed


def _local_workers(address: str) -> int | None:
    """N of ``local:N`` (None for ``local``: one per core); a bad N is a ConfigError."""
    _, _, n = address.partition(":")
    if not n:
        return None
    if not n.isdigit() or int(n) < 1:
        raise ConfigError(
            f"--scheduler {address}: expected local or local:N with N >= 1 worker processes"
        )
    return int(n)


@contextmanager
def dask_client(address: str) -> Iterator[Client]:
    """A connected ``distributed.Client`` for ``address`` (see the module doc); closed at the
    end of the block, with the LocalCluster it started, if any."""
    distributed = _import_distributed()
    local = address == "local" or address.startswith("local:")
    n = _local_workers(address) if local else None
    cluster = None
    try:
        if local:
            from smt_tools.raster.scan import resolve_workers

            n = n or resolve_workers(0)
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = distributed.Client(cluster)
        elif address.endswith(".json"):
            client = distributed.Client(scheduler_file=address, timeout=CONNECT_TIMEOUT_S)
        else:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--scheduler {address}: cannot reach the Dask scheduler ({first}); start one "
            f"(`dask scheduler`) or fix --scheduler / ${ENV_SCHEDULER}"
        ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(
    client: Client,
    func: Callable[..., T],
    items: Iterable[Any],
    *,
    name: str,
    describe: Callable[[Any], str],
    on_result: Callable[[Any, T], None],
    resources: dict[str, float] | None = None,
) -> int:
    """Run ``func(item)`` for every item on the cluster (task keys ``smt-<name>-…``, as the
    dashboard shows them); ``on_result(item, result)`` is called
    in the driver as each task completes (any order). Returns the number of tasks.

    A worker that dies is handled by Dask: its tasks are rescheduled on other workers (up to
    ``distributed.scheduler.allowed-failures`` times). An :class:`SmtError` raised by a task
    (bad input) reaches the caller unchanged, naming its file; a task whose workers kept dying
    becomes one :class:`DaskTaskError` line naming ``describe(item)``. On any error the
    remaining tasks are cancelled.
    """
    distributed = _import_distributed()
    items = list(items)
    run = uuid.uuid4().hex[:12]  # keys unique per call: two commands may share a cluster
    futures = [
        client.submit(func, item, pure=False, resources=resources, key=f"smt-{name}-{run}-{i}")
        for i, item in enumerate(items)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in distributed.as_completed(futures):
            item = items[index[fut.key]]
            try:
                result = fut.result()
            except distributed.KilledWorker as exc:
                raise DaskTaskError(
                    f"{describe(item)}: the Dask workers running it died repeatedly ({exc}); "
                    "check the worker logs (memory limit, GDAL crash) and rerun"
                ) from None
            on_result(item, result)
            fut.release()
    except BaseException:
        client.cancel(futures)
        raise
    return len(items)
