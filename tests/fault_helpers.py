"""Helpers for the fault tests (outputs, locks, workers, secrets): real processes, real mounts."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.catalog_data import write_pairs_csv
from tests.rasters import write_pair

CLI = [sys.executable, "-m", "smt_tools"]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SMT_DATABASE_URL", None)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


def scenes(folder: Path, names: list[str], size: int = 32, seed: int = 0) -> Path:
    """One image/mask pair per name (classes 1..3 in seeded blocks, no nodata), side by side;
    returns a pairs CSV listing them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, name in enumerate(names):
        blocks = rng.integers(1, 4, size=(size // 8, size // 8)).astype(np.uint8)
        mask = np.kron(blocks, np.ones((8, 8), np.uint8))
        image = np.full((3, size, size), 120, np.uint8)
        img, msk = write_pair(folder, name, mask, image, origin=(500_000.0 + i * size, 5e6))
        rows.append((img.name, msk.name))
    return write_pairs_csv(folder / f"pairs_{uuid.uuid4().hex[:6]}.csv", rows)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", readonly: bool = False) -> Iterator[Path | None]:
    """A tiny tmpfs mounted at ``path`` (root only; yields None when it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    if not is_root():
        yield None
        return
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return sorted(set(out))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until(cond: Any, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
