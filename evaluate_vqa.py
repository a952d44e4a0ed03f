"""Stage 4 evaluation: labelled test sets, repeated-split fine-tuning, and scoring of any video.

Labelled sets (test sets, cross-dataset tests). Repeat the four options once per set, in the
same order; leave out every --saliency when the model does not use saliency:

    python evaluate_vqa.py --checkpoint runs/lsvq/best.pt --out eval/ \\
        --dataset konvid --labels KoNViD_1k_mos.csv --frames frames/konvid --saliency maps/konvid \\
        --dataset livevqc --labels data.mat --frames frames/livevqc --saliency maps/livevqc

  LSVQ label files are evaluated on their test rows (`is_test`, or the whole 1080p file); the
  other datasets on every video (cross-dataset). Writes `predictions_<set>.csv` (video_id, mos,
  prediction in MOS units of the training scale, mapped = logistic fit to the MOS),
  `scatter_<set>.png` (prediction against MOS with the fitted logistic) and the paper's table
  as `results.md`, `results.csv` and `results.json`, and prints the table. Under torchrun, or
  with --shard I/N, each process predicts its share of every set and the last to finish
  writes these files.

Fine-tuning protocol: R seeded random 80/20 splits (test fraction and everything else as in
train_lsvq.py), each trained from --checkpoint (or from scratch with --from-scratch, same
architecture), the epoch chosen on a validation part of the 80 %. Options after `--` go to
train_lsvq.py:

    python evaluate_vqa.py --finetune-splits 10 --checkpoint runs/lsvq/best.pt --dataset konvid \\
        --labels KoNViD_1k_mos.csv --frames frames/konvid --saliency maps/konvid --out ft/ \\
        -- --epochs 10 --lr 5e-5

  Writes `split_XX/` (each run's checkpoints, log and curves) and `results.{md,csv,json}`: the
  test metrics of every split, then their median and standard deviation (ddof = 1); and
  `splits.png`, each split's PLCC and SRCC with their medians.

Scoring (the fast inference path): only the K sampled frames are decoded to pictures (the
others are grabbed and skipped), saliency is computed for those K only, in memory, in batches of
videos, while worker processes decode the next videos; BatchNorm is folded into the saliency
network's convolutions; bf16 and channels_last on CUDA (`--precision bf16` on the CPU too:
it pays only where the CPU has bf16 instructions, 1.6x measured, see the README); `--compile`
adds torch.compile. Its building blocks are in scoring.py; benchmark.py measures it:

    python evaluate_vqa.py --checkpoint best.pt --saliency-checkpoint sal.pt \\
        --videos clips/ more.mp4 --out scores.csv

  Or from one shared file (see the README): `--export dagr.safetensors --checkpoint best.pt
  --saliency-checkpoint sal.pt [--precision bf16]` writes it, `--model dagr.safetensors`
  then takes the place of both checkpoints, for scoring and for labelled sets.

  Writes `video,score` (score in the training MOS scale). Unreadable videos are listed on stderr
  and in `<out stem>_failures.csv`, and make the exit status 1. Scores are kept as they come in
  `<out>.partial`: after a crash or Ctrl-C (exit status 130), `--resume` scores only the videos
  still missing. Under torchrun, or with --shard I/N, each process scores its share of the
  videos on its own GPU and the last to finish writes the files (README, "Corpus-scale runs").

Public API: `evaluate_checkpoint`, `finetune_splits`, `score_videos`. This script uses
train_lsvq.py's public API (train, splits, prediction loop, results tables); train_lsvq.py
does not import this file.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

import figures
import model_file
import train_lsvq
from dataloader import FRAME_LIST, PROBLEMS, MosScale
from extract_frame import find_videos
from labelled_sets import (LABEL_DATASETS, PLAIN_FORMATS, LabelColumns, add_label_arguments,
                           label_columns, read_table)
from provenance import TRAINED_ON, training_note
from precision import add_precision_arguments, compile_model, resolve_precision
from runtime import (Failure, Interrupted, add_device_argument, atomic_path, default_workers,
                     load_checkpoint, pick_device, run_script, script_parser, sigint_ignored,
                     stop_workers, writable_folder, write_failures)
from scoring import decoded_videos, inference_quality, score_items
from sharding import (CsvOutput, PartialRows, Shard, add_shard_argument, current_shard,
                      exit_status, is_merged, partial_path, shard_device, write_outputs)
from sal_withreg import prepare_inference
from VQA import QualityNet

# ----------------------------------------------------------------------------- config
CHECKPOINT = None           # quality checkpoint (train_lsvq.py)
SALIENCY_CHECKPOINT = None  # saliency checkpoint (train_sal.py), for scoring
OUT = "eval"                # folder for evaluation and fine-tuning
SCORES = "scores.csv"       # file for scoring
FINETUNE_SPLITS = 10        # R, when --finetune-splits is given without a number
NUM_FRAMES = 8              # frames per video the quality network reads
BATCH_SIZE = 16
WORKERS = None              # decoding processes; None: the machine's cores, one per video at most
PARTIAL_FIELDS = ["video", "score", "kind", "problem"]  # scores kept as they come (score at full precision)
SEED = 0
# -----------------------------------------------------------------------------


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


def load_quality(checkpoint: str | Path | model_file.ModelFile, device: torch.device,
                 announce: bool = False) -> tuple[QualityNet, MosScale, tuple[int, int]]:
    """The trained model of a quality checkpoint or an exported model file (eval mode, on
    `device`; channels_last on CUDA), its MOS scale and its frame size (H, W). `announce`:
    print provenance.training_note on stderr, if any."""
    part = model_file.load_quality(checkpoint)
    note = training_note({TRAINED_ON: part.trained_on},
                         getattr(checkpoint, "path", checkpoint)) if announce else None
    if note:
        print(note, file=sys.stderr)
    model = part.model.to(device).eval()
    if device.type == "cuda":
        model.to_channels_last()
    return model, MosScale(**part.mos_scale), part.frame_size


# ----------------------------------------------------------------------------- labelled sets

def evaluation_parts(table: pd.DataFrame, dataset: str) -> dict[str, pd.DataFrame]:
    """{split: rows} to evaluate: LSVQ's test rows (`test`, `test_1080p`) when the file has
    any, a plain label file's `test` rows when its split column has any, otherwise (and for
    every other dataset) all rows as `all`."""
    if dataset in PLAIN_FORMATS and (table["split"] == "test").any():
        return {"test": table[table["split"] == "test"].reset_index(drop=True)}
    if dataset == "lsvq":
        tests = {split: rows.reset_index(drop=True) for split, rows in table.groupby("split")
                 if split != "train"}
        if tests:
            return tests
    return {"all": table}


def predict_set(model: QualityNet, scale: MosScale, size: tuple[int, int], rows: pd.DataFrame,
                frames: str | Path, saliency: str | Path | None, batch_size: int, workers: int,
                device: torch.device) -> tuple[pd.DataFrame, dict[str, float]]:
    """Scored predictions (video_id, mos, prediction, mapped) and vqa_metrics of `rows`."""
    loader = train_lsvq.clip_loader(rows, frames, train_lsvq.saliency_folder(model, saliency),
                                    scale, size, batch_size, workers)
    return train_lsvq.score_predictions(train_lsvq.predict(model, loader, device))


def evaluate_checkpoint(checkpoint: str | Path | model_file.ModelFile,
                        sets: Sequence[LabelledSet], out: str | Path,
                        batch_size: int = BATCH_SIZE, workers: int | None = WORKERS,
                        device: str | torch.device | None = None,
                        shard: Shard = Shard()) -> pd.DataFrame | None:
    """Predictions CSV per set and the results table (written to `out`, printed, returned).

    `shard` predicts its share of each set's videos and writes it as a part of the set's raw
    predictions (`.raw_predictions_<set>.csv`, full precision); the shard that finds every
    part there fits, scores and writes everything, as one process does. Returns None on a
    shard that leaves that to another."""
    device, out = shard_device(pick_device(device)), Path(out)
    model, scale, size = load_quality(checkpoint, device)
    raw: dict[str, CsvOutput] = {}
    for item in sets:
        table = item.table()
        for split, rows in evaluation_parts(table, item.dataset).items():
            name = train_lsvq.set_name(item.dataset, split)
            if name in raw:
                raise ValueError(f"{name} is given twice")
            if not any((Path(item.frames) / v / FRAME_LIST).is_file() for v in rows["video_id"]):
                raise FileNotFoundError(f"{item.frames}: no stored frames of any of the "
                                        f"{len(rows)} videos of {item.labels}")
            mine = rows.iloc[shard.index::shard.count].reset_index(drop=True)
            loader = train_lsvq.clip_loader(
                mine, item.frames, train_lsvq.saliency_folder(model, item.saliency), scale, size,
                batch_size, default_workers(len(mine)) if workers is None else workers)
            predicted = train_lsvq.predict(model, loader, device)
            raw[name] = CsvOutput(out / f".raw_predictions_{name}.csv",
                                  lambda path, frame=predicted: _write_raw(frame, path),
                                  "video_id", list(rows["video_id"]))
    if not write_outputs(list(raw.values()), shard):
        return None
    metrics = {}
    for name, output in raw.items():
        predicted = pd.read_csv(output.path, dtype={"video_id": str})
        scored, metrics[name] = train_lsvq.score_predictions(predicted)
        train_lsvq.write_predictions(scored, out / f"predictions_{name}.csv")
        figures.write_scatter(scored, name, out / f"scatter_{name}.png")
        output.path.unlink()
    table = train_lsvq.results_table(metrics)
    train_lsvq.write_results(table, out)
    return table


def _write_raw(predictions: pd.DataFrame, path: Path) -> None:
    """Predictions at full precision (pandas reads them back exactly)."""
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False)


# ----------------------------------------------------------------------------- fine-tuning protocol

def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a Median and a Std (ddof = 1) row of its numeric columns appended."""
    numbers = table.drop(columns="Dataset")
    return pd.concat([table, pd.DataFrame([{"Dataset": "Median", **numbers.median().to_dict()},
                                           {"Dataset": "Std", **numbers.std().to_dict()}])],
                     ignore_index=True)


def finetune_config(checkpoint: str | Path | None, item: LabelledSet, out: Path, seed: int,
                    from_scratch: bool, train_options: Sequence[str]) -> argparse.Namespace:
    """train_lsvq's settings for the protocol: its defaults, then `train_options`, then the
    start: --checkpoint's weights, or (--from-scratch) its architecture with fresh weights."""
    argv = ["--dataset", item.dataset, "--labels", str(item.labels), "--frames", str(item.frames),
            "--out", str(out), "--seed", str(seed)]
    if item.saliency:
        argv += ["--saliency", str(item.saliency)]
    for option, value in (("--video-column", item.columns.video),
                          ("--mos-column", item.columns.mos),
                          ("--split-column", item.columns.split)):
        argv += [option, value] if value else []
    argv += ["--dmos"] if item.columns.dmos else []
    config = train_lsvq.parse_args([*argv, *train_options])
    if config.splits:
        raise ValueError("--splits does not combine with --finetune-splits, which draws its "
                         "splits (each written to split_XX/splits.csv); to reuse one, run "
                         "train_lsvq.py --splits FILE")
    if checkpoint is None:
        if not from_scratch:
            raise ValueError("fine-tuning needs --checkpoint (or --from-scratch)")
        return config
    if not from_scratch:
        config.init = str(checkpoint)
        return config
    architecture = load_checkpoint(checkpoint, kind="quality")["model_kwargs"]
    for key in ("backbone", "variant", "saliency_alpha"):
        setattr(config, key, architecture[key])
    return config


def finetune_splits(checkpoint: str | Path | None, item: LabelledSet, out: str | Path,
                    splits: int = FINETUNE_SPLITS, from_scratch: bool = False, seed: int = SEED,
                    train_options: Sequence[str] = (), batch_size: int = BATCH_SIZE,
                    workers: int = WORKERS, device: str | torch.device | None = None
                    ) -> pd.DataFrame:
    """`splits` seeded random splits of `item` (split r uses seed + r), each trained with
    train_lsvq.train and tested with its best-on-validation checkpoint. Writes the per-split
    test metrics with their median and std to `out` and returns that table."""
    if splits < 1:
        raise ValueError("--finetune-splits needs at least one split")
    device, out = pick_device(device), Path(out)
    config = finetune_config(checkpoint, item, out, seed, from_scratch, train_options)
    table = item.table()
    metrics = {}
    for r in range(splits):
        run = argparse.Namespace(**{**vars(config), "out": str(out / f"split_{r + 1:02d}"),
                                    "seed": seed + r})
        parts = train_lsvq.random_split(table, run.val_fraction, run.test_fraction, run.seed)
        best = train_lsvq.train(run, parts)
        model, scale, size = load_quality(best, device)
        _, metrics[f"Split {r + 1}"] = predict_set(model, scale, size, parts["test"], item.frames,
                                                   item.saliency, batch_size, workers, device)
    per_split = train_lsvq.results_table(metrics, average=False)
    results = summary_rows(per_split)
    train_lsvq.write_results(results, out)
    figures.write_split_metrics(per_split, out / figures.SPLITS)
    return results


# ----------------------------------------------------------------------------- scoring

def score_videos(checkpoint: str | Path | model_file.ModelFile, videos: Sequence[str | Path],
                 out: str | Path,
                 saliency_checkpoint: str | Path | model_file.ModelFile | None = None,
                 batch_size: int = BATCH_SIZE,
                 workers: int | None = WORKERS, device: str | torch.device | None = None,
                 progress: bool = True, precision: str | None = None,
                 compiled: bool = False, shard: Shard = Shard(),
                 resume: bool = False) -> tuple[pd.DataFrame, dict[str, Failure]]:
    """Score video files and folders (`shard`'s share of them): writes `out` (video,score)
    and, when some fail, `<out stem>_failures.csv` (video,kind,problem), or for a shard its parts of
    them, merged by the last shard to finish. Returns the share's scores and {video: Failure}.
    Each result is appended to a partial file as it comes; with `resume` the videos already
    there are not scored again. The models run at `precision` (default: bf16 on CUDA, fp32 on
    the CPU), BatchNorm folded into the saliency network's convolutions, `torch.compile`d when
    `compiled`. An exported model file (a `model_file.ModelFile`, given as both checkpoints)
    also sets the frames per video."""
    device, out = shard_device(pick_device(device)), Path(out)
    model, scale, size = load_quality(checkpoint, device, announce=True)
    model = inference_quality(model, device, precision, compiled)
    saliency_model = None
    if model.saliency_alpha > 0:
        if saliency_checkpoint is None:
            raise ValueError(f"the quality model weights frames by saliency (alpha "
                             f"{model.saliency_alpha}): give --saliency-checkpoint")
        saliency_model = compile_model(prepare_inference(
            model_file.load_saliency(saliency_checkpoint)[0], device,
            resolve_precision(precision, device)), compiled)
    paths = [str(path) for _, path in find_videos(videos)]
    if not paths:
        raise FileNotFoundError(f"{' '.join(map(str, videos))}: no video file found")
    mine = shard.take(paths)
    k = model_file.frames_per_clip(checkpoint) or NUM_FRAMES
    partial = PartialRows(partial_path(out, shard), PARTIAL_FIELDS)
    results = {row["video"]: row for row in partial.start(resume)}
    todo = [Path(p) for p in mine if p not in results]
    workers = default_workers(len(todo)) if workers is None else workers
    decoded = None
    try:
        with sigint_ignored():  # the decoding processes start here
            decoded = iter(decoded_videos(todo, size, workers, k))
        items = score_items(model, saliency_model, decoded, batch_size, device)
        for item in tqdm(items, total=len(todo), desc="score", unit="video", disable=not progress):
            score = "" if item["score"] is None else str(float(scale.to_mos(item["score"])))
            results[item["video"]] = {"video": item["video"], "score": score,
                                      "kind": item["kind"], "problem": item["problem"]}
            partial.append(results[item["video"]])
    except KeyboardInterrupt:
        partial.close()
        stop_workers(decoded)
        raise Interrupted(f"{len(results)} of {len(mine)} videos scored, kept in {partial.path}; "
                          "run again with --resume to continue") from None
    partial.close()
    scores, failures = _scores_and_failures([results[p] for p in mine])
    write_outputs([CsvOutput(out, lambda path: _write_scores(scores, path), "video", paths),
                   CsvOutput(failures_file(out),
                             lambda path: write_failures(path, failures, "video"), "video")],
                  shard)
    partial.remove()
    return scores, failures


def _scores_and_failures(rows: Iterable[dict[str, str]]
                         ) -> tuple[pd.DataFrame, dict[str, Failure]]:
    """PartialRows' rows -> scores (video, score) and {video: Failure}."""
    rows = list(rows)
    scores = pd.DataFrame([(r["video"], float(r["score"])) for r in rows if not r["problem"]],
                          columns=["video", "score"])
    return scores, {r["video"]: Failure(r["kind"], r["problem"]) for r in rows if r["problem"]}


def _write_scores(scores: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6g")


def failures_file(out: str | Path) -> Path:
    """The failures list beside a scores file: `scores.csv` -> `scores_failures.csv`."""
    out = Path(out)
    return out.with_name(f"{out.stem}_failures.csv")


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; everything after a `--` is kept as `train_options` for train_lsvq.py."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", default=CHECKPOINT, help="quality checkpoint")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported model file (--export) in place of --checkpoint and "
                             "--saliency-checkpoint, for scoring and labelled sets")
    parser.add_argument("--export", metavar="FILE",
                        help="write --checkpoint and --saliency-checkpoint as one safetensors "
                             "model file to share (--precision bf16: half the size) and stop")
    parser.add_argument("--dataset", action="append", choices=LABEL_DATASETS,
                        help="a labelled set (repeat with --labels/--frames/--saliency); csv "
                             "and labels-txt read any labelled set (see the README)")
    parser.add_argument("--labels", action="append",
                        help="the set's official label file, or a csv / labels-txt file")
    add_label_arguments(parser)
    parser.add_argument("--frames", action="append", help="the set's stored frames")
    parser.add_argument("--saliency", action="append", help="the set's stored saliency maps")
    parser.add_argument("--out", help=f"folder (default {OUT}); scoring: CSV file (default {SCORES})")
    parser.add_argument("--finetune-splits", type=int, nargs="?", const=FINETUNE_SPLITS,
                        metavar="R", help=f"fine-tuning protocol with R splits (default {FINETUNE_SPLITS})")
    parser.add_argument("--from-scratch", action="store_true",
                        help="fine-tuning protocol: fresh weights instead of the checkpoint's")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="fine-tuning protocol: seed of the first split (split r uses seed + r)")
    parser.add_argument("--resume", action="store_true",
                        help="scoring: keep the scores of an interrupted run (<out>.partial) and "
                             "score only the videos still missing")
    parser.add_argument("--saliency-checkpoint", default=SALIENCY_CHECKPOINT,
                        help="scoring: saliency checkpoint (not needed when saliency is off)")
    parser.add_argument("--videos", nargs="+", metavar="INPUT", help="scoring: video files or folders")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="clips (videos) per forward pass")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="data-loading processes (default: the machine's cores, at most one "
                             "per video, none for a single video)")
    add_precision_arguments(parser, "the networks for scoring")
    add_device_argument(parser)
    add_shard_argument(parser)
    args = parser.parse_args(argv[:cut])
    args.train_options = argv[cut + 1:]
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.export:
        if not args.checkpoint or args.model or args.videos or args.dataset:
            parser.error("--export takes --checkpoint (and --saliency-checkpoint) only")
        return
    if args.model and (args.checkpoint or args.saliency_checkpoint or args.finetune_splits):
        parser.error("--model replaces --checkpoint and --saliency-checkpoint; fine-tuning "
                     "needs a training checkpoint")
    if args.videos:
        if args.dataset or args.finetune_splits:
            parser.error("--videos (scoring) does not combine with --dataset or --finetune-splits")
        args.out = args.out or SCORES
    else:
        args.out = args.out or OUT
        if not args.dataset:
            parser.error("give --dataset with --labels and --frames, or --videos")
        lengths = {len(args.labels or []), len(args.frames or []), len(args.dataset)}
        if len(lengths) > 1 or len(args.saliency or args.dataset) != len(args.dataset):
            parser.error("give --labels, --frames (and --saliency, if any) once per --dataset")
        if args.finetune_splits and len(args.dataset) > 1:
            parser.error("the fine-tuning protocol takes one dataset per call")
    if not (args.checkpoint or args.model) and not (args.finetune_splits and args.from_scratch):
        parser.error("--checkpoint or --model is needed (fine-tuning from scratch excepted)")
    if args.resume and not args.videos:
        parser.error("--resume is for scoring (--videos)")
    if args.shard and args.finetune_splits:
        parser.error("--shard is for scoring and labelled-set evaluation, not fine-tuning")
    if args.train_options and not args.finetune_splits:
        parser.error("options after -- are for the fine-tuning protocol's trainer")


def labelled_sets(args: argparse.Namespace) -> list[LabelledSet]:
    saliency = args.saliency or [None] * len(args.dataset)
    return [LabelledSet(*fields, label_columns(args))
            for fields in zip(args.dataset, args.labels, args.frames, saliency)]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: every video scored or evaluated; 1: done, but some videos failed or rows
    were left out (listed on stderr); 2: an error stopped the run."""
    args = parse_args(argv)
    problems = len(PROBLEMS)
    try:
        if args.export:
            written = model_file.export_model(args.export, args.checkpoint,
                                              args.saliency_checkpoint, args.precision or "fp32",
                                              NUM_FRAMES)
            print(f"model written to {written} ({written.stat().st_size / 1e6:.1f} MB)")
            return 0
        writable_folder(Path(args.out).parent if args.videos else args.out)
        source = model_file.ModelFile(args.model) if args.model else args.checkpoint
        if args.videos:
            shard = current_shard(args.shard)
            scores, failures = score_videos(source, args.videos, args.out,
                                            source if args.model else args.saliency_checkpoint,
                                            args.batch_size,
                                            args.workers, args.device,
                                            precision=args.precision, compiled=args.compile,
                                            shard=shard, resume=args.resume)
            print(f"{len(scores)} video(s) scored into {args.out}" + (
                "" if shard.single else f" (shard {shard.index} of {shard.count}; the last "
                                        "shard to finish writes the file)"))
            if failures:
                print(f"{len(failures)} video(s) could not be read (listed in "
                      f"{failures_file(args.out)}):", file=sys.stderr)
                for video, problem in failures.items():
                    print(f"  {video}: {problem}", file=sys.stderr)
            return exit_status(shard, bool(failures), is_merged(Path(args.out), shard),
                               failures_file(args.out))
        if args.finetune_splits:
            finetune_splits(args.checkpoint, labelled_sets(args)[0], args.out,
                            args.finetune_splits, args.from_scratch, args.seed,
                            args.train_options, args.batch_size, args.workers, args.device)
        else:
            shard = current_shard(args.shard)
            table = evaluate_checkpoint(source, labelled_sets(args), args.out,
                                        args.batch_size, args.workers, args.device, shard)
            return exit_status(shard, len(PROBLEMS) > problems, table is not None)
    except (OSError, ValueError) as err:  # LabelFileError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if len(PROBLEMS) > problems else 0


if __name__ == "__main__":
    run_script(main)
