"""Trained networks made ready for inference, and the saliency maps they draw.

`prepare_inference` readies a saliency network (BatchNorm folded, weights at the precision,
channels_last_3d, oneDNN convolutions on the CPU), `inference_quality` the quality network
(BatchNorm folded, channels_last, precision, compile); `predict_maps` turns clips into the
8-bit maps stored on disk (design.md, section 7).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse as fuse_conv_batchnorm

from dagr.model_file import Source, load_saliency
from dagr.precision import compile_model, resolve_precision, to_precision, weights_autocast
from sal_withoutreg import fold_batchnorm
from VQA import QualityNet


class OneDnnConv3d(nn.Conv3d):
    """Conv3d that always takes oneDNN's kernel for fp32 on the CPU. PyTorch's size heuristic
    (tuned for 2D) sends a batch of one clip with small deep feature maps to a slow im2col
    kernel, which made the one-clip UNet3D forward 1.6x slower (measured). Under
    torch.compile the compiler picks the kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or self.padding_mode != "zeros"
                or torch.compiler.is_compiling()):
            return super().forward(x)
        return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                        self.dilation, self.groups)


def _onednn_convs(model: nn.Module) -> nn.Module:
    """`model` (changed in place) with every Conv3d replaced by an OneDnnConv3d of the same
    weights."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Conv3d:
                replacement = OneDnnConv3d(child.in_channels, child.out_channels, child.kernel_size,
                                           child.stride, child.padding, child.dilation,
                                           child.groups, child.bias is not None,
                                           child.padding_mode, device="meta")
                replacement.weight, replacement.bias = child.weight, child.bias
                setattr(module, name, replacement)
    return model


def prepare_inference(model: nn.Module, device: torch.device | str, precision: str,
                      fold_bn: bool = True) -> nn.Module:
    """An inference copy of a saliency network for `predict_maps` on `device` (the original is
    left untouched): eval mode; BatchNorm folded into the convolutions (`fold_bn`); weights at
    `precision` ("fp32" or "bf16", see `to_precision`; the default is precision.py's policy) in
    channels_last_3d, the layout the fast kernels want (convolutions follow their weights'
    layout, so inputs need no change); oneDNN convolutions for fp32 on the CPU
    (`OneDnnConv3d`; with channels_last_3d 1.6x faster again there). To compile it, the
    scripts wrap it with precision.compile_model."""
    device = torch.device(device)
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    if device.type == "cpu" and precision == "fp32":
        _onednn_convs(model)
    return to_precision(model.to(device), precision).to(memory_format=torch.channels_last_3d)


def predict_maps(model: nn.Module, clips: torch.Tensor, device: torch.device | str,
                 size: Sequence[int] | None = None, on_device: bool = False) -> torch.Tensor:
    """Saliency maps as stored on disk (design.md, section 7): the sigmoid of each frame's
    log-softmax, then min-max per frame, then x255.

    The network is trained with a softmax over each frame's pixels (train_sal.py), which leaves
    every frame's logits free up to an added constant; a sigmoid of the raw logits would then
    depend on that arbitrary offset (on a trained demo model it dropped the validation CC from
    0.99 to 0.62). So the sigmoid is taken of the logits normalised to log-probabilities
    (log-softmax over the frame's pixels): the map is a monotone, near-linear function of the
    probability map that training validates.

    clips: (B, T, 3, H, W) float RGB in [0, 1] (the stored-frame layout). Returns uint8
    (B, T, H', W') on the CPU (on `device` with `on_device`), with (H', W') = `size` (the
    logits are resized bilinearly first) or (H, W). The network runs at the precision of its
    weights (`prepare_inference`), under bf16 autocast when they are bf16; the normalisation
    is computed in fp32. A constant frame maps to 0.
    """
    maps = stored_maps(predict_logits(model, clips, device, size))
    return maps if on_device else maps.cpu()


@torch.inference_mode()
def predict_logits(model: nn.Module, clips: torch.Tensor, device: torch.device | str,
                   size: Sequence[int] | None = None) -> torch.Tensor:
    """The network's fp32 logits (B, T, H', W') on `device` for `clips` (B, T, 3, H, W), as
    `predict_maps` computes them: resized bilinearly to `size` when given."""
    device = torch.device(device)
    x = clips.to(device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W): the network's layout
    with weights_autocast(model, device):
        logits = model(x)[:, 0].float()  # (B, T, H, W)
    if size is not None and tuple(size) != tuple(logits.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits


@torch.inference_mode()
def stored_maps(logits: torch.Tensor) -> torch.Tensor:
    """Logits (..., H, W) -> the maps `predict_maps` stores: uint8, min-max per frame."""
    maps = torch.sigmoid(torch.log_softmax(logits.flatten(-2), dim=-1)).view_as(logits)
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    maps = (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny)
    return maps.mul_(255).round_().to(torch.uint8)


@torch.inference_mode()
def relative_saliency(logits: torch.Tensor) -> torch.Tensor:
    """Logits (..., H, W) -> each pixel's share of its frame's saliency (the softmax over the
    frame's pixels that training fits) times the frame's pixel count: 1 is the frame's mean,
    whatever its size, so values compare across frames and videos."""
    shares = torch.softmax(logits.flatten(-2), dim=-1).view_as(logits)
    return shares * (logits.shape[-2] * logits.shape[-1])


def frame_windows(frames: Iterable[np.ndarray], length: int
                  ) -> Iterator[tuple[list[np.ndarray], range]]:
    """Windows of `length` consecutive frames that cover a stream, each frame exactly once.

    Yields (window, fresh): `fresh` are the positions in the window of the frames it covers.
    Windows follow each other without overlap; the last is aligned to the stream's end and
    overlaps the one before; a stream shorter than `length` is padded with its last frame.
    Holds at most two windows in memory.
    """
    previous: list[np.ndarray] = []
    current: list[np.ndarray] = []
    for frame in frames:
        current.append(frame)
        if len(current) == length:
            yield current, range(length)
            previous, current = current, []
    if current and previous:
        yield previous[len(current):] + current, range(length - len(current), length)
    elif current:
        yield current + [current[-1]] * (length - len(current)), range(len(current))


def inference_quality(model: QualityNet, device: torch.device, precision: str | None = None,
                      compiled: bool = False) -> QualityNet:
    """`model` (changed in place) ready for `score_clips` on `device`: eval mode; the trunk's
    BatchNorm folded into its convolutions (torch.fx graph fusion) and the trunk in
    channels_last (faster on GPUs with bf16, and for fp32 on the CPU: 1.4x, measured); weights
    at `precision` (default: bf16 on CUDA, fp32 on the CPU; see dagr.precision.to_precision); the
    trunk `torch.compile`d when `compiled`."""
    model = model.to(device).eval()
    model.trunk = fuse_conv_batchnorm(model.trunk)
    model.to_channels_last()
    to_precision(model, resolve_precision(precision, device))
    model.trunk = compile_model(model.trunk, compiled)
    return model


# ----------------------------------------------------------------------------- a recipe for loading one

@dataclass(frozen=True)
class SaliencyRecipe:
    """A recipe for an inference saliency network: where it comes from and how it runs, what a
    rendering worker needs to load it. `load()` loads it once per process."""
    source: Source
    device: str
    fold_bn: bool = True
    precision: str | None = None
    compiled: bool = False

    def load(self) -> tuple[nn.Module, dict]:
        """(inference model, the training settings stored with it)."""
        if self not in _LOADED:
            network, settings = load_saliency(self.source)
            model = prepare_inference(network, self.device,
                                      resolve_precision(self.precision, self.device), self.fold_bn)
            _LOADED[self] = compile_model(model, self.compiled), settings
        return _LOADED[self]


_LOADED: dict[SaliencyRecipe, tuple[nn.Module, dict]] = {}  # the networks this process loaded
