"""Scoring videos from Python:

    from dagr import load_model
    model = load_model("dagr.safetensors")            # or load_model("best.pt", "sal.pt")
    scores = model.score("my_videos/")                 # a file, a folder, or a list of them
    scores["my_videos/a.mp4"], scores.mos_range, scores.meta, scores.failures
    scores.to_csv("scores.csv")                        # and scores.meta.json beside it

The numbers are those of `evaluate_vqa.py --videos` with the same model: both run
dagr/scoring.py's Scorer, on the videos that dagr/video_io.py's find_videos finds. Mistakes
are exceptions worded with this API's argument names (FileNotFoundError, ValueError,
RuntimeError for a device that is not here); a video that cannot be read is not a mistake but
a failure, listed in `Scores.failures`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import torch

from dagr.model_file import ModelFile, Source
from dagr.device import ARGUMENT, pick_device
from dagr.failures import Failure
from dagr.provenance import write_scores_meta
from dagr.scoring import Scorer, load_scorer, write_scores
from dagr.supervised import VIDEO_TIMEOUT, Supervision
from dagr.video_io import find_videos
from dagr.workers import default_workers

MODEL_FILE_SUFFIX = ".safetensors"  # an exported model file; anything else is a checkpoint
Videos = str | os.PathLike | Iterable[str | os.PathLike]  # what score() takes


class Scores(Mapping):
    """Each scored video's score by its path (a Mapping), on the MOS scale of the model's
    training data: `mos_range` is (lowest, highest) MOS there, and scores may fall a little
    outside it. `meta` says which model gave them, what it was trained on and what a score
    means (what `to_csv` writes beside the scores); `failures` says why each video that
    could not be scored was not."""

    def __init__(self, scores: dict[str, float], meta: dict[str, Any],
                 failures: dict[str, Failure]):
        self._scores, self.meta, self.failures = scores, meta, failures

    @property
    def mos_range(self) -> tuple[float, float]:
        low, high = self.meta["mos_range"]
        return low, high

    def __getitem__(self, video: str | os.PathLike) -> float:
        return self._scores[str(Path(video))]  # "./a.mp4" and "a.mp4" are one video

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

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the scores as `evaluate_vqa.py --videos` does: `path` (video,score) and its
        sidecar `<stem>.meta.json` (`meta`, docs/scoring.md). Returns the sidecar's path."""
        write_scores(pd.DataFrame(list(self._scores.items()), columns=["video", "score"]), path)
        return write_scores_meta(path, self.meta)


class Model:
    """A trained DAGR-VQA model (both networks) ready to score video files."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def __repr__(self) -> str:
        low, high = self.mos_range
        files = ", ".join(str(path) for path in self.scorer.meta.get("model", {}).values())
        return (f"<DAGR-VQA model ({files}): scores on the training MOS scale {low:g} to "
                f"{high:g}; trained on {self.scorer.meta.get('trained_on', 'unknown data')}>")

    @property
    def mos_range(self) -> tuple[float, float]:
        """(lowest, highest) MOS of the training data: the scale the scores are on."""
        return self.scorer.scale.low, self.scorer.scale.high

    def score(self, videos: Videos, workers: int | None = None, progress: bool = False,
              timeout: float = VIDEO_TIMEOUT) -> Scores:
        """Scores of `videos`: one video file or folder (str or PathLike), or a list of them;
        folders are searched recursively for video files as `evaluate_vqa.py --videos` does.
        Videos are decoded by `workers` supervised processes (default: the cores, none for
        one video, which then decodes in this process). A video that cannot be read, that
        does not exist (among others that do), or that crashes its decoding process or makes
        no progress for `timeout` seconds, is in `failures`, not an exception. Raises
        FileNotFoundError when none of `videos` exists or they hold no video file."""
        videos = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        if not videos:
            raise ValueError("score(videos=[]): give a video file, a folder or a list of them")
        paths = [path for _, path in find_videos(videos)]
        workers = default_workers(len(paths)) if workers is None else workers
        values, failures = {}, {}
        for row in self.scorer.rows(paths, Supervision(workers, timeout), progress):
            if row["problem"]:
                failures[row["video"]] = Failure(row["kind"], row["problem"])
            else:
                values[row["video"]] = float(row["score"])
        ordered = {str(p): values[str(p)] for p in paths if str(p) in values}
        return Scores(ordered, self.scorer.meta, failures)


def load_model(model: str | os.PathLike, saliency: str | os.PathLike | None = None,
               device: str | torch.device | None = None, precision: str | None = None,
               batch_size: int = 16) -> Model:
    """The model of an exported file (`evaluate_vqa.py --export`, suffix .safetensors), or of
    a quality training checkpoint and the saliency checkpoint its weighting needs. `device`:
    cuda when available else cpu; `precision`: bf16 on CUDA, fp32 on the CPU. Raises
    FileNotFoundError or ValueError (naming the file) for anything that is not such a model,
    ValueError for a `device` that PyTorch does not know and RuntimeError for one that is
    not on this machine."""
    device = pick_device(device, ARGUMENT)
    source: Source = ModelFile(model) if Path(model).suffix == MODEL_FILE_SUFFIX else model
    if isinstance(source, ModelFile):
        if saliency is not None:
            raise ValueError(f"{model}: a model file holds both networks; give no saliency= "
                             "checkpoint with it")
        saliency = source
    return Model(load_scorer(source, saliency, device, precision, batch_size=batch_size,
                             saliency_argument="saliency="))
