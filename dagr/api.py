"""Scoring videos from Python:

    from dagr import load_model
    model = load_model("dagr.safetensors")            # or load_model("best.pt", "sal.pt")
    scores = model.score(["a.mp4", "b.mkv"])
    scores["a.mp4"], scores.mos_range, scores.failures

The numbers are those of `evaluate_vqa.py --videos` with the same model: both run
dagr/scoring.py's Scorer.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Sequence

import torch

from dagr.model_file import ModelFile, Source
from dagr.device import pick_device
from dagr.failures import Failure
from dagr.scoring import Scorer, load_scorer
from dagr.supervised import VIDEO_TIMEOUT, Supervision
from dagr.workers import default_workers

MODEL_FILE_SUFFIX = ".safetensors"  # an exported model file; anything else is a checkpoint


class Scores(Mapping):
    """Each scored video's score by the path it was given as (a Mapping), on the MOS scale of
    the model's training data: `mos_range` is (lowest, highest) MOS there, and scores may fall
    a little outside it. `failures` says why each video that could not be scored was not."""

    def __init__(self, scores: dict[str, float], mos_range: tuple[float, float],
                 failures: dict[str, Failure]):
        self._scores, self.mos_range, self.failures = scores, mos_range, failures

    def __getitem__(self, video: str | os.PathLike) -> float:
        return self._scores[str(video)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __repr__(self) -> str:
        low, high = self.mos_range
        shown = ", ".join(f"{Path(v).name}: {s:.3f}" for v, s in list(self._scores.items())[:3])
        more = ", ..." if len(self._scores) > 3 else ""
        failed = f"; {len(self.failures)} could not be read" if self.failures else ""
        return (f"<{len(self._scores)} score(s) on the training MOS scale {low:g} to {high:g} "
                f"({shown}{more}){failed}>")


class Model:
    """A trained DAGR-VQA model (both networks) ready to score video files."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    @property
    def mos_range(self) -> tuple[float, float]:
        """(lowest, highest) MOS of the training data: the scale the scores are on."""
        return self.scorer.scale.low, self.scorer.scale.high

    def score(self, videos: Sequence[str | os.PathLike], workers: int | None = None,
              progress: bool = False, timeout: float = VIDEO_TIMEOUT) -> Scores:
        """Scores of the video files `videos` (decoded by `workers` supervised processes;
        default: the cores, none for one video, which then decodes in this process). A video
        that cannot be read, or that crashes its decoding process or makes no progress for
        `timeout` seconds, is in `failures`, not an exception."""
        paths = [Path(video) for video in videos]
        workers = default_workers(len(paths)) if workers is None else workers
        values, failures = {}, {}
        for row in self.scorer.rows(paths, Supervision(workers, timeout), progress):
            if row["problem"]:
                failures[row["video"]] = Failure(row["kind"], row["problem"])
            else:
                values[row["video"]] = float(row["score"])
        ordered = {str(p): values[str(p)] for p in paths if str(p) in values}
        return Scores(ordered, self.mos_range, failures)


def load_model(model: str | os.PathLike, saliency: str | os.PathLike | None = None,
               device: str | torch.device | None = None, precision: str | None = None,
               batch_size: int = 16) -> Model:
    """The model of an exported file (`evaluate_vqa.py --export`, suffix .safetensors), or of
    a quality training checkpoint and the saliency checkpoint its weighting needs. `device`:
    cuda when available else cpu; `precision`: bf16 on CUDA, fp32 on the CPU. Raises
    FileNotFoundError or ValueError (naming the file) for anything that is not such a model."""
    device = pick_device(None if device is None else str(device))
    source: Source = ModelFile(model) if Path(model).suffix == MODEL_FILE_SUFFIX else model
    if isinstance(source, ModelFile):
        if saliency is not None:
            raise ValueError(f"{model}: a model file holds both networks; give no saliency "
                             "checkpoint with it")
        saliency = source
    return Model(load_scorer(source, saliency, device, precision, batch_size=batch_size))
