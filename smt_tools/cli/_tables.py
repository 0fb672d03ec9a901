"""Summary tables that stay readable in an 80-column log (``... | cat``, CI logs).

Rich shrinks a table that is wider than the console and cuts cells with an ellipsis. The
helpers here keep every value whole: text columns wrap (``overflow="fold"``), number columns
never shrink, and a table with many number columns is printed in several parts, each as wide
as the console allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

#: width rich adds around each column of a boxed table (padding 2 + one border)
_COLUMN_OVERHEAD = 3


def text_column(table: Table, header: str, justify: str = "left") -> None:
    """A column whose text wraps inside the cell (never cut)."""
    table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]


def number_column(table: Table, header: str) -> None:
    """A right-aligned column that never wraps or shrinks (numbers stay whole)."""
    table.add_column(header, justify="right", no_wrap=True)


def column_groups(
    label_width: int, widths: Sequence[int], total_width: int
) -> list[tuple[int, int]]:
    """Split columns of ``widths`` (content widths) into [start, stop) groups that fit in
    ``total_width`` next to a label column of ``label_width``; at least one column a group."""
    groups: list[tuple[int, int]] = []
    start = 0
    used = label_width + _COLUMN_OVERHEAD + 1
    for i, w in enumerate(widths):
        cost = w + _COLUMN_OVERHEAD
        if i > start and used + cost > total_width:
            groups.append((start, i))
            start = i
            used = label_width + _COLUMN_OVERHEAD + 1
        used += cost
    if start < len(widths) or not groups:
        groups.append((start, len(widths)))
    return groups


def print_matrix(
    console: Console,
    title: str,
    corner: str,
    row_labels: Sequence[str],
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
) -> None:
    """Print a label column + number columns, split into parts that fit the console width.

    cells: one row per label, one string per header.
    """
    widths = [
        max([len(h)] + [len(row[j]) for row in cells]) if cells else len(h)
        for j, h in enumerate(headers)
    ]
    label_width = max([len(corner)] + [len(s) for s in row_labels])
    groups = column_groups(min(label_width, 24), widths, console.width)
    for part, (a, b) in enumerate(groups):
        suffix = f" ({part + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=title + suffix, title_justify="left")
        text_column(table, corner)
        for h in headers[a:b]:
            number_column(table, h)
        for label, row in zip(row_labels, cells, strict=True):
            table.add_row(label, *row[a:b])
        console.print(table)


def class_label(value: int, names: Mapping[int, str]) -> str:
    """``"1 background"`` where the name is known, else ``"1"``."""
    name = names.get(int(value))
    return f"{value} {name}" if name else str(value)


def print_class_table(
    console: Console,
    title: str | None,
    values: Sequence[int],
    names: Mapping[int, str],
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    extra_rows: Sequence[tuple[str, Sequence[str]]] = (),
) -> None:
    """A class table: ``"1 background"`` labels + number columns (+ ``extra_rows``, e.g. the
    nodata row, in their own section, dimmed).

    When the named labels would make the table wider than the console, the label column
    shows the class value only and the names follow as a legend, one unwrapped line each,
    so neither a name nor a number is ever cut or broken.
    """
    long_labels = [class_label(v, names) for v in values]
    short_labels = [str(v) for v in values]
    widths = [
        max([len(h)] + [len(row[j]) for row in [*cells, *(r for _, r in extra_rows)]])
        for j, h in enumerate(headers)
    ]
    numbers = sum(w + _COLUMN_OVERHEAD for w in widths) + 1
    extra_labels = [label for label, _ in extra_rows]
    label_width = max(len(s) for s in ["class", *long_labels, *extra_labels])
    fits = label_width + _COLUMN_OVERHEAD + numbers <= console.width
    labels = long_labels if fits else short_labels
    table = Table(title=title, title_justify="left")
    text_column(table, "class", justify="right")
    for h in headers:
        number_column(table, h)
    for label, row in zip(labels, cells, strict=True):
        table.add_row(label, *row)
    if extra_rows:
        table.add_section()
        for label, row in extra_rows:
            table.add_row(label, *row, style="dim")
    console.print(table)
    if not fits:
        for v in values:
            if names.get(int(v)):
                console.print(f"  class {v} = {names[int(v)]}", markup=False, soft_wrap=True)
