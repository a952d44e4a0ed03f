"""Labelled-set evaluation (`evaluate_vqa.py --dataset ...`): a quality network's predictions
on the stored frames and maps of labelled sets, their metrics, scatters and the results table
(design.md, section 9). The stored files are read by the per-video stage runner (dagr/runner.py):
a video whose files cannot be read, or that crashes or hangs its worker process, is left out
and listed in `<out>/failures.csv`. Under --shard or torchrun each process predicts its share
of every set into a part of the set's raw predictions; the process that finds every part
there scores and writes everything, as one process does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
import torch

from dagr import figures
from dagr.model_file import Source
from dagr.datasets import read_table, set_title
from dagr.device import pick_device
from dagr.evaluation import (predict_batches, results_table, saliency_folder, score_predictions,
                             stored_batches, trained_quality, write_predictions, write_results)
from dagr.files import NAMES_ENCODING, PANDAS_READ_NAMES, atomic_path
from dagr.labels import LabelColumns
from dagr.outputs import folder_output
from dagr.runner import Outcome, RunOptions, Stage, StageRun, Workers
from dagr.sharding import CsvOutput, Shard, shard_device
from dagr.splits import evaluation_parts
from dagr.supervised import VIDEO_TIMEOUT
from dataloader import FRAME_LIST, MosScale, VQAClipDataset
from VQA import QualityNet

BATCH_SIZE = 16


@dataclass(frozen=True)
class LabelledSet:
    """One dataset to evaluate: its label file (and how to read a plain one), stored frames
    and maps."""
    dataset: str
    labels: str | Path
    frames: str | Path
    saliency: str | Path | None = None
    columns: LabelColumns = LabelColumns()

    def table(self) -> pd.DataFrame:
        return read_table(self.dataset, self.labels, columns=self.columns)


@dataclass(frozen=True)
class Predictor:
    """A quality network ready to predict stored videos: with its training MOS scale, frame
    size (H, W), device, batch size and precision."""
    model: QualityNet
    scale: MosScale
    size: tuple[int, int]
    device: torch.device
    batch_size: int = BATCH_SIZE
    precision: str | None = None

    def outcomes(self, data: VQAClipDataset, workers: Workers,
                 predicted: list[pd.DataFrame]) -> Iterator[Outcome]:
        """One Outcome per video of `data` as its batch is predicted; the predictions
        (video_id, mos, prediction) are appended to `predicted`, batch by batch."""
        for batch in stored_batches(data, self.batch_size, workers):
            if isinstance(batch, tuple):  # (video_id, Failure): its files failed
                yield Outcome(*batch)
                continue
            predicted.append(predict_batches(self.model, [batch], self.scale, self.device,
                                             progress=False, precision=self.precision))
            yield from (Outcome(video_id) for video_id in batch["video_id"])


def set_evaluation(out: str | Path, workers: int | None = None, timeout: float = VIDEO_TIMEOUT,
                   shard: Shard = Shard(), progress: bool = True) -> StageRun:
    """The stage, as the runner runs it: video ids in, nothing kept per video (the results
    are written once all are predicted); `out` is checked first."""
    out = folder_output(out)
    stage = Stage("predict", "evaluated", out, key=str, name=str)
    return StageRun(stage, RunOptions(workers, timeout, shard, progress=progress))


def evaluate_sets(source: Source, sets: Sequence[LabelledSet], out: str | Path,
                  batch_size: int = BATCH_SIZE, workers: int | None = None,
                  device: str | torch.device | None = None, shard: Shard = Shard(),
                  precision: str | None = None, timeout: float = VIDEO_TIMEOUT
                  ) -> pd.DataFrame | None:
    """Predictions CSV and scatter per set and the results table (written to `out`, printed,
    returned), `evaluate_with` a run of its own. Returns None on a shard that leaves the
    writing to another."""
    run = set_evaluation(out, workers, timeout, shard)
    return evaluate_with(run, source, sets, batch_size, device, precision)


def evaluate_with(run: StageRun, source: Source, sets: Sequence[LabelledSet],
                  batch_size: int = BATCH_SIZE, device: str | torch.device | None = None,
                  precision: str | None = None) -> pd.DataFrame | None:
    """Each set's (each split's) predictions by `run`'s share, kept as a part of the set's
    raw predictions (`.raw_predictions_<set>.csv`, full precision) and merged; the process
    that merges fits, scores and writes `predictions_<set>.csv`, `scatter_<set>.png` and the
    results table. Returns the table, or None on a shard that leaves that to another."""
    device = shard_device(pick_device(device))
    model, scale, part = trained_quality(source, device)
    predictor = Predictor(model, scale, part.frame_size, device, batch_size, precision)
    out = run.stage.out.path
    raw: dict[str, CsvOutput] = {}
    for item in sets:
        for split, rows in evaluation_parts(item.table()).items():
            name = set_title(item.dataset, split)
            if name in raw:
                raise ValueError(f"{name} is given twice")
            raw[name] = _predicted_set(run, predictor, item, rows, out / f".raw_predictions_{name}.csv")
    if not run.write(list(raw.values())):
        return None
    metrics = {}
    for name, output in raw.items():
        scored, metrics[name] = score_predictions(pd.read_csv(output.path, dtype={"video_id": str},
                                                              **PANDAS_READ_NAMES))
        write_predictions(scored, out / f"predictions_{name}.csv")
        figures.write_scatter(scored, name, out / f"scatter_{name}.png")
        output.path.unlink()
    table = results_table(metrics)
    write_results(table, out)
    return table


def _predicted_set(run: StageRun, predictor: Predictor, item: LabelledSet, rows: pd.DataFrame,
                   path: Path) -> CsvOutput:
    """`run`'s share of the videos `rows` of `item` predicted; their raw predictions as the
    CSV output `path`."""
    if not any((Path(item.frames) / v / FRAME_LIST).is_file() for v in rows["video_id"]):
        raise FileNotFoundError(f"{item.frames}: no stored frames of any of the "
                                f"{len(rows)} videos of {item.labels}")
    saliency = saliency_folder(predictor.model, item.saliency)
    predicted: list[pd.DataFrame] = []

    def predict(todo: list[str], workers: Workers) -> Iterator[Outcome]:
        mine = rows[rows["video_id"].isin(set(todo))].reset_index(drop=True)
        data = VQAClipDataset(mine, item.frames, saliency, predictor.scale, predictor.size)
        yield from predictor.outcomes(data, workers, predicted)

    # named as stored_batches' workers name them: a video that crashed or hung its worker
    # before is then read by a worker process again, even with --workers 0
    run.run(list(rows["video_id"]), predict,
            name=lambda video_id: str(Path(item.frames) / video_id))
    frame = (pd.concat(predicted, ignore_index=True) if predicted else
             pd.DataFrame(columns=["video_id", "mos", "prediction"]))
    return CsvOutput(path, lambda target: _write_raw(frame, target), "video_id",
                     list(rows["video_id"]))


def _write_raw(predictions: pd.DataFrame, path: Path) -> None:
    """Predictions at full precision (pandas reads them back exactly)."""
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False, **NAMES_ENCODING)
