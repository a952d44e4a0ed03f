"""Stage 1: sample K frames per video, resize them, store them as PNGs.

    python extract_frame.py videos/ --out frames/ --workers 4
    python extract_frame.py --dataset konvid --labels KoNViD_1k_mos.csv --video-root KoNViD/ --out frames/
    python extract_frame.py --dataset csv --labels ratings.csv --video-root clips/ --out frames/

Each video becomes `<out>/<video_id>/<frame index>.png` (5-digit, 0-based index in the
decoded stream) plus `frames.json`, which lists the K file names in temporal order (a video
shorter than K repeats frames, so a name can appear twice there). A video's folder appears
whole or not at all, and re-running skips the videos already done. Videos that cannot be read
are listed at the end and in `<out>/failures.csv` (video_id, kind, problem; the kinds are
video_io's and `duplicate-id`, `write-failed`); the exit status is 1 if there were any.
Decoding (any codec FFmpeg reads, AV1 included) is video_io.py's. Under torchrun, or with
--shard I/N, each process samples its share of the videos (README, "Corpus-scale runs");
Ctrl-C stops with exit status 130, keeping every finished video.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import cv2
from tqdm import tqdm

from dagr import paper
from dagr.cli import Interrupted, run_script, script_parser
from dagr.datasets import QUALITY_SETS, quality_help, read_table
from dagr.failures import Failure, write_failures
from dagr.files import atomic_path, remove_leftovers, writable_folder
from dagr.labels import PROBLEMS, LabelColumns, add_label_arguments, label_columns
from dagr.sharding import (CsvOutput, Shard, add_shard_argument, current_shard, exit_status,
                           is_merged, write_outputs)
from dagr.video_io import (VIDEO_EXTENSIONS, SampledVideo, VideoError, find_videos,
                           sample_video)
from dagr.workers import default_workers, sigint_ignored
from dataloader import FRAME_LIST

# ----------------------------------------------------------------------------- config
NUM_FRAMES = paper.FRAMES_PER_VIDEO  # K: frames kept per video
HEIGHT, WIDTH = paper.FRAME_SIZE     # stored size
WORKERS = None           # decoding processes; None: the cores, at most one per video
OUT = "frames"
FAILURES = "failures.csv"
DUPLICATE_ID = "duplicate-id"  # failure kinds besides video_io's: two videos, one id
WRITE_FAILED = "write-failed"  # the frames could not be stored
# -----------------------------------------------------------------------------


def frame_name(index: int) -> str:
    """File name of the frame at stream position `index`; saliency maps reuse it."""
    return f"{index:05d}.png"


def write_frames(sampled: SampledVideo, folder: Path) -> None:
    """Write the frames and `frames.json` into `folder`, all or nothing."""
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for index, frame in zip(sampled.indices, sampled.frames):
            if not cv2.imwrite(str(tmp / frame_name(index)), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{tmp / frame_name(index)}: could not be written")
        (tmp / FRAME_LIST).write_text(json.dumps({
            "frames": [frame_name(i) for i in sampled.indices],
            "decoded": sampled.decoded, "declared": sampled.declared, "notes": sampled.notes,
        }, indent=1))


def is_done(folder: Path) -> bool:
    return (folder / FRAME_LIST).is_file()


@dataclass
class Job:
    video_id: str
    path: Path
    folder: Path
    k: int
    size: tuple[int, int]


def run_job(job: Job) -> tuple[str, str, str | Failure]:
    """Sample and store one video. Returns (video_id, status, message); status is
    `done`, `note` (done, with something worth saying) or `failed` (message: a Failure,
    whose kind says why)."""
    try:
        sampled = sample_video(job.path, job.k, job.size)
        write_frames(sampled, job.folder)
    except VideoError as err:
        return job.video_id, "failed", Failure(err.kind, str(err))
    except (OSError, cv2.error) as err:
        return job.video_id, "failed", Failure(WRITE_FAILED, str(err))
    if sampled.notes:
        return job.video_id, "note", f"{job.path}: " + "; ".join(sampled.notes)
    return job.video_id, "done", ""


def extract(videos: Sequence[tuple[str, Path]], out: str | Path, k: int = NUM_FRAMES,
            size: tuple[int, int] = (HEIGHT, WIDTH), workers: int | None = WORKERS,
            progress: bool = True, shard: Shard = Shard()) -> dict[str, Failure]:
    """Sample every video of `shard`'s share (every video by default) not yet done into `out`.
    Returns {video_id: Failure} for the share's videos that failed; `<out>/failures.csv` lists
    those of all shards once the last one is done (removed when all succeed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    failures, jobs = {}, []
    for video_id, path, duplicate in shard.take(_mark_duplicates(videos)):
        if duplicate:
            failures[video_id] = Failure(DUPLICATE_ID, f"{path}: another video already has "
                                         f"the id {video_id!r}; skipped")
        elif not is_done(out / video_id):
            jobs.append(Job(video_id, Path(path), out / video_id, k, tuple(size)))
    workers = default_workers(len(jobs)) if workers is None else workers
    finished = 0
    try:
        for video_id, status, message in _run_all(jobs, workers, progress):
            finished += 1
            if status == "failed":
                failures[video_id] = message
            elif status == "note":
                tqdm.write(f"note: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        remove_leftovers(job.folder for job in jobs)  # of the videos stopped workers were writing
        raise Interrupted(f"{finished} of {len(jobs)} videos sampled into {out} and kept; run "
                          "the same command again to do the rest") from None
    write_outputs([CsvOutput(out / FAILURES, lambda path: write_failures(path, failures, "video_id"),
                             "video_id")], shard)
    return failures


def _mark_duplicates(videos: Sequence[tuple[str, Path]]) -> list[tuple[str, Path, bool]]:
    """(video_id, path, whether an earlier video has the same id) for each of `videos`."""
    seen: set[str] = set()
    marked = []
    for video_id, path in videos:
        marked.append((video_id, path, video_id in seen))
        seen.add(video_id)
    return marked


def _run_all(jobs: list[Job], workers: int, progress: bool):
    bar = tqdm(total=len(jobs), unit="video", desc="extract frames", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        results = map(run_job, jobs)
    else:
        # spawn, not fork: forking a process that already holds torch / OpenCV threads can hang
        with sigint_ignored():
            pool = get_context("spawn").Pool(workers)
        results = pool.imap_unordered(run_job, jobs)
    try:
        for result in results:
            bar.update()
            yield result
    except BaseException:
        if workers > 1 and len(jobs) > 1:
            pool.terminate()  # stop now, not after the queued videos
        raise
    finally:
        bar.close()
        if workers > 1 and len(jobs) > 1:
            pool.close()
            pool.join()


def videos_from_labels(dataset: str, labels: str, video_root: str,
                       columns: LabelColumns = LabelColumns()
                       ) -> tuple[list[tuple[str, Path]], list[str]]:
    """(video_id, path) for the rows of a label file (official, csv or labels-txt) whose
    video exists, and the problems reported while reading it (rows left out: missing video,
    bad MOS)."""
    reported = len(PROBLEMS)
    table = read_table(dataset, labels, video_root, columns)
    return list(zip(table["video_id"], map(Path, table["path"]))), PROBLEMS[reported:]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("inputs", nargs="*", help="video files or folders (searched recursively)")
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--num-frames", type=int, default=NUM_FRAMES,
                        help=f"frames kept per video (default: {NUM_FRAMES})")
    parser.add_argument("--size", type=int, nargs=2, default=(HEIGHT, WIDTH), metavar=("H", "W"),
                        help=f"stored frame height and width (default: {HEIGHT} {WIDTH})")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="decoding processes (default: the machine's cores, at most one per "
                             "video, none for a single video)")
    parser.add_argument("--dataset", choices=sorted(QUALITY_SETS),
                        help="read the videos from a label file; " + quality_help())
    parser.add_argument("--labels", help="the dataset's label file")
    add_label_arguments(parser)
    parser.add_argument("--video-root", help="folder holding the dataset's videos")
    add_shard_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.dataset):
        parser.error("give video files/folders, or --dataset with --labels and --video-root")
    if args.dataset and not (args.labels and args.video_root):
        parser.error("--dataset needs --labels and --video-root")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos, left_out = (videos_from_labels(args.dataset, args.labels, args.video_root,
                                               label_columns(args))
                            if args.dataset else (find_videos(args.inputs), []))
        if not videos:
            raise FileNotFoundError(f"{args.labels}: no row's video is under {args.video_root}"
                                    if args.dataset else
                                    f"{' '.join(args.inputs)}: no video file found (extensions: "
                                    f"{' '.join(VIDEO_EXTENSIONS)})")
        writable_folder(args.out)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shard = current_shard(args.shard)
    failures = extract(videos, args.out, args.num_frames, tuple(args.size), args.workers,
                       shard=shard)
    share = len(shard.take(videos))
    done = share - len(failures)
    print(f"{done} of {share} videos sampled into {args.out}"
          + ("" if shard.single else f" (shard {shard.index} of {shard.count})"))
    if failures:
        print(f"{len(failures)} failed (listed in {Path(args.out) / FAILURES}):", file=sys.stderr)
        for message in failures.values():
            print(f"  {message}", file=sys.stderr)
    for problem in left_out:
        print(f"left out: {problem}", file=sys.stderr)
    failures_csv = Path(args.out) / FAILURES
    return exit_status(shard, bool(failures or left_out), is_merged(failures_csv, shard),
                       failures_csv)


if __name__ == "__main__":
    run_script(main)
