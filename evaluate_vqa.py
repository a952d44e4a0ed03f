"""Stage 4 evaluation: four jobs, each chosen by its option.

Labelled sets (test sets, cross-dataset tests); give --dataset, --labels, --frames (and
--saliency) once per set:
    python evaluate_vqa.py --checkpoint runs/lsvq/best.pt --out eval/ \\
        --dataset konvid --labels KoNViD_1k_mos.csv --frames frames/konvid --saliency maps/konvid

Fine-tuning protocol (--finetune-splits R): train_lsvq.py once per seeded random 80/20 split,
from the checkpoint's weights (or from scratch); options after -- go to train_lsvq.py:
    python evaluate_vqa.py --finetune-splits 10 --checkpoint runs/lsvq/best.pt --dataset konvid \\
        --labels KoNViD_1k_mos.csv --frames frames/konvid --saliency maps/konvid --out ft/ \\
        -- --epochs 10 --lr 5e-5

Scoring any video (--videos):
    python evaluate_vqa.py --checkpoint best.pt --saliency-checkpoint sal.pt --videos clips/ \\
        --out scores.csv
    python evaluate_vqa.py --model dagr.safetensors --videos clips/ more.mp4 --out scores.csv

Export one model file to share (--export):
    python evaluate_vqa.py --export dagr.safetensors --checkpoint best.pt \\
        --saliency-checkpoint sal.pt

Scoring decodes, and labelled sets read their stored frames, in supervised worker processes
(dagr/supervised.py): a video that crashes its process is reported as `crashed` (with the
signal), one that makes no progress for --video-timeout seconds as `timed-out`, in the failures
CSV (`<out>_failures.csv` for scoring, `<out>/failures.csv` for labelled sets) and at the end;
the other videos go on; the exit status is 1. --workers 0 (the default for a single video)
decodes in this process, which a native crash ends; the rerun decodes the video it was on in a
worker process. --resume keeps the videos that failed as failed unless --retry-failed.

Outputs, resuming, sharding and exit statuses: docs/pipeline.md ("Stage 4") and
docs/scoring.md.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from dagr import figures, paper
from dagr.checkpoints import load_checkpoint
from dagr.model_file import ModelFile, Source, export_model
from dagr.cli import Interrupted, run_script, script_parser
from dagr.datasets import QUALITY_SETS, quality_help, read_table, set_title
from dagr.device import add_device_argument, pick_device
from dagr.evaluation import (RESULT_COLUMNS, predict_batches, results_table, saliency_folder,
                             score_predictions, stored_batches, trained_quality,
                             write_predictions, write_results)
from dagr.failures import Failure, read_failures, write_failures
from dagr.files import NAMES_ENCODING, PANDAS_READ_NAMES, atomic_path, writable_folder
from dagr.labels import PROBLEMS, LabelColumns, add_label_arguments, label_columns, report
from dagr.precision import add_precision_arguments
from dagr.scoring import failures_file, load_scorer, score_to_csv
from dagr.sharding import (CsvOutput, Shard, add_shard_argument, current_shard, exit_status,
                           is_merged, journal, shard_device, write_outputs)
from dagr.splits import evaluation_parts
from dagr.video_io import find_videos
from dagr.supervised import VIDEO_TIMEOUT, Supervision, add_timeout_argument
from dagr.workers import MAIN_PROCESS_NOTE, default_workers
from dataloader import FRAME_LIST, VQAClipDataset

# ----------------------------------------------------------------------------- config
CHECKPOINT = None           # quality checkpoint (train_lsvq.py)
SALIENCY_CHECKPOINT = None  # saliency checkpoint (train_sal.py), for scoring
OUT = "eval"                # folder for labelled sets and fine-tuning
SCORES = "scores.csv"       # file for scoring
FAILURES = "failures.csv"   # labelled sets: the videos left out because their files failed
FINETUNE_SPLITS = 10        # R, when --finetune-splits is given without a number
FRAMES_PER_VIDEO = paper.FRAMES_PER_VIDEO  # frames an exported model file scores with
BATCH_SIZE = 16
WORKERS = None              # decoding processes; None: the machine's cores, one per video at most
SEED = 0
# -----------------------------------------------------------------------------

TRAINER = Path(__file__).with_name("train_lsvq.py")  # what the fine-tuning protocol runs
JOBS = {"sets": "evaluating labelled sets", "finetune": "--finetune-splits",
        "score": "scoring (--videos)", "export": "--export"}


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


# ----------------------------------------------------------------------------- labelled sets

def evaluate_sets(source: Source, sets: Sequence[LabelledSet], out: str | Path,
                  batch_size: int = BATCH_SIZE, workers: int | None = WORKERS,
                  device: str | torch.device | None = None, shard: Shard = Shard(),
                  precision: str | None = None, timeout: float = VIDEO_TIMEOUT
                  ) -> pd.DataFrame | None:
    """Predictions CSV and scatter per set and the results table (written to `out`, printed,
    returned). The stored frames and maps are read by supervised worker processes: a video
    whose files cannot be read, or that crashes or hangs its process (`timeout` seconds
    without progress), is left out, reported, and listed in `out/failures.csv`. `shard`
    predicts its share of each set's videos and writes it as a part of the set's raw
    predictions (`.raw_predictions_<set>.csv`, full precision); the shard that finds every
    part there fits, scores and writes everything, as one process does. Returns None on a
    shard that leaves that to another."""
    device, out = shard_device(pick_device(device)), Path(out)
    model, scale, part = trained_quality(source, device)
    raw: dict[str, CsvOutput] = {}
    failures: dict[str, Failure] = {}
    for item in sets:
        for split, rows in evaluation_parts(item.table()).items():
            name = set_title(item.dataset, split)
            if name in raw:
                raise ValueError(f"{name} is given twice")
            if not any((Path(item.frames) / v / FRAME_LIST).is_file() for v in rows["video_id"]):
                raise FileNotFoundError(f"{item.frames}: no stored frames of any of the "
                                        f"{len(rows)} videos of {item.labels}")
            mine = rows.iloc[shard.index::shard.count].reset_index(drop=True)
            data = VQAClipDataset(mine, item.frames, saliency_folder(model, item.saliency), scale,
                                  part.frame_size)
            how = Supervision(default_workers(len(data)) if workers is None else workers,
                              timeout, journal(out, shard))
            lost = len(failures)
            predicted = predict_batches(model, stored_batches(data, batch_size, how, failures),
                                        scale, device, precision=precision)
            for failure in list(failures.values())[lost:]:
                report(f"{failure.problem}; left out")
            raw[name] = CsvOutput(out / f".raw_predictions_{name}.csv",
                                  lambda path, frame=predicted: _write_raw(frame, path),
                                  "video_id", list(rows["video_id"]))
    listing = CsvOutput(out / FAILURES, lambda path: write_failures(path, failures, "video_id"),
                        "video_id")
    if not write_outputs([*raw.values(), listing], shard):
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


def _write_raw(predictions: pd.DataFrame, path: Path) -> None:
    """Predictions at full precision (pandas reads them back exactly)."""
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False, **NAMES_ENCODING)


# ----------------------------------------------------------------------------- fine-tuning protocol

def finetune_splits(checkpoint: str | Path | None, item: LabelledSet, out: str | Path,
                    splits: int = FINETUNE_SPLITS, from_scratch: bool = False, seed: int = SEED,
                    train_options: Sequence[str] = (), device: str | None = None) -> pd.DataFrame:
    """Run train_lsvq.py on `splits` seeded random splits of `item` (split r with seed + r),
    each from `checkpoint`'s weights (or its architecture with fresh weights, `from_scratch`),
    and collect each run's test metrics, tested with its best-on-validation checkpoint.
    Writes every run to `out/split_XX/`, and the per-split metrics with their median and std
    to `out/results.*` and `out/splits.png`; returns that table."""
    if splits < 1:
        raise ValueError("--finetune-splits needs at least one split")
    if "--splits" in train_options:
        raise ValueError("--splits does not combine with --finetune-splits, which draws its "
                         "splits (each written to split_XX/splits.csv); to reuse one, run "
                         "train_lsvq.py --splits FILE")
    out, start = Path(out), starting_point(checkpoint, from_scratch)
    rows = []
    for r in range(splits):
        run = out / f"split_{r + 1:02d}"
        argv = [sys.executable, str(TRAINER), *set_options(item), "--out", str(run),
                "--seed", str(seed + r), "--random-split",
                *(["--device", str(device)] if device else []), *train_options, *start]
        _run_trainer(argv, f"{r} of {splits} splits finished in {out}")
        tested = pd.read_csv(run / "results.csv").iloc[0]
        rows.append({**tested.to_dict(), "Dataset": f"Split {r + 1}"})
    per_split = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results = summary_rows(per_split)
    write_results(results, out)
    figures.write_split_metrics(per_split, out / figures.SPLITS)
    return results


def starting_point(checkpoint: str | Path | None, from_scratch: bool) -> list[str]:
    """train_lsvq.py options for where each split's training starts: the checkpoint (its
    architecture and weights), or its architecture alone; they come last, so they win over
    the options after --."""
    if checkpoint is None:
        if not from_scratch:
            raise ValueError("fine-tuning needs --checkpoint (or --from-scratch)")
        return []
    if not from_scratch:
        return ["--init", str(checkpoint)]
    architecture = load_checkpoint(checkpoint, kind="quality")["model_kwargs"]
    return ["--backbone", str(architecture["backbone"]), "--variant", str(architecture["variant"]),
            "--saliency-alpha", str(architecture["saliency_alpha"])]


def set_options(item: LabelledSet) -> list[str]:
    """train_lsvq.py options that read `item`."""
    argv = ["--dataset", item.dataset, "--labels", str(item.labels), "--frames", str(item.frames)]
    argv += ["--saliency", str(item.saliency)] if item.saliency else []
    for option, value in (("--video-column", item.columns.video),
                          ("--mos-column", item.columns.mos),
                          ("--split-column", item.columns.split)):
        argv += [option, value] if value else []
    return argv + (["--dmos"] if item.columns.dmos else [])


def _run_trainer(argv: list[str], done: str) -> None:
    """Run one train_lsvq.py; a failure stops the protocol. Ctrl-C reaches the trainer too
    (one process group): it stops cleanly, and then so does this."""
    process = subprocess.Popen(argv)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise Interrupted(f"{done}; run the same command again to redo the rest") from None
    if code != 0:
        raise ValueError(f"train_lsvq.py stopped with exit status {code} (its messages are "
                         f"above): {' '.join(argv[1:])}")


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a Median and a Std (ddof = 1) row of its numeric columns appended."""
    numbers = table.drop(columns="Dataset")
    return pd.concat([table, pd.DataFrame([{"Dataset": "Median", **numbers.median().to_dict()},
                                           {"Dataset": "Std", **numbers.std().to_dict()}])],
                     ignore_index=True)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; everything after a `--` is kept as `train_options` for train_lsvq.py.
    `job` is the job the options choose (a key of JOBS); an option of another job is an
    error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = script_parser(__doc__)
    owners: dict[str, tuple[str, ...]] = {}  # option dest -> the jobs that use it

    def option(group: Any, jobs: str, *flags: str, **kwargs: Any) -> None:
        owners[group.add_argument(*flags, **kwargs).dest] = tuple(jobs.split())

    model = parser.add_argument_group("the model (every job)")
    option(model, "sets finetune score export", "--checkpoint", default=CHECKPOINT,
           help="quality checkpoint (train_lsvq.py)")
    option(model, "score export", "--saliency-checkpoint", default=SALIENCY_CHECKPOINT,
           help="saliency checkpoint (train_sal.py) that the quality model's weighting needs")
    option(model, "sets score", "--model", metavar="FILE",
           help="an exported model file in place of --checkpoint and --saliency-checkpoint")
    sets = parser.add_argument_group("labelled sets and fine-tuning")
    option(sets, "sets finetune", "--dataset", action="append", choices=sorted(QUALITY_SETS),
           help=quality_help())
    option(sets, "sets finetune", "--labels", action="append", help="the set's label file")
    option(sets, "sets finetune", "--frames", action="append", help="the set's stored frames")
    option(sets, "sets finetune", "--saliency", action="append", help="the set's stored maps")
    owners.update(dict.fromkeys(add_label_arguments(sets), ("sets", "finetune")))
    finetune = parser.add_argument_group("fine-tuning protocol")
    option(finetune, "finetune", "--finetune-splits", type=int, nargs="?", const=FINETUNE_SPLITS,
           metavar="R", help=f"train on R seeded random splits (R default {FINETUNE_SPLITS})")
    option(finetune, "finetune", "--from-scratch", action="store_true",
           help="fresh weights of the checkpoint's architecture instead of its weights")
    option(finetune, "finetune", "--seed", type=int, default=SEED,
           help="seed of the first split (split r uses seed + r)")
    score = parser.add_argument_group("scoring")
    option(score, "score", "--videos", nargs="+", metavar="INPUT",
           help="video files or folders (searched recursively) to score")
    option(score, "score", "--resume", action="store_true",
           help="keep the scores of an interrupted run (<out>.partial) and score the rest; "
                "the videos that failed there are not tried again")
    option(score, "score", "--retry-failed", action="store_true",
           help="with --resume: try again the videos that failed in the kept results (one "
                "that crashed or hung its decoder is decoded in a worker process even with "
                "--workers 0)")
    export = parser.add_argument_group("export")
    option(export, "export", "--export", metavar="FILE",
           help="write --checkpoint and --saliency-checkpoint as one safetensors model file "
                "(--precision bf16: half the size)")
    run = parser.add_argument_group("running")
    option(run, "sets finetune score", "--out",
           help=f"folder (default {OUT}); scoring: CSV file (default {SCORES})")
    option(run, "sets score", "--batch-size", type=int, default=BATCH_SIZE,
           help="clips (videos) per forward pass")
    option(run, "sets score", "--workers", type=int, default=WORKERS,
           help="decoding or loading processes (default: the machine's cores, at most one per "
                "video, none for a single video); " + MAIN_PROCESS_NOTE)
    owners[add_timeout_argument(run)] = ("sets", "score")
    owners[add_shard_argument(run)] = ("sets", "score")
    add_precision_arguments(run, "the networks")
    add_device_argument(run)
    args = parser.parse_args(argv[:cut])
    args.train_options = argv[cut + 1:]
    args.job = ("export" if args.export else "score" if args.videos else
                "finetune" if args.finetune_splits else "sets")
    check_args(parser, args, owners)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
               owners: dict[str, tuple[str, ...]]) -> None:
    """An option of another job, or a job without what it needs, is a usage error."""
    for dest, jobs in owners.items():
        if args.job not in jobs and getattr(args, dest) != parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            parser.error(f"{flag} is not used when {JOBS[args.job]}")
    if args.train_options and args.job != "finetune":
        parser.error("options after -- are for the fine-tuning protocol's train_lsvq.py")
    if args.job == "export":
        if not args.checkpoint:
            parser.error("--export needs --checkpoint (and --saliency-checkpoint)")
        return
    if args.model and (args.checkpoint or args.saliency_checkpoint):
        parser.error("--model replaces --checkpoint and --saliency-checkpoint")
    if not (args.checkpoint or args.model or args.from_scratch):
        parser.error("--checkpoint or --model is needed")
    if args.job == "score":
        args.out = args.out or SCORES
        if args.retry_failed and not args.resume:
            parser.error("--retry-failed goes with --resume (it retries the kept failures)")
        return
    args.out = args.out or OUT
    if not args.dataset:
        parser.error("give --dataset with --labels and --frames, or --videos")
    lengths = {len(args.labels or []), len(args.frames or []), len(args.dataset)}
    if len(lengths) > 1 or len(args.saliency or args.dataset) != len(args.dataset):
        parser.error("give --labels, --frames (and --saliency, if any) once per --dataset")
    if args.job == "finetune" and len(args.dataset) > 1:
        parser.error("the fine-tuning protocol takes one dataset per call")


def labelled_sets(args: argparse.Namespace) -> list[LabelledSet]:
    saliency = args.saliency or [None] * len(args.dataset)
    return [LabelledSet(*fields, label_columns(args))
            for fields in zip(args.dataset, args.labels, args.frames, saliency)]


def model_source(args: argparse.Namespace) -> Source:
    """--model (an exported file) or --checkpoint."""
    return ModelFile(args.model) if args.model else args.checkpoint


def export(args: argparse.Namespace) -> int:
    written = export_model(args.export, args.checkpoint, args.saliency_checkpoint,
                           args.precision or "fp32", FRAMES_PER_VIDEO)
    print(f"model written to {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return 0


def score(args: argparse.Namespace) -> int:
    writable_folder(Path(args.out).parent)
    shard = current_shard(args.shard)
    device = shard_device(pick_device(args.device))
    source = model_source(args)
    scorer = load_scorer(source, source if args.model else args.saliency_checkpoint, device,
                         args.precision, args.compile, args.batch_size)
    paths = [str(path) for _, path in find_videos(args.videos)]
    scores, failures = score_to_csv(scorer, paths, args.out, args.workers, shard, args.resume,
                                    timeout=args.video_timeout, retry_failed=args.retry_failed)
    print(f"{len(scores)} video(s) scored into {args.out}" + (
        "" if shard.single else f" (shard {shard.index} of {shard.count}; the last shard to "
                                "finish writes the file)"))
    if failures:
        print(f"{len(failures)} video(s) could not be read (listed in "
              f"{failures_file(args.out)}):", file=sys.stderr)
        for failure in failures.values():  # each names its file
            print(f"  {failure}", file=sys.stderr)
    return exit_status(shard, bool(failures), is_merged(Path(args.out), shard),
                       failures_file(args.out))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: every video scored or evaluated; 1: done, but some videos failed or rows
    were left out (listed on stderr); 2: an error stopped the run."""
    args = parse_args(argv)
    problems = len(PROBLEMS)
    try:
        if args.job == "export":
            return export(args)
        if args.job == "score":
            return score(args)
        writable_folder(args.out)
        if args.job == "finetune":
            finetune_splits(args.checkpoint, labelled_sets(args)[0], args.out,
                            args.finetune_splits, args.from_scratch, args.seed,
                            args.train_options, args.device)
            return 1 if len(PROBLEMS) > problems else 0
        shard = current_shard(args.shard)
        table = evaluate_sets(model_source(args), labelled_sets(args), args.out,
                              args.batch_size, args.workers, args.device, shard, args.precision,
                              args.video_timeout)
        failed = read_failures(Path(args.out) / FAILURES, "video_id") if table is not None else {}
        if failed:
            print(f"{len(failed)} video(s) left out, their files failed (listed in "
                  f"{Path(args.out) / FAILURES}):", file=sys.stderr)
            for failure in failed.values():
                print(f"  {failure}", file=sys.stderr)
        return exit_status(shard, len(PROBLEMS) > problems, table is not None)
    except (OSError, ValueError) as err:  # LabelFileError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_script(main)
