"""Training checkpoints a run can resume from: the random-number state, the file and its checks.

``last.pt`` (written atomically after every epoch by :func:`smt_tools.train.loop.fit`) holds::

    {"format": 1, "model_state": {...}, "epoch": k, "miou": ..., "class_names": [...],
     "config": {...}, "config_hash": "...",               # from the caller (train command)
     "training_state": {"optimizer": ..., "scheduler": ... | None, "history": [row, ...],
                        "best_epoch": ..., "best_miou": ..., "dataset_epoch": k,
                        "rng": {"torch": ..., "cuda": [...], "numpy": {...}, "python": (...)}}}

Everything in it loads with ``torch.load(..., weights_only=True)`` (tensors, numbers, strings,
lists, dicts, tuples): the numpy state is stored as a tensor, not a pickled array.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smt_tools.errors import InputDataError

#: version of the checkpoint layout above
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """The global random state of torch (and CUDA), numpy and Python's ``random``."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restoring the legacy global state is the point
        {
            "bit_generator": np_state["bit_generator"],
            "state": {
                "key": np_state["key"].numpy().astype(np.uint32),
                "pos": int(np_state["pos"]),
            },
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A resumable checkpoint (``last.pt``), validated; one-line errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            f"{p}: no checkpoint to resume from (the file does not exist); train without "
            "--resume, or give the last.pt of an earlier run"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputDataError(
            f"{p}: not a readable training checkpoint ({first[:160]}); give the last.pt that "
            "`pytorch-smt-tools train` wrote"
        ) from None
    if not isinstance(state, dict) or "training_state" not in state or "model_state" not in state:
        raise InputDataError(
            f"{p}: holds model weights but no training state (optimizer, random state, history) "
            "to resume from; give the run's last.pt"
        )
    if int(state.get("format", 0)) > FORMAT:
        raise InputDataError(
            f"{p}: checkpoint format {state.get('format')} is newer than this smt-tools reads "
            f"({FORMAT}); upgrade smt-tools"
        )
    return state


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings / lists -> ``{"a.b[0].c": leaf}`` (dotted keys, list items by index)."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value
    return out


def config_hash(keys: Mapping[str, Any]) -> str:
    """A short stable hash (16 hex digits) of flattened config keys."""
    text = json.dumps(dict(keys), sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every flattened key whose value differs (absent = ``None``)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        same = a == b or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        )
        if not same:
            out.append((key, a, b))
    return out
