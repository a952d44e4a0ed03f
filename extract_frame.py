"""Stage 1: sample K frames per video, resize them, store them as PNGs.

    python extract_frame.py --videos videos/ --out frames/ --workers 4
    python extract_frame.py --dataset konvid --labels KoNViD_1k_mos.csv --root KoNViD/ --out frames/
    python extract_frame.py --dataset csv --labels ratings.csv --root clips/ --out frames/

Each video becomes `<out>/<video_id>/<frame index>.png` (5-digit, 0-based index in the
decoded stream) plus `frames.json`, which lists the K file names in temporal order (a video
shorter than K repeats frames, so a name can appear twice there). A video's folder appears
whole or not at all, and re-running skips the videos already done. Videos that cannot be read
are listed at the end and in `<out>/failures.csv` (video_id, kind, problem; the kinds are
video_io's, `duplicate-id`, `write-failed`, and `crashed` or `timed-out` for a video that
killed or hung its decoding process); the exit status is 1 if there were any.
Decoding (any codec FFmpeg reads, AV1 included) is video_io.py's, in worker processes that a
crashing or hanging decoder takes down alone (dagr/supervised.py); a rerun decodes a video
that crashed or hung before in a worker process again. With --workers 0 (the default for a
single video) decoding runs in this process, which a native crash ends: the rerun finds the
video it was decoding in `.<out>.in-flight` and decodes in a worker process. Under torchrun,
or with --shard I/N, each process samples its share of the videos (docs/distributed.md);
Ctrl-C stops with exit status 130, keeping every finished video.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

from dagr import paper
from dagr.cli import deprecated_alias, run_script, script_parser
from dagr.datasets import QUALITY_SETS, quality_help, read_table
from dagr.failures import DUPLICATE_ID, Failure
from dagr.frames import FRAME_LIST, SampleJob, sample_and_store
from dagr.labels import LabelColumns, add_label_arguments, label_columns, reported_problems
from dagr.outputs import folder_output
from dagr.runner import Outcome, RunOptions, Stage, StageRun, Workers
from dagr.sharding import Shard, add_shard_argument, current_shard
from dagr.supervised import VIDEO_TIMEOUT, add_timeout_argument
from dagr.video_io import find_videos
from dagr.workers import MAIN_PROCESS_NOTE, one_opencv_thread

# ----------------------------------------------------------------------------- config
NUM_FRAMES = paper.FRAMES_PER_VIDEO  # K: frames kept per video
HEIGHT, WIDTH = paper.FRAME_SIZE     # stored size
WORKERS = None           # decoding processes; None: the cores, at most one per video
OUT = "frames"
# -----------------------------------------------------------------------------


def is_done(folder: Path) -> bool:
    return (folder / FRAME_LIST).is_file()


def extract(videos: Sequence[tuple[str, Path]], out: str | Path, k: int = NUM_FRAMES,
            size: tuple[int, int] = (HEIGHT, WIDTH), workers: int | None = WORKERS,
            progress: bool = True, shard: Shard = Shard(),
            timeout: float = VIDEO_TIMEOUT) -> dict[str, Failure]:
    """Sample every video of `shard`'s share (every video by default) not yet done into `out`,
    each by a supervised worker process (`timeout`: seconds without progress before a video
    counts as hung). Returns {video_id: Failure} for the share's videos that failed;
    `<out>/failures.csv` lists those of all shards once the last one is done (removed when
    all succeed)."""
    options = RunOptions(workers, timeout, shard, progress=progress)
    return sample_videos(videos, out, k, size, options).failures


def sample_videos(videos: Sequence[tuple[str, Path]], out: str | Path, k: int,
                  size: tuple[int, int], options: RunOptions) -> StageRun:
    """The stage, as the runner runs it: a SampleJob per video in, a folder per video out
    (its failures CSV written); returns the run, for its summary."""
    stage = Stage("extract frames", "sampled", folder_output(out), key=_job_id, name=_job_name,
                  check=_duplicate, done=lambda job: is_done(job.folder),
                  leftovers=lambda job: job.folder)
    run = StageRun(stage, options)
    run.run(sample_jobs(videos, Path(out), k, size), _sample)
    run.write()
    return run


def sample_jobs(videos: Sequence[tuple[str, Path]], out: Path, k: int,
                size: tuple[int, int]) -> list[SampleJob]:
    """One SampleJob per video; a video whose id an earlier one has is marked a duplicate."""
    seen: set[str] = set()
    jobs = []
    for video_id, path in videos:
        jobs.append(SampleJob(video_id, Path(path), out / video_id, k, tuple(size),
                              duplicate=video_id in seen))
        seen.add(video_id)
    return jobs


def _duplicate(job: SampleJob) -> Failure | None:
    if not job.duplicate:
        return None
    return Failure(DUPLICATE_ID, f"{job.path}: another video already has the id "
                                 f"{job.video_id!r}; skipped")


def _sample(jobs: list[SampleJob], workers: Workers) -> Iterator[Outcome]:
    """Each job's outcome as the workers finish them."""
    for job, outcome in workers.map(sample_and_store, jobs, name=_job_name,
                                    setup=one_opencv_thread):
        status, message = ("failed", outcome) if isinstance(outcome, Failure) else outcome
        yield Outcome(job.video_id, message if status == "failed" else None,
                      note=message if status == "note" else "")


def _job_id(job: SampleJob) -> str:
    return job.video_id


def _job_name(job: SampleJob) -> str:
    return str(job.path)


def videos_from_labels(dataset: str, labels: str, video_root: str,
                       columns: LabelColumns = LabelColumns()
                       ) -> tuple[list[tuple[str, Path]], list[str]]:
    """(video_id, path) for the rows of a label file (official, csv or labels-txt) whose
    video exists, and the problems reported while reading it (rows left out: missing video,
    bad MOS)."""
    with reported_problems() as problems:
        table = read_table(dataset, labels, video_root, columns)
    return list(zip(table["video_id"], map(Path, table["path"]))), problems


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    videos = parser.add_argument("--videos", nargs="+", metavar="INPUT",
                                 help="video files or folders (searched recursively)")
    deprecated_alias(parser, "inputs", videos)
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--num-frames", type=int, default=NUM_FRAMES,
                        help=f"frames kept per video (default: {NUM_FRAMES})")
    parser.add_argument("--size", type=int, nargs=2, default=(HEIGHT, WIDTH), metavar=("H", "W"),
                        help=f"stored frame height and width (default: {HEIGHT} {WIDTH})")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="decoding processes (default: the machine's cores, at most one per "
                             "video, none for a single video); " + MAIN_PROCESS_NOTE)
    add_timeout_argument(parser)
    parser.add_argument("--dataset", choices=sorted(QUALITY_SETS),
                        help="read the videos from a label file; " + quality_help())
    parser.add_argument("--labels", help="the dataset's label file")
    add_label_arguments(parser)
    deprecated_alias(parser, "--video-root", parser.add_argument(
        "--root", help="the dataset's folder in its publisher's layout (its videos)"))
    add_shard_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.videos) == bool(args.dataset):
        parser.error("give --videos INPUT ..., or --dataset with --labels and --root")
    if args.dataset and not (args.labels and args.root):
        parser.error("--dataset needs --labels and --root")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos, left_out = (videos_from_labels(args.dataset, args.labels, args.root,
                                               label_columns(args))
                            if args.dataset else (find_videos(args.videos), []))
        if not videos:  # find_videos raises for inputs that hold none
            raise FileNotFoundError(f"{args.labels}: no row's video is under {args.root}")
        run = sample_videos(videos, args.out, args.num_frames, tuple(args.size),
                            RunOptions(args.workers, args.video_timeout, current_shard(args.shard)))
    except (OSError, ValueError) as err:  # WorkerError: no decoding process could start
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run.summary(left_out)


if __name__ == "__main__":
    run_script(main)
