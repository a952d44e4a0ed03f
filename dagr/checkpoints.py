"""Checkpoints and the shared model file: everything that writes or reads trained weights.

Training checkpoints (design.md, section 10) are one torch.save file each, written atomically:
the network's constructor arguments and state dict, the optimizer, scheduler and random
states, the finished epochs, the validation metrics and the run's settings. They load with
`torch.load(weights_only=True)` only: a file that holds any other object is refused before
that object is built, so a crafted file runs no code.

The shared model file (`evaluate_vqa.py --export`) is a safetensors file: the quality network's
weights under `quality.`, the saliency network's under `saliency.` (may be left out when the
quality model has saliency alpha 0), no optimizer state, and one metadata entry, `dagr_vqa`, a
JSON string:

    {"format": "dagr-vqa-model", "format_version": 1, "precision": "fp32" | "bf16",
     "quality": {"model_kwargs", "frame_size": [H, W], "frames_per_clip", "saliency_alpha",
                 "mos_scale": {"low", "high"}, "settings", "epoch", "metrics", "trained_on"},
     "saliency": null | {"model_kwargs", "settings", "epoch", "metrics", "trained_on"}}

Loading it reads no pickle and runs nothing from the file: the networks are built from the
metadata's constructor arguments by the networks' own builders, and every tensor must match
the built network's name and shape. Any problem is one ValueError naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dagr.failures import first_line
from dagr.files import atomic_path
from dagr.precision import NORMALISATIONS
from dagr.provenance import TRAINED_ON
from dagr.seeding import rng_state, set_rng_state
from sal_withreg import build_saliency_model
from VQA import QualityNet, build_quality_model


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



# ----------------------------------------------------------------------------- the shared model file

FORMAT = "dagr-vqa-model"
FORMAT_VERSION = 1
METADATA_KEY = "dagr_vqa"
PREFIXES = {"quality": "quality.", "saliency": "saliency."}
STORAGE = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ModelFile:
    """An exported model file, given where a checkpoint path could be (`load_quality`,
    `load_saliency`), so that a path is never guessed to be one or the other."""
    path: str | os.PathLike


@dataclass(frozen=True)
class QualityPart:
    """What scoring needs of the quality side: the network (eval mode, CPU), the training
    MOS scale {low, high}, the frame size (H, W), and the frames per clip (None when the
    source, a training checkpoint, does not say)."""
    model: QualityNet
    mos_scale: dict[str, float]
    frame_size: tuple[int, int]
    frames_per_clip: int | None
    trained_on: dict[str, Any] | None = None  # provenance.trained_on's record, if stored


Source = str | os.PathLike | ModelFile


# ----------------------------------------------------------------------------- networks

def _build(kind: str, kwargs: Any) -> nn.Module:
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
    write-back (at the levels they read, once called `register_levels`)."""
    if "register_write" in kwargs:
        return kwargs
    old = dict(kwargs, register_write="token")
    if "register_levels" in old:
        old["read_levels"] = old.pop("register_levels")
    return old


def _fill(model: nn.Module, state: dict[str, torch.Tensor], kind: str) -> nn.Module:
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
        model = _fill(_build(kind, payload.get("model_kwargs")), payload["model_state"], kind)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return model, payload


def load_quality(source: Source) -> QualityPart:
    """The quality side of a training checkpoint (a path) or of a `ModelFile`."""
    if isinstance(source, ModelFile):
        meta, tensors = read_model_file(source.path, ["quality"])
        part = meta["quality"]
        model = _network(source.path, "quality", part["model_kwargs"], tensors)
        return QualityPart(model, *_scale_and_size(source.path, part), part["frames_per_clip"],
                           part.get(TRAINED_ON))
    model, payload = checkpoint_network(source, "quality")
    return QualityPart(model, *_scale_and_size(source, payload), None, payload.get(TRAINED_ON))


def _scale_and_size(path: str | os.PathLike, payload: dict[str, Any]
                    ) -> tuple[dict[str, float], tuple[int, int]]:
    """The MOS scale {low, high} and frame size (H, W) of a quality checkpoint's payload (or
    of a model file's quality metadata)."""
    try:
        scale = {"low": float(payload["mos_scale"]["low"]),
                 "high": float(payload["mos_scale"]["high"])}
        size = tuple(int(n) for n in payload["frame_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a usable quality checkpoint (no mos_scale and "
                         f"frame_size: {err!r})") from err
    return scale, size


def load_saliency(source: Source) -> tuple[nn.Module, dict[str, Any]]:
    """(saliency network in eval mode on the CPU, its training settings) of a training
    checkpoint (a path) or of a `ModelFile`."""
    if isinstance(source, ModelFile):
        meta, tensors = read_model_file(source.path, ["saliency"])
        if meta["saliency"] is None:
            raise ValueError(f"{source.path}: holds no saliency network (its quality model "
                             "has saliency alpha 0)")
        part = meta["saliency"]
        network = _network(source.path, "saliency", part["model_kwargs"], tensors)
        return network, part.get("settings") or {}
    model, payload = checkpoint_network(source, "saliency")
    return model, payload.get("settings") or {}


def frames_per_clip(source: Source) -> int | None:
    """The frames per video an exported model file scores with; None for a checkpoint."""
    if isinstance(source, ModelFile):
        return read_model_file(source.path, parts=())[0]["quality"]["frames_per_clip"]
    return None


def _network(path: Path, kind: str, kwargs: Any, tensors: dict[str, torch.Tensor]) -> nn.Module:
    prefix = PREFIXES[kind]
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        return _fill(_build(kind, kwargs), state, kind)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


# ----------------------------------------------------------------------------- export

def export_model(out: str | os.PathLike, quality_checkpoint: str | os.PathLike,
                 saliency_checkpoint: str | os.PathLike | None = None, precision: str = "fp32",
                 clip_frames: int = 8) -> Path:
    """Write the scoring model of two training checkpoints as one safetensors file `out`
    (atomically). `precision` "bf16" stores the weights of all but the normalisation layers
    in bf16, as `sal_withreg.to_precision` runs them (about half the size). The saliency
    checkpoint may be left out when the quality model's saliency alpha is 0. Returns `out`."""
    if precision not in STORAGE:
        raise ValueError(f"precision must be one of {sorted(STORAGE)}, not {precision!r}")
    quality, payload = checkpoint_network(quality_checkpoint, "quality")
    if quality.saliency_alpha > 0 and saliency_checkpoint is None:
        raise ValueError(f"{quality_checkpoint}: the quality model weights frames by saliency "
                         f"(alpha {quality.saliency_alpha}): give --saliency-checkpoint")
    scale, size = _scale_and_size(quality_checkpoint, payload)
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "precision": precision,
        "quality": {"model_kwargs": {**quality.config, "weights": None},
                    "frame_size": list(size), "frames_per_clip": int(clip_frames),
                    "saliency_alpha": quality.saliency_alpha, "mos_scale": scale,
                    **_provenance(payload)},
        "saliency": None}
    tensors = _stored(quality, "quality", precision)
    if saliency_checkpoint is not None:  # kept with alpha 0 too: inference_sal draws its maps
        saliency, sal_payload = checkpoint_network(saliency_checkpoint, "saliency")
        meta["saliency"] = {"model_kwargs": sal_payload["model_kwargs"], **_provenance(sal_payload)}
        tensors |= _stored(saliency, "saliency", precision)
    with atomic_path(out) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta, default=str)})
    return Path(out)


def _provenance(payload: dict[str, Any]) -> dict[str, Any]:
    """The training settings, finished epochs, validation metrics and training data
    (provenance.trained_on) of a checkpoint."""
    return {"settings": payload.get("settings") or {}, "epoch": payload.get("epoch"),
            "metrics": payload.get("metrics") or {}, TRAINED_ON: payload.get(TRAINED_ON)}


def _stored(model: nn.Module, kind: str, precision: str) -> dict[str, torch.Tensor]:
    """`model`'s state under its prefix; for bf16, the floating-point parameters of all
    but the normalisation layers in bf16 (buffers such as BatchNorm statistics stay fp32)."""
    low = {f"{name}.{p}" if name else p
           for name, module in model.named_modules() if not isinstance(module, NORMALISATIONS)
           for p, _ in module.named_parameters(recurse=False)}
    out = {}
    for key, tensor in model.state_dict().items():
        if precision != "fp32" and key in low and tensor.is_floating_point():
            tensor = tensor.to(STORAGE[precision])
        out[PREFIXES[kind] + key] = tensor.detach().contiguous().clone()
    return out


# ----------------------------------------------------------------------------- reading

def read_model_file(path: str | os.PathLike, parts: Sequence[str] = tuple(PREFIXES)
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(checked metadata, the tensors of `parts`: "quality", "saliency") of an exported model
    file; ValueError naming the file when it is missing, damaged, of a newer format version, holds
    tensors of a network it does not describe, or is not such a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
            meta = _checked_metadata(path, text)
            described = tuple(PREFIXES[kind] for kind in PREFIXES if meta[kind] is not None)
            stray = [key for key in handle.keys() if not key.startswith(described)]
            if stray:
                raise ValueError(f"{path}: holds tensors of no network it describes ({stray[0]})")
            wanted = tuple(PREFIXES[part] for part in parts)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()
                       if key.startswith(wanted)}
    except ValueError:
        raise
    except Exception as err:  # safetensors reports every damage as SafetensorError
        lines = str(err).strip().splitlines()
        raise ValueError(f"{path}: not a readable safetensors model file "
                         f"({lines[0] if lines else type(err).__name__})") from err
    return meta, tensors


def _checked_metadata(path: Path, text: str | None) -> dict[str, Any]:
    """The parsed `dagr_vqa` metadata, with the fields loading relies on checked."""
    if text is None:
        raise ValueError(f"{path}: not a DAGR-VQA model file (no {METADATA_KEY} metadata; "
                         "write one with evaluate_vqa.py --export)")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its {METADATA_KEY} metadata is not JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a DAGR-VQA model file (metadata format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: its format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written in format version {version}, by a newer DAGR-VQA; "
                         f"this one reads versions up to {FORMAT_VERSION}: update the project")
    try:
        _check_parts(meta)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: its metadata is incomplete or wrong ({err})") from err
    return meta


def _check_parts(meta: dict[str, Any]) -> None:
    quality = meta["quality"]
    if not isinstance(quality["model_kwargs"], dict):
        raise ValueError("quality model_kwargs is not a table")
    size, frames, scale = quality["frame_size"], quality["frames_per_clip"], quality["mos_scale"]
    if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"frame_size {size!r} is not [H, W]")
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames_per_clip {frames!r} is not a positive whole number")
    if not float(scale["low"]) < float(scale["high"]):
        raise ValueError(f"mos_scale {scale!r} does not have low < high")
    alpha = quality["model_kwargs"].get("saliency_alpha")
    if quality["saliency_alpha"] != alpha:
        raise ValueError(f"saliency_alpha {quality['saliency_alpha']!r} differs from the "
                         f"model's {alpha!r}")
    saliency = meta["saliency"]
    if saliency is None:
        if alpha:
            raise ValueError(f"saliency alpha is {alpha} but it holds no saliency network")
    elif not isinstance(saliency["model_kwargs"], dict):
        raise ValueError("saliency model_kwargs is not a table")
    elif not isinstance(saliency.get("settings") or {}, dict):
        raise ValueError("saliency settings is not a table")
