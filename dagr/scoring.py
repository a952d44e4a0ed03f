"""Scoring any video file: K frames sampled per video by supervised worker processes (a video
that crashes or hangs its decoder fails alone: dagr/supervised.py), saliency computed in memory
for those K only, and the quality network, batched (design.md, section 9, "scoring mode").
`Scorer` holds the two networks ready for inference; `score_to_csv` is `evaluate_vqa.py
--videos`'s job (results kept as they come, resumable, sharded), and
`dagr.load_model(...).score(...)` gives the same numbers in Python.
"""
from __future__ import annotations

import contextlib
import csv
import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from dagr import paper
from dagr.model_file import ModelFile, Source, load_saliency
from dagr.failures import Failure
from dagr.files import NAMES_ENCODING, atomic_path
from dagr.evaluation import trained_quality
from dagr.inference import inference_quality, predict_maps, prepare_inference
from dagr.precision import compile_model, precision_autocast, resolve_precision, weights_precision
from dagr.provenance import TRAINED_ON, scores_meta, training_note, write_scores_meta
from dagr.outputs import Output, scores_output
from dagr.runner import Outcome, RunOptions, Stage, StageRun, Workers, row_failure
from dagr.sharding import CsvOutput, Shard
from dagr.supervised import VIDEO_TIMEOUT, Supervision, WorkerPool
from dagr.video_io import try_sample_video
from dagr.workers import one_opencv_thread
from dataloader import MosScale
from VQA import QualityNet

PARTIAL_FIELDS = ["video", "score", "kind", "problem"]  # scores kept as they come (full precision)


def unreadable(path: Path, failure: Failure) -> dict:
    """A `decoded_videos` item of a video that could not be read."""
    return {"video": str(path), "frames": None, "problem": failure.problem, "kind": failure.kind,
            "decoded": 0}


def decoding_pool(size: tuple[int, int], supervision: Supervision,
                  k: int = paper.FRAMES_PER_VIDEO) -> WorkerPool:
    """Supervised processes that sample K frames of size (H, W) per video (`decoded_videos`);
    one pool serves several passes over videos. They import video_io only, not torch."""
    return WorkerPool(partial(try_sample_video, k=k, size=tuple(size)), supervision,
                      setup=one_opencv_thread)


def decoded_videos(pool: WorkerPool, paths: Sequence[Path]) -> Iterator[dict]:
    """Items of `paths`, in order: `video` (the path as text), `frames` uint8 (T, H, W, 3)
    RGB tensor or None when the video cannot be read, `problem` (why) and `kind` (the failure's
    kind; "" when read), `decoded` (frames that decode in the file; 0 when it cannot be read).
    A video that takes its worker down (a crash, a hang) comes back unreadable with that
    failure. The workers keep decoding ahead (a few videos each) while the caller runs the
    models."""
    for path, outcome in pool.map(paths, name=str, ordered=True):
        if isinstance(outcome, Failure):
            yield unreadable(path, outcome)
        else:
            yield {"video": str(path), "frames": torch.from_numpy(outcome.frames), "problem": "",
                   "kind": "", "decoded": outcome.decoded}


@torch.inference_mode()
def score_clips(model: QualityNet, saliency_model: torch.nn.Module | None, frames: torch.Tensor,
                device: torch.device) -> torch.Tensor:
    """frames uint8 (B, T, H, W, 3) -> scores (B,) on the training targets' unit scale, at the
    precision of the models' weights (`inference_quality`, sal_withreg.prepare_inference).
    Frames travel to the device as uint8 (a quarter of the float bytes); the saliency maps are
    quantised to 8 bits like the stored maps the model was trained on, and stay on the device."""
    clips = frames.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255)
    maps = None
    if saliency_model is not None:
        maps = predict_maps(saliency_model, clips, device, on_device=True)[:, :, None].float().div_(255)
    with precision_autocast(device, weights_precision(model)):
        return model(clips, maps).float()


def score_items(model: QualityNet, saliency_model: torch.nn.Module | None,
                items: Iterable[dict], batch_size: int, device: torch.device) -> Iterator[dict]:
    """Each of `items` (`decoded_videos`') back, without its frames, with a `score` on the unit
    scale, or None for a video that could not be read. The readable videos are scored in
    batches of `batch_size` (the last one smaller), so an unreadable one comes back first."""
    pending: list[dict] = []
    for item in items:
        if item["frames"] is None:
            yield {**_without_frames(item), "score": None}
            continue
        pending.append(item)
        if len(pending) == batch_size:
            yield from _score_batch(model, saliency_model, pending, device)
            pending = []
    if pending:
        yield from _score_batch(model, saliency_model, pending, device)


def _score_batch(model: QualityNet, saliency_model: torch.nn.Module | None, items: list[dict],
                 device: torch.device) -> list[dict]:
    frames = torch.stack([item["frames"] for item in items])  # (B, T, H, W, 3)
    if device.type == "cuda":
        frames = frames.pin_memory()  # page-locked: the copy to the GPU runs without staging
    scores = score_clips(model, saliency_model, frames, device).cpu().tolist()
    return [{**_without_frames(item), "score": score} for item, score in zip(items, scores)]


def _without_frames(item: dict) -> dict:
    return {key: value for key, value in item.items() if key != "frames"}


# ----------------------------------------------------------------------------- the scorer

@dataclass
class Scorer:
    """The two networks ready to score videos on `device` (`load_scorer`): the quality network,
    the saliency network (None when the quality network's saliency weighting is off), the
    training MOS scale, the frame size (H, W), the frames sampled per video, and `meta`,
    provenance.scores_meta's description of the scores (written beside every scores file)."""
    quality: QualityNet
    saliency: torch.nn.Module | None
    scale: MosScale
    size: tuple[int, int]
    frames: int
    device: torch.device
    batch_size: int = 16
    meta: dict = field(default_factory=dict)

    def rows(self, paths: Sequence[Path], supervision: Supervision, progress: bool = False
             ) -> Iterator[dict[str, str]]:
        """One row per video of `paths`, as they are scored (unreadable ones first within
        a batch), decoded under `supervision`: `video` (the path as given), `score` (MOS units as
        text at full precision; "" when the video cannot be read), `kind` and `problem` (why
        not; "" otherwise). Close the iterator when stopping early: that stops the decoding
        processes."""
        with decoding_pool(self.size, supervision, self.frames) as pool:
            items = score_items(self.quality, self.saliency, decoded_videos(pool, paths),
                                self.batch_size, self.device)
            for item in tqdm(items, total=len(paths), desc="score", unit="video",
                             disable=not progress):
                score = "" if item["score"] is None else str(float(self.scale.to_mos(item["score"])))
                yield {"video": item["video"], "score": score, "kind": item["kind"],
                       "problem": item["problem"]}


def load_scorer(quality: Source, saliency: Source | None, device: torch.device,
                precision: str | None = None, compiled: bool = False,
                batch_size: int = 16, saliency_argument: str = "--saliency-checkpoint") -> Scorer:
    """A Scorer of a quality checkpoint (and the saliency checkpoint its weighting needs) or of
    an exported model file (a ModelFile, given as both). The models run at `precision`
    (default: bf16 on CUDA, fp32 on the CPU), BatchNorm folded, `torch.compile`d when
    `compiled`. Prints provenance.training_note on stderr when the model was trained on
    synthetic or too few videos. `saliency_argument`: how the caller's user gives the saliency
    checkpoint, named when one is needed and missing."""
    model, scale, part = trained_quality(quality, device)
    note = training_note({TRAINED_ON: part.trained_on}, getattr(quality, "path", quality))
    if note:
        print(note, file=sys.stderr)
    model = inference_quality(model, device, precision, compiled)
    saliency_model = None
    if model.saliency_alpha > 0:
        if saliency is None:
            raise ValueError(f"{quality}: the quality model weights frames by saliency (alpha "
                             f"{model.saliency_alpha}): give the saliency network's checkpoint "
                             f"too ({saliency_argument})")
        saliency_model = compile_model(prepare_inference(
            load_saliency(saliency)[0], device, resolve_precision(precision, device)), compiled)
    frames = part.frames_per_clip or paper.FRAMES_PER_VIDEO
    files = ({"model_file": quality.path} if isinstance(quality, ModelFile) else
             {"quality_checkpoint": quality, **({} if saliency is None else
                                                {"saliency_checkpoint": saliency})})
    return Scorer(model, saliency_model, scale, part.frame_size, frames, device, batch_size,
                  scores_meta((scale.low, scale.high), part.trained_on, files))


# ----------------------------------------------------------------------------- scores file

def score_to_csv(scorer: Scorer, paths: Sequence[str], out: str | Path | Output,
                 workers: int | None = None, shard: Shard = Shard(), resume: bool = False,
                 progress: bool = True, timeout: float = VIDEO_TIMEOUT,
                 retry_failed: bool = False) -> StageRun:
    """Score `shard`'s share of `paths` (sorted video files) into the scores file `out`
    (dagr.outputs.scores_output: checked before any work; .csv, .json or .jsonl) and, when
    some fail, its failures CSV (video,kind,problem), or for a shard its parts of them,
    merged by the last shard to finish. Each row is appended to a partial file as it comes;
    with `resume` the videos already there are not scored again, those that failed included
    (a video that crashed or hung its decoder would do it again) unless `retry_failed`; those
    that crashed or hung are then decoded in a worker process even with `workers` 0.
    `timeout`: seconds without progress before a video counts as hung. The final file gets its
    sidecar, dagr.outputs.sidecar_file(out) (scale, training data, model). Returns the run:
    its `rows` by video and `failures`."""
    paths = [str(Path(path)) for path in paths]  # as the rows name them
    out = out if isinstance(out, Output) else scores_output(out, shard, resume)
    stage = Stage("score", "scored", out, key=str, name=str, key_column="video",
                  fields=PARTIAL_FIELDS)
    run = StageRun(stage, RunOptions(workers, timeout, shard, resume, retry_failed, progress))
    run.run(list(paths), partial(_scored, scorer))
    scores = pd.DataFrame([(video, float(row["score"])) for video in shard.take(list(paths))
                           if not (row := run.rows[video])["problem"]],
                          columns=["video", "score"])
    table = merged_table(out.path)
    run.write([CsvOutput(table, lambda path: write_scores(scores, path), "video", list(paths))],
              finish=lambda: finalise_scores(table, out.path, scorer.meta))
    return run


def _scored(scorer: Scorer, todo: list[str], workers: Workers) -> Iterator[Outcome]:
    """The runner's Outcome of each video as it is scored, with its row."""
    with contextlib.closing(scorer.rows([Path(p) for p in todo], workers.supervision)) as rows:
        for row in rows:
            yield Outcome(row["video"], row_failure(row), row)


def merged_table(out: Path) -> Path:
    """Where the scores are merged as CSV before `finalise_scores`: `out` itself for a CSV
    file, else a hidden CSV beside it (`.scores.json.csv`)."""
    return out if out.suffix.lower() == ".csv" else out.with_name(f".{out.name}.csv")


def finalise_scores(table: Path, out: Path, meta: dict) -> None:
    """The one place a finished scores file is made final, once every shard's scores are in
    the CSV `table` (`merged_table(out)`): `out` in the format of its suffix (.json: a list
    of {"video", "score"} objects; .jsonl: one per line), the CSV removed, and the sidecar
    `meta` (provenance.scores_meta) beside it."""
    if table != out:
        _convert_scores(table, out)
    write_scores_meta(out, meta)


def _convert_scores(table: Path, out: Path) -> None:
    """The merged CSV `table` -> `out` as JSON or JSON lines; the CSV removed."""
    with open(table, newline="", **NAMES_ENCODING) as handle:
        scores = [{"video": row["video"], "score": float(row["score"])}
                  for row in csv.DictReader(handle)]
    lines = ([json.dumps(score) for score in scores] if out.suffix.lower() == ".jsonl"
             else [json.dumps(scores, indent=1)])
    with atomic_path(out) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), **NAMES_ENCODING)
    table.unlink()


def write_scores(scores: pd.DataFrame, path: str | Path) -> None:
    """Write `scores` (video, score) as a CSV file `path`, atomically, scores to 6 significant
    digits."""
    with atomic_path(path) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6g", **NAMES_ENCODING)
