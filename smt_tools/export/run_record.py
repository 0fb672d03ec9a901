"""The run record of a command: what ``--json PATH`` and ``run.json`` hold.

One JSON object per run, with the fields of the catalog's ``run`` row (``command``, ``config``,
``started_at``, ``finished_at``, ``tool_version``, ``summary``) plus ``run_id`` (the catalog run,
when one was recorded), ``exit_code``, ``error`` (the one-line message of a failed run) and
``inputs`` (path, size in bytes and mtime of every input file, to tell later whether the
inputs changed). Written atomically (:func:`~smt_tools.atomic.atomic_path`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smt_tools.atomic import atomic_path

#: Fields every run record carries, in this order.
RECORD_FIELDS: tuple[str, ...] = (
    "command",
    "exit_code",
    "error",
    "tool_version",
    "started_at",
    "finished_at",
    "run_id",
    "config",
    "inputs",
    "summary",
)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays become numbers and lists, paths
    and datetimes strings, mapping keys strings, NaN and infinities ``null``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"path", "size", "mtime"}`` of an existing file (absolute path, mtime as ISO 8601 UTC);
    None when ``path`` is not a file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    if not p.is_file():
        return None
    mtime = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat()
    return {"path": str(p.resolve()), "size": int(st.st_size), "mtime": mtime}


def config_input_paths(config: Any) -> list[Path]:
    """Files a config record names outside its ``output*`` keys (existing files only)."""
    found: list[Path] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not str(key).startswith("output"):
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, (str, os.PathLike)):
            text = os.fspath(node)
            if text and "://" not in text and len(text) < 4096 and Path(text).is_file():
                found.append(Path(text))

    walk(config)
    return found


def fingerprints(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Fingerprints of the existing files among ``paths``, each file once, in order."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in paths:
        fp = fingerprint(p)
        if fp is not None and fp["path"] not in seen:
            seen.add(fp["path"])
            out.append(fp)
    return out


def run_record(
    *,
    command: str,
    started_at: datetime,
    finished_at: datetime,
    summary: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    run_id: int | None = None,
    exit_code: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    """The record (fields :data:`RECORD_FIELDS`), JSON-safe."""
    from smt_tools._version import __version__

    record = {
        "command": command,
        "exit_code": int(exit_code),
        "error": error,
        "tool_version": __version__,
        "started_at": started_at,
        "finished_at": finished_at,
        "run_id": run_id,
        "config": dict(config) if config is not None else None,
        "inputs": inputs or [],
        "summary": dict(summary) if summary is not None else {},
    }
    out = jsonable(record)
    assert isinstance(out, dict)
    return out


def write_json(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` as indented JSON to ``path`` atomically; return the path."""
    target = Path(path)
    text = json.dumps(jsonable(record), indent=2, allow_nan=False) + "\n"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def run_json_path(primary_output: str | os.PathLike[str] | None) -> Path | None:
    """Where the run record of a run whose main output is ``primary_output`` goes: beside it,
    ``<stem>.run.json`` (``balanced.csv`` -> ``balanced.run.json``); for a folder, ``run.json``
    inside it; None when the run wrote no local output."""
    if primary_output is None:
        return None
    p = Path(primary_output)
    if p.is_dir():
        return p / "run.json"
    return p.with_name(f"{p.stem}.run.json")
