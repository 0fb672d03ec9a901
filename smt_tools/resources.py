"""Files shipped inside the package, read with :mod:`importlib.resources`.

``smt_tools/migrations/NNNN_*.sql`` (applied by ``catalog init``) and
``smt_tools/examples/*.yaml`` (the example configs of the README; ``conf/examples`` in the source
tree links to them) are package data, so a plain ``pip install smt-tools`` carries them.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["example_names", "examples_dir", "migrations_dir"]


def migrations_dir() -> Traversable:
    """The folder of the numbered SQL migrations inside the installed package."""
    return resources.files("smt_tools") / "migrations"


def examples_dir() -> Traversable:
    """The folder of the example configs inside the installed package.

    With a regular (not zipped) install this is a :class:`pathlib.Path`; print it to copy the
    examples: ``python -c "import smt_tools.resources as r; print(r.examples_dir())"``.
    """
    return resources.files("smt_tools") / "examples"


def example_names() -> list[str]:
    """File names of the shipped example configs, sorted."""
    return sorted(p.name for p in examples_dir().iterdir() if p.name.endswith(".yaml"))
