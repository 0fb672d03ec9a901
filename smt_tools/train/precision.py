"""Mixed precision for the train loop (docs/algorithms.md §13, "Mixed precision").

``precision: auto | bf16 | fp16 | fp32`` (the ``train`` config key) is resolved once per run
by :func:`resolve_precision`:

- ``auto``: bf16 autocast on a CUDA GPU with native bfloat16 (compute capability >= 8.0),
  fp16 autocast with a gradient scaler on an older CUDA GPU, fp32 on any other device;
- ``bf16`` / ``fp16`` on a CUDA GPU: as asked (``bf16`` on a GPU without native bfloat16 is a
  one-line :class:`~smt_tools.errors.ConfigError`); on the CPU (or MPS) the run trains in fp32
  and one :class:`PrecisionFallbackWarning` says so, so one config serves both machines;
- ``fp32``: no autocast anywhere.

Only the model's forward pass runs under autocast; the loss is computed in float32 on
``logits.float()``, the weights (and so the checkpoints) stay float32, and validation runs
under the same autocast as training. :meth:`Precision.train_step` is the one optimiser step the
loop (and ``benchmarks/bench_train_step.py``) runs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from smt_tools.choices import TRAIN_PRECISIONS
from smt_tools.errors import ConfigError

#: the precisions a run computes in (``auto`` resolves to one of them)
RESOLVED = ("bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionFallbackWarning(UserWarning):
    """An explicit ``bf16`` / ``fp16`` on a device without CUDA: the run trains in fp32."""


@dataclass
class Precision:
    """What one run computes in, and the fp16 gradient scaler (None otherwise).

    name: ``bf16``, ``fp16`` or ``fp32``; device_type: ``cuda``, ``cpu``, ``mps`` (the
    autocast device). Build it with :func:`resolve_precision`; tests may build one directly
    (``Precision("bf16", "cpu")``: torch autocasts on the CPU too).
    """

    name: str
    device_type: str
    scaler: Any = field(default=None, repr=False)  # torch.amp.GradScaler for fp16

    def __post_init__(self) -> None:
        if self.name not in RESOLVED:
            raise ConfigError(
                f"precision must be one of {', '.join(RESOLVED)} once resolved; got {self.name!r}"
            )
        if self.name == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device_type)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32 for fp32)."""
        return _DTYPES.get(self.name, torch.float32)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast region for a forward pass (a no-op for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def forward(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) float32 of ``model(image)`` run under :meth:`autocast`."""
        with self.autocast():
            logits = model(image)
        return logits.float()

    def train_step(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        image: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """One optimiser step; the detached float32 loss (not synchronised: the caller reads it
        when it needs the number). fp16 scales the loss before backward and skips a step whose
        gradients overflowed (torch.amp.GradScaler)."""
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(self.forward(model, image), mask)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        return loss.detach()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state for ``last.pt`` (None without a scaler)."""
        return None if self.scaler is None else dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the scaler's state (ignored without a scaler or without a saved state)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes bfloat16 natively (compute capability >= 8.0)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(requested: str | Precision, device: torch.device | str) -> Precision:
    """The :class:`Precision` a run on ``device`` uses for ``requested`` (see the module
    docstring); a :class:`Precision` is returned as given."""
    if isinstance(requested, Precision):
        return requested
    if requested not in TRAIN_PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(TRAIN_PRECISIONS)}; got {requested!r}"
        )
    dev = torch.device(device)
    if dev.type != "cuda":
        if requested in _DTYPES:
            warnings.warn(
                f"precision: {requested} needs a CUDA GPU; training on {dev.type} in fp32 "
                "(set precision: auto to choose per device without this warning)",
                PrecisionFallbackWarning,
                stacklevel=2,
            )
        return Precision("fp32", dev.type)
    if requested == "fp32":
        return Precision("fp32", "cuda")
    native = _native_bf16(dev)
    if requested == "bf16" and not native:
        major, minor = torch.cuda.get_device_capability(dev)
        raise ConfigError(
            f"precision: bf16: {torch.cuda.get_device_name(dev)} (compute capability "
            f"{major}.{minor}) has no native bfloat16; set precision: fp16 or auto"
        )
    if requested == "auto":
        requested = "bf16" if native else "fp16"
    return Precision(requested, "cuda")
