"""A small UNet in plain torch (no download), and an optional segmentation_models_pytorch model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smt_tools.errors import ConfigError, MissingDependencyError


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet: ``depth`` down-sampling stages, ``base_channels`` doubled per stage.

    Input (N, in_channels, H, W) float; output logits (N, n_classes, H, W) (n_classes = 1 for
    binary segmentation with a sigmoid in the loss). H and W need not be multiples of 2**depth
    (features are resized to the skip connection before concatenation).
    """

    def __init__(
        self, in_channels: int = 3, n_classes: int = 2, base_channels: int = 16, depth: int = 3
    ) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 1 or base_channels < 1 or depth < 1:
            raise ConfigError(
                "UNet: in_channels, n_classes, base_channels and depth must be >= 1; got "
                f"{in_channels}, {n_classes}, {base_channels}, {depth}"
            )
        self.in_channels = in_channels
        self.n_classes = n_classes
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(_block(cin, c))
            cin = c
        self.bottom = _block(chans[-2], chans[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.up.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            self.dec.append(_block(chans[i - 1] * 2, chans[i - 1]))
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
        x = self.bottom(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = x[..., : skip.shape[-2], : skip.shape[-1]]
                if x.shape[-2:] != skip.shape[-2:]:
                    x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)


def smp_model(arch: str = "Unet", **kwargs: Any) -> nn.Module:
    """A ``segmentation_models_pytorch`` model (``arch`` = Unet, FPN, DeepLabV3Plus, ...).

    Example config: ``{_target_: smt_tools.train.models.smp_model, arch: Unet,
    encoder_name: resnet18, encoder_weights: null, in_channels: 3, classes: 6}``.
    """
    try:
        import segmentation_models_pytorch as smp
    except ModuleNotFoundError:
        raise MissingDependencyError(
            f"model {arch} needs the optional package 'segmentation-models-pytorch', which is "
            "not installed; install it with: pip install segmentation-models-pytorch, or use "
            "smt_tools.train.UNet"
        ) from None
    cls = getattr(smp, arch, None)
    if cls is None:
        raise ConfigError(f"model.arch: segmentation_models_pytorch has no model {arch!r}")
    model: nn.Module = cls(**kwargs)
    return model
