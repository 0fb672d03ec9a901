"""Process-level tuning for data loading (opt-in; the ``train`` command applies it).

Every batch allocates fresh multi-megabyte tensors. With glibc's default dynamic mmap
threshold, such blocks are mmapped and unmapped on every batch, so each one page-faults from
scratch; on virtual machines (page reporting, ballooning) those faults dominate the loading
time (measured here: collating float32 image + int64 mask batches ran 4x faster after tuning).
Raising the mmap and trim thresholds lets the heap reuse the same pages batch after batch.
DataLoader workers forked afterwards inherit the setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def tune_malloc(mmap_threshold: int = 32 * 1024**2, trim_threshold: int = 1024**3) -> bool:
    """Raise glibc's mmap/trim thresholds for this process; True if applied (glibc only).

    mmap_threshold: allocations below this size come from the reusable heap (glibc caps it at
    32 MiB on 64-bit). trim_threshold: free heap kept before returning memory to the OS.
    """
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )
    _applied = ok
    return ok
