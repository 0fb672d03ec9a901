"""The progress callback shape every pipeline accepts (the CLI passes rich progress bars)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

#: ``factory(description, total)`` opens a progress bar and yields ``advance(n)``.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


def _ignore(n: int = 1) -> None:
    return None


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """The silent :data:`ProgressFactory`: yields an ``advance(n=1)`` that does nothing.

    Pipelines use it when the caller passes no ``progress_factory`` (library use, tests).
    """
    yield _ignore
