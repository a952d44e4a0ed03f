"""UNet3D: the saliency network without registers (the baseline, docs/design.md, section 4).

A clip (B, 3, T, H, W) of RGB in [0, 1] goes in; saliency logits (B, 1, T, H, W), one map per
input frame at the input size, come out. Any T >= 1 and any H, W work: the decoder resizes to
each skip's exact size instead of assuming sizes divisible by 16.

`sal_withreg.py` builds on `UNet3D.encode` / `UNet3D.decode`, whose optional `visit` callback
lets it change the features after each level without copying the network.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

DEPTH = 4  # encoder blocks (and decoder blocks); the bottleneck sits below them

# visit(level, features) -> features, called with level "enc{i}", "bottleneck", "dec{i}";
# depth i = 0 is full resolution (width w), i = 3 the deepest skip (width 8w).
LevelVisitor = Callable[[str, torch.Tensor], torch.Tensor]


def _no_visit(level: str, features: torch.Tensor) -> torch.Tensor:
    return features


class ConvBlock3d(nn.Sequential):
    """Two (3x3x3 conv, BatchNorm, ReLU): (B, in_channels, T, H, W) -> (B, out_channels, T, H, W).

    The convolutions have no bias: the BatchNorm right after would cancel it.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class ChannelGate(nn.Module):
    """Per-position channel gate: x * sigmoid(conv(relu(conv(x)))), both convs 1x1x1.

    (B, C, T, H, W) -> (B, C, T, H, W). A hidden width equal to C gives the 96.2 M parameters
    design.md, section 4, states for w = 64.
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels
        self.score = nn.Sequential(
            nn.Conv3d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.score(x)


class UNet3D(nn.Module):
    """3D U-Net of base width `channels` (w): encoder w, 2w, 4w, 8w; gated bottleneck 16w;
    decoder 8w, 4w, 2w, w; 1x1x1 head to one logit channel (no sigmoid)."""

    def __init__(self, channels: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        widths = [channels * 2**depth for depth in range(DEPTH)]
        self.encoders = nn.ModuleList(
            ConvBlock3d(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-1], widths))
        # padding 1 makes every size shrink to floor(n / 2) + 1, so T = 1 survives four pools
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2, padding=1)
        bottleneck_width = 2 * widths[-1]
        self.bottleneck = ConvBlock3d(widths[-1], bottleneck_width)
        self.gate = ChannelGate(bottleneck_width)
        # decoders[0] is the deepest (8w); each takes [upsampled below, skip] concatenated
        below = [bottleneck_width] + widths[:0:-1]
        self.decoders = nn.ModuleList(
            ConvBlock3d(c_below + c_skip, c_skip) for c_below, c_skip in zip(below, widths[::-1]))
        self.head = nn.Conv3d(channels, 1, 1)

    def encode(self, x: torch.Tensor, visit: LevelVisitor = _no_visit
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, in_channels, T, H, W) -> (skips, bottleneck).

        skips[i]: (B, w * 2**i, T_i, H_i, W_i) with T_0 = T and T_{i+1} = T_i // 2 + 1 (same
        for H, W); bottleneck: (B, 16w, T_4, H_4, W_4), already gated.
        """
        skips = []
        for depth, block in enumerate(self.encoders):
            x = visit(f"enc{depth}", block(x))
            skips.append(x)
            x = self.pool(x)
        return skips, visit("bottleneck", self.gate(self.bottleneck(x)))

    def decode(self, bottleneck: torch.Tensor, skips: list[torch.Tensor],
               visit: LevelVisitor = _no_visit) -> torch.Tensor:
        """(bottleneck, skips) as `encode` returns them -> logits (B, 1, T, H, W)."""
        x = bottleneck
        for depth, block in zip(reversed(range(DEPTH)), self.decoders):
            skip = skips[depth]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = visit(f"dec{depth}", block(torch.cat([x, skip], dim=1)))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip (B, in_channels, T, H, W) -> saliency logits (B, 1, T, H, W)."""
        skips, bottleneck = self.encode(x)
        return self.decode(bottleneck, skips)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` (left untouched) with every BatchNorm3d that directly follows
    a Conv3d inside an nn.Sequential folded into that convolution (eval statistics) and replaced
    by Identity. The copy is in eval mode; its output equals `model.eval()`'s up to rounding.

    Only nn.Sequential is searched because only there does registration order equal call order.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(1, len(module)):
            conv, norm = module[index - 1], module[index]
            if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
                module[index - 1] = fuse_conv_bn_eval(conv, norm)
                module[index] = nn.Identity()
    return folded
