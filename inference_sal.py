"""Stage 3: saliency maps for the frames that stage 1 stored, and overlays to look at them
(README.md, stage 3).

    python inference_sal.py --checkpoint runs/sal/best.pt --frames frames/ --out saliency/ --overlay
    python inference_sal.py --checkpoint runs/sal/best.pt --video clip.mp4 --all-frames \\
        --out renders/

Frames mode: the K stored frames of every video that extract_frame.py finished under --frames
go through the network as one clip (in the order of its frames.json), batched over videos.
Each frame's map is written as `<out>/<video_id>/<frame file name>`, an 8-bit grayscale PNG
(sigmoid of the frame's log-softmax, then min-max per frame, then x255; README.md, stage 3,
says why), so maps pair with frames by name. The network runs at the checkpoint's training
size (or --size) and the maps come out at the stored frames' size. A video's folder appears whole or not at all; videos whose maps are all there are
skipped. A frame listed twice in frames.json (a short video) keeps the map of its first place.
`--overlay` also writes the colour heat map blended over each frame, as a PNG of the frame's
size, to `<out>_overlays/<video_id>/<frame file name>`: a sibling folder, so that the maps
folder holds nothing but maps.

Video mode (`--video INPUT ... --all-frames`): every decodable frame gets a map, from
consecutive windows of --window frames (the last window is aligned to the video's end, and a
video shorter than a window repeats its last frame); the overlays are written as
`<out>/<video_id>.mp4` (H.264, yuv420p) at the source's frame rate. Overlays, PNG and video,
carry a colour bar (`colour_bar`) on their right. Videos already rendered are skipped.

Videos that fail are listed at the end and the exit status is 1. In frames mode, torchrun or
--shard I/N give each process its share of the videos, one GPU per process (README,
"Corpus-scale runs"). Ctrl-C stops with exit status 130, keeping every finished video.
"""
from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dagr import paper
from dagr.checkpoints import ModelFile, Source, load_saliency
from dagr.cli import Interrupted, run_script, script_parser
from dagr.device import add_device_argument, pick_device
from dagr.files import atomic_path, writable_folder
from dagr.inference import frame_windows, predict_maps, prepare_inference
from dagr.precision import add_precision_arguments, compile_model, resolve_precision
from dagr.sharding import Shard, add_shard_argument, current_shard, exit_status, shard_device
from dagr.video_io import DAMAGED, VideoError, VideoReader, find_videos
from dagr.workers import default_workers, quiet_worker, sigint_ignored, stop_workers
from dataloader import StoredFramesDataset, frame_files, stored_videos, to_clip_tensor

# ----------------------------------------------------------------------------- config
CHECKPOINT = "runs/saliency/best.pt"
FRAMES = "frames"          # extract_frame.py's output
OUT = "saliency"
BATCH_SIZE = 8             # clips per forward pass
WORKERS = None             # frame-loading processes (frames mode); None: the machine's cores
WINDOW = paper.FRAMES_PER_VIDEO  # frames per clip in video mode
OVERLAY_ALPHA = 0.5        # weight of the heat map in an overlay
COLORMAP = cv2.COLORMAP_JET
FOLD_BN = True             # fold BatchNorm into the convolutions (faster, same maps)
OVERLAY_SUFFIX = "_overlays"
BAR_TEXT_HEIGHTS = 360     # colour bar label font scale = frame height / this (at least 0.25)
VIDEO_CODEC = "libx264"    # H.264, yuv420p: what browsers and players play
VIDEO_CRF = 20             # x264 constant quality (lower: better, larger)
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- model

def load_saliency_model(checkpoint: Source, device: torch.device | str,
                        fold_bn: bool = FOLD_BN, precision: str | None = None,
                        compiled: bool = False) -> nn.Module:
    """The network of a train_sal.py checkpoint or of an exported model file, ready for
    `predict_maps`. Raises ValueError (naming the file) for a checkpoint of another kind or
    a file that is not one, FileNotFoundError if it is missing."""
    return _load(checkpoint, device, fold_bn, precision, compiled)[0]


def _load(checkpoint: Source, device: torch.device | str,
          fold_bn: bool, precision: str | None = None, compiled: bool = False
          ) -> tuple[nn.Module, dict]:
    """(inference model, the training settings stored with it)."""
    network, settings = load_saliency(checkpoint)
    model = prepare_inference(network, device, resolve_precision(precision, device), fold_bn)
    return compile_model(model, compiled), settings


# ----------------------------------------------------------------------------- images

def overlay(frame: np.ndarray, saliency: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Colour heat map of `saliency` (h, w) uint8 blended over `frame` (H, W, 3) uint8 BGR,
    the map resized to the frame, with `colour_bar(H)` on its right. Returns
    (H, W + colour_bar(H).shape[1], 3) uint8 BGR."""
    heat = cv2.applyColorMap(saliency, COLORMAP)
    if heat.shape[:2] != frame.shape[:2]:
        heat = cv2.resize(heat, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = cv2.addWeighted(frame, 1.0 - alpha, heat, alpha, 0.0)
    return np.concatenate([blended, colour_bar(frame.shape[0])], axis=1)


def colour_bar(height: int) -> np.ndarray:
    """The key to the heat map, (height, width, 3) uint8 BGR: a vertical strip of COLORMAP
    from map value 1 (top) to 0 (bottom) on a black panel, labelled "1" and "0" beside its
    ends; sizes scale with `height` so that the labels stay legible on small frames."""
    scale = max(height / BAR_TEXT_HEIGHTS, 0.25)
    thickness = max(1, round(scale))
    (text_w, text_h), _ = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(1, height // 64)
    strip = max(3, height // 24)
    panel = np.zeros((height, margin + strip + margin + text_w + margin, 3), np.uint8)
    top, bottom = margin, height - margin
    values = np.linspace(255, 0, bottom - top).round().astype(np.uint8)[:, None]
    panel[top:bottom, margin:margin + strip] = cv2.applyColorMap(
        np.repeat(values, strip, axis=1), COLORMAP)
    left = margin + strip + margin
    for label, y in (("1", top + text_h), ("0", bottom)):
        cv2.putText(panel, label, (left, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return panel


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not be written")


def _read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot be read as an image")
    return image


def _first_per_name(names: Sequence[str], maps: np.ndarray) -> dict[str, np.ndarray]:
    """{frame name: its map} keeping the first of repeated names; maps (T, H, W)."""
    out: dict[str, np.ndarray] = {}
    for name, image in zip(names, maps):
        out.setdefault(name, image)
    return out


# ----------------------------------------------------------------------------- frames mode

def overlay_folder(out: str | Path) -> Path:
    """Where --overlay writes: `<out>_overlays`, beside the maps folder."""
    out = Path(out)
    return out.with_name(out.name + OVERLAY_SUFFIX)


class StoredClips(StoredFramesDataset):
    """StoredFramesDataset whose items also give `frame_size` (H, W) of the stored frames, and
    that reports a video it cannot read as {"video_id", "error"} instead of raising."""

    def __getitem__(self, index: int) -> dict:
        video_id = self.video_ids[index]
        try:
            item = super().__getitem__(index)
            item["frame_size"] = _read_bgr(self.frames_dir / video_id / item["names"][0]).shape[:2]
        except (OSError, ValueError, KeyError, cv2.error) as err:
            return {"video_id": video_id, "error": str(err)}
        return item


def _is_done(folders: Sequence[Path], names: Sequence[str]) -> bool:
    return all((folder / name).is_file() for folder in folders for name in names)


def _save_maps(item: dict, maps: np.ndarray, frames_dir: Path, out: Path,
               overlays: Path | None) -> None:
    """Write one video's maps (T, H, W) uint8, and its overlays, each folder atomically."""
    named = _first_per_name(item["names"], maps)
    with atomic_path(out / item["video_id"]) as tmp:
        tmp.mkdir(parents=True)
        for name, image in named.items():
            _write_png(tmp / name, image)
    if overlays is not None:
        with atomic_path(overlays / item["video_id"]) as tmp:
            tmp.mkdir(parents=True)
            for name, image in named.items():
                frame = _read_bgr(frames_dir / item["video_id"] / name)
                _write_png(tmp / name, overlay(frame, image))


def stored_share(frames_dir: Path, shard: Shard) -> list[str]:
    """`shard`'s share of the videos stored under `frames_dir`. Raises FileNotFoundError
    (naming the folder) when it is missing or holds no stored video: nothing to do there is a
    mistake in the command."""
    if not frames_dir.is_dir():
        raise FileNotFoundError(f"{frames_dir}: no such folder (give extract_frame.py's --out)")
    videos = stored_videos(frames_dir)
    if not videos:
        raise FileNotFoundError(f"{frames_dir}: no video's frames stored there (give "
                                "extract_frame.py's --out)")
    return shard.take(videos)


def infer_frames(model: nn.Module, frames_dir: str | Path, out: str | Path,
                 device: torch.device | str, size: Sequence[int], batch_size: int = BATCH_SIZE,
                 workers: int | None = WORKERS, with_overlays: bool = False,
                 progress: bool = True, shard: Shard = Shard()) -> tuple[dict[str, str], int]:
    """Maps (and overlays) for every stored video under `frames_dir` (`shard`'s share of them)
    not yet done in `out`. The network sees frames resized to `size` (H, W). Returns
    ({video_id: problem} for the videos that failed, number of videos skipped as done)."""
    frames_dir, out = Path(frames_dir), Path(out)
    overlays = overlay_folder(out) if with_overlays else None
    targets = [out] + ([overlays] if overlays is not None else [])
    failures: dict[str, str] = {}
    todo, skipped = [], 0
    for video_id in stored_share(frames_dir, shard):
        try:
            names = frame_files(frames_dir / video_id)
        except (OSError, ValueError) as err:
            failures[video_id] = f"{frames_dir / video_id}: unreadable frame list ({err})"
            continue
        if _is_done([t / video_id for t in targets], names):
            skipped += 1
        else:
            todo.append(video_id)
    workers = default_workers(len(todo)) if workers is None else workers
    loader = DataLoader(StoredClips(frames_dir, todo, tuple(size)), batch_size,
                        num_workers=workers, collate_fn=list, worker_init_fn=quiet_worker)
    written, batches = 0, None
    try:
        with sigint_ignored():  # the loading processes start here
            batches = iter(loader)
        for batch in tqdm(batches, total=len(loader), desc="saliency", unit="batch",
                          disable=not progress):
            written += _map_batch(model, batch, frames_dir, out, overlays, device, failures)
    except KeyboardInterrupt:
        stop_workers(batches)
        raise Interrupted(f"maps of {written} of {len(todo)} videos written to {out} and kept; "
                          "run the same command again to do the rest") from None
    return failures, skipped


def _map_batch(model: nn.Module, batch: list[dict], frames_dir: Path, out: Path,
               overlays: Path | None, device: torch.device | str, failures: dict[str, str]
               ) -> int:
    """Maps (and overlays) of one batch of StoredClips' items; returns how many were written,
    recording the others in `failures`."""
    written = 0
    failures.update({item["video_id"]: item["error"] for item in batch if "error" in item})
    groups: dict[tuple, list[dict]] = {}  # one forward pass per clip length and frame size
    for item in batch:
        if "error" not in item:
            groups.setdefault((item["frames"].shape, item["frame_size"]), []).append(item)
    for (_, frame_size), items in groups.items():
        clips = torch.stack([i["frames"] for i in items])
        maps = predict_maps(model, clips, device, frame_size)
        for item, video_maps in zip(items, maps.numpy()):
            try:
                _save_maps(item, video_maps, frames_dir, out, overlays)
                written += 1
            except (OSError, cv2.error) as err:
                failures[item["video_id"]] = str(err)
    return written


# ----------------------------------------------------------------------------- video mode

def decoded_frames(video: VideoReader) -> Iterator[np.ndarray]:
    """Every frame that decodes, in order and display orientation, as (H, W, 3) uint8 BGR."""
    return video.arrays(order="bgr")


class OverlayVideo:
    """An H.264 (yuv420p) MP4 file of BGR frames, written by PyAV and opened at the first
    frame, whose size it takes, rounded down to even numbers (4:2:0 chroma needs them)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.container: av.container.OutputContainer | None = None
        self.stream: av.video.stream.VideoStream | None = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        try:
            self.container = av.open(str(self.path), "w", format="mp4")
        except OSError as err:
            raise OSError(f"{self.path}: cannot write an MP4 file here ({err})") from err
        rate = Fraction(self.fps).limit_denominator(1001)
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=rate,
                                                options={"crf": str(VIDEO_CRF)})
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        if self.container is None:
            self._open(*frame.shape[:2])
        even = np.ascontiguousarray(frame[:self.stream.height, :self.stream.width])
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(even, format="bgr24")))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self.container is not None:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            self.container = None


def _model_clip(frames: Sequence[np.ndarray], size: Sequence[int]) -> torch.Tensor:
    """BGR frames (H, W, 3) -> (T, 3, h, w) float RGB in [0, 1] at `size` (h, w)."""
    resized = [cv2.cvtColor(cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2RGB) for f in frames]
    return to_clip_tensor(np.stack(resized))


def _render_batch(model: nn.Module, windows: list[tuple[list[np.ndarray], range]],
                  device: torch.device | str, size: Sequence[int], video: OverlayVideo) -> None:
    frame_size = windows[0][0][0].shape[:2]
    clips = torch.stack([_model_clip(frames, size) for frames, _ in windows])
    maps = predict_maps(model, clips, device, frame_size).numpy()
    for (frames, fresh), window_maps in zip(windows, maps):
        for t in fresh:
            video.write(overlay(frames[t], window_maps[t]))


def render_video(model: nn.Module, path: str | Path, out_file: str | Path,
                 device: torch.device | str, size: Sequence[int], window: int = WINDOW,
                 batch_size: int = BATCH_SIZE) -> int:
    """Write the saliency overlay of every decodable frame of `path` as the MP4 `out_file`
    (atomically), decoding sequentially. Returns the number of frames written."""
    path, out_file = Path(path), Path(out_file)
    capture = VideoReader(path)  # raises VideoError, whose kind says why
    fps = capture.fps or 25.0
    with atomic_path(out_file) as tmp:
        staging = tmp.with_name(tmp.name + ".mp4")  # a name players recognise while it is written
        video = OverlayVideo(staging, fps)
        try:
            pending: list[tuple[list[np.ndarray], range]] = []
            for item in frame_windows(decoded_frames(capture), window):
                pending.append(item)
                if len(pending) == batch_size:
                    _render_batch(model, pending, device, size, video)
                    pending = []
            if pending:
                _render_batch(model, pending, device, size, video)
            video.close()
            if video.frames == 0:
                raise VideoError(path, DAMAGED, "cut short or damaged: no frame decodes"
                                 + (f" ({capture.error})" if capture.error else ""))
            os.replace(staging, tmp)
        finally:
            capture.close()
            video.close()
            staging.unlink(missing_ok=True)
    return video.frames


def render_videos(model: nn.Module, inputs: Sequence[str | Path], out: str | Path,
                  device: torch.device | str, size: Sequence[int], window: int = WINDOW,
                  batch_size: int = BATCH_SIZE, progress: bool = True
                  ) -> tuple[dict[str, str], int]:
    """`render_video` for every video found in `inputs` (files or folders) that has no
    `<out>/<video_id>.mp4` yet. Returns ({video_id: problem}, number skipped as done)."""
    failures, skipped = {}, 0
    videos = find_videos(inputs)
    for video_id, path in tqdm(videos, desc="render", unit="video", disable=not progress):
        target = Path(out) / f"{video_id}.mp4"
        if target.is_file():
            skipped += 1
            continue
        try:
            render_video(model, path, target, device, size, window, batch_size)
        except (VideoError, OSError, cv2.error) as err:
            failures[video_id] = str(err)
    return failures, skipped


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", default=CHECKPOINT, help="a train_sal.py checkpoint")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported model file (evaluate_vqa.py --export) in place of "
                             "--checkpoint: its saliency network")
    parser.add_argument("--frames", help="extract_frame.py's output folder (frames mode)")
    parser.add_argument("--video", nargs="+", metavar="INPUT",
                        help="video files or folders to render (video mode, with --all-frames)")
    parser.add_argument("--all-frames", action="store_true",
                        help="map every frame of --video and write H.264 overlay MP4s")
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--overlay", action="store_true",
                        help=f"also write heat-map overlays to <out>{OVERLAY_SUFFIX}/")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="network input size (default: the checkpoint's training size)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="frame-loading processes (default: the machine's cores, at most one "
                             "per video, none for a single video)")
    parser.add_argument("--window", type=int, default=WINDOW, help="frames per clip in video mode")
    parser.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=FOLD_BN,
                        help="fold BatchNorm into the convolutions")
    add_precision_arguments(parser, "the network")
    add_device_argument(parser)
    add_shard_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.frames) == bool(args.video):
        parser.error("give either --frames DIR or --video INPUT ... --all-frames")
    if bool(args.video) != args.all_frames:
        parser.error("--video and --all-frames go together (video mode maps every frame)")
    if args.shard and not args.frames:
        parser.error("--shard is for frames mode (--frames)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = shard_device(pick_device(args.device))
    try:
        source = ModelFile(args.model) if args.model else args.checkpoint
        model, settings = _load(source, device, args.fold_bn, args.precision, args.compile)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = args.size or settings.get("size")
    if not size:
        print(f"error: {args.model or args.checkpoint}: no training frame size stored with the "
              "network; give --size H W", file=sys.stderr)
        return 2
    try:
        if args.frames and not Path(args.frames).is_dir():  # before --out is made
            raise FileNotFoundError(f"{args.frames}: no such folder (give extract_frame.py's --out)")
        writable_folder(args.out)
        if args.overlay:
            writable_folder(overlay_folder(args.out))
        if args.frames:
            failures, skipped = infer_frames(model, args.frames, args.out, device, size,
                                             args.batch_size, args.workers, args.overlay,
                                             shard=current_shard(args.shard))
        else:
            failures, skipped = render_videos(model, args.video, args.out, device, size,
                                              args.window, args.batch_size)
    except OSError as err:  # a missing input, or an output folder that cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saliency written to {args.out} ({skipped} video(s) already done, skipped)")
    if failures:
        print(f"{len(failures)} video(s) failed:", file=sys.stderr)
        for video_id, problem in sorted(failures.items()):
            print(f"  {video_id}: {problem}", file=sys.stderr)
    return exit_status(current_shard(args.shard), bool(failures))


if __name__ == "__main__":
    run_script(main)
