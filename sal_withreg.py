"""UNet3D with learnable register tokens (SPEC section 4): the saliency network of DAGR-VQA.

Two ways to use N registers, chosen by `register_mode`:

- "attention" (default): registers are global context carriers. At each chosen level the
  feature map (B, C, T', H', W') becomes L = T'H'W' tokens plus a 3D sinusoidal position code.
  Read: the registers attend to all L tokens (pre-norm cross-attention, residual, then an MLP
  with residual), so each gathers clip-wide context. Write: every feature token attends to the
  N updated registers and adds the result back through an output projection that starts at
  zero, so a fresh model computes exactly what the baseline computes. Cost is linear in L.
  One register state flows through the levels in call order (encoder, bottleneck, decoder).
- "input" (the original code's design): N tokens of dimension 64 are projected to N values
  each, laid out over N temporal slots, stretched (nearest) over (T, H, W) and concatenated to
  the RGB channels. They do not depend on the video: in effect a learned, time-slot-dependent
  bias of the first convolution.

registers = 0 is exactly the baseline: same modules, same state-dict keys, same output.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sal_withoutreg import DEPTH, UNet3D, fold_batchnorm

REGISTER_MODES = ("attention", "input")
INPUT_TOKEN_DIM = 64  # token width of the original input-mode design
MLP_RATIO = 4


def level_name(level: str | int) -> str:
    """Canonical level name: "bottleneck", "enc{i}" or "dec{i}" (0 <= i < 4, 0 = full
    resolution); a bare integer i means the encoder level "enc{i}", whose output is also the
    skip the decoder receives."""
    name = f"enc{level}" if isinstance(level, int) else level
    valid = {"bottleneck"} | {f"{side}{i}" for side in ("enc", "dec") for i in range(DEPTH)}
    if name not in valid:
        raise ValueError(f"unknown register level {level!r}; use 'bottleneck', 0-{DEPTH - 1}, "
                         f"'enc0'-'enc{DEPTH - 1}' or 'dec0'-'dec{DEPTH - 1}'")
    return name


def level_width(channels: int, name: str) -> int:
    """Feature channels at level `name` of a UNet3D of base width `channels`."""
    depth = DEPTH if name == "bottleneck" else int(name[3:])
    return channels * 2**depth


def position_code_3d(size: Sequence[int], dim: int, device: torch.device | None = None
                     ) -> torch.Tensor:
    """Fixed sinusoidal code of the (t, h, w) grid of `size` (T, H, W) -> (T*H*W, dim), rows in
    flatten order. Each axis gets dim // 6 frequencies (sin and cos); leftover columns are zero."""
    per_axis = dim // 6
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(per_axis, device=device) / per_axis)
    grid = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float32) for n in size),
                          indexing="ij")
    parts = []
    for coordinate in grid:
        angles = coordinate.reshape(-1, 1) * frequencies
        parts += [angles.sin(), angles.cos()]
    code = torch.cat(parts, dim=1)
    return F.pad(code, (0, dim - code.shape[1]))


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Lq, query_dim) over context (B, Lk, context_dim)
    -> (B, Lq, query_dim), computed in `inner_dim` channels split over `heads`."""

    def __init__(self, query_dim: int, context_dim: int, inner_dim: int, heads: int) -> None:
        super().__init__()
        if inner_dim % heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by heads={heads}")
        self.heads = heads
        self.to_query = nn.Linear(query_dim, inner_dim)
        self.to_key_value = nn.Linear(context_dim, 2 * inner_dim)
        self.out = nn.Linear(inner_dim, query_dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        key, value = self.to_key_value(context).chunk(2, dim=-1)
        # (B, L, inner) -> (B, heads, L, inner / heads)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for t in (self.to_query(queries), key, value))
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.out(mixed.transpose(1, 2).flatten(2))


class RegisterBlock(nn.Module):
    """Read and write between N registers (B, N, register_dim) and a feature map
    (B, feature_dim, T, H, W); returns (features, registers) of the same shapes."""

    def __init__(self, feature_dim: int, register_dim: int, heads: int) -> None:
        super().__init__()
        self.norm_features = nn.LayerNorm(feature_dim)
        self.norm_read = nn.LayerNorm(register_dim)
        self.read = CrossAttention(register_dim, feature_dim, register_dim, heads)
        self.norm_mlp = nn.LayerNorm(register_dim)
        self.mlp = nn.Sequential(nn.Linear(register_dim, MLP_RATIO * register_dim), nn.GELU(),
                                 nn.Linear(MLP_RATIO * register_dim, register_dim))
        self.norm_write = nn.LayerNorm(register_dim)
        self.write = CrossAttention(feature_dim, register_dim, register_dim, heads)
        # a fresh block adds nothing to the features: the network starts as the baseline
        nn.init.zeros_(self.write.out.weight)
        nn.init.zeros_(self.write.out.bias)

    def forward(self, features: torch.Tensor, registers: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm_features(features.flatten(2).transpose(1, 2))  # (B, L, C)
        tokens = tokens + position_code_3d(features.shape[2:], tokens.shape[-1],
                                           tokens.device).to(tokens.dtype)
        registers = registers + self.read(self.norm_read(registers), tokens)
        registers = registers + self.mlp(self.norm_mlp(registers))
        update = self.write(tokens, self.norm_write(registers))  # (B, L, C)
        return features + update.transpose(1, 2).reshape(features.shape), registers


class RegisterUNet3D(UNet3D):
    """UNet3D with `registers` learnable tokens (see the module docstring for the two modes).

    Attention mode: registers are (N, 4w) and a RegisterBlock with `heads` heads sits at each
    of `register_levels` ("bottleneck", "enc{i}", "dec{i}" or an int i meaning "enc{i}").
    Input mode: registers are (N, 64) and the first convolution takes in_channels + N channels.
    """

    def __init__(self, channels: int = 64, registers: int = 4, register_mode: str = "attention",
                 register_levels: Sequence[str | int] = ("bottleneck",), heads: int = 4,
                 in_channels: int = 3) -> None:
        if register_mode not in REGISTER_MODES:
            raise ValueError(f"register_mode must be one of {REGISTER_MODES}, "
                             f"not {register_mode!r}")
        if registers < 0:
            raise ValueError(f"registers must be >= 0, not {registers}")
        input_mode = register_mode == "input"
        super().__init__(channels, in_channels + registers * input_mode)
        self.register_mode = register_mode
        self.num_registers = registers
        if registers == 0:  # keep the baseline's module tree exactly
            return
        if input_mode:
            self.registers = nn.Parameter(torch.randn(registers, INPUT_TOKEN_DIM) * 0.02)
            self.register_to_slots = nn.Linear(INPUT_TOKEN_DIM, registers)
            return
        register_dim = 4 * channels
        self.registers = nn.Parameter(torch.randn(registers, register_dim) * 0.02)
        names = list(dict.fromkeys(level_name(level) for level in register_levels))
        self.register_blocks = nn.ModuleDict(
            {name: RegisterBlock(level_width(channels, name), register_dim, heads)
             for name in names})

    def register_planes(self, clip: torch.Tensor) -> torch.Tensor:
        """Input mode: (B, C, T, H, W) clip -> (B, N, T, H, W) register channels.

        Channel i over the N temporal slots holds the N values projected from token i; the
        slots are stretched (nearest) over the clip's frames and every pixel."""
        batch, _, frames, height, width = clip.shape
        slots = self.register_to_slots(self.registers)[None, :, :, None, None]  # (1, N, N, 1, 1)
        planes = F.interpolate(slots, size=(frames, height, width), mode="nearest")
        return planes.expand(batch, -1, -1, -1, -1)

    def forward(self, x: torch.Tensor, return_registers: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Clip (B, 3, T, H, W) -> logits (B, 1, T, H, W); with `return_registers`, also the
        registers (B, N, d): the updated, input-dependent states in attention mode, the static
        tokens in input mode (d = 0 columns when N = 0)."""
        batch = x.shape[0]
        if self.num_registers == 0:
            logits, state = super().forward(x), x.new_zeros(batch, 0, 0)
        elif self.register_mode == "input":
            logits = super().forward(torch.cat([x, self.register_planes(x)], dim=1))
            state = self.registers.expand(batch, -1, -1)
        else:
            logits, state = self._forward_attention(x)
        return (logits, state) if return_registers else logits

    def _forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention mode: (B, 3, T, H, W) -> (logits (B, 1, T, H, W), registers (B, N, 4w))."""
        state = self.registers.expand(x.shape[0], -1, -1)

        def visit(level: str, features: torch.Tensor) -> torch.Tensor:
            nonlocal state
            if level not in self.register_blocks:
                return features
            features, state = self.register_blocks[level](features, state)
            return features

        skips, bottleneck = self.encode(x, visit)
        return self.decode(bottleneck, skips, visit), state


def build_saliency_model(channels: int = 64, registers: int = 4,
                         register_mode: str = "attention",
                         register_levels: Sequence[str | int] = ("bottleneck",),
                         heads: int = 4) -> nn.Module:
    """The saliency network for these constructor arguments (plain JSON values, as stored in
    checkpoints): UNet3D when registers == 0, else RegisterUNet3D."""
    if registers == 0:
        return UNet3D(channels)
    return RegisterUNet3D(channels, registers, register_mode, list(register_levels), heads)


# ----------------------------------------------------------------------------- inference helpers
# Shared by inference_sal.py and evaluate_vqa.py; they need nothing but torch.

# The option and its default are precision.py's (precision.PRECISIONS, resolve_precision);
# network files import no precision.py, so the names are repeated here for the weights alone.
WEIGHT_PRECISIONS = ("fp32", "bf16")
NORMALISATIONS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def weights_precision(model: nn.Module) -> str:
    """"bf16" for a model prepared with bf16 weights (`to_precision`), else "fp32"."""
    return "bf16" if any(p.dtype == torch.bfloat16 for p in model.parameters()) else "fp32"


def weights_autocast(model: nn.Module, device: torch.device | str
                     ) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`'s type for a model with bf16 weights, nothing otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=weights_precision(model) == "bf16")


def to_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` (changed in place) with the weights of everything but its normalisation layers
    in bf16 for "bf16"; it is then run under `weights_autocast`. Casting once pays on the
    CPU, where autocast re-casts fp32 weights on every call (4x slower, measured); the
    normalisation layers keep fp32 statistics, as under plain autocast."""
    if precision not in WEIGHT_PRECISIONS:
        raise ValueError(f"precision must be one of {WEIGHT_PRECISIONS}, not {precision!r}")
    if precision == "bf16":
        for module in model.modules():
            if not isinstance(module, NORMALISATIONS):
                for param in module.parameters(recurse=False):
                    param.data = param.data.to(torch.bfloat16)
    return model


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
    """Saliency maps as stored on disk (SPEC section 7): sigmoid, then min-max per frame, then
    x255.

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
    device = torch.device(device)
    x = clips.to(device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W): the network's layout
    with torch.inference_mode(), weights_autocast(model, device):
        logits = model(x)[:, 0].float()  # (B, T, H, W)
        if size is not None and tuple(size) != tuple(logits.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        maps = torch.sigmoid(torch.log_softmax(logits.flatten(-2), dim=-1)).view_as(logits)
        low = maps.amin(dim=(-2, -1), keepdim=True)
        span = maps.amax(dim=(-2, -1), keepdim=True) - low
        maps = (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny)
        maps = maps.mul_(255).round_().to(torch.uint8)
        return maps if on_device else maps.cpu()
