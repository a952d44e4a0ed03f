"""The one device setting of every script: `cuda` when PyTorch sees a GPU, else `cpu`, and the
`--device` option that overrides it.

Imports no project module.
"""
from __future__ import annotations

import argparse

import torch

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The one `--device` option every script exposes."""
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"cuda, cuda:N or cpu (default: {DEFAULT_DEVICE})")


def pick_device(name: str | None = None) -> torch.device:
    """`cuda` when available else `cpu`; an explicit name wins, but asking for CUDA on a
    machine without it is an error rather than a silent fall-back."""
    device = torch.device(name or DEFAULT_DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
                         "use --device cpu")
    return device
