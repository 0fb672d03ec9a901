"""select-coreset's CSV output, written in row chunks.

A catalog input does not hold its ``class_dist_json`` / ``class_counts_json`` text for every
tile in memory (ten million tiles would need gigabytes of strings): they are made from the
class counts chunk by chunk as the CSV is written, at the place they have in the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

#: rows per written chunk
CHUNK_ROWS = 500_000


def _chunk_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table of ``frame`` with dictionary (categorical) columns as plain values."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for k, fld in enumerate(table.schema):
        if pa.types.is_dictionary(fld.type):
            table = table.set_column(k, fld.name, table.column(k).cast(fld.type.value_type))
    return table


def write_coreset_csv(
    frame: pd.DataFrame,
    path: Path,
    counts: np.ndarray | None = None,
    class_values: np.ndarray | None = None,
    json_after: str | None = None,
) -> None:
    """Write ``frame`` as CSV (quoting only where needed). With ``json_after``, the columns
    ``class_dist_json`` and ``class_counts_json`` made from ``counts`` (n, C) go right after
    that column."""
    import pyarrow.csv as pacsv

    from smt_tools.export.csv_out import class_counts_json, class_dist_json

    options = pacsv.WriteOptions(quoting_style="needed")
    at = None if json_after is None else list(frame.columns).index(json_after) + 1
    writer = None
    schema = None
    try:
        for start in range(0, max(len(frame), 1), CHUNK_ROWS):
            part = frame.iloc[start : start + CHUNK_ROWS].copy(deep=False)
            if at is not None:
                assert counts is not None and class_values is not None
                c = counts[start : start + CHUNK_ROWS]
                part.insert(at, "class_dist_json", class_dist_json(c, class_values).to_numpy())
                part.insert(
                    at + 1, "class_counts_json", class_counts_json(c, class_values).to_numpy()
                )
            table = _chunk_table(part)
            if writer is None:
                schema = table.schema
                writer = pacsv.CSVWriter(str(path), schema, write_options=options)
            else:
                table = table.cast(schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
