"""Older spellings of config keys and values, read as today's, with one deprecation line each.

One table (:data:`ALIASES`) of ``old path -> new path`` (optionally ``old value -> new value``)
is applied to the parsed YAML before validation (:func:`apply_aliases`) and to each ``--set``
key (:func:`alias_override`), so an older spelling works the same in a file and on the command
line. Each use prints one line on stderr, e.g.::

    c.yaml: coreset.output_csv_path is deprecated; use coreset.output.csv_path (read as that)

A file that gives the old and the new spelling with different values is a config error (it
would be ambiguous); the same value both ways is read once. ``n_classes: 2`` without a remap
is not an alias: the datasets binarise such masks themselves (docs/algorithms.md §13).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smt_tools.errors import ConfigError, SmtDeprecationWarning

#: the dataset sections of a train config (the datasets take free constructor keys)
_DATASETS = ("train_dataset", "val_dataset")
#: ``_target_`` prefixes of the datasets whose older keys are renamed (not a user's own class)
_OUR_DATASETS = ("smt_tools.train.", "pytorch_segmentation_models_trainer.")


def _our_dataset(block: Mapping[str, Any]) -> bool:
    target = block.get("_target_")
    return isinstance(target, str) and target.startswith(_OUR_DATASETS)


@dataclass(frozen=True)
class Alias:
    """``old`` (a dotted path from the file's top) is read as ``new``. With ``values`` the key
    keeps its place (``old == new``) and only those older values are translated. ``when``:
    a test of the block holding the key (the alias applies only where it is true)."""

    old: str
    new: str
    values: Mapping[str, str] | None = None
    when: Callable[[Mapping[str, Any]], bool] | None = None


def _dataset_aliases() -> list[Alias]:
    renames = {
        "mask_class_mapping": "class_remap",
        "selected_bands": "bands",
        "image_key": "image_column",
        "mask_key": "mask_column",
    }
    return [
        Alias(f"{ds}.{old}", f"{ds}.{new}", when=_our_dataset)
        for ds in _DATASETS
        for old, new in renames.items()
    ]


#: every older spelling the loaders read (README "Older spellings")
ALIASES: tuple[Alias, ...] = (
    Alias("coreset.output_csv_path", "coreset.output.csv_path"),
    Alias("coreset.fd_k_min", "coreset.fd.k_min"),
    Alias("coreset.fd_k_max", "coreset.fd.k_max"),
    # the older tool's "both": composition and uniqueness, which is mode embeddings
    Alias("balanced_dataset.mode", "balanced_dataset.mode", values={"both": "embeddings"}),
    Alias(
        "balanced_dataset.boost.rare_class_multiplier", "balanced_dataset.weights.rare_class_boost"
    ),
    Alias("balanced_dataset.selected_bands", "balanced_dataset.embeddings.bands"),
    Alias("balanced_dataset.embeddings.selected_bands", "balanced_dataset.embeddings.bands"),
    *_dataset_aliases(),
)


def _warn(line: str) -> None:
    warnings.warn(line, SmtDeprecationWarning, stacklevel=4)


def _block(data: Any, parts: list[str]) -> Any:
    """The mapping at ``parts`` inside ``data`` (None when a step is missing or not one)."""
    node = data
    for part in parts:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, Mapping) else None


def _writable(root: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """The block at ``parts`` of ``root`` as a dict of its own: each block on the way is
    shallow-copied (created when missing), so the caller's data is never changed and a large
    config (thousands of patch records) is not copied."""
    node = root
    for part in parts:
        child = node.get(part)
        child = {} if child is None else dict(child)
        node[part] = child
        node = child
    return node


def _value_alias(data: dict[str, Any], alias: Alias, source: str) -> None:
    *head, key = alias.old.split(".")
    block = _block(data, head)
    value = None if block is None else block.get(key)
    if alias.values is None or not isinstance(value, str) or value not in alias.values:
        return
    new = alias.values[value]
    _writable(data, head)[key] = new
    _warn(f"{source}: {alias.old}: {value} is deprecated; use {new} (read as that)")


def _move(data: dict[str, Any], alias: Alias, source: str) -> None:
    *old_head, old_key = alias.old.split(".")
    *new_head, new_key = alias.new.split(".")
    old_block = _block(data, old_head)
    if old_block is None or old_key not in old_block:
        return
    if alias.when is not None and not alias.when(old_block):
        return
    node: Any = data
    for part in new_head:  # a value in the way: its own validation reports it
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None and not isinstance(node, Mapping):
            return
    value = old_block[old_key]
    if isinstance(node, Mapping) and new_key in node and node[new_key] != value:
        raise ConfigError(
            f"{source}: {alias.old} and {alias.new} are the same setting with different "
            f"values ({node[new_key]!r} and {value!r}); keep only {alias.new}"
        )
    old_block = _writable(data, old_head)
    del old_block[old_key]
    if not old_block and old_head != new_head[: len(old_head)]:
        del _writable(data, old_head[:-1])[old_head[-1]]  # a block of the older layout, now empty
    _writable(data, new_head)[new_key] = value
    _warn(f"{source}: {alias.old} is deprecated; use {alias.new} (read as that)")


def apply_aliases(data: Any, source: str) -> Any:
    """``data`` (parsed YAML) with every older spelling of :data:`ALIASES` read as today's:
    a copy (``data`` is untouched), one :class:`SmtDeprecationWarning` line per spelling used.
    Raises :class:`ConfigError` when the old and the new key are both given with different
    values."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = dict(data)
    for alias in ALIASES:
        if alias.values is not None:
            _value_alias(out, alias, source)
        else:
            _move(out, alias, source)
    return out


def alias_override(
    parts: list[int | str], value: Any, where: str, data: Mapping[str, Any]
) -> tuple[list[int | str], Any]:
    """A ``--set`` key (full path ``parts``) and value with an older spelling read as today's
    (one deprecation line naming ``where``, e.g. ``c.yaml (--set mode=both)``); ``data``: the
    config the key is set in (for an alias that applies to some blocks only)."""
    if not all(isinstance(p, str) for p in parts):
        return parts, value
    dotted = ".".join(str(p) for p in parts)
    for alias in ALIASES:
        if alias.old != dotted:
            continue
        if alias.when is not None:
            block = _block(data, [str(p) for p in parts[:-1]])
            if block is None or not alias.when(block):
                return parts, value
        if alias.values is not None:
            if isinstance(value, str) and value in alias.values:
                new = alias.values[value]
                _warn(f"{where}: {alias.old}: {value} is deprecated; use {new} (read as that)")
                return parts, new
            return parts, value
        _warn(f"{where}: {alias.old} is deprecated; use {alias.new} (read as that)")
        return list(alias.new.split(".")), value
    return parts, value
