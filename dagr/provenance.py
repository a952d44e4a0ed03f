"""What a model was trained on: the trainers store it in their checkpoints, and scoring tells
the user when the model has seen too little, or only synthetic, data to be trusted on real
videos.

A dataset folder holding SYNTHETIC_MARKER (demo_data.py leaves one in each set it writes) is
synthetic. The record stored in a checkpoint is plain types only (a string, an int, a bool),
so that it loads with `torch.load(..., weights_only=True)`.

Imports no other project file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SYNTHETIC_MARKER = "SYNTHETIC_DATA.txt"  # in a dataset folder: its videos are generated
MIN_TRUSTED_VIDEOS = 300  # fewer training videos than this: scores are a rough guide at best
TRAINED_ON = "trained_on"  # the checkpoint key of the record


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
