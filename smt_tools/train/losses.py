"""Imbalance-aware segmentation losses (plain torch).

Every loss takes raw logits and a target:

- multi-class: logits (N, C, H, W) float, target (N, H, W) integer class indices in [0, C) or
  ``ignore_index``; soft targets (N, C, H, W) float in [0, 1] (``soft_labels: true``) are
  accepted by every multi-class loss (an all-zero pixel vector is ignored);
- binary (``mode="binary"``): logits (N, 1, H, W) (sigmoid inside the loss, never before it),
  target (N, H, W) in {0, 1} or ``ignore_index``.

Pixels equal to ``ignore_index`` (default 255: padding beyond the raster edge, remapped
nodata) contribute nothing, to the loss or to its gradient.

Formulas (per class c over the valid pixels of the batch; p = softmax/sigmoid probability,
t = one-hot target, smooth = s):

- Dice: ``1 - (2·Σ p·t + s) / (Σ p + Σ t + s)``, averaged over the classes present in the
  target (a class absent from the batch target would only add noise).
- Tversky: ``TI = (TP + s) / (TP + α·FP + β·FN + s)``, loss ``(1 - TI)^γ``, same averaging.
- Focal: ``-α_t (1 - p_t)^γ ln p_t`` averaged over valid pixels.
- DiceFocal: ``dice_weight·Dice + focal_weight·Focal`` (the compound default for rare classes).
- CrossEntropy: torch's CE with optional ``class_weights`` (binary: per-pixel weight of the
  target class applied to BCE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from smt_tools.errors import ConfigError

Mode = Literal["multiclass", "binary"]
_MODES = ("multiclass", "binary")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ConfigError(f"loss mode must be one of {', '.join(_MODES)}; got {mode!r}")


def _probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, mode: str, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return probabilities (N, K, P), one-hot target (N, K, P) and valid mask (N, 1, P), float.

    Binary mode uses two "classes" (background = 1 - p, foreground = p) for the statistics but
    only the foreground column is used by the callers (K = 1).
    """
    n = logits.shape[0]
    if target.is_floating_point() and target.dim() == 4 and mode == "multiclass":
        c = logits.shape[1]
        soft = target.to(logits.dtype).reshape(n, c, -1)
        validf = (soft.sum(dim=1, keepdim=True) > 0).to(logits.dtype)
        probs = torch.softmax(logits, dim=1).reshape(n, c, -1)
        return probs * validf, soft * validf, validf
    target = target.long()
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    safe = torch.where(valid, target, torch.zeros_like(target))
    validf = valid.reshape(n, 1, -1).to(logits.dtype)
    if mode == "binary":
        if logits.shape[1] != 1:
            raise ValueError(f"binary mode expects logits (N, 1, H, W); got {tuple(logits.shape)}")
        probs = torch.sigmoid(logits).reshape(n, 1, -1)
        onehot = safe.reshape(n, 1, -1).to(logits.dtype)
    else:
        c = logits.shape[1]
        probs = torch.softmax(logits, dim=1).reshape(n, c, -1)
        onehot = F.one_hot(safe.reshape(n, -1), c).permute(0, 2, 1).to(logits.dtype)
    return probs * validf, onehot * validf, validf


class DiceLoss(nn.Module):
    """Soft Dice loss; ``mode`` multiclass (softmax) or binary (1 channel + sigmoid)."""

    def __init__(
        self, mode: Mode = "multiclass", smooth: float = 1.0, ignore_index: int | None = 255
    ) -> None:
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.smooth = float(smooth)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t, _ = _probs_and_onehot(logits, target, self.mode, self.ignore_index)
        inter = (p * t).sum(dim=(0, 2))
        card = p.sum(dim=(0, 2)) + t.sum(dim=(0, 2))
        dice = (2 * inter + self.smooth) / (card + self.smooth)
        return _mean_present(1 - dice, t, self.mode)


class TverskyLoss(nn.Module):
    """Tversky loss (α weighs false positives, β false negatives; β > α favours recall)."""

    def __init__(
        self,
        mode: Mode = "multiclass",
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, float(smooth)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t, _ = _probs_and_onehot(logits, target, self.mode, self.ignore_index)
        tp = (p * t).sum(dim=(0, 2))
        fp = (p * (1 - t)).sum(dim=(0, 2))
        fn = ((1 - p) * t).sum(dim=(0, 2))
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return _mean_present((1 - ti) ** self.gamma, t, self.mode)


def _mean_present(per_class: torch.Tensor, onehot: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean of ``per_class`` (K,) over classes present in the target (binary: the one class)."""
    if mode == "binary":
        return per_class.mean()
    present = onehot.sum(dim=(0, 2)) > 0
    if not bool(present.any()):
        return per_class.sum() * 0.0
    return per_class[present].mean()


class FocalLoss(nn.Module):
    """Focal loss ``-α_t (1 - p_t)^γ ln p_t`` over valid pixels.

    alpha: binary: weight of the positive class (negatives get 1 - alpha); multiclass: a
    per-class weight list, or None for no weighting.
    """

    def __init__(
        self,
        mode: Mode = "multiclass",
        alpha: float | Sequence[float] | None = None,
        gamma: float = 2.0,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        if alpha is not None and not isinstance(alpha, int | float) and mode == "binary":
            raise ConfigError(f"binary focal loss: alpha must be a number; got {alpha!r}")
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point() and target.dim() == 4 and self.mode == "multiclass":
            return self._soft(logits, target)
        target = target.long()
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        safe = torch.where(valid, target, torch.zeros_like(target))
        if self.mode == "binary":
            z = logits[:, 0]
            tf = safe.to(z.dtype)
            logpt = -F.binary_cross_entropy_with_logits(z, tf, reduction="none")
            pt = logpt.exp()
            loss = -((1 - pt) ** self.gamma) * logpt
            if self.alpha is not None:
                a = float(self.alpha)  # type: ignore[arg-type]
                loss = loss * (a * tf + (1 - a) * (1 - tf))
        else:
            logp = F.log_softmax(logits, dim=1)
            logpt = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
            pt = logpt.exp()
            loss = -((1 - pt) ** self.gamma) * logpt
            if self.alpha is not None:
                w = torch.as_tensor(
                    list(self.alpha),  # type: ignore[arg-type]
                    dtype=logits.dtype,
                    device=logits.device,
                )
                if w.numel() != logits.shape[1]:
                    raise ConfigError(
                        f"focal loss alpha has {w.numel()} values for {logits.shape[1]} classes; "
                        "give one weight per class"
                    )
                loss = loss * w[safe]
        n_valid = valid.sum()
        if int(n_valid) == 0:
            return logits.sum() * 0.0
        return (loss * valid).sum() / n_valid

    def _soft(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft targets (N, C, H, W): -Σ_c t_c α_c (1 - p_c)^γ ln p_c; all-zero pixels ignored."""
        logp = F.log_softmax(logits, dim=1)
        per = -target * (1 - logp.exp()) ** self.gamma * logp
        if self.alpha is not None:
            w = torch.as_tensor(list(self.alpha), dtype=logits.dtype, device=logits.device)  # type: ignore[arg-type]
            per = per * w.view(1, -1, 1, 1)
        valid = target.sum(dim=1) > 0
        n_valid = valid.sum()
        if int(n_valid) == 0:
            return logits.sum() * 0.0
        return per.sum(dim=1)[valid].sum() / n_valid


class DiceFocalLoss(nn.Module):
    """``dice_weight · Dice + focal_weight · Focal`` (compound loss, 0.5/0.5 by default)."""

    def __init__(
        self,
        mode: Mode = "multiclass",
        dice_weight: float = 0.5,
        focal_weight: float = 0.5,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(mode, smooth=smooth, ignore_index=ignore_index)
        self.focal = FocalLoss(mode, alpha=alpha, gamma=gamma, ignore_index=ignore_index)
        self.dice_weight, self.focal_weight = float(dice_weight), float(focal_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.focal_weight * self.focal(
            logits, target
        )


class CrossEntropyLoss(nn.Module):
    """Cross-entropy with optional per-class weights and ``ignore_index``.

    Accepts hard targets (N, H, W) or soft targets (N, C, H, W) (pixels whose target vector sums
    to 0 are ignored). Binary mode: BCE-with-logits on (N, 1, H, W) with ``class_weights`` =
    [w_background, w_foreground] applied per pixel. With 1 % foreground coverage a weight near
    99 for the rare class is the calibrated choice, not 2-3.
    """

    def __init__(
        self,
        mode: Mode = "multiclass",
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if mode == "binary" and self.class_weights is not None and len(self.class_weights) != 2:
            raise ConfigError(
                "binary cross-entropy: class_weights must be [w_background, w_foreground]; "
                f"got {self.class_weights}"
            )

    def _weights(self, logits: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        w = torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)
        if self.mode == "multiclass" and w.numel() != logits.shape[1]:
            raise ConfigError(
                f"cross-entropy class_weights has {w.numel()} values for {logits.shape[1]} "
                "classes; give one weight per class"
            )
        return w

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self._weights(logits)
        if target.is_floating_point() and target.dim() == 4 and self.mode == "multiclass":
            valid = target.sum(dim=1) > 0  # (N, H, W)
            logp = F.log_softmax(logits, dim=1)
            per_class = -(target * logp)
            if w is not None:
                per_class = per_class * w.view(1, -1, 1, 1)
            n_valid = valid.sum()
            if int(n_valid) == 0:
                return logits.sum() * 0.0
            return per_class.sum(dim=1)[valid].sum() / n_valid
        target = target.long()
        if self.mode == "binary":
            valid = (
                torch.ones_like(target, dtype=torch.bool)
                if self.ignore_index is None
                else target != self.ignore_index
            )
            tf = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], tf, reduction="none")
            if w is not None:
                loss = loss * (w[1] * tf + w[0] * (1 - tf))
            n_valid = valid.sum()
            if int(n_valid) == 0:
                return logits.sum() * 0.0
            return (loss * valid).sum() / n_valid
        if self.ignore_index is not None and bool((target == self.ignore_index).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits,
            target,
            weight=w,
            ignore_index=self.ignore_index if self.ignore_index is not None else -100,
        )
