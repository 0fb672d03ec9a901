"""Atomic file writes, staged multi-file outputs, and exclusive file locks.

- :func:`atomic_path`: write to a temporary file beside the target, ``fsync`` it, then
  ``os.replace`` it onto the target (and ``fsync`` the folder). On any failure the temporary
  file is removed and the earlier target stays untouched.
- :class:`StagedOutputs`: several outputs of one run staged beside their targets and moved in
  together at the end.
- :func:`file_lock`: an exclusive ``flock`` on a sibling ``<target>.lock`` file, so two
  processes that read-modify-write one file take turns instead of losing each other's data.

Temporary names are recognisable: ``.<name>.<pid>.<token>.part[...]`` (files) and
``.<name>.<pid>.<token>.staging`` (staged files and folders); the token's first 4 hex digits
identify the host. Leftovers of a killed run (same host, process no longer alive) are removed
the next time the same target is written.

An ``OSError`` while writing (disk full, quota, file too large, read-only or not writable
folder) becomes one :class:`~smt_tools.errors.OutputError` line naming the target and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from smt_tools.errors import OutputError, SmtError

_log = logging.getLogger("smt_tools")

#: Host tag in temporary names (a pid means nothing on another host sharing the folder).
_HOST = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"
_TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{4})[0-9a-f]{4}\.(?P<kind>part|staging)(\..*)?$"
)

_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write to another disk",
    errno.EDQUOT: "the disk quota is exhausted: free space or write elsewhere",
    errno.EFBIG: "the file exceeds the allowed file size: write elsewhere or raise the limit",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.ENOTDIR: "a path component is a file, not a folder: fix the output path",
    errno.ENOENT: "the folder disappeared while writing: check the output path",
}


def _token() -> str:
    return _HOST + secrets.token_hex(2)


def target_of(path: str | os.PathLike[str]) -> Path:
    """The user-facing target of a temporary/staging name (itself for any other path)."""
    p = Path(path)
    while True:
        m = _TEMP_NAME.match(p.name)
        if m is None:
            return p
        p = p.with_name(m.group("name"))


def _cause(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in _HINTS:
        return f"{os.strerror(code)} ({_HINTS[code]})"
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def output_error(exc: BaseException, path: str | os.PathLike[str]) -> OutputError:
    """``exc`` (an ``OSError`` while writing ``path``) as one line naming the target and cause."""
    return OutputError(f"cannot write {target_of(path)}: {_cause(exc)}; nothing was replaced")


def reraise_output_error(exc: BaseException, path: str | os.PathLike[str] | None = None) -> None:
    """Inside an ``except``: raise ``exc`` as an :class:`OutputError` when it is a plain
    ``OSError`` (not an :class:`SmtError`); otherwise return (the caller re-raises)."""
    if isinstance(exc, OSError) and not isinstance(exc, SmtError):
        where = getattr(exc, "filename", None) or path or "the outputs"
        raise output_error(exc, where) from None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def clean_stale(target: str | os.PathLike[str], any_target: bool = False) -> list[Path]:
    """Remove temporary/staging leftovers of ``target`` (with ``any_target``: of every file in
    its folder) from runs on this host whose process is gone (a killed run); return what was
    removed."""
    t = Path(target)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(t.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        m = _TEMP_NAME.match(name)
        if m is None or m.group("host") != _HOST:
            continue
        if not any_target and target_of(t.parent / name).name != t.name:
            continue
        if _alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename) to disk, where the platform supports it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder {target.parent} for {target}: {_cause(exc)}"
        ) from None


def _new_temp(target: Path, kind: str, suffix: str = "") -> Path:
    """Create (exclusively, normal permissions) an empty temporary file beside ``target``."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.getpid()}.{_token()}.{kind}{suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise output_error(exc, target) from None
        os.close(fd)
        return tmp
    raise OutputError(f"cannot write {target}: no free temporary name in {target.parent}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and replaces ``path``,
    on error it is removed (an earlier ``path`` stays untouched). The folder is created if
    needed. ``suffix`` is kept at the end of the temporary name (writers that pick the format
    from the extension, e.g. ``.png``). OS errors become one :class:`OutputError` line."""
    target = Path(path)
    _make_parent(target)
    clean_stale(target)
    tail = suffix.removeprefix(".part") if suffix.startswith(".part") else suffix
    tmp_path = _new_temp(target, "part", tail)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        reraise_output_error(exc, target)
        raise


class StagedOutputs:
    """Several outputs of one run, written under temporary names beside their targets and moved
    into place together by :meth:`commit` (or removed by :meth:`cleanup` when the run fails),
    so a failed run leaves every earlier output untouched. Staged files are fsynced before they
    are moved in. Callers convert OS errors with :func:`reraise_output_error` after cleanup."""

    def __init__(self) -> None:
        self.token = _token()
        self.moves: list[tuple[Path, Path]] = []
        self.dirs: list[Path] = []

    def _name(self, target: Path) -> Path:
        return target.parent / f".{target.name}.{os.getpid()}.{self.token}.staging"

    def file(self, target: Path) -> Path:
        target = Path(target)
        _make_parent(target)
        clean_stale(target)
        tmp = self._name(target)
        self.moves.append((tmp, target))
        return tmp

    def folder(self, target: Path) -> Path:
        target = Path(target)
        _make_parent(target)
        clean_stale(target)
        tmp = self._name(target)
        try:
            tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(exc, target) from None
        self.dirs.append(tmp)
        return tmp

    def add_folder_files(self, tmp_dir: Path, target: Path, files: list[Path]) -> None:
        for f in files:
            self.moves.append((f, target / f.relative_to(tmp_dir)))

    def commit(self) -> list[Path]:
        done: list[Path] = []
        try:
            for tmp, _ in self.moves:
                if tmp.is_file():
                    _fsync_file(tmp)
            folders: set[Path] = set()
            for tmp, target in self.moves:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                folders.add(target.parent)
                done.append(target)
        except OSError as exc:
            target = next((t for s, t in self.moves if t not in done), Path("the outputs"))
            self.cleanup()
            raise output_error(exc, target) from None
        for folder in folders:
            fsync_dir(folder)
        self.moves = []
        self.cleanup()
        return done

    def cleanup(self) -> None:
        for tmp, _ in self.moves:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                shutil.rmtree(d)


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    t = Path(target)
    return t.with_name(t.name + ".lock")


def _holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return "another process"
    return raw.splitlines()[0] if raw else "another process"


@contextlib.contextmanager
def file_lock(
    target: str | os.PathLike[str],
    what: str = "writing",
    *,
    timeout_s: float | None = None,
    note_after_s: float = 1.0,
) -> Iterator[Path]:
    """Hold an exclusive lock on ``<target>.lock`` (created if needed) for the block.

    A second process waits (after ``note_after_s`` it logs one line ``waiting for the lock
    ... held by pid N``); with ``timeout_s`` it gives up with an :class:`OutputError`. The lock
    is released when the block ends or the process dies (``flock``), so a killed run never
    leaves a stale lock. The lock file is removed on release (a waiter that then holds the lock
    of a removed file notices and locks the new one). Where ``fcntl`` is missing (Windows) the
    block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield lock_path(target)
        return
    lp = lock_path(target)
    _make_parent(lp)
    start = time.monotonic()
    noted = False
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file {lp} (needed to update {target} safely): "
                f"{_cause(exc)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            waited = time.monotonic() - start
            if not noted and waited >= note_after_s:
                _log.warning(
                    "note: waiting for the lock %s held by %s (%s %s); it is released when "
                    "that run ends",
                    lp,
                    holder,
                    what,
                    target,
                )
                noted = True
            if timeout_s is not None and waited >= timeout_s:
                raise OutputError(
                    f"{target}: still locked by {holder} after {timeout_s:g} s ({lp}); wait "
                    "for that run to finish or stop it, then retry"
                ) from None
            time.sleep(0.1)
            continue
        try:
            st_fd, st_path = os.fstat(fd), os.stat(lp)
            same = (st_fd.st_ino, st_fd.st_dev) == (st_path.st_ino, st_path.st_dev)
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a lock file its holder removed: lock the current one
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield lp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lp)  # while still holding the lock
        os.close(fd)  # releases the flock
