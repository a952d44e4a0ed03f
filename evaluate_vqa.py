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
(dagr/runner.py): a video that crashes its process is reported as `crashed` (with the signal),
one that makes no progress for --video-timeout seconds as `timed-out`, in the failures CSV
(`<stem>_failures.csv` beside a scores file, `<out>/failures.csv` for labelled sets) and at
the end; the other videos go on; the exit status is 1. --workers 0 (the default for a single
video) decodes in this process, which a native crash ends; the rerun decodes the video it was
on in a worker process. --resume keeps the videos that failed as failed unless --retry-failed.
Scoring's --out is checked before any work: .csv, .json or .jsonl (the format), or a folder
(ending in /, or an existing one) for <folder>/scores.csv; an existing scores file is refused,
and an interrupted run's partial file is continued with --resume or refused.

Outputs, resuming, sharding and exit statuses: docs/pipeline.md ("Stage 4") and
docs/scoring.md.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import sys
from typing import Any, Callable, Sequence

from dagr import paper
from dagr.model_file import ModelFile, Source, export_model
from dagr.cli import run_script, script_parser
from dagr.datasets import QUALITY_SETS, quality_help
from dagr.device import add_device_argument, pick_device
from dagr.finetune import finetune_splits
from dagr.labelled_sets import LabelledSet, evaluate_with, set_evaluation
from dagr.labels import add_label_arguments, label_columns, reported_problems
from dagr.outputs import SCORES, folder_output, scores_output
from dagr.precision import add_precision_arguments
from dagr.scoring import load_scorer, score_to_csv
from dagr.sharding import add_shard_argument, current_shard, shard_device
from dagr.supervised import add_timeout_argument
from dagr.video_io import find_videos
from dagr.workers import MAIN_PROCESS_NOTE

# ----------------------------------------------------------------------------- config
CHECKPOINT = None           # quality checkpoint (train_lsvq.py)
SALIENCY_CHECKPOINT = None  # saliency checkpoint (train_sal.py), for scoring
OUT = "eval"                # folder for labelled sets and fine-tuning
FINETUNE_SPLITS = 10        # R, when --finetune-splits is given without a number
FRAMES_PER_VIDEO = paper.FRAMES_PER_VIDEO  # frames an exported model file scores with
BATCH_SIZE = 16
WORKERS = None              # decoding processes; None: the machine's cores, one per video at most
SEED = 0
# -----------------------------------------------------------------------------

JOBS = {"sets": "evaluating labelled sets", "finetune": "--finetune-splits",
        "score": "scoring (--videos)", "export": "--export"}


# ----------------------------------------------------------------------------- the jobs

def labelled_sets_job(args: argparse.Namespace) -> int:
    """Labelled sets: their stored frames and maps -> predictions, scatters, results table."""
    shard = current_shard(args.shard)
    run = set_evaluation(args.out, args.workers, args.video_timeout, shard)
    with reported_problems() as left_out:
        evaluate_with(run, model_source(args), labelled_sets(args), args.batch_size,
                      args.device, args.precision)
    return run.summary(left_out)


def finetune_job(args: argparse.Namespace) -> int:
    """The fine-tuning protocol: one labelled set -> R trained splits, median and std."""
    out = folder_output(args.out)
    out.create()
    with reported_problems() as left_out:
        finetune_splits(args.checkpoint, labelled_sets(args)[0], out.path,
                        args.finetune_splits, args.from_scratch, args.seed, args.train_options,
                        args.device)
    return 1 if left_out else 0


def score_job(args: argparse.Namespace) -> int:
    """Scoring: video files -> a scores file (and its failures CSV)."""
    shard = current_shard(args.shard)
    out = scores_output(args.out, shard, args.resume)  # before the model loads
    paths = [str(path) for _, path in find_videos(args.videos)]
    device = shard_device(pick_device(args.device))
    source = model_source(args)
    scorer = load_scorer(source, source if args.model else args.saliency_checkpoint, device,
                         args.precision, args.compile, args.batch_size)
    run = score_to_csv(scorer, paths, out, args.workers, shard, args.resume,
                       timeout=args.video_timeout, retry_failed=args.retry_failed)
    return run.summary()


def export_job(args: argparse.Namespace) -> int:
    """Export: two checkpoints -> one safetensors model file."""
    written = export_model(args.export, args.checkpoint, args.saliency_checkpoint,
                           args.precision or "fp32", FRAMES_PER_VIDEO)
    print(f"model written to {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return 0


RUN: dict[str, Callable[[argparse.Namespace], int]] = {
    "sets": labelled_sets_job, "finetune": finetune_job, "score": score_job,
    "export": export_job}


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
           help=f"folder (default {OUT}); scoring: scores file, .csv, .json or .jsonl, or a "
                f"folder/ for folder/{SCORES} (default {SCORES})")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: every video scored or evaluated; 1: done, but some videos failed or rows
    were left out (listed on stderr); 2: an error stopped the run."""
    args = parse_args(argv)
    try:
        return RUN[args.job](args)
    except (OSError, ValueError) as err:  # LabelFileError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_script(main)
