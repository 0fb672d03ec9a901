"""The ``buffer_excluded_folds`` text column: ``"0;2"``-style fold lists, both ways, vectorised.

One string per distinct exclusion pattern (at most 2^(k+1)), shared by every row that has it,
so ten million rows hold a few dozen strings, not ten million.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smt_tools.errors import InputDataError
from smt_tools.splits.buffer import TEST_FOLD

__all__ = ["format_excluded_folds", "parse_excluded_folds"]


def format_excluded_folds(exclusions: np.ndarray) -> np.ndarray:
    """``(n, k+1)`` bool exclusions -> (n,) object array of ``"0;2"``-style strings ("" for
    none); the last column is written as -1."""
    ex = np.asarray(exclusions, dtype=bool)
    n, width = ex.shape
    names = [str(f) for f in range(width - 1)] + [str(TEST_FOLD)]
    code = np.zeros(n, dtype=np.int64)
    for c in range(width):
        code |= ex[:, c].astype(np.int64) << c
    uniq, inverse = np.unique(code, return_inverse=True)
    text = np.array(
        [";".join(names[c] for c in range(width) if (int(u) >> c) & 1) for u in uniq],
        dtype=object,
    )
    return text[inverse.reshape(-1)] if n else np.zeros(0, dtype=object)


def parse_excluded_folds(values: pd.Series, n_splits: int) -> np.ndarray:
    """Inverse of :func:`format_excluded_folds`: (n, n_splits + 1) bool (each distinct text
    parsed once)."""
    # hashed, not sorted: ten million texts (or a categorical's codes) in one pass; a missing
    # value gets code -1, which indexes the last, all-False row of the table
    inverse, uniq = pd.factorize(values, use_na_sentinel=True)
    table = np.zeros((len(uniq) + 1, n_splits + 1), dtype=bool)
    for r, t in enumerate(str(u) for u in uniq):
        for part in t.replace(",", ";").split(";"):
            part = part.strip()
            if not part:
                continue
            try:
                f = int(float(part))
            except ValueError:
                raise InputDataError(
                    f"buffer_excluded_folds: {t!r} is not a ';'-separated list of folds"
                ) from None
            if f == TEST_FOLD:
                table[r, n_splits] = True
            elif 0 <= f < n_splits:
                table[r, f] = True
            else:
                raise InputDataError(
                    f"buffer_excluded_folds: fold {f} out of range 0..{n_splits - 1} (or -1)"
                )
    return table[inverse.reshape(-1)]
