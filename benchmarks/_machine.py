"""The machine line every benchmark section in BENCHMARKS.md starts with."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(extra: str = "") -> str:
    """CPU model, cores available, RAM, Python, the load average at start, and ``extra``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [
        cpu_name(),
        f"{cores} cores available",
        f"{mem:.0f} GiB RAM",
        f"Python {platform.python_version()}",
        f"load average {os.getloadavg()[0]:.1f} at start",
    ]
    if extra:
        parts.append(extra)
    return ", ".join(parts)


def command() -> str:
    """How this benchmark was run: ``python benchmarks/NAME.py ARGS`` (no trailing space)."""
    import sys

    script = os.path.basename(sys.argv[0])
    return " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def peak_rss_mib() -> float:
    """This process's own peak RSS in MiB: ``VmHWM`` of /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the parent's peak into a child
    started by fork/vfork + exec (the old address space's high-water mark is kept at exec), so
    a benchmark child of a large parent would report the parent's peak as its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
