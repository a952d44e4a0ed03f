"""The shared model file (`evaluate_vqa.py --export`): writing it, reading it, and loading the
scoring networks from it or from training checkpoints.

The model file is a safetensors file: the quality network's weights under `quality.`, the
saliency network's under `saliency.` (may be left out when the quality model has saliency
alpha 0), no optimizer state, and one metadata entry, `dagr_vqa`, a JSON string:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dagr.checkpoints import build_network, checkpoint_network, fill_network
from dagr.files import atomic_path
from dagr.precision import NORMALISATIONS
from dagr.provenance import TRAINED_ON
from VQA import QualityNet


FORMAT = "dagr-vqa-model"
FORMAT_VERSION = 1
METADATA_KEY = "dagr_vqa"
PREFIXES = {"quality": "quality.", "saliency": "saliency."}
# How torch.save's files start: a zip archive (the format since PyTorch 1.6), or a pickle
# (protocol 2 to 5, the legacy format). A safetensors file starts with its header's length.
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
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


# ----------------------------------------------------------------------------- loading

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
        return fill_network(build_network(kind, kwargs), state, kind)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


# ----------------------------------------------------------------------------- export

def export_model(out: str | os.PathLike, quality_checkpoint: str | os.PathLike,
                 saliency_checkpoint: str | os.PathLike | None = None, precision: str = "fp32",
                 clip_frames: int = 8) -> Path:
    """Write the scoring model of two training checkpoints as one safetensors file `out`
    (atomically). `precision` "bf16" stores the weights of all but the normalisation layers
    in bf16, as `dagr.precision.to_precision` runs them (about half the size). The saliency
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
    if is_training_checkpoint(path):
        raise ValueError(f"{path}: this is a training checkpoint (written by torch.save), not "
                         "an exported model file: give it with --checkpoint (or export a model "
                         "file from it with evaluate_vqa.py --export)")
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


def is_training_checkpoint(path: Path) -> bool:
    """Whether the file `path` starts as torch.save's files do (CHECKPOINT_MAGIC)."""
    with open(path, "rb") as handle:
        return handle.read(4).startswith(CHECKPOINT_MAGIC)


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
