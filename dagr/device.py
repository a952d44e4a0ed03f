"""The one device setting of every script: `cuda` when PyTorch sees a GPU, else `cpu`, and the
`--device` option that overrides it. A device is checked when it is named (on the command
line: while the options are parsed, before any model loads), so that a typo or an absent GPU
costs one line, not a traceback after minutes of loading.

Imports no project module.
"""
from __future__ import annotations

import argparse
import sys

import torch

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EXIT_USAGE = 2  # argparse's status for a refused option
OPTION = "--device {}"   # how a command-line user names a device, for the messages
ARGUMENT = "device={!r}"  # how a Python caller does
KINDS = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)"}  # device types as users know them


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The one `--device` option every script that runs a network exposes."""
    parser.add_argument("--device", default=DEFAULT_DEVICE, type=device_option,
                        help="a PyTorch device present on this machine: cpu, cuda, cuda:N, mps "
                             f"(default: {DEFAULT_DEVICE})")


def device_option(name: str) -> str:
    """`--device`'s type: `name` when it names a device present here; otherwise one line on
    stderr and exit status 2 (argparse's own error would add the whole usage text)."""
    try:
        check_device(name, OPTION)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    return name


def pick_device(name: str | torch.device | None = None, spelling: str = OPTION) -> torch.device:
    """`cuda` when available else `cpu`; an explicit name wins, but asking for a device that
    is not here is an error (`check_device`) rather than a silent fall-back."""
    return check_device(DEFAULT_DEVICE if name is None else name, spelling)


def check_device(name: str | torch.device, spelling: str) -> torch.device:
    """The torch.device `name`. Raises ValueError when PyTorch does not parse it, RuntimeError
    when no such device is present here (a GPU index beyond those PyTorch sees included),
    each one line naming the setting as `spelling` (OPTION or ARGUMENT) writes it."""
    asked = spelling.format(str(name))
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:  # PyTorch's wording lists every backend it knows
        raise ValueError(f"{asked}: not a device name PyTorch knows (cpu, cuda, cuda:N, mps, "
                         "...)") from err
    count, kind = present_devices(device.type), KINDS.get(device.type, f"{device.type} device")
    if count == 0:
        raise RuntimeError(f"{asked}: PyTorch sees no {kind} on this machine; use "
                           f"{spelling.format('cpu')}")
    if device.index is not None and device.index >= count:
        raise RuntimeError(f"{asked}: PyTorch sees {count} {kind}(s) here, numbered from "
                           f"{device.type}:0 to {device.type}:{count - 1}")
    return device


def present_devices(kind: str) -> int:
    """How many devices of type `kind` ("cpu", "cuda", "mps", "xpu", ...) PyTorch can use
    here: 0 for a backend that this build lacks or that finds no device."""
    if kind == "cpu":
        return 1
    if kind == "mps":  # Apple GPUs: one at most, and torch.mps has no is_available
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)
    if backend is None or not callable(getattr(backend, "is_available", None)):
        return 0  # meta, hpu, ...: nothing a script can run its networks on here
    return backend.device_count() if backend.is_available() else 0
