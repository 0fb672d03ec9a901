"""smt-tools: curated, class-balanced, leakage-safe segmentation training sets from large rasters.

The Python API (:mod:`smt_tools.api`: :func:`balance`, :func:`select_coreset`,
:func:`read_tiles`) is loaded on first use, so ``import smt_tools`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smt_tools._version import __version__

__all__ = ["__version__", "balance", "read_tiles", "select_coreset"]

if TYPE_CHECKING:
    from smt_tools.api import balance, read_tiles, select_coreset

_API = frozenset({"balance", "read_tiles", "select_coreset"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from smt_tools import api

        return getattr(api, name)
    raise AttributeError(f"module 'smt_tools' has no attribute {name!r}")
