"""Open raster handles: the only place in smt-tools that calls ``rasterio.open``.

:class:`RasterCache` keeps at most ``maxsize`` datasets open (least recently used evicted and
closed). Handles are per process: a cache created in a parent is never used in a forked
worker (the owner PID is checked), so DataLoader / process-pool workers open their own.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio
from rasterio.errors import RasterioIOError

from smt_tools.errors import RasterOpenError

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


def open_raster(path: str | os.PathLike[str]) -> DatasetReader:
    """Open ``path`` for reading; a missing or non-raster file is a :class:`RasterOpenError`."""
    p = os.fspath(path)
    if not Path(p).exists():
        raise RasterOpenError(
            f"{p}: file not found; check the path (relative paths are resolved against {os.getcwd()})"
        )
    try:
        return rasterio.open(p)
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise RasterOpenError(
            f"{p}: not a readable raster ({first}); check that it is a GeoTIFF or another GDAL format"
        ) from None


class RasterCache:
    """LRU cache of open datasets, keyed by path; evicted handles are closed."""

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 1:
            raise ValueError("RasterCache maxsize must be >= 1")
        self.maxsize = maxsize
        self._handles: OrderedDict[str, DatasetReader] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            # Inherited from a parent process: never share GDAL handles across processes.
            self._handles = OrderedDict()
            self._pid = os.getpid()

    def get(self, path: str | os.PathLike[str]) -> DatasetReader:
        """The open dataset for ``path`` (opened on first use)."""
        key = os.fspath(path)
        with self._lock:
            self._check_pid()
            ds = self._handles.get(key)
            if ds is not None and not ds.closed:
                self._handles.move_to_end(key)
                return ds
        opened = open_raster(key)
        with self._lock:
            self._handles[key] = opened
            self._handles.move_to_end(key)
            while len(self._handles) > self.maxsize:
                _, old = self._handles.popitem(last=False)
                old.close()
        return opened

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str | os.PathLike) and os.fspath(path) in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Close every handle (safe to call twice)."""
        with self._lock:
            for ds in self._handles.values():
                ds.close()
            self._handles.clear()

    def __enter__(self) -> RasterCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        # Pickled into a worker: send settings only, never handles.
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(int(state["maxsize"]))  # type: ignore[misc, call-overload]
