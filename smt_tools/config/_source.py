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
      image_path_column: img    # a table of your own: map its columns (docs/algorithms.md §3)

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

#: Column keys of a user's own tile table, each with the column name read when it is not
#: given (docs/algorithms.md §3, "Tiles from a table of your own"). The first five are
#: required; the last three optional.
TABLE_COLUMN_KEYS: dict[str, str] = {
    "image_path_column": "image_path",
    "mask_path_column": "mask_path",
    "row_off_column": "row_off",
    "col_off_column": "col_off",
    "patch_size_column": "patch_size",
    "class_dist_column": "class_dist",
    "uniqueness_score_column": "uniqueness_score",
    "tile_id_column": "tile_id",
}
#: the optional ones: read when the key is given, or when the table has the default name
OPTIONAL_TABLE_COLUMNS: tuple[str, ...] = (
    "class_dist_column",
    "uniqueness_score_column",
    "tile_id_column",
)


class TableColumns(StrictModel):
    """The column mapping of a PostgreSQL table of the user's own (docs/algorithms.md §3):
    giving any ``*_column`` key reads ``table`` as one window per row (image_path, mask_path,
    row_off, col_off, patch_size, optional class_dist / uniqueness_score / tile_id) instead
    of as the catalog's ``tile`` table."""

    image_path_column: str | None = Field(default=None, min_length=1, max_length=63)
    mask_path_column: str | None = Field(default=None, min_length=1, max_length=63)
    row_off_column: str | None = Field(default=None, min_length=1, max_length=63)
    col_off_column: str | None = Field(default=None, min_length=1, max_length=63)
    patch_size_column: str | None = Field(default=None, min_length=1, max_length=63)
    class_dist_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="precomputed class fractions or counts (used instead of reading masks)",
    )
    uniqueness_score_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="precomputed uniqueness (used instead of embeddings)",
    )
    tile_id_column: str | None = Field(default=None, min_length=1, max_length=63)

    def column_mapping(self) -> dict[str, str | None] | None:
        """{column key: the column name given (None: not given)}, or None when no key is
        given (``table`` is then the catalog's tile table or a view with its columns)."""
        given = {k: getattr(self, k) for k in TABLE_COLUMN_KEYS}
        return given if any(v is not None for v in given.values()) else None


class CatalogSource(TableColumns):
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
        if self.path is not None and self.column_mapping() is not None:
            raise ValueError(
                "the *_column keys map a PostgreSQL table of your own; with path (a Parquet "
                "tile table) remove them"
            )
        if self.run_id is not None and self.column_mapping() is not None:
            raise ValueError(
                "run_id selects the tiles of a run recorded in the catalog; a table of your "
                "own (*_column keys) has no runs: remove run_id, or filter with where_clause"
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
