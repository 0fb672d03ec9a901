"""Losses and metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smt_tools.errors import ConfigError  # noqa: E402
from smt_tools.train import metrics  # noqa: E402
from smt_tools.train.losses import (  # noqa: E402
    CrossEntropyLoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
)


def _binary(logits: list[float], target: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(logits, dtype=torch.float64).view(1, 1, 1, -1),
        torch.tensor(target).view(1, 1, -1),
    )


def test_dice_binary_hand_value_and_ignore() -> None:
    # p = 0.5 everywhere; target [1, 0]: inter 0.5, card 1 + 1 -> dice 0.5 (smooth 0)
    x, t = _binary([0.0, 0.0], [1, 0])
    assert DiceLoss("binary", smooth=0.0)(x, t).item() == pytest.approx(0.5)
    # an ignored pixel changes nothing, whatever its logit
    x, t = _binary([0.0, 0.0, 9.0], [1, 0, 255])
    assert DiceLoss("binary", smooth=0.0)(x, t).item() == pytest.approx(0.5)


def test_dice_multiclass_mean_over_present_classes() -> None:
    # 3 classes, logits 0 -> p = 1/3; target [0, 0] (class 0 only present)
    x = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    t = torch.tensor([[[0, 0]]])
    # class 0: inter 2/3, card 2/3 + 2 -> dice (4/3) / (8/3) = 0.5
    assert DiceLoss(smooth=0.0)(x, t).item() == pytest.approx(0.5)


def test_focal_binary_hand_values() -> None:
    x, t = _binary([0.0], [1])
    # -(1 - .5)^2 ln .5
    expected = 0.25 * math.log(2)
    assert FocalLoss("binary", gamma=2.0)(x, t).item() == pytest.approx(expected)
    x, t = _binary([0.0, 0.0, 3.0], [1, 0, 255])
    # alpha .25 for the positive, .75 for the negative, mean over 2 valid pixels
    assert FocalLoss("binary", alpha=0.25, gamma=2.0)(x, t).item() == pytest.approx(
        (0.25 + 0.75) * expected / 2
    )


def test_focal_gamma0_equals_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 4, (2, 3, 3), generator=g)
    t[0, 0, 0] = 255
    ce = torch.nn.functional.cross_entropy(x, t, ignore_index=255)
    assert FocalLoss(gamma=0.0)(x, t).item() == pytest.approx(ce.item())


def test_tversky_binary_hand_value() -> None:
    # target [1, 1, 0], p = .5: TP 1, FP .5, FN 1 -> TI = 1 / (1 + .3*.5 + .7*1)
    x, t = _binary([0.0, 0.0, 0.0], [1, 1, 0])
    ti = 1.0 / (1.0 + 0.15 + 0.7)
    assert TverskyLoss("binary", smooth=0.0)(x, t).item() == pytest.approx(1 - ti)
    assert TverskyLoss("binary", smooth=0.0, gamma=2.0)(x, t).item() == pytest.approx((1 - ti) ** 2)


def test_dice_focal_is_weighted_sum() -> None:
    x, t = _binary([0.3, -1.2, 2.0], [1, 0, 1])
    d = DiceLoss("binary")(x, t).item()
    f = FocalLoss("binary")(x, t).item()
    assert DiceFocalLoss("binary")(x, t).item() == pytest.approx(0.5 * d + 0.5 * f)
    assert DiceFocalLoss("binary", dice_weight=0.2, focal_weight=0.8)(x, t).item() == (
        pytest.approx(0.2 * d + 0.8 * f)
    )


def test_cross_entropy_class_weights_hand_value() -> None:
    # logits [2, 0] on two pixels, targets [0, 1], weights [1, 3]
    x = torch.tensor([[2.0, 2.0], [0.0, 0.0]], dtype=torch.float64).view(1, 2, 1, 2)
    t = torch.tensor([[[0, 1]]])
    l0 = math.log(1 + math.exp(-2))
    l1 = math.log(1 + math.exp(2))
    got = CrossEntropyLoss(class_weights=[1.0, 3.0])(x, t).item()
    assert got == pytest.approx((l0 + 3 * l1) / 4)


def test_binary_cross_entropy_rare_weight() -> None:
    # 1 % coverage -> weight 99 for the rare class; logits 0: each pixel ln 2
    x, t = _binary([0.0, 0.0, 5.0], [1, 0, 255])
    got = CrossEntropyLoss("binary", class_weights=[1.0, 99.0])(x, t).item()
    assert got == pytest.approx((99 + 1) * math.log(2) / 2)


def test_soft_targets_match_hard_targets() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([[[0, 2], [1, 255]]])
    soft = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    for r in range(2):
        for c in range(2):
            if t[0, r, c] != 255:
                soft[0, t[0, r, c], r, c] = 1.0
    loss = CrossEntropyLoss()
    assert loss(x, soft).item() == pytest.approx(loss(x, t).item())


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), FocalLoss(), TverskyLoss(), DiceFocalLoss(), CrossEntropyLoss()],
    ids=lambda m: type(m).__name__,
)
def test_ignored_pixels_get_no_gradient(loss: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[[0, 1], [2, 255]]])
    loss(x, t).backward()
    assert x.grad is not None
    assert torch.all(x.grad[0, :, 1, 1] == 0)
    assert torch.any(x.grad[0, :, 0, 0] != 0)


def test_bad_mode_and_weights_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="mode"):
        DiceLoss("softmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one weight per class"):
        CrossEntropyLoss(class_weights=[1.0, 2.0])(torch.zeros(1, 3, 1, 1), torch.zeros(1, 1, 1))


def test_iou_scores_from_confusion() -> None:
    # rows = truth, cols = prediction
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    s = metrics.scores_from_confusion(cm)
    assert s.iou[0] == pytest.approx(5 / (5 + 2 + 1))
    assert s.iou[1] == pytest.approx(3 / (3 + 1 + 2))
    assert np.isnan(s.iou[2])  # absent from truth and prediction
    assert s.miou == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert s.micro_iou == pytest.approx(8 / (8 + 3 + 3))
    assert s.pixel_accuracy == pytest.approx(8 / 11)


def test_confusion_excludes_ignored_pixels() -> None:
    pred = torch.tensor([[0, 1, 1, 0]])
    target = torch.tensor([[0, 1, 255, 255]])
    cm = metrics.confusion_matrix(pred, target, n_classes=2)
    assert cm.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), FocalLoss(), TverskyLoss(), DiceFocalLoss(), CrossEntropyLoss()],
    ids=lambda m: type(m).__name__,
)
def test_soft_one_hot_targets_equal_hard_targets(loss: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 4, 4), generator=g)
    t[0, 0, :2] = 255
    valid = t != 255
    soft = torch.nn.functional.one_hot(torch.where(valid, t, 0), 3).permute(0, 3, 1, 2)
    soft = soft.to(torch.float64) * valid.unsqueeze(1)
    assert loss(x, soft).item() == pytest.approx(loss(x, t).item())
