"""Output pre-flight: check every output path BEFORE any compute.

A run that would overwrite one of its own inputs, or that cannot write its outputs (folder is
a file, folder missing and not creatable, folder not writable), is refused with one line
before any tile is read, instead of failing with a traceback after all the work.
Writability is probed by creating and removing a temporary file (``os.access`` is not enough
when running as root or on network file systems). Nothing is created by the check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from smt_tools.atomic import _cause, _token
from smt_tools.errors import ConfigError, OutputError

#: ``(label, path)``: label names the key/option in messages (e.g. ``output.csv_path``).
Named = tuple[str, str | os.PathLike[str] | None]


def _resolved(p: Path) -> Path:
    try:
        return p.expanduser().resolve(strict=False)
    except (OSError, RuntimeError):
        return p.absolute()


def _is_url(p: str | os.PathLike[str]) -> bool:
    from smt_tools.raster.paths import is_gdal_path

    return isinstance(p, str) and is_gdal_path(p)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name one file (same inode, or the same resolved path).

    A URL / GDAL path (``s3://``, ``/vsicurl/`` …) is the same file only as the same URL
    (compared without credentials); it is never a local file.
    """
    if _is_url(a) or _is_url(b):
        if not (_is_url(a) and _is_url(b)):
            return False
        from smt_tools.raster.paths import path_identity

        return path_identity(a) == path_identity(b)
    pa, pb = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    return _resolved(pa) == _resolved(pb)


def _probe(folder: Path, label: str, target: Path) -> None:
    probe = folder / f".smt-probe.{os.getpid()}.{_token()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputError(
            f"{label}: cannot write {target}: folder {folder} is not writable ({_cause(exc)}); "
            "choose another output path"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_writable(label: str, path: str | os.PathLike[str], *, folder: bool = False) -> None:
    """Refuse (:class:`OutputError`) when ``path`` cannot be written: it is a folder (for a
    file output) or a file (for a folder output), a parent is a file, or the nearest existing
    folder is not writable (so the missing folders could not be created). Outputs are local:
    a URL / GDAL path (``s3://``, ``/vsis3/`` …) is refused."""
    if _is_url(path):
        from smt_tools.raster.paths import redact

        raise OutputError(
            f"{label}: {redact(str(path))} is a remote path; outputs are written to local "
            "files: give a local path (copy the result to the bucket afterwards)"
        )
    p = Path(path).expanduser()
    if p.exists():
        if folder and not p.is_dir():
            raise OutputError(f"{label}: {p} exists and is a file; give a folder path")
        if not folder and p.is_dir():
            raise OutputError(f"{label}: {p} is a folder; give a file path")
    probe_in = p if folder and p.is_dir() else p.parent
    anc = probe_in if str(probe_in) else Path(".")
    while not anc.exists():
        if anc.is_symlink():
            raise OutputError(f"{label}: cannot write {p}: {anc} is a broken link")
        parent = anc.parent
        if parent == anc:
            break
        anc = parent
    if anc.exists() and not anc.is_dir():
        raise OutputError(
            f"{label}: cannot write {p}: {anc} is a file, not a folder; fix the output path"
        )
    _probe(anc, label, p)


def _as_path(p: str | os.PathLike[str]) -> str | Path:
    """A local path as a :class:`Path`; a URL kept as text (``Path`` would merge its ``//``)."""
    return p if isinstance(p, str) and _is_url(p) else Path(p)


def check_outputs(
    outputs: Sequence[Named],
    inputs: Sequence[Named] = (),
    folders: Sequence[Named] = (),
    unprobed: Sequence[Named] = (),
) -> None:
    """Pre-flight for one run: every file in ``outputs`` and folder in ``folders`` is writable,
    no two outputs are the same file, and no output is one of the ``inputs`` (same file or same
    resolved path). ``unprobed`` files (written only when needed, e.g. a cache that may already
    be complete on a read-only disk) get the same-file checks but no write probe. ``None``
    paths are skipped. Raises :class:`ConfigError` (output = input) or :class:`OutputError`
    (cannot write) before any work starts."""
    probed = [(label, _as_path(p)) for label, p in outputs if p is not None and str(p) != ""]
    outs = probed + [
        (label, _as_path(p)) for label, p in unprobed if p is not None and str(p) != ""
    ]
    dirs = [(label, _as_path(p)) for label, p in folders if p is not None and str(p) != ""]
    ins = [(label, _as_path(p)) for label, p in inputs if p is not None and str(p) != ""]
    for label, p in outs:
        for in_label, q in ins:
            if same_file(p, q):
                raise ConfigError(
                    f"{label} {p} is the input {in_label} ({q}); writing it would destroy the "
                    "input: choose another output path"
                )
    for label, d in dirs:
        for in_label, q in ins:
            if same_file(d, q):
                raise ConfigError(
                    f"{label} {d} is the input {in_label} ({q}); choose another output folder"
                )
    seen: list[tuple[str, str | Path]] = []
    for label, p in outs:
        for other_label, q in seen:
            if same_file(p, q):
                raise ConfigError(
                    f"{label} and {other_label} are the same file {p}; give each output its own path"
                )
        seen.append((label, p))
    for label, p in probed:
        check_writable(label, p)
    for label, d in dirs:
        check_writable(label, d, folder=True)
