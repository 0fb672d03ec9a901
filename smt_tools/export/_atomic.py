"""Atomic file writes: a temporary file in the target folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from smt_tools.errors import InputDataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is
    removed (an earlier ``path`` stays untouched). The folder is created if needed."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputDataError(f"{target.parent}: cannot create the output folder ({exc})") from None
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


class StagedOutputs:
    """Several outputs of one run, written under temporary names beside their targets and moved
    into place together by :meth:`commit` (or removed by :meth:`cleanup` when the run fails),
    so a failed run leaves every earlier output untouched."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:8]
        self.moves: list[tuple[Path, Path]] = []
        self.dirs: list[Path] = []

    def file(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{self.token}.staging"
        self.moves.append((tmp, target))
        return tmp

    def folder(self, target: Path) -> Path:
        tmp = target.parent / f".{target.name}.{self.token}.staging"
        tmp.mkdir(parents=True, exist_ok=True)
        self.dirs.append(tmp)
        return tmp

    def add_folder_files(self, tmp_dir: Path, target: Path, files: list[Path]) -> None:
        for f in files:
            self.moves.append((f, target / f.relative_to(tmp_dir)))

    def commit(self) -> list[Path]:
        done: list[Path] = []
        for tmp, target in self.moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            done.append(target)
        self.moves = []
        self.cleanup()
        return done

    def cleanup(self) -> None:
        for tmp, _ in self.moves:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
