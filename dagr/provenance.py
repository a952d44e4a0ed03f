"""What a model was trained on: the trainers store it in their checkpoints, and scoring tells
the user when the model has seen too little, or only synthetic, data to be trusted on real
videos; every scores file gets a sidecar (`scores_meta`, `write_scores_meta`) that says which
model wrote it, what that model was trained on, and on which scale its scores are.

A dataset folder holding SYNTHETIC_MARKER (demo_data.py leaves one in each set it writes) is
synthetic. The record stored in a checkpoint is plain types only (a string, an int, a bool),
so that it loads with `torch.load(..., weights_only=True)`.

Imports only dagr/files.py and dagr/outputs.py (the sidecar's name) of the project.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dagr.files import atomic_path
from dagr.outputs import sidecar_file

SYNTHETIC_MARKER = "SYNTHETIC_DATA.txt"  # in a dataset folder: its videos are generated
MIN_TRUSTED_VIDEOS = 300  # fewer training videos than this: scores are a rough guide at best
TRAINED_ON = "trained_on"  # the checkpoint key of the record
META_FORMAT = "dagr-vqa-scores"  # the sidecar's "format", with META_VERSION
META_VERSION = 1


def mark_synthetic(folder: str | os.PathLike, what: str) -> Path:
    """Leave SYNTHETIC_MARKER in `folder` with a line saying what wrote the data there."""
    path = Path(folder) / SYNTHETIC_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{what}\nModels trained on this data have seen no real video.\n")
    return path


def is_synthetic(folder: str | os.PathLike) -> bool:
    """Whether `folder` (a dataset's root, or the folder of its label file) is marked synthetic."""
    return (Path(folder) / SYNTHETIC_MARKER).is_file()


def trained_on(dataset: str, videos: int, folder: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint record: the dataset's name, its number of training videos, and whether
    its folder is marked synthetic."""
    return {"dataset": str(dataset), "videos": int(videos), "synthetic": is_synthetic(folder)}


def training_note(payload: dict[str, Any], checkpoint: str | os.PathLike) -> str | None:
    """One plain line when the checkpoint's model was trained on synthetic data or on fewer
    than MIN_TRUSTED_VIDEOS videos; None otherwise (and for checkpoints with no record)."""
    record = payload.get(TRAINED_ON)
    if not isinstance(record, dict):
        return None
    videos, dataset = record.get("videos", 0), record.get("dataset", "?")
    if record.get("synthetic"):
        return (f"note: {checkpoint} was trained on synthetic demo data ({videos} generated "
                f"clips in the {dataset} layout), not on real videos: its scores say nothing "
                "about the quality of real videos")
    if videos < MIN_TRUSTED_VIDEOS:
        return (f"note: {checkpoint} was trained on only {videos} {dataset} videos (fewer than "
                f"{MIN_TRUSTED_VIDEOS}): treat its scores as a rough guide at best")
    return None


def training_data(record: dict[str, Any] | None) -> str:
    """What a checkpoint's record says the model was trained on, in words."""
    if not isinstance(record, dict):
        return "unknown (the model stores no record of its training data)"
    dataset, videos = record.get("dataset", "?"), record.get("videos", "?")
    if record.get("synthetic"):
        return f"synthetic demo data ({videos} generated clips in the {dataset} layout)"
    return f"{dataset} ({videos} training videos)"


def scores_meta(mos_range: tuple[float, float], record: dict[str, Any] | None,
                model: dict[str, str]) -> dict[str, Any]:
    """The description of a model's scores that travels with them (docs/scoring.md, "The
    sidecar file"): the training MOS range (low, high), the training data (`record`:
    `trained_on`'s), the files of the model (`model`: {"model_file": path} or the two
    checkpoints, paths made absolute) and what the `score` column means."""
    low, high = map(float, mos_range)
    return {"format": META_FORMAT, "format_version": META_VERSION,
            "score_column": (f"score: the video's predicted mean opinion score (MOS) on the "
                             f"scale of the model's training data, {low:g} (worst) to {high:g} "
                             "(best); a score may fall a little outside that range"),
            "mos_range": [low, high],
            "trained_on": training_data(record),
            "training_record": record if isinstance(record, dict) else None,
            "model": {name: str(Path(path).resolve()) for name, path in model.items()}}


def write_scores_meta(scores_file: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write `meta` (`scores_meta`'s) as JSON beside `scores_file`, atomically; returns its path."""
    path = sidecar_file(scores_file)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path
