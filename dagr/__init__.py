"""DAGR-VQA's machinery: everything the paper's scripts at the repository root share.

`from dagr import load_model` scores videos from Python (dagr/api.py). The modules, one concern
each, are listed in docs/design.md.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # load_model pulls in torch and the networks; `import dagr.files` must not
    if name == "load_model":
        from dagr.api import load_model
        return load_model
    raise AttributeError(f"module 'dagr' has no attribute {name!r}")
