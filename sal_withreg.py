"""UNet3D with learnable register tokens (design.md, section 4): the saliency network of DAGR-VQA.

N registers are tokens that gather context from the whole clip and hand it back to every
pixel. Two ways to use them, chosen by `register_mode`:

- "attention" (default): registers are global context carriers.
  Read: at each of `read_levels` the feature map (B, C, T', H', W') becomes L = T'H'W' tokens
  plus a 3D sinusoidal position code, and the registers attend to all of them (pre-norm
  cross-attention, residual, then an MLP with residual): each gathers clip-wide context, at
  a cost linear in L. One register state flows through the levels in call order (encoder,
  bottleneck, decoder).
  The "rgb" read (default, `ColourRead`) gathers the clip's colours: at enc1 the registers
  attend where enc1's features point (keys) and take in what colour is there (values: each
  pixel's colour embedded on its own). It writes back a global colour contrast at dec1: each
  position's distance from the colour each register gathered. The encoder keeps only what
  the baseline needs, which can merge colours (red and magenta look alike at enc1); without
  the contrast, every design tried learned one split of the colours and stopped at CC 0.8 on
  the global-context check (docs/registers.md).
  Write, `register_write`:
  - "mix" (default): at each of `write_levels` every position adds a small MLP of its own
    features and all registers (`MixWrite`): each position compares what it holds with the
    clip-wide context. On the global-context check it learns the comparison on seeds where
    FiLM never does (docs/registers.md).
  - "film": at each of `write_levels` every feature channel is scaled by 1 + tanh(g), with
    the gains g (B, C) a linear function of all registers (feature-wise linear modulation):
    the clip's context turns whole feature channels up or down everywhere (the ablation's
    "attention FiLM" variant, the design before mix).
  - "token": at each read level every feature token attends to the updated registers and adds
    the result back (the ablation's "attention token-write" variant, the first design).
  Every write starts at zero (MLP output 0, gains 0, output projection 0), so a fresh model
  computes exactly what the baseline computes.
- "input" (the original code's design): N tokens of dimension 64 are projected to N values
  each, laid out over N temporal slots, stretched (nearest) over (T, H, W) and concatenated to
  the RGB channels. They do not depend on the video: in effect a learned, time-slot-dependent
  bias of the first convolution.

registers = 0 is exactly the baseline: same modules, same state-dict keys, same output.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sal_withoutreg import DEPTH, UNet3D

REGISTER_MODES = ("attention", "input")
REGISTER_WRITES = ("mix", "film", "token")
READ_LEVELS = ("rgb", "bottleneck")
COLOUR_DEPTH = 1  # the "rgb" read: keys from enc1, colours pooled onto its grid, contrast at dec1
WRITE_LEVELS = tuple(f"dec{i}" for i in reversed(range(DEPTH)))  # every decoder level
INPUT_TOKEN_DIM = 64  # token width of the original input-mode design
MLP_RATIO = 4


def level_name(level: str | int) -> str:
    """Canonical level name: "rgb", "bottleneck", "enc{i}" or "dec{i}" (0 <= i < 4, 0 = full
    resolution); a bare integer i means the encoder level "enc{i}", whose output is also the
    skip the decoder receives. "rgb" is the clip's colours (`ColourRead`), which the
    registers read but no write-back level can name."""
    name = f"enc{level}" if isinstance(level, int) else level
    valid = {"rgb", "bottleneck"} | {f"{side}{i}" for side in ("enc", "dec") for i in range(DEPTH)}
    if name not in valid:
        raise ValueError(f"unknown register level {level!r}; use 'rgb', 'bottleneck', "
                         f"0-{DEPTH - 1}, 'enc0'-'enc{DEPTH - 1}' or 'dec0'-'dec{DEPTH - 1}'")
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


def positioned_tokens(features: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """(B, C, T, H, W) -> tokens (B, T*H*W, C), normalised by `norm`, plus their position code."""
    tokens = norm(features.flatten(2).transpose(1, 2))
    return tokens + position_code_3d(features.shape[2:], tokens.shape[-1],
                                     tokens.device).to(tokens.dtype)


def split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * e) -> (B, heads, L, e)."""
    return tokens.unflatten(-1, (heads, -1)).transpose(1, 2)


def register_mlp(register_dim: int) -> nn.Sequential:
    """The MLP each register passes through after a read (MLP_RATIO times wider inside)."""
    return nn.Sequential(nn.Linear(register_dim, MLP_RATIO * register_dim), nn.GELU(),
                         nn.Linear(MLP_RATIO * register_dim, register_dim))


def float32_context(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which autocast leaves `device`'s arithmetic alone (a no-op on devices
    without autocast, such as "meta", where FLOPs are counted)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def attention_weights(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product weights of queries (..., Lq, d) over keys (..., Lk, d) -> (..., Lq,
    Lk), each row summing to 1: what F.scaled_dot_product_attention mixes values with."""
    return torch.softmax(queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1]), dim=-1)


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

    def _heads(self, queries: torch.Tensor, context: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, heads, Lq, d), k and v (B, heads, Lk, d), d = inner_dim / heads."""
        key, value = self.to_key_value(context).chunk(2, dim=-1)
        return tuple(split_heads(t, self.heads) for t in (self.to_query(queries), key, value))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(queries, context)
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.out(mixed.transpose(1, 2).flatten(2))

    def weights(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The attention weights (B, heads, Lq, Lk) that `forward` mixes with: each query's
        row sums to 1."""
        q, k, _ = self._heads(queries, context)
        return attention_weights(q, k)


class RegisterBlock(nn.Module):
    """The registers (B, N, register_dim) read a feature map (B, feature_dim, T, H, W) and,
    with `token_write`, write back to it token by token; returns (features, registers) of the
    same shapes."""

    def __init__(self, feature_dim: int, register_dim: int, heads: int,
                 token_write: bool = False) -> None:
        super().__init__()
        self.norm_features = nn.LayerNorm(feature_dim)
        self.norm_read = nn.LayerNorm(register_dim)
        self.read = CrossAttention(register_dim, feature_dim, register_dim, heads)
        self.norm_mlp = nn.LayerNorm(register_dim)
        self.mlp = register_mlp(register_dim)
        if token_write:
            self.norm_write = nn.LayerNorm(register_dim)
            self.write = CrossAttention(feature_dim, register_dim, register_dim, heads)
            # a fresh block adds nothing to the features: the network starts as the baseline
            nn.init.zeros_(self.write.out.weight)
            nn.init.zeros_(self.write.out.bias)

    def tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> normalised tokens with their position code (B, T*H*W, C)."""
        return positioned_tokens(features, self.norm_features)

    def forward(self, features: torch.Tensor, registers: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokens(features)  # (B, L, C)
        registers = registers + self.read(self.norm_read(registers), tokens)
        registers = registers + self.mlp(self.norm_mlp(registers))
        if hasattr(self, "write"):
            update = self.write(tokens, self.norm_write(registers))  # (B, L, C)
            features = features + update.transpose(1, 2).reshape(features.shape)
        return features, registers

    def read_attention(self, features: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
        """Where each register looks when it reads `features`: (B, N, T, H, W), the read's
        attention weights averaged over its heads, summing to 1 over the (T, H, W) grid."""
        weights = self.read.weights(self.norm_read(registers), self.tokens(features))
        return weights.mean(dim=1).unflatten(-1, features.shape[2:])


class ColourRead(nn.Module):
    """The "rgb" read: registers (B, N, d) gather the clip's colours where deep features point,
    and write back each position's distance from what they gathered.

    Keys: the enc{COLOUR_DEPTH} features (B, C, T', H', W'), normalised, plus the position code.
    Values: each pixel's colour embedded on its own (a 1x1x1 convolution to `colour_dim`
    channels), pooled as the encoder pools onto the same grid, normalised, with no position:
    the registers learn where to look from what the network sees, and gather what colour is
    there. Contrast: for each register and head, the squared distance between a position's
    value and the value that head gathered, (B, heads * N, T', H', W'); a 1x1x1 convolution
    that starts at zero adds it to dec{COLOUR_DEPTH}'s features.
    """

    def __init__(self, in_channels: int, key_dim: int, colour_dim: int, feature_dim: int,
                 registers: int, register_dim: int, heads: int) -> None:
        super().__init__()
        if register_dim % heads:
            raise ValueError(f"attention width {register_dim} is not divisible by heads={heads}")
        self.heads = heads
        self.embed = nn.Conv3d(in_channels, colour_dim, 1)
        self.norm_keys = nn.LayerNorm(key_dim)
        self.norm_colours = nn.LayerNorm(colour_dim)
        self.norm_read = nn.LayerNorm(register_dim)
        self.to_query = nn.Linear(register_dim, register_dim)
        self.to_key = nn.Linear(key_dim, register_dim)
        self.to_value = nn.Linear(colour_dim, register_dim)
        self.out = nn.Linear(register_dim, register_dim)
        self.norm_mlp = nn.LayerNorm(register_dim)
        self.mlp = register_mlp(register_dim)
        self.contrast = nn.Conv3d(heads * registers, feature_dim, 1)
        nn.init.zeros_(self.contrast.weight)  # a fresh read adds nothing: the baseline
        nn.init.zeros_(self.contrast.bias)

    def colours(self, clip: torch.Tensor, pool: nn.Module) -> torch.Tensor:
        """Clip (B, 3, T, H, W) -> embedded colours on enc{COLOUR_DEPTH}'s grid (B, colour_dim,
        T', H', W'), pooled by the encoder's own `pool`."""
        colours = self.embed(clip)
        for _ in range(COLOUR_DEPTH):
            colours = pool(colours)
        return colours

    def _heads(self, features: torch.Tensor, colours: torch.Tensor, registers: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, heads, N, e), k and v (B, heads, L, e), L = T'H'W', e = d / heads."""
        keys = positioned_tokens(features, self.norm_keys)
        values = self.norm_colours(colours.flatten(2).transpose(1, 2))  # no position: colour only
        return tuple(split_heads(t, self.heads) for t in (
            self.to_query(self.norm_read(registers)), self.to_key(keys), self.to_value(values)))

    def forward(self, features: torch.Tensor, colours: torch.Tensor, registers: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """enc features (B, C, T', H', W'), `colours` of the same grid, registers (B, N, d)
        -> (updated registers (B, N, d), contrast (B, heads * N, T', H', W'))."""
        q, k, v = self._heads(features, colours, registers)
        gathered = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, e)
        registers = registers + self.out(gathered.transpose(1, 2).flatten(2))
        registers = registers + self.mlp(self.norm_mlp(registers))
        # |v - g|^2 without a (B, heads, N, L, e) difference tensor, in float32 even under
        # autocast: in bf16 the three terms' sum would lose the small distances it is there
        # to show
        with float32_context(v.device):
            v, gathered = v.float(), gathered.float()
            distance = (v.pow(2).sum(-1)[:, :, None] - 2 * gathered @ v.transpose(-2, -1)
                        + gathered.pow(2).sum(-1)[..., None]).clamp_min(0)  # (B, heads, N, L)
        distance = distance.flatten(1, 2).unflatten(-1, features.shape[2:])
        return registers, distance.to(features.dtype)

    def write(self, features: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """dec features (B, C, T', H', W') + the contrast mapped to C channels."""
        return features + self.contrast(contrast)

    def read_attention(self, features: torch.Tensor, colours: torch.Tensor,
                       registers: torch.Tensor) -> torch.Tensor:
        """Where each register looks: (B, N, T', H', W'), averaged over heads, summing to 1."""
        q, k, _ = self._heads(features, colours, registers)
        return attention_weights(q, k).mean(dim=1).unflatten(-1, features.shape[2:])


class FilmWrite(nn.Module):
    """Feature-wise gains from the registers: (B, C, T, H, W) features and (B, N, d) registers
    -> features * (1 + tanh(g)), g (B, C) a linear function of all N registers that starts at
    zero."""

    def __init__(self, feature_dim: int, registers: int, register_dim: int) -> None:
        super().__init__()
        self.gains = nn.Linear(registers * register_dim, feature_dim)
        nn.init.zeros_(self.gains.weight)
        nn.init.zeros_(self.gains.bias)

    def forward(self, features: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
        gains = torch.tanh(self.gains(registers.flatten(1)))  # (B, C)
        return features * (1 + gains[:, :, None, None, None])


class MixWrite(nn.Module):
    """Registers meet each position: (B, C, T, H, W) features and (B, N, d) registers ->
    features + W2 gelu(W1 x + U r), where x is a position's features, r all N registers
    flattened and W1, W2 1x1x1 convolutions through MLP_RATIO * C hidden channels. A position
    can so compare what it holds with what the registers gathered from the whole clip. W2
    starts at zero: a fresh write adds nothing."""

    def __init__(self, feature_dim: int, registers: int, register_dim: int) -> None:
        super().__init__()
        hidden = MLP_RATIO * feature_dim
        self.local = nn.Conv3d(feature_dim, hidden, 1)
        self.context = nn.Linear(registers * register_dim, hidden, bias=False)
        self.out = nn.Conv3d(hidden, feature_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
        context = self.context(registers.flatten(1))[:, :, None, None, None]  # (B, hidden, 1, 1, 1)
        return features + self.out(F.gelu(self.local(features) + context))


class RegisterUNet3D(UNet3D):
    """UNet3D with `registers` learnable tokens (see the module docstring for the modes).

    Attention mode: registers are (N, 4w); a RegisterBlock with `heads` heads reads at each of
    `read_levels` ("bottleneck", "enc{i}", "dec{i}" or an int i meaning "enc{i}"; "rgb": a
    ColourRead at enc1, which writes its colour contrast at dec1), and the
    registers write back by `register_write`: a MixWrite ("mix") or FilmWrite ("film") at
    each of `write_levels`, or in each RegisterBlock ("token").
    Input mode: registers are (N, 64) and the first convolution takes in_channels + N channels.
    """

    def __init__(self, channels: int = 64, registers: int = 4, register_mode: str = "attention",
                 read_levels: Sequence[str | int] = READ_LEVELS, heads: int = 4,
                 register_write: str = "mix", write_levels: Sequence[str | int] = WRITE_LEVELS,
                 in_channels: int = 3) -> None:
        if register_mode not in REGISTER_MODES:
            raise ValueError(f"register_mode must be one of {REGISTER_MODES}, "
                             f"not {register_mode!r}")
        if register_write not in REGISTER_WRITES:
            raise ValueError(f"register_write must be one of {REGISTER_WRITES}, "
                             f"not {register_write!r}")
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
        reads = list(dict.fromkeys(level_name(level) for level in read_levels))
        self.register_blocks = nn.ModuleDict(
            {name: RegisterBlock(level_width(channels, name), register_dim, heads,
                                 token_write=register_write == "token")
             for name in reads if name != "rgb"})
        if "rgb" in reads:
            width = level_width(channels, f"enc{COLOUR_DEPTH}")
            self.colour_read = ColourRead(in_channels, width, channels, width, registers,
                                          register_dim, heads)
        if register_write in WRITERS:
            writes = list(dict.fromkeys(level_name(level) for level in write_levels))
            if "rgb" in writes:
                raise ValueError("'rgb' is a read level: the registers write its colour "
                                 f"contrast at dec{COLOUR_DEPTH}; write_levels name features")
            # the name of the FiLM design, whose checkpoints hold these keys, for every write
            self.register_films = nn.ModuleDict(
                {name: WRITERS[register_write](level_width(channels, name), registers,
                                               register_dim) for name in writes})

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
            logits, state, _ = self._forward_attention(x)
        return (logits, state) if return_registers else logits

    def read_attention(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attention mode: where the registers look when they read a clip (B, 3, T, H, W):
        {read level: (B, N, T', H', W') weights summing to 1 over the level's grid}."""
        if self.register_mode != "attention" or self.num_registers == 0:
            raise ValueError("only attention-mode registers read the features")
        return self._forward_attention(x, watch=True)[2]

    def _forward_attention(self, x: torch.Tensor, watch: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Attention mode: (B, 3, T, H, W) -> (logits (B, 1, T, H, W), registers (B, N, 4w),
        and with `watch` each read level's attention weights (`read_attention`))."""
        state = self.registers.expand(x.shape[0], -1, -1)
        attention: dict[str, torch.Tensor] = {}
        films = getattr(self, "register_films", {})
        colour_read = getattr(self, "colour_read", None)
        colours = colour_read.colours(x, self.pool) if colour_read is not None else None
        contrast = None

        def visit(level: str, features: torch.Tensor) -> torch.Tensor:
            nonlocal state, contrast
            if colour_read is not None and level == f"enc{COLOUR_DEPTH}":
                if watch:
                    attention["rgb"] = colour_read.read_attention(features, colours, state)
                state, contrast = colour_read(features, colours, state)
            if colour_read is not None and level == f"dec{COLOUR_DEPTH}":
                features = colour_read.write(features, contrast)
            if level in self.register_blocks:
                if watch:
                    attention[level] = self.register_blocks[level].read_attention(features, state)
                features, state = self.register_blocks[level](features, state)
            if level in films:
                features = films[level](features, state)
            return features

        skips, bottleneck = self.encode(x, visit)
        return self.decode(bottleneck, skips, visit), state, attention


WRITERS = {"film": FilmWrite, "mix": MixWrite}  # writes at write_levels; "token" writes in the read


def build_saliency_model(channels: int = 64, registers: int = 4,
                         register_mode: str = "attention",
                         read_levels: Sequence[str | int] = READ_LEVELS, heads: int = 4,
                         register_write: str = "mix",
                         write_levels: Sequence[str | int] = WRITE_LEVELS) -> nn.Module:
    """The saliency network for these constructor arguments (plain JSON values, as stored in
    checkpoints): UNet3D when registers == 0, else RegisterUNet3D."""
    if registers == 0:
        return UNet3D(channels)
    return RegisterUNet3D(channels, registers, register_mode, list(read_levels), heads,
                          register_write, list(write_levels))
