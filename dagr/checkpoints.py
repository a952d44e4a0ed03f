"""Training checkpoints, and the networks they describe.

Training checkpoints (design.md, section 10) are one torch.save file each, written atomically:
the network's constructor arguments and state dict, the optimizer, scheduler and random
states, the finished epochs, the validation metrics and the run's settings. They load with
`torch.load(weights_only=True)` only: a file that holds any other object is refused before
that object is built, so a crafted file runs no code. A network is built from its stored
constructor arguments by the networks' own builders (`build_network`) and filled with weights
that must have its exact names and shapes (`fill_network`); the exported model file
(dagr/model_file.py) builds its networks the same way.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dagr.failures import first_line
from dagr.files import atomic_path
from dagr.seeding import rng_state, set_rng_state
from sal_withreg import build_saliency_model
from VQA import build_quality_model


# ----------------------------------------------------------------------------- training checkpoints

def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_epoch_checkpoints(best: str | os.PathLike, last: str | os.PathLike,
                           payload: dict[str, Any], improved: bool) -> None:
    """Save an epoch's checkpoint as `last`, and first as `best` when the epoch improved.

    Best before last: a crash in between resumes from the previous `last` and redoes the
    epoch. When both are written they are one file under two names (a hard link, or a copy
    where the file system has none), which halves the disk and the time a save takes; the
    next epoch replaces `last` with a new file and leaves `best` as it is.
    """
    if not improved:
        save_checkpoint(last, payload)
        return
    save_checkpoint(best, payload)
    with atomic_path(last) as tmp:
        try:
            os.link(best, tmp)
        except OSError:
            shutil.copyfile(best, tmp)


RESUME_STATE = ("optimizer_state", "scheduler_state", "rng_state")  # what only --resume reads


def slim_checkpoints(best: str | os.PathLike, last: str | os.PathLike) -> None:
    """At the end of a run that will not be resumed: rewrite `best` without RESUME_STATE
    (the optimizer's moments are twice the model's size) and remove `last`."""
    payload = load_checkpoint(best)
    save_checkpoint(best, {key: value for key, value in payload.items()
                           if key not in RESUME_STATE})
    Path(last).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with a clear error (naming the file) if
    it is not one, or, when `kind` is given ("saliency", "quality"), not one of that kind.

    Only tensors and plain values are unpickled (`weights_only=True`): a file that holds any
    other object is refused before that object is built, so a crafted file runs no code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = _load_plain(path, device)
    if not isinstance(payload, dict) or not isinstance(payload.get("model_state"), dict):
        raise ValueError(f"{path}: not a DAGR-VQA checkpoint (no model_state)")
    if not all(isinstance(v, torch.Tensor) for v in payload["model_state"].values()):
        raise ValueError(f"{path}: not a DAGR-VQA checkpoint (its model_state holds non-tensors)")
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"{path}: this is a {payload.get('kind')!r} checkpoint, not a {kind} "
                         "checkpoint")
    payload["model_state"] = plain_state_dict(payload["model_state"])
    return payload


def _load_plain(path: Path, device: torch.device | str) -> Any:
    """torch.load with weights_only=True; every failure becomes one ValueError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on a foreign pickle protocol
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # an instruction the safe unpickler does not take: not torch.save's
            raise ValueError(f"{path}: not a readable checkpoint (not written by torch.save, "
                             "or damaged)") from err
        raise ValueError(f"{path}: refused: it holds objects other than tensors and plain "
                         f"values ({found.group(1)}), which could run code when loaded; a "
                         "DAGR-VQA checkpoint holds none") from err
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({first_line(err)})") from err


RESUME_KEYS = ("optimizer_state", "rng_state", "epoch")


def resume_checkpoint(path: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The checkpoint a `--resume` run continues from, or None when there is none yet: a run
    stopped before its first checkpoint starts again from the beginning (and says so)."""
    if not Path(path).is_file():
        print(f"note: {path} does not exist yet; starting from the first epoch", file=sys.stderr)
        return None
    payload = load_checkpoint(path, "cpu", kind)
    missing = [k for k in RESUME_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: cannot resume from it: no {', '.join(missing)} (not a "
                         "training checkpoint)")
    return payload


def plain_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def training_payload(model: torch.nn.Module, model_kwargs: dict[str, Any],
                     optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
                     metrics: dict[str, float], settings: dict[str, Any],
                     **extra: Any) -> dict[str, Any]:
    """Everything a checkpoint holds (design.md, section 10): enough to rebuild the model with no
    other file, and to resume training exactly. `epoch` is the number of finished epochs.
    Tensors and plain values only (`plain_values`), so that it loads with weights_only; the
    model's state dict is kept as it is (its version metadata guides `load_state_dict`)."""
    return {"model_state": unwrap(model).state_dict(), **plain_values({
        "model_kwargs": model_kwargs, "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "rng_state": rng_state(), "epoch": epoch, "metrics": metrics, "settings": settings,
        **extra})}


def plain_values(value: Any) -> Any:
    """`value` with paths as strings and NumPy scalars and arrays as Python numbers and lists,
    through dicts, lists and tuples: what `torch.load(weights_only=True)` reads back."""
    if isinstance(value, dict):
        return {key: plain_values(item) for key, item in value.items()}
    if type(value) in (list, tuple):  # named tuples are left alone
        return type(value)(plain_values(item) for item in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def restore_training(payload: dict[str, Any], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any,
                     path: str | os.PathLike = "checkpoint") -> int:
    """Load a `training_payload` (read from `path`) into a live run; returns the epoch to
    continue from. ValueError naming `path` when it does not fit the run."""
    try:
        unwrap(model).load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        if scheduler is not None and payload.get("scheduler_state") is not None:
            scheduler.load_state_dict(payload["scheduler_state"])
        set_rng_state(payload["rng_state"])
        return int(payload["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot resume this run from it, it was written with other "
                         f"options ({first_line(err)})") from err


# ----------------------------------------------------------------------------- networks

def build_network(kind: str, kwargs: Any) -> nn.Module:
    """The untrained network of `kind` for constructor arguments `kwargs` (eval mode);
    ValueError when they are not arguments of that network."""
    if not isinstance(kwargs, dict):
        raise ValueError("its model_kwargs are not a table of constructor arguments")
    try:
        if kind == "quality":  # no backbone download: the weights come from the file
            return build_quality_model(**{**kwargs, "weights": None}).eval()
        return build_saliency_model(**saliency_arguments(kwargs)).eval()
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"its model_kwargs do not build the {kind} network ({err})") from err


def saliency_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments a saliency checkpoint's `model_kwargs` mean: those written
    before the registers' FiLM write-back name no `register_write` and describe the token
    write-back at the levels they read, once called `register_levels`, by default the
    bottleneck only."""
    if "register_write" in kwargs:
        return kwargs
    old = {key: value for key, value in kwargs.items() if key != "register_levels"}
    return dict(old, register_write="token",
                read_levels=kwargs.get("register_levels", ["bottleneck"]))


def fill_network(model: nn.Module, state: dict[str, torch.Tensor], kind: str) -> nn.Module:
    """`model` with the weights of `state`, which must have its exact names and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"its {kind} weights do not fit the network it describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"its {kind} weight {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                         f"the network needs {tuple(expected[wrong[0]].shape)}")
    model.load_state_dict(state)
    return model


def checkpoint_network(path: str | os.PathLike, kind: str) -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode on the CPU, checkpoint payload) of a training checkpoint of
    `kind` ("quality" or "saliency"). Raises ValueError naming the file for anything that
    is not such a checkpoint, FileNotFoundError when it is missing."""
    payload = load_checkpoint(path, "cpu", kind)
    try:
        model = fill_network(build_network(kind, payload.get("model_kwargs")), payload["model_state"], kind)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return model, payload
