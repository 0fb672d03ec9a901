"""The progress callback shape every pipeline accepts (the CLI passes rich progress bars)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

#: ``factory(description, total)`` opens a progress bar and yields ``advance(n)``.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
