"""The stored frames of a video, as extract_frame.py writes them and every later stage reads
them: `<frames>/<video_id>/<frame index>.png` (5-digit, 0-based index in the decoded stream)
and `frames.json`, which lists the K file names in temporal order; saliency maps reuse the
names. Also the per-video work of the stages' worker processes on them: sample and store one
video, read one video's frames (and maps).

Light on purpose: a worker process imports this, not torch, so that it starts in a fraction
of a second (after each crash, too). Imports no project module but dagr.failures, dagr.files,
dagr.images and dagr.video_io.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dagr.failures import UNREADABLE_FRAMES, WRITE_FAILED, Failure
from dagr.files import atomic_path
from dagr.images import load_map_levels, load_rgb, read_image, rgb_at, write_png
from dagr.video_io import SampledVideo, VideoError, sample_video

FRAME_LIST = "frames.json"  # extract_frame.py's per-video list of its frame files, in order


def frame_name(index: int) -> str:
    """File name of the frame at stream position `index`; saliency maps reuse it."""
    return f"{index:05d}.png"


def frame_files(folder: Path) -> list[str]:
    """The stored frames of one video in temporal order (from `frames.json`)."""
    listing = folder / FRAME_LIST
    if not listing.is_file():
        raise FileNotFoundError(f"{folder}: no {FRAME_LIST} (frames not extracted, or interrupted)")
    return json.loads(listing.read_text())["frames"]


def write_frames(sampled: SampledVideo, folder: Path) -> None:
    """Write the frames and `frames.json` into `folder`, all or nothing."""
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for index, frame in zip(sampled.indices, sampled.frames):
            write_png(tmp / frame_name(index), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        (tmp / FRAME_LIST).write_text(json.dumps({
            "frames": [frame_name(i) for i in sampled.indices],
            "decoded": sampled.decoded, "declared": sampled.declared, "notes": sampled.notes,
        }, indent=1))


@dataclass(frozen=True)
class SampleJob:
    """One video to sample into its frames folder: K frames of `size` (H, W); `duplicate`:
    an earlier video has its id (it is not sampled)."""
    video_id: str
    path: Path
    folder: Path
    k: int
    size: tuple[int, int]
    duplicate: bool = False


def sample_and_store(job: SampleJob) -> tuple[str, str | Failure]:
    """Sample and store one video (extract_frame.py's worker). Returns (status, message);
    status is `done`, `note` (done, with something worth saying) or `failed` (message: a
    Failure, whose kind says why)."""
    try:
        sampled = sample_video(job.path, job.k, job.size)
        write_frames(sampled, job.folder)
    except VideoError as err:
        return "failed", Failure(err.kind, str(err))
    except (OSError, cv2.error) as err:
        return "failed", Failure(WRITE_FAILED, str(err))
    if sampled.notes:
        return "note", f"{job.path}: " + "; ".join(sampled.notes)
    return "done", ""


def stored_clip(video_id: str, frames_dir: Path, size: tuple[int, int]) -> dict:
    """The stored frames of one video (inference_sal.py's worker): `video_id`, `frames`
    (T, H, W, 3) uint8 RGB at `size`, `names` (T file names), `frame_size` (H, W of the
    stored frames); or `video_id` and `error` (a Failure) when they cannot be read."""
    folder = frames_dir / video_id
    try:
        names = frame_files(folder)
        images = [read_image(folder / name) for name in names]
    except (OSError, ValueError, KeyError, cv2.error) as err:
        return {"video_id": video_id, "error": Failure(UNREADABLE_FRAMES, f"{folder}: {err}")}
    return {"video_id": video_id, "frames": np.stack([rgb_at(image, size) for image in images]),
            "names": names, "frame_size": images[0].shape[:2]}


def stored_example(row: tuple[str, float], frames: Path, saliency: Path | None,
                   size: tuple[int, int]) -> dict | Failure:
    """One video's stored frames (T, H, W, 3) and maps (T, H, W), uint8 at `size`, with its
    `video_id` and `mos` (labelled-set evaluation's worker); a Failure naming the file when
    they cannot be read."""
    video_id, mos = row
    try:
        names = frame_files(frames / video_id)
        clip = np.stack([load_rgb(frames / video_id / name, size) for name in names])
        maps = None if saliency is None else np.stack(
            [load_map_levels(saliency / video_id / name, size) for name in names])
    except (OSError, ValueError, KeyError, cv2.error) as err:
        return Failure(UNREADABLE_FRAMES, str(err))
    return {"video_id": video_id, "mos": mos, "frames": clip, "maps": maps}
