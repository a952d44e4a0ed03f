"""Precision and compile: the one bf16/fp32 policy every script follows (default per device,
native bf16 detection on the CPU, the --precision and --compile options, autocast, the bf16
backward guard), inference weights cast to bf16 once, and torch.compile.

Imports no project module.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn


# The one policy every script follows (docs/precision.md): bf16
# autocast by default on CUDA, fp32 on the CPU; bf16 on the CPU too when asked, which runs
# natively only where the CPU has bf16 instructions (AVX512-BF16 or AMX) and is emulated, and
# slow, elsewhere.

PRECISIONS = ("fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 hardware
_EMULATION_WARNED = []
COMPILE_BACKEND_VARIABLE = "DAGR_COMPILE_BACKEND"


def default_precision(device: torch.device | str) -> str:
    """bf16 on CUDA, fp32 elsewhere."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """`precision` checked, or the device's default when None; says once on stderr when bf16
    is asked for on a CPU without native bf16."""
    precision = precision or default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if (precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16()
            and not _EMULATION_WARNED):
        _EMULATION_WARNED.append(True)
        print("note: this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated "
              "and much slower than fp32", file=sys.stderr)
    return precision


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(flags: set[str], capability: str) -> bool:
    """Whether a CPU with these /proc/cpuinfo `flags` and this
    torch.backends.cpu.get_cpu_capability() runs bf16 natively: the flags decide where they
    are known; without them (no /proc/cpuinfo), PyTorch's AMX kernels tell."""
    if flags:
        return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return "AMX" in capability.upper()


def cpu_has_native_bf16() -> bool:
    """`native_bf16` of this machine's CPU."""
    return native_bf16(cpu_flags(), torch.backends.cpu.get_cpu_capability())


def native_precisions(device: torch.device | str) -> tuple[list[str], dict[str, str]]:
    """(precisions `device` runs natively, {skipped precision: why}): every one on CUDA; on
    the CPU bf16 only where it has bf16 instructions."""
    if torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        return ["fp32"], {"bf16": "no AVX512-BF16 or AMX on this CPU: bf16 would be emulated "
                                  "(ask for it with --precisions fp32 bf16)"}
    return list(PRECISIONS), {}


def add_precision_arguments(parser: argparse.ArgumentParser, what: str = "the networks") -> None:
    """The `--precision` and `--compile` options every script takes the same way."""
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="bf16 (autocast) or fp32 (default: bf16 on CUDA, fp32 on the CPU; "
                             "on a CPU, bf16 pays only where it has AVX512-BF16 or AMX, see "
                             "docs/precision.md)")
    parser.add_argument("--compile", action="store_true",
                        help=f"torch.compile {what} (the first batches then take a while; pays "
                             "on GPUs for long runs)")


def precision_autocast(device: torch.device | str, precision: str
                       ) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`'s type for "bf16", nothing for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def bf16_backward_guard(device: torch.device | str, precision: str
                        ) -> contextlib.AbstractContextManager:
    """Wrap a backward pass of a network with Conv3d: on the CPU in bf16, oneDNN is switched
    off so that PyTorch's own kernels compute it. oneDNN's bf16 Conv3d weight gradient is
    sometimes NaN for inputs of depth 2 (torch 2.14.1 on an AVX512-BF16 CPU: about one call in
    three; seen in tests/test_precision.py), and the UNet3D's deeper levels always have such
    inputs. Nothing changes elsewhere."""
    if torch.device(device).type == "cpu" and precision == "bf16":
        return _without_onednn()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _without_onednn() -> Iterator[None]:
    with warnings.catch_warnings():
        # switching the flags re-sets oneDNN's TF32 option, which warns on every CPU build
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def compile_model(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when `enabled`, else `model`; `unwrap` and `plain_state_dict`
    see through it, so checkpoints load into a plain model. The backend is inductor unless the
    environment variable COMPILE_BACKEND_VARIABLE names another (the CPU check uses
    "aot_eager": the same graph capture and autograd tracing without inductor's C++ code
    generation, which takes minutes per network on a 2-core CPU)."""
    if not enabled:
        return model
    return torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_VARIABLE, "inductor"))


# ----------------------------------------------------------------------------- inference weights

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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "bf16":
        for module in model.modules():
            if not isinstance(module, NORMALISATIONS):
                for param in module.parameters(recurse=False):
                    param.data = param.data.to(torch.bfloat16)
    return model
