"""Where tiles come from: the one ``catalog:`` block every command takes.

The same block sits in ``balanced_dataset.input``, ``split``, ``coreset`` (select-coreset) and
``check_leakage``::

    catalog:
      url: ${SMT_DATABASE_URL}      # the PostGIS catalog (default: $SMT_DATABASE_URL), or
      path: tiles.parquet           # a Parquet tile table (catalog ingest --catalog tiles.parquet)
      table: tile                   # PostGIS: a table or view with the tile columns
      where_clause: nodata_ratio < 0.05
      run_id: 3                     # only the tiles of a recorded run
      statement_timeout_s: 60

``${VAR}`` in ``url`` and ``path`` is expanded when the command runs (the config record keeps
the variable, not its value). Older spellings are turned into this block by
:func:`deprecated_keys`, with one deprecation warning line each.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from smt_tools.config._loader import MAX_DB_ID, MAX_TIMEOUT_S, StrictModel, expand_env
from smt_tools.errors import SmtDeprecationWarning


class CatalogSource(StrictModel):
    """Tiles from the catalog: PostGIS (``url``, default ``$SMT_DATABASE_URL``) or a Parquet
    tile table (``path``); an optional SQL ``where_clause`` on ``table``; ``run_id``: only
    the tiles that run recorded (and did not exclude)."""

    url: str | None = Field(
        default=None, description="postgresql://...; default: $SMT_DATABASE_URL"
    )
    path: Path | None = Field(
        default=None, description="a Parquet tile table (catalog ingest --catalog FILE.parquet)"
    )
    table: str = Field(default="tile", min_length=1)
    where_clause: str | None = None
    run_id: int | None = Field(default=None, gt=0, le=MAX_DB_ID)
    statement_timeout_s: float = Field(default=60.0, gt=0, le=MAX_TIMEOUT_S)

    @model_validator(mode="after")
    def _one_place(self) -> CatalogSource:
        if self.url is not None and self.path is not None:
            raise ValueError(
                "give url (the PostGIS catalog) or path (a Parquet tile table), not both"
            )
        return self

    def resolved_url(self, key: str) -> str | None:
        """``url`` with ``${VAR}`` expanded (``key`` names it in errors)."""
        return None if self.url is None else expand_env(self.url, f"{key}.url")

    def resolved_path(self, key: str) -> Path | None:
        """``path`` with ``${VAR}`` expanded."""
        return None if self.path is None else Path(expand_env(str(self.path), f"{key}.path"))


def warn_deprecated(old: str, new: str) -> None:
    """One deprecation line: ``old`` still works, ``new`` is how to write it."""
    warnings.warn(
        f"{old}: an older spelling, still read but to be removed; write {new}",
        SmtDeprecationWarning,
        stacklevel=3,
    )


def deprecated_keys(
    data: Any, section: str, renames: Mapping[str, str], block: str = "catalog"
) -> Any:
    """Move older keys of a section (``renames``: old key -> key inside the ``catalog:``
    block) into the block, with one warning naming both spellings; a config that gives the
    same key both ways is refused (it would be ambiguous)."""
    if not isinstance(data, Mapping) or not any(k in data for k in renames):
        return data
    out = dict(data)
    inner = dict(out.get(block) or {}) if isinstance(out.get(block) or {}, Mapping) else None
    if inner is None:
        return data  # the block's own validation reports it
    moved = []
    for old, new in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in inner:
            raise ValueError(
                f"{section}.{old} and {section}.{block}.{new} are the same setting; keep only "
                f"{block}.{new}"
            )
        if value is not None:
            inner[new] = value
        moved.append((old, new))
    shown_old = " and ".join(f"{section}.{o}" for o, _ in moved)
    shown_new = ", ".join(f"{n}: ..." for _, n in moved)
    warn_deprecated(shown_old, f"{section}.{block}: {{{shown_new}}}")
    out[block] = inner
    return out
