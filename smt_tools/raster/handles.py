"""Open raster handles: the only place in smt-tools that calls ``rasterio.open``.

:class:`RasterCache` keeps at most ``maxsize`` datasets open (least recently used evicted and
closed). Handles are per process: a cache created in a parent is never used in a forked
worker (the owner PID is checked), so DataLoader / process-pool workers open their own.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from smt_tools.errors import RasterOpenError, RasterReadError
from smt_tools.raster.paths import is_gdal_path, redact

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

#: rasterio's placeholder text when GDAL's own message sits on the chained exception
_PLACEHOLDERS = ("See previous exception for details",)
#: longest GDAL cause quoted in an error line (the whole line stays short)
MAX_CAUSE_CHARS = 160


def describe_raster_error(exc: BaseException, path: str | None = None) -> str:
    """GDAL's own cause of a rasterio failure, as one short line.

    rasterio raises e.g. ``RasterioIOError("Read failed. See previous exception for details.")``
    chained (``__cause__`` / ``__context__``) to the ``CPLE_*Error`` that carries GDAL's message
    ("a.tif, band 1: IReadBlock failed at X offset 0, Y offset 0: TIFFReadEncodedStrip()
    failed."). This walks the chain, drops the placeholders and any message already contained
    in a kept one, and joins the rest with "; " (at most :data:`MAX_CAUSE_CHARS` characters).
    With ``path``, the file name GDAL repeats is left out (the caller names the file).
    Falls back to the exception's type name.
    """
    kept: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = _strip_path(" ".join(str(cur).split()), path).rstrip(".")
        if text and not any(p in text for p in _PLACEHOLDERS):
            if not any(text in k for k in kept):
                kept = [k for k in kept if k not in text] + [text]
        cur = cur.__cause__ or cur.__context__
    out = redact("; ".join(kept)) if kept else type(exc).__name__
    return out if len(out) <= MAX_CAUSE_CHARS else out[: MAX_CAUSE_CHARS - 3] + "..."


def _strip_path(text: str, path: str | None) -> str:
    """``text`` without the file name GDAL puts in front of (or quotes inside) its message."""
    if not path:
        return text
    for name in (path, os.path.basename(path)):
        text = text.replace(f"'{name}' ", "")
        for sep in (": ", ", "):
            if text.startswith(name + sep):
                text = text[len(name) + len(sep) :]
    return text


def read_error(
    path: str, exc: BaseException, row_off: int, col_off: int, height: int, width: int
) -> RasterReadError:
    """The one-line error for a failed window read: file, window, GDAL's cause and the fix."""
    if is_gdal_path(path):
        return RasterReadError(
            f"{redact(path)}: failed to read window row_off={row_off} col_off={col_off} "
            f"size={height}x{width} (GDAL: {describe_raster_error(exc, path)}); check that the "
            "server or bucket is reachable and the object is complete, then run again"
        )
    return RasterReadError(
        f"{path}: failed to read window row_off={row_off} col_off={col_off} size={height}x{width} "
        f"(GDAL: {describe_raster_error(exc, path)}); the file is damaged: re-copy or re-export it"
    )


def open_raster(path: str | os.PathLike[str]) -> DatasetReader:
    """Open ``path`` for reading; a missing or non-raster file is a :class:`RasterOpenError`.

    GDAL paths (``s3://``, ``https://``, ``/vsicurl/`` …: :mod:`smt_tools.raster.paths`) are
    opened by GDAL directly; their errors name the URL with credentials redacted.
    """
    p = os.fspath(path)
    remote = is_gdal_path(p)
    if not remote and not Path(p).exists():
        raise RasterOpenError(
            f"{p}: file not found; check the path (relative paths are resolved against {os.getcwd()})"
        )
    try:
        with warnings.catch_warnings():
            # a raster without a CRS or geotransform (a slide scan) is valid input in pixel
            # space; `catalog ingest` says so in one line instead of rasterio's Python warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(p)
    except (RasterioError, OSError) as exc:
        if remote:
            raise RasterOpenError(
                f"{redact(p)}: cannot open the raster (GDAL: {describe_raster_error(exc, p)}); "
                "check the URL, that the object exists and your access to it (AWS_* / "
                "GDAL_HTTP_* settings: README 'Your own data')"
            ) from None
        raise RasterOpenError(
            f"{p}: not a readable raster (GDAL: {describe_raster_error(exc, p)}); check that it "
            "is a complete GeoTIFF or another GDAL format (re-copy or re-export it)"
        ) from None


def probe_raster(path: str | os.PathLike[str]) -> None:
    """Open and close ``path`` (a :class:`RasterOpenError` when it cannot be opened): the
    existence check for GDAL paths, which have no local file to look at."""
    open_raster(path).close()


class RasterCache:
    """LRU cache of open datasets, keyed by path; evicted handles are closed."""

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 1:
            raise ValueError("RasterCache maxsize must be >= 1")
        self.maxsize = maxsize
        self._handles: OrderedDict[str, DatasetReader] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: rasters opened by this process through the cache (reopens after eviction count)
        self.opens = 0

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            # Inherited from a parent process: never share GDAL handles across processes.
            self._handles = OrderedDict()
            self._pid = os.getpid()
            self.opens = 0

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
            self.opens += 1
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
