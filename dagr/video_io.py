"""Video decoding for every script: PyAV (the FFmpeg in its wheel reads AV1 through dav1d,
and every codec and container that FFmpeg reads), one frame sampler, one reason per failure.

`sample_video(path, k, size)` keeps the K frames at round(linspace(0, n - 1, K)) of the n
frames that actually decode (a container's frame count can be wrong), `read_frames_at` gives
chosen frames of a video, `VideoReader` every frame in order. Frames come out in display
orientation (rotation metadata applied, as OpenCV does by default), RGB unless asked for BGR.

A file that cannot be used raises `VideoError`, whose `kind` says why (a decoding kind of
dagr/failures.py: MISSING ... DAMAGED) and whose message names the file. Decoding is sequential
from the first frame: exact where seeking is not, and only the kept frames are converted to
RGB and resized.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import av.logging
import cv2
import numpy as np

from dagr import paper
from dagr.failures import (DAMAGED, EMPTY, ERROR, MISSING, NO_VIDEO, NOT_MEDIA,
                           UNSUPPORTED_CODEC, Failure)
from dagr.worker_side import progress

# ----------------------------------------------------------------------------- config
THREAD_TYPE = "AUTO"      # FFmpeg frame + slice threads: output identical, decoding faster
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".m2ts", ".mts", ".flv", ".3gp", ".wmv", ".ogv", ".y4m")
# -----------------------------------------------------------------------------

SHOW = 5  # how many frame numbers a message lists


class VideoError(OSError):
    """A video that cannot be used. `kind` is a decoding kind of dagr/failures.py; the message
    is `<path>: <what is wrong>`. An OSError, so that the scripts that stop cleanly on a bad
    file (`except OSError`) also stop cleanly on a bad video."""

    def __init__(self, path: str | Path, kind: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.kind, self.detail = str(path), kind, detail

    def __reduce__(self):  # survives the trip back from a worker process
        return type(self), (self.path, self.kind, self.detail)


@dataclass
class SampledVideo:
    """K frames of one video. `frames`: (K, H, W, 3) uint8 RGB; `indices`: their positions
    in the decoded stream; `decoded`: how many frames actually decode; `declared`: the
    container's count (0 when it has none)."""
    frames: np.ndarray
    indices: list[int]
    decoded: int
    declared: int
    notes: list[str] = field(default_factory=list)


def sample_indices(num_decoded: int, k: int = paper.FRAMES_PER_VIDEO) -> list[int]:
    """K indices spread uniformly over `num_decoded` frames: round(linspace(0, n-1, K)).

    With fewer than K frames some indices repeat.
    """
    if num_decoded < 1:
        raise ValueError("a video needs at least one frame")
    return [int(i) for i in np.round(np.linspace(0, num_decoded - 1, k))]


# ----------------------------------------------------------------------------- opening

def ffmpeg_url(path: str | os.PathLike) -> str:
    """`path` as FFmpeg reads it literally: `file:` and the absolute path. Without the prefix
    FFmpeg reads a name such as `data:x.mp4` or `concat:a|b` as a protocol. (PyAV passes a
    name that is not valid UTF-8 on byte for byte.)"""
    return "file:" + os.path.abspath(path)


def _codec_description(path: Path) -> str:
    """What FFmpeg says of a video stream it has no decoder for, e.g. `none (ZQZQ /
    0x515A515A)`: PyAV does not expose the codec id of such a stream, FFmpeg's log does."""
    skip_repeated = av.logging.get_skip_repeated()
    av.logging.set_skip_repeated(False)  # the same file opened twice logs the same line
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            av.open(ffmpeg_url(path)).close()
    except av.FFmpegError:
        return "(unrecognised)"
    finally:
        av.logging.set_level(None)  # back to PyAV's default: FFmpeg stays silent
        av.logging.set_skip_repeated(skip_repeated)
    for _, _, message in logs:
        match = re.search(r"Video: ([^,]+)", message)
        if match:
            return match.group(1).strip()
    return "(unrecognised)"


def _streams_listing(container: av.container.InputContainer) -> str:
    kinds = [stream.type for stream in container.streams]
    if not kinds:
        return "no streams at all"
    return ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) + " stream(s)"


def _main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """FFmpeg's choice of video stream (as the ffmpeg tool makes it: no attached picture
    such as cover art, the largest or longest stream first), else the first one."""
    return container.streams.best("video") or container.streams.video[0]


def open_video(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The container and its main video stream, ready to decode. Raises VideoError with
    the kind MISSING, EMPTY, NOT_MEDIA, NO_VIDEO or UNSUPPORTED_CODEC."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, MISSING, "no such file")
    if path.stat().st_size == 0:
        raise VideoError(path, EMPTY, "empty file (0 bytes)")
    try:
        container = av.open(ffmpeg_url(path))
    except av.FFmpegError as err:
        raise VideoError(path, NOT_MEDIA, "not a media file FFmpeg can read, or damaged "
                         f"beyond its header ({err.strerror or err})") from err
    if not container.streams.video:
        listing = _streams_listing(container)
        container.close()
        raise VideoError(path, NO_VIDEO, f"no video stream (it holds {listing})")
    stream = _main_video(container)
    if stream.codec_context is None:
        container.close()
        raise VideoError(path, UNSUPPORTED_CODEC, "its video codec "
                         f"{_codec_description(path)} has no decoder in this FFmpeg")
    stream.thread_type = THREAD_TYPE
    return container, stream


def declared_frames(stream: av.video.stream.VideoStream) -> int:
    """The container's frame count; 0 when it has none (Matroska, WebM)."""
    return max(int(stream.frames or 0), 0)


def estimated_frames(stream: av.video.stream.VideoStream,
                     container: av.container.InputContainer) -> int:
    """The declared count, else duration x frame rate (0 when neither is known)."""
    declared = declared_frames(stream)
    if declared:
        return declared
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return int(round(float(stream.duration * stream.time_base * rate)))
    if container.duration and rate:
        return int(round(container.duration / av.time_base * float(rate)))
    return 0


# ----------------------------------------------------------------------------- decoding

def frame_array(frame: av.VideoFrame, size: tuple[int, int] | None = None,
                order: str = "rgb") -> np.ndarray:
    """(H, W, 3) uint8 RGB (or BGR) of a decoded frame in display orientation, resized to
    `size` = (H, W) when given (INTER_AREA, as the stored frames always were)."""
    image = frame.to_ndarray(format="rgb24" if order == "rgb" else "bgr24")
    turns = int(round((frame.rotation or 0) / 90)) % 4
    if turns:  # FFmpeg's angle is counter-clockwise, as numpy's rot90
        image = np.ascontiguousarray(np.rot90(image, turns))
    if size is not None and image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image


class VideoReader:
    """Sequential decoding of a video's main video stream (a context manager).

    `frames()` yields every frame that decodes, in order; decoding ends at the first error
    the decoder raises (as OpenCV's would), and `error` then says what it was.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.container, self.stream = open_video(self.path)
        self.declared = declared_frames(self.stream)
        self.estimated = estimated_frames(self.stream, self.container)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.error: str | None = None

    def frames(self) -> Iterator[av.VideoFrame]:
        try:
            for frame in self.container.decode(self.stream):
                progress()  # a decoding worker that yields frames is not hung
                yield frame
        except av.FFmpegError as err:
            self.error = str(err)

    def arrays(self, size: tuple[int, int] | None = None, order: str = "rgb"
               ) -> Iterator[np.ndarray]:
        """Every frame as `frame_array` gives it."""
        for frame in self.frames():
            yield frame_array(frame, size, order)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def _ended(count: int, error: str | None) -> str:
    return f"{count} frame(s) decode" + (f" (decoding stopped: {error})" if error else "")


def _decode_at(path: Path, wanted: Sequence[int], size: tuple[int, int] | None
               ) -> tuple[dict[int, np.ndarray], int, bool, str | None]:
    """Decode `path` sequentially up to max(wanted) and one frame beyond, converting only
    the `wanted` frames. Returns them, how many frames decoded, whether the stream goes on
    past max(wanted) + 1 frames, and the decoder's error if one ended it."""
    want, last, kept, count = set(wanted), max(wanted), {}, 0
    with VideoReader(path) as video:
        for frame in video.frames():
            if count > last:
                return kept, count + 1, True, None
            if count in want:
                kept[count] = frame_array(frame, size)
            count += 1
        return kept, count, False, video.error


def _count_decoded(path: Path) -> tuple[int, str | None]:
    """Frames that actually decode, and the decoder's error if one ended the stream."""
    with VideoReader(path) as video:
        count = sum(1 for _ in video.frames())
        return count, video.error


def count_frames(path: str | Path) -> int:
    """Frames that actually decode (the container's count can be wrong)."""
    return _count_decoded(Path(path))[0]


def sample_video(path: str | Path, k: int = paper.FRAMES_PER_VIDEO,
                 size: tuple[int, int] | None = None) -> SampledVideo:
    """Decode `path` and keep K frames spread uniformly over the frames that decode.

    Trusts the container's frame count (or duration x rate) first; if the stream ends early,
    or runs past that count, it counts the decodable frames and samples again. Raises
    VideoError when the file cannot be opened or no frame decodes (kind DAMAGED).
    """
    path = Path(path)
    with VideoReader(path) as video:
        declared, total = video.declared, video.estimated
    error, notes = None, []
    if total < 1:
        total, error = _count_decoded(path)
    if total < 1:
        raise VideoError(path, DAMAGED, f"cut short or damaged: {_ended(0, error)}")
    kept, decoded, more, error = _decode_at(path, sample_indices(total, k), size)
    if decoded < total or more:
        total, error = (decoded, error) if decoded < total else _count_decoded(path)
        if total < 1:
            raise VideoError(path, DAMAGED, f"cut short or damaged: {_ended(0, error)}")
        if declared > 0:
            notes.append(f"container declares {declared} frames but {total} decode; "
                         "sampled over the decoded ones")
        if error:
            notes.append(f"decoding stopped after {total} frame(s): {error}")
        kept, decoded, _, _ = _decode_at(path, sample_indices(total, k), size)
    indices = sample_indices(total, k)
    missing = [i for i in indices if i not in kept]
    if missing:
        raise VideoError(path, DAMAGED, f"cut short or damaged: {total} frame(s) decoded on "
                         f"a first pass but only {decoded} on a second")
    if total < k:
        notes.append(f"only {total} frames decode; repeated frames to get {k}")
    return SampledVideo(np.stack([kept[i] for i in indices]), indices, total, declared, notes)


def try_sample_video(path: str | Path, k: int = paper.FRAMES_PER_VIDEO,
                     size: tuple[int, int] | None = None) -> SampledVideo | Failure:
    """`sample_video`, with a video that cannot be used given back as a Failure (its kind is
    one of failures.KINDS; ERROR for another OSError): what a decoding worker does."""
    try:
        return sample_video(path, k, size)
    except (VideoError, OSError, cv2.error) as err:
        return Failure(getattr(err, "kind", ERROR), str(err))


def read_frames_at(path: str | Path, numbers: Sequence[int], size: tuple[int, int] | None
                   ) -> np.ndarray:
    """(len(numbers), H, W, 3) uint8 RGB: frames `numbers` (0-based, repeats allowed) of a
    video, decoded sequentially from the start. Raises VideoError (DAMAGED) naming the
    frames that do not decode."""
    path = Path(path)
    kept, decoded, _, error = _decode_at(path, numbers, size)
    lost = sorted({n for n in numbers if n not in kept})
    if lost:
        shown = ", ".join(map(str, lost[:SHOW])) + (", ..." if len(lost) > SHOW else "")
        raise VideoError(path, DAMAGED, f"cut short or damaged: frame(s) {shown} wanted but "
                         f"{_ended(decoded, error)}")
    return np.stack([kept[n] for n in numbers])


# ----------------------------------------------------------------------------- finding videos

def find_videos(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(video_id, path) for video files and for the videos found recursively in folders
    (suffixes VIDEO_EXTENSIONS, any case); `inputs` is one path or several.

    A file's id is its stem; inside a folder it is the path relative to that folder without
    the extension (so `batch1/722.mp4` keeps its `batch1/` prefix). An input that does not
    exist is kept as a file, so that a run goes on without it and lists it as a failure of
    kind MISSING (decoding it says "no such file"). Raises FileNotFoundError, naming the
    inputs, when none of them exists or they hold no video file: nothing to do is a mistake
    in the command.
    """
    items = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(i) for i in inputs]
    named = " ".join(map(str, items))
    if not any(item.exists() for item in items):
        raise FileNotFoundError(f"{named}: no such file or folder")
    found = []
    for item in items:
        if item.is_dir():
            found += [(path.relative_to(item).with_suffix("").as_posix(), path)
                      for path in sorted(item.rglob("*"))
                      if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS]
        else:
            found.append((item.stem, item))
    if not found:
        raise FileNotFoundError(f"{named}: no video file found (suffixes: "
                                f"{' '.join(VIDEO_EXTENSIONS)})")
    return found
