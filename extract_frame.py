"""Stage 1: sample K frames per video, resize them, store them as PNGs.

    python extract_frame.py videos/ --out frames/ --workers 4
    python extract_frame.py --dataset konvid --labels KoNViD_1k_mos.csv --video-root KoNViD/ --out frames/

Each video becomes `<out>/<video_id>/<frame index>.png` (5-digit, 0-based index in the
decoded stream) plus `frames.json`, which lists the K file names in temporal order (a video
shorter than K repeats frames, so a name can appear twice there). A video's folder appears
whole or not at all, and re-running skips the videos already done. Videos that cannot be read
are listed at the end and in `<out>/failures.csv`; the exit status is 1 if there were any.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from runtime import atomic_path, script_parser, writable_folder, write_failures

# ----------------------------------------------------------------------------- config
NUM_FRAMES = 8           # K: frames kept per video (the quality network reads 8)
HEIGHT, WIDTH = 224, 398  # stored size; about 16:9, aspect ratio not kept (as in the paper)
WORKERS = 4              # decoding processes
OUT = "frames"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
FRAME_LIST = "frames.json"  # per-video list of the K frame files in temporal order
FAILURES = "failures.csv"
# -----------------------------------------------------------------------------


class VideoError(Exception):
    """A video that cannot be sampled; the message names the file and the problem."""


@dataclass
class SampledVideo:
    """K frames of one video. `frames`: (K, H, W, 3) uint8 RGB; `indices`: their positions
    in the decoded stream; `decoded`: how many frames actually decode."""
    frames: np.ndarray
    indices: list[int]
    decoded: int
    declared: int
    notes: list[str] = field(default_factory=list)


def sample_indices(num_decoded: int, k: int = NUM_FRAMES) -> list[int]:
    """K indices spread uniformly over `num_decoded` frames: round(linspace(0, n-1, K)).

    With fewer than K frames some indices repeat.
    """
    if num_decoded < 1:
        raise ValueError("a video needs at least one frame")
    return [int(i) for i in np.round(np.linspace(0, num_decoded - 1, k))]


def find_videos(inputs: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(video_id, path) for video files and for the videos found recursively in folders.

    A file's id is its stem; inside a folder it is the path relative to that folder without
    the extension (so `batch1/722.mp4` keeps its `batch1/` prefix).
    """
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                    found.append((path.relative_to(item).with_suffix("").as_posix(), path))
        elif item.is_file():
            found.append((item.stem, item))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found


def _open(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot be opened as a video (corrupt, empty or not a video)")
    return capture


def _read_at(path: Path, wanted: Sequence[int], size: tuple[int, int] | None
             ) -> tuple[dict[int, np.ndarray], int, bool]:
    """Decode `path` sequentially up to max(wanted) and one frame beyond, keeping `wanted`.

    Frames are grabbed (decoded but not converted) and retrieved only when wanted, which is
    faster and more exact than seeking. Returns the kept frames (RGB, resized to `size` =
    (H, W) if given), how many frames were decoded, and whether the stream goes on past
    max(wanted) + 1 frames.
    """
    capture, kept, want = _open(path), {}, set(wanted)
    last = max(wanted)
    count = 0
    try:
        while count <= last + 1:
            if not capture.grab():
                return kept, count, False
            if count in want:
                ok, frame = capture.retrieve()
                if not ok:
                    return kept, count, False
                kept[count] = _to_rgb(frame, size)
            count += 1
        return kept, count, True
    finally:
        capture.release()


def _to_rgb(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def count_frames(path: Path) -> int:
    """Frames that actually decode (the container's count can be wrong)."""
    capture, count = _open(path), 0
    try:
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return count


def sample_video(path: str | Path, k: int = NUM_FRAMES,
                 size: tuple[int, int] | None = (HEIGHT, WIDTH)) -> SampledVideo:
    """Decode `path` and keep K frames spread uniformly over the frames that decode.

    Trusts the container's frame count first; if the stream ends early, or runs past that
    count, it counts the decodable frames and samples again. Raises VideoError when the file
    is unreadable or holds no frame.
    """
    path = Path(path)
    capture = _open(path)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    notes = []
    total = declared if declared > 0 else count_frames(path)
    if total < 1:
        raise VideoError(f"{path}: no frame could be decoded")
    kept, decoded, more = _read_at(path, sample_indices(total, k), size)
    if decoded < total or more:
        total = decoded if decoded < total else count_frames(path)
        if total < 1:
            raise VideoError(f"{path}: no frame could be decoded")
        if declared > 0:
            notes.append(f"container declares {declared} frames but {total} decode; "
                         "sampled over the decoded ones")
        kept, decoded, _ = _read_at(path, sample_indices(total, k), size)
    indices = sample_indices(total, k)
    missing = [i for i in indices if i not in kept]
    if missing:
        raise VideoError(f"{path}: frames {missing} could not be decoded on a second pass")
    if total < k:
        notes.append(f"only {total} frames decode; repeated frames to get {k}")
    return SampledVideo(np.stack([kept[i] for i in indices]), indices, total, declared, notes)


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


def run_job(job: Job) -> tuple[str, str, str]:
    """Sample and store one video. Returns (video_id, status, message); status is
    `done`, `note` (done, with something worth saying) or `failed`."""
    try:
        sampled = sample_video(job.path, job.k, job.size)
        write_frames(sampled, job.folder)
    except (VideoError, OSError, cv2.error) as err:
        return job.video_id, "failed", str(err)
    if sampled.notes:
        return job.video_id, "note", f"{job.path}: " + "; ".join(sampled.notes)
    return job.video_id, "done", ""


def extract(videos: Sequence[tuple[str, Path]], out: str | Path, k: int = NUM_FRAMES,
            size: tuple[int, int] = (HEIGHT, WIDTH), workers: int = WORKERS,
            progress: bool = True) -> dict[str, str]:
    """Sample every video not yet done into `out`. Returns {video_id: problem} for the
    videos that failed (also written to `<out>/failures.csv`, removed when all succeed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    failures, jobs, seen = {}, [], set()
    for video_id, path in videos:
        if video_id in seen:
            failures[video_id] = f"{path}: another video already has the id {video_id!r}; skipped"
            continue
        seen.add(video_id)
        if not is_done(out / video_id):
            jobs.append(Job(video_id, Path(path), out / video_id, k, tuple(size)))
    for video_id, status, message in _run_all(jobs, workers, progress):
        if status == "failed":
            failures[video_id] = message
        elif status == "note":
            tqdm.write(f"note: {message}", file=sys.stderr)
    write_failures(out / FAILURES, failures, "video_id")
    return failures


def _run_all(jobs: list[Job], workers: int, progress: bool):
    bar = tqdm(total=len(jobs), unit="video", desc="extract frames", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        results = map(run_job, jobs)
    else:
        # spawn, not fork: forking a process that already holds torch / OpenCV threads can hang
        pool = get_context("spawn").Pool(workers)
        results = pool.imap_unordered(run_job, jobs)
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if workers > 1 and len(jobs) > 1:
            pool.close()
            pool.join()


def videos_from_labels(dataset: str, labels: str, video_root: str
                       ) -> tuple[list[tuple[str, Path]], list[str]]:
    """(video_id, path) for the rows of a dataset's official label file whose video exists,
    and the problems reported while reading it (rows left out: missing video, bad MOS)."""
    # imported here because dataloader imports this module for its decoding
    from dataloader import PROBLEMS, read_labels

    reported = len(PROBLEMS)
    table = read_labels(dataset, labels, video_root)
    return list(zip(table["video_id"], map(Path, table["path"]))), PROBLEMS[reported:]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("inputs", nargs="*", help="video files or folders (searched recursively)")
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--num-frames", type=int, default=NUM_FRAMES, help="frames kept per video")
    parser.add_argument("--size", type=int, nargs=2, default=(HEIGHT, WIDTH), metavar=("H", "W"),
                        help="stored frame height and width")
    parser.add_argument("--workers", type=int, default=WORKERS, help="decoding processes")
    parser.add_argument("--dataset", help="read the videos from a dataset's label file: "
                        "lsvq, konvid, livevqc or youtube-ugc")
    parser.add_argument("--labels", help="the dataset's official label file")
    parser.add_argument("--video-root", help="folder holding the dataset's videos")
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.dataset):
        parser.error("give video files/folders, or --dataset with --labels and --video-root")
    if args.dataset and not (args.labels and args.video_root):
        parser.error("--dataset needs --labels and --video-root")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos, left_out = (videos_from_labels(args.dataset, args.labels, args.video_root)
                            if args.dataset else (find_videos(args.inputs), []))
        writable_folder(args.out)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failures = extract(videos, args.out, args.num_frames, tuple(args.size), args.workers)
    done = len(videos) - len(failures)
    print(f"{done} of {len(videos)} videos sampled into {args.out}")
    if failures:
        print(f"{len(failures)} failed (listed in {Path(args.out) / FAILURES}):", file=sys.stderr)
        for message in failures.values():
            print(f"  {message}", file=sys.stderr)
    for problem in left_out:
        print(f"left out: {problem}", file=sys.stderr)
    return 1 if failures or left_out else 0


if __name__ == "__main__":
    sys.exit(main())
