"""Saliency-weighted spatio-temporal quality network (stage 4 of DAGR-VQA).

    frames (B, T, 3, H, W), saliency (B, T, 1, H, W)
      -> saliency weighting, ImageNet normalisation
      -> ResNet trunk per frame, global average pooling       (B, T, D)
      -> spatial vector: mean over time                        (B, D)
      -> temporal vector: sinusoidal positions, transformer,
         mean over time                                        (B, D)
      -> head on [spatial, temporal] (or on one of them)       (B,)

D is 512 for ResNet-18/34 and 2048 for ResNet-50. The score is on the unit scale of the
training targets (MOS mapped to [0, 1]); no sigmoid, so scores just outside [0, 1] survive.

Axes: clips are (B, T, C, H, W) throughout. Only the leading B and T axes are ever merged
(`flatten(0, 1)` / `unflatten(0, (B, T))`); reordering uses `permute`, never `reshape`, which
is what scrambled colour and time in the original code.

Speed: `model.to_channels_last()` puts the trunk's convolution weights in channels_last
memory format, which with bf16 autocast on CUDA roughly doubles trunk throughput.

Imports only torch and torchvision.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torchvision
from torch import nn

VARIANTS = ("spatial", "temporal", "fusion")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FUSION_WIDTH = 2048
HEAD_WIDTHS = (256, 128)


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., torchvision.models.ResNet]
    imagenet: torchvision.models.WeightsEnum
    feature_dim: int


BACKBONES = {
    "resnet18": Backbone(torchvision.models.resnet18,
                         torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": Backbone(torchvision.models.resnet34,
                         torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": Backbone(torchvision.models.resnet50,
                         torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}


def saliency_weight(frames: torch.Tensor, saliency: torch.Tensor, alpha: float,
                    floor: float) -> torch.Tensor:
    """x' = x * ((1 - a) + a * max(floor, s)).

    frames (B, T, 3, H, W), saliency (B, T, 1, H, W) -> (B, T, 3, H, W); the map of frame t
    weights frame t, the same for all three colour channels.
    """
    weight = saliency.clamp(min=floor)
    return frames * ((1.0 - alpha) + alpha * weight)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Transformer position code (length, dim): sin on even, cos on odd features."""
    if dim % 2:
        raise ValueError(f"position code needs an even width, got {dim}")
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.empty(length, dim)
    code[:, 0::2] = torch.sin(position * frequency)
    code[:, 1::2] = torch.cos(position * frequency)
    return code


def imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 weights of `backbone`, from torch's cache or downloaded.

    Raises RuntimeError saying how to proceed when the file is neither cached nor downloadable.
    """
    url = BACKBONES[backbone].imagenet.url
    file_name = os.path.basename(url)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                  check_hash=True)
    except OSError as error:  # URLError, HTTPError, socket and SSL errors all derive from it
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"ImageNet weights for {backbone} are not available: {file_name} is not in torch's "
            f"cache ({cache}) and downloading {url} failed ({error}). Either copy {file_name} "
            f"(fetched from {url} on a machine with network) into {cache}, or pass it directly "
            f"with weights=PATH (scripts: --weights FILE), or train from scratch with "
            f"weights=None (scripts: --no-pretrained).") from error


def resnet_trunk(backbone: str, weights: str | os.PathLike | None) -> nn.Sequential:
    """The torchvision ResNet without avgpool and fc: (N, 3, H, W) -> (N, D, H/32, W/32).

    weights: "imagenet", None (random init) or the path of a torchvision state dict of the
    same backbone (the fc weights in it, if any, are dropped).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    resnet = BACKBONES[backbone].build(weights=None)
    if weights == "imagenet":
        resnet.load_state_dict(imagenet_state_dict(backbone))
    elif weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: {backbone} weights file not found")
        try:  # weights_only: a crafted file is refused before it can run code
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for a damaged or crafted file
            raise ValueError(f"{weights}: not a readable state dict (damaged, or it holds "
                             "objects other than tensors, which are refused unread)") from err
        try:
            resnet.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(f"{weights}: not a torchvision {backbone} state dict") from err
    return nn.Sequential(OrderedDict(
        (name, module) for name, module in resnet.named_children() if name not in ("avgpool", "fc")))


class TemporalEncoder(nn.Module):
    """Sinusoidal positions + transformer encoder + mean over time: (B, T, D) -> (B, D)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, feedforward: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, feedforward, dropout, batch_first=True)
        # no padding masks here, so the nested-tensor fast path would only add a warning
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, length, dim = features.shape
        positions = sinusoidal_positions(length, dim).to(features.device, features.dtype)
        return self.encoder(features + positions).mean(dim=1)


def quality_head(in_dim: int, dropout: float) -> nn.Sequential:
    """in_dim -> 2048 -> 256 -> 128 -> 1, ReLU and dropout between layers."""
    widths = (in_dim, FUSION_WIDTH, *HEAD_WIDTHS)
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    layers.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*layers)


class QualityNet(nn.Module):
    """Blind video quality from saliency-weighted frames.

    Saliency weighting (see `saliency_weight`): w = max(saliency_floor, s) and
    x' = x * ((1 - a) + a * w) with a = saliency_alpha. A pixel's contrast is kept at full
    strength where people look (s = 1) and damped to (1 - a) + a * floor elsewhere, so with
    the defaults (a = 0.5, floor = 0.1) unwatched pixels keep 55 % of their value and the
    network still sees the whole frame. The original code used w = max(0.1, 2s - 1), which
    treats every s <= 0.55 as "not looked at"; we use s directly, so mid-level saliency
    counts in proportion. a = 0 switches saliency off (then `saliency` may be None).

    `config` holds the constructor arguments (plain JSON values) for checkpoints; rebuild
    with `build_quality_model(**{**config, "weights": None})` and then load the state dict.
    """

    def __init__(self, backbone: str = "resnet50", variant: str = "fusion",
                 saliency_alpha: float = 0.5, saliency_floor: float = 0.1,
                 weights: str | os.PathLike | None = "imagenet", heads: int = 4, layers: int = 2,
                 dropout: float = 0.3, feedforward: int = 2048):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not 0.0 <= saliency_alpha <= 1.0 or not 0.0 <= saliency_floor <= 1.0:
            raise ValueError("saliency_alpha and saliency_floor must lie in [0, 1], got "
                             f"{saliency_alpha} and {saliency_floor}")
        self.config: dict[str, Any] = dict(
            backbone=backbone, variant=variant, saliency_alpha=saliency_alpha,
            saliency_floor=saliency_floor, weights=None if weights is None else str(weights),
            heads=heads, layers=layers, dropout=dropout, feedforward=feedforward)
        self.variant = variant
        self.saliency_alpha = saliency_alpha
        self.saliency_floor = saliency_floor
        self.trunk = resnet_trunk(backbone, weights)
        dim = BACKBONES[backbone].feature_dim
        # only the modules the variant uses, so DDP sees no parameter without a gradient
        self.temporal = (TemporalEncoder(dim, heads, layers, dropout, feedforward)
                         if variant != "spatial" else None)
        self.head = quality_head(2 * dim if variant == "fusion" else dim, dropout)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def to_channels_last(self) -> QualityNet:
        """Trunk convolutions in channels_last memory format (faster with bf16 on GPUs);
        convolutions follow their weights' format, so inputs need no change."""
        self.trunk.to(memory_format=torch.channels_last)
        return self

    def prepare(self, frames: torch.Tensor, saliency: torch.Tensor | None) -> torch.Tensor:
        """Saliency weighting and ImageNet normalisation: (B, T, 3, H, W) -> (B, T, 3, H, W)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        if self.saliency_alpha > 0:
            if saliency is None:
                raise ValueError(f"saliency_alpha={self.saliency_alpha} needs saliency maps; "
                                 "pass them or build the model with saliency_alpha=0")
            expected = (*frames.shape[:2], 1, *frames.shape[3:])
            if tuple(saliency.shape) != expected:
                raise ValueError(f"saliency must be {expected} to match the frames, "
                                 f"got {tuple(saliency.shape)}")
            frames = saliency_weight(frames, saliency, self.saliency_alpha, self.saliency_floor)
        return (frames - self.mean) / self.std

    def frame_features(self, frames: torch.Tensor,
                       saliency: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled trunk features per frame: (B, T, 3, H, W), (B, T, 1, H, W) -> (B, T, D)."""
        batch, length = frames.shape[:2]
        pixels = self.prepare(frames, saliency).flatten(0, 1)  # (B*T, 3, H, W)
        features = self.trunk(pixels).mean(dim=(2, 3))  # (B*T, D)
        return features.unflatten(0, (batch, length))

    def forward(self, frames: torch.Tensor, saliency: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, 3, H, W) in [0, 1], saliency (B, T, 1, H, W) in [0, 1] -> (B,)."""
        features = self.frame_features(frames, saliency)
        parts = []
        if self.variant != "temporal":
            parts.append(features.mean(dim=1))
        if self.temporal is not None:
            parts.append(self.temporal(features))
        return self.head(torch.cat(parts, dim=1)).squeeze(1)


def build_quality_model(**kwargs: Any) -> QualityNet:
    """A QualityNet from plain keyword arguments (as stored in a checkpoint's `config`)."""
    return QualityNet(**kwargs)
