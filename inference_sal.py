"""Stage 3: saliency maps for the frames that stage 1 stored, and overlays to look at them
(docs/pipeline.md, "Stage 3").

    python inference_sal.py --checkpoint runs/saliency/best.pt --frames frames/ --out saliency/ \\
        --overlay
    python inference_sal.py --checkpoint runs/saliency/best.pt --videos clip.mp4 --all-frames \\
        --out renders/

Frames mode: the K stored frames of every video that extract_frame.py finished under --frames
go through the network as one clip (in the order of its frames.json), batched over videos.
Each frame's map is written as `<out>/<video_id>/<frame file name>`, an 8-bit grayscale PNG
(sigmoid of the frame's log-softmax, then min-max per frame, then x255; docs/pipeline.md
says why), so maps pair with frames by name. The network runs at the checkpoint's training
size (or --size) and the maps come out at the stored frames' size. A video's folder appears
whole or not at all; videos whose maps are all there are skipped. A frame listed twice in
frames.json (a short video) keeps the map of its first place.
`--overlay` also writes the colour heat map blended over each frame, as a PNG of the frame
(upscaled to at least 224 pixels high, to be readable) with a colour bar on its right, to
`<out>_overlays/<video_id>/<frame file name>`: a sibling folder, so that the maps folder holds
nothing but maps. `--overlay-scale frame` (the default) stretches each frame's map over all
the colours, so colours do not compare between frames; `fixed` colours saliency relative to
the frame's mean, from 0 to 8 times it, the same for every frame and video.
`--register-attention` draws, the same way, where each register of an attention-register
network looks over each frame, to `<out>_registers/<video_id>/<frame>_register<k>.png`.

Video mode (`--videos INPUT ... --all-frames`): every decodable frame gets a map, from
consecutive windows of --window frames (the last window is aligned to the video's end, and a
video shorter than a window repeats its last frame); the overlays are written as
`<out>/<video_id>.mp4` (H.264, yuv420p) at the source's frame rate. Overlays, PNG and video,
carry a colour bar (`colour_bar`) on their right. Videos already rendered are skipped.

Videos that fail are listed at the end and in `<out>/failures.csv` (video_id, kind, problem),
and the exit status is 1. Stored frames are read, and videos rendered, by supervised worker
processes (dagr/supervised.py): a video that crashes its process (`crashed`, with the signal)
or makes no progress for --video-timeout seconds (`timed-out`) fails alone. Video mode renders
in one worker process (each loads the network), or in this process for a single video or with
--workers 0, where a native crash ends the run: the rerun renders the video it was on in a
worker process. In frames mode, torchrun or --shard I/N give each process its share of the
videos, one GPU per process (docs/distributed.md). Ctrl-C stops with exit status 130,
keeping every finished video.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from dagr import paper
from dagr.model_file import ModelFile, Source
from dagr.cli import deprecated_alias, run_script, script_parser
from dagr.device import add_device_argument, pick_device
from dagr.failures import Failure
from dagr.files import atomic_path
from dagr.frames import UNREADABLE_FRAMES, WRITE_FAILED, frame_files, stored_clip
from dagr.images import read_image, write_png
from dagr.inference import SaliencyRecipe, predict_logits, stored_maps
from dagr.overlays import (FIXED_SCALE_MAX, SCALES, Render, load_network, overlay, render,
                           shown_maps)
from dagr.precision import add_precision_arguments
from dagr.registers import attention_maps, has_attention_registers
from dagr.outputs import folder_output
from dagr.runner import Outcome, RunOptions, Stage, StageRun, Workers
from dagr.sharding import Shard, add_shard_argument, current_shard, shard_device
from dagr.supervised import VIDEO_TIMEOUT, add_timeout_argument
from dagr.video_io import find_videos
from dagr.workers import MAIN_PROCESS_NOTE, one_opencv_thread
from dataloader import stored_videos, to_clip_tensor

# ----------------------------------------------------------------------------- config
CHECKPOINT = "runs/saliency/best.pt"
OUT = "saliency"
BATCH_SIZE = 8             # clips per forward pass
WORKERS = None             # frame-loading processes (frames mode: the machine's cores) or
                           # rendering processes (video mode: 1, none for a single video)
WINDOW = paper.FRAMES_PER_VIDEO  # frames per clip in video mode
FOLD_BN = True             # fold BatchNorm into the convolutions (faster, same maps)
OVERLAY_SUFFIX = "_overlays"
OVERLAY_SCALE = "frame"    # overlay colours: "frame" (min to max of each frame) or "fixed"
REGISTERS_SUFFIX = "_registers"  # --register-attention writes to <out>_registers
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- model

def load_saliency_model(checkpoint: Source, device: torch.device | str,
                        fold_bn: bool = FOLD_BN, precision: str | None = None,
                        compiled: bool = False) -> nn.Module:
    """The network of a train_sal.py checkpoint or of an exported model file, ready for
    `predict_maps`. Raises ValueError (naming the file) for a checkpoint of another kind or
    a file that is not one, FileNotFoundError if it is missing."""
    return SaliencyRecipe(checkpoint, str(device), fold_bn, precision, compiled).load()[0]


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


def register_folder(out: str | Path) -> Path:
    """Where --register-attention writes: `<out>_registers`, beside the maps folder."""
    out = Path(out)
    return out.with_name(out.name + REGISTERS_SUFFIX)


def register_file(name: str, register: int) -> str:
    """File name of register `register`'s (0-based) attention over the frame file `name`."""
    return f"{Path(name).stem}_register{register + 1}.png"


def _is_done(folders: Sequence[Path], names: Sequence[str]) -> bool:
    return all((folder / name).is_file() for folder in folders for name in names)


def _save_maps(item: dict, maps: np.ndarray, frames_dir: Path, out: Path,
               overlays: Path | None, shown: np.ndarray | None = None,
               scale: str = OVERLAY_SCALE) -> None:
    """Write one video's maps (T, H, W) uint8, and into `overlays` the maps `shown` (T, H, W)
    on the colour scale `scale` over their frames, each folder atomically."""
    named = _first_per_name(item["names"], maps)
    with atomic_path(out / item["video_id"]) as tmp:
        tmp.mkdir(parents=True)
        for name, image in named.items():
            write_png(tmp / name, image)
    if overlays is not None:
        with atomic_path(overlays / item["video_id"]) as tmp:
            tmp.mkdir(parents=True)
            for name, image in _first_per_name(item["names"], shown).items():
                frame = read_image(frames_dir / item["video_id"] / name)
                write_png(tmp / name, overlay(frame, image, scale))


def _save_register_attention(item: dict, looks: np.ndarray, frames_dir: Path,
                             folder: Path) -> None:
    """Write one video's register attention (N, T, H, W), each register's map of a frame
    (summing to 1) stretched to 0-255 and drawn over the frame, the folder atomically."""
    named = _first_per_name(item["names"], looks.transpose(1, 0, 2, 3))  # name -> (N, H, W)
    with atomic_path(folder / item["video_id"]) as tmp:
        tmp.mkdir(parents=True)
        for name, per_register in named.items():
            frame = read_image(frames_dir / item["video_id"] / name)
            for register, look in enumerate(per_register):
                spread = look.max() - look.min()
                image = np.round(255 * (look - look.min()) / max(spread, 1e-12)).astype(np.uint8)
                write_png(tmp / register_file(name, register), overlay(frame, image))


def stored_ids(frames_dir: Path) -> list[str]:
    """The videos stored under `frames_dir`. Raises FileNotFoundError (naming the folder) when
    it is missing or holds no stored video: nothing to do there is a mistake in the command."""
    if not frames_dir.is_dir():
        raise FileNotFoundError(f"{frames_dir}: no such folder (give extract_frame.py's --out)")
    videos = stored_videos(frames_dir)
    if not videos:
        raise FileNotFoundError(f"{frames_dir}: no video's frames stored there (give "
                                "extract_frame.py's --out)")
    return videos


@dataclass(frozen=True)
class MapTargets:
    """Where frames mode reads and writes: the stored frames, the maps, and the overlays and
    register attention when asked (None: not written)."""
    frames: Path
    maps: Path
    overlays: Path | None = None
    registers: Path | None = None
    overlay_scale: str = OVERLAY_SCALE  # the overlays' colour scale (dagr.overlays.SCALES)

    def frame_names(self, video_id: str) -> list[str] | Failure:
        """A stored video's frame file names, or why they cannot be read."""
        try:
            return frame_files(self.frames / video_id)
        except (OSError, ValueError) as err:
            return Failure(UNREADABLE_FRAMES, f"{self.frames / video_id}: unreadable frame list "
                                              f"({err})")

    def done(self, video_id: str) -> bool:
        """Whether every map (and overlay, and register drawing) of the video is there."""
        names = self.frame_names(video_id)
        folders = [t / video_id for t in (self.maps, self.overlays) if t is not None]
        return (_is_done(folders, names) and (self.registers is None
                                              or (self.registers / video_id).is_dir()))

    def problem(self, video_id: str) -> Failure | None:
        names = self.frame_names(video_id)
        return names if isinstance(names, Failure) else None


def infer_frames(model: nn.Module, frames_dir: str | Path, out: str | Path,
                 device: torch.device | str, size: Sequence[int], batch_size: int = BATCH_SIZE,
                 workers: int | None = WORKERS, with_overlays: bool = False,
                 progress: bool = True, shard: Shard = Shard(),
                 timeout: float = VIDEO_TIMEOUT, with_registers: bool = False,
                 overlay_scale: str = OVERLAY_SCALE) -> StageRun:
    """Maps (and overlays on the colour scale `overlay_scale`, and with `with_registers` each
    register's attention over each frame) for every stored video under `frames_dir`
    (`shard`'s share of them) not yet done in `out`, the frames read by supervised worker
    processes. The network sees frames resized to `size` (H, W). Returns the run (its failures
    by video id, the videos skipped as done), its failures CSV not yet written."""
    targets = MapTargets(Path(frames_dir), Path(out),
                         overlay_folder(out) if with_overlays else None,
                         register_folder(out) if with_registers else None, overlay_scale)
    stage = Stage("saliency", "mapped", folder_output(out), key=str,
                  name=lambda video_id: str(targets.frames / video_id), check=targets.problem,
                  done=targets.done)
    run = StageRun(stage, RunOptions(workers, timeout, shard, progress=progress))

    def maps(todo: list[str], supervised: Workers) -> Iterator[Outcome]:
        loaded = supervised.map(partial(stored_clip, frames_dir=targets.frames, size=tuple(size)),
                                todo, name=stage.name, setup=one_opencv_thread)
        for batch in _batches(loaded, batch_size):
            yield from _map_batch(model, batch, targets, device)

    run.run(stored_ids(targets.frames), maps)
    return run


def _batches(loaded: Iterator[tuple[str, dict | Failure]], size: int) -> Iterator[list[dict]]:
    """`stored_clip`'s items in lists of `size` (the last one shorter); a video that took its
    worker down comes as an item with that `error`."""
    batch: list[dict] = []
    for video_id, item in loaded:
        batch.append({"video_id": video_id, "error": item} if isinstance(item, Failure) else item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _map_batch(model: nn.Module, batch: list[dict], targets: MapTargets,
               device: torch.device | str) -> Iterator[Outcome]:
    """Maps (and overlays, and register attention) of one batch of `stored_clip`'s items,
    each written as it is ready; one Outcome per item."""
    for item in batch:
        if "error" in item:
            yield Outcome(item["video_id"], item["error"])
    groups: dict[tuple, list[dict]] = {}  # one forward pass per clip length and frame size
    for item in batch:
        if "error" not in item:
            groups.setdefault((item["frames"].shape, item["frame_size"]), []).append(item)
    for (_, frame_size), items in groups.items():
        clips = torch.stack([to_clip_tensor(i["frames"]) for i in items])
        logits = predict_logits(model, clips, device, frame_size)
        maps = stored_maps(logits).cpu()
        shown = (None if targets.overlays is None
                 else shown_maps(logits, targets.overlay_scale).numpy())
        looks = None if targets.registers is None else attention_maps(
            model, clips.to(device).permute(0, 2, 1, 3, 4), frame_size).cpu().numpy()
        for index, (item, video_maps) in enumerate(zip(items, maps.numpy())):
            try:
                _save_maps(item, video_maps, targets.frames, targets.maps, targets.overlays,
                           None if shown is None else shown[index], targets.overlay_scale)
                if looks is not None:
                    _save_register_attention(item, looks[index], targets.frames,
                                             targets.registers)
            except (OSError, cv2.error) as err:
                yield Outcome(item["video_id"], Failure(WRITE_FAILED, str(err)))
            else:
                yield Outcome(item["video_id"])


# ----------------------------------------------------------------------------- video mode

def render_videos(network: SaliencyRecipe, inputs: Sequence[str | Path], out: str | Path,
                  size: Sequence[int], window: int = WINDOW, batch_size: int = BATCH_SIZE,
                  workers: int | None = WORKERS, progress: bool = True,
                  timeout: float = VIDEO_TIMEOUT, overlay_scale: str = OVERLAY_SCALE
                  ) -> StageRun:
    """`render_video` for every video found in `inputs` (files or folders) that has no
    `<out>/<video_id>.mp4` yet, on the colour scale `overlay_scale`, in supervised worker
    processes (default: one, none for a single video). Returns the run (failures by video id,
    videos skipped as done), its failures CSV not yet written."""
    out = Path(out)
    jobs = [(video_id, Render(Path(path), out / f"{video_id}.mp4", network, tuple(size), window,
                              batch_size, overlay_scale))
            for video_id, path in find_videos(inputs)]
    stage = Stage("render", "rendered", folder_output(out), key=lambda job: job[0],
                  name=lambda job: str(job[1].path), done=lambda job: job[1].target.is_file(),
                  leftovers=lambda job: job[1].target)
    run = StageRun(stage, RunOptions(workers, timeout, progress=progress, most_workers=1))

    def rendered(todo: list[tuple[str, Render]], supervised: Workers) -> Iterator[Outcome]:
        ids = {job: video_id for video_id, job in todo}
        for job, outcome in supervised.map(render, list(ids), name=lambda job: str(job.path),
                                           setup=load_network, setup_args=(network,)):
            yield Outcome(ids[job], outcome if isinstance(outcome, Failure) else None)

    run.run(jobs, rendered)
    return run


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", default=CHECKPOINT, help="a train_sal.py checkpoint")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported model file (evaluate_vqa.py --export) in place of "
                             "--checkpoint: its saliency network")
    parser.add_argument("--frames", help="extract_frame.py's output folder (frames mode)")
    deprecated_alias(parser, "--video", parser.add_argument(
        "--videos", nargs="+", metavar="INPUT",
        help="video files or folders (searched recursively) to render (video mode, with "
             "--all-frames)"))
    parser.add_argument("--all-frames", action="store_true",
                        help="map every frame of --videos and write H.264 overlay MP4s")
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--overlay", action="store_true",
                        help=f"also write heat-map overlays to <out>{OVERLAY_SUFFIX}/, drawn at "
                             "least 224 pixels high (smaller stored frames are upscaled)")
    parser.add_argument("--overlay-scale", choices=sorted(SCALES), default=OVERLAY_SCALE,
                        help="overlay colours: 'frame' stretches each frame's map from its min "
                             "to its max (colours do not compare between frames); 'fixed' "
                             "colours saliency relative to the frame's mean, 0 to "
                             f"{FIXED_SCALE_MAX:g}x, the same for every frame and video")
    parser.add_argument("--register-attention", action="store_true",
                        help="frames mode: also draw where each register of an attention-mode "
                             f"network looks, over each frame, to <out>{REGISTERS_SUFFIX}/"
                             "<video_id>/<frame>_register<k>.png (docs/registers.md)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="network input size (default: the checkpoint's training size)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="frames mode: frame-loading processes (default: the machine's cores, "
                             "at most one per video, none for a single video); video mode: "
                             "rendering processes, each with its own copy of the network "
                             "(default: 1, none for a single video); " + MAIN_PROCESS_NOTE)
    add_timeout_argument(parser)
    parser.add_argument("--window", type=int, default=WINDOW, help="frames per clip in video mode")
    parser.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=FOLD_BN,
                        help="fold BatchNorm into the convolutions")
    add_precision_arguments(parser, "the network")
    add_device_argument(parser)
    add_shard_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.frames) == bool(args.videos):
        parser.error("give either --frames DIR or --videos INPUT ... --all-frames")
    if bool(args.videos) != args.all_frames:
        parser.error("--videos and --all-frames go together (video mode maps every frame)")
    if args.shard and not args.frames:
        parser.error("--shard is for frames mode (--frames)")
    if args.register_attention and not args.frames:
        parser.error("--register-attention is for frames mode (--frames)")
    if args.overlay and not args.frames:
        parser.error("--overlay is for frames mode (--frames); video mode writes overlay videos")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # every output checked before the network loads
        for wanted, folder in ((True, args.out), (args.overlay, overlay_folder(args.out)),
                               (args.register_attention, register_folder(args.out))):
            if wanted:
                folder_output(folder)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = shard_device(pick_device(args.device))
    network = SaliencyRecipe(ModelFile(args.model) if args.model else args.checkpoint, str(device),
                             args.fold_bn, args.precision, args.compile)
    try:
        model, settings = network.load()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.register_attention and not has_attention_registers(model):
        print(f"error: {args.model or args.checkpoint}: its saliency network has no attention "
              "registers to draw (--register-attention)", file=sys.stderr)
        return 2
    size = args.size or settings.get("size")
    if not size:
        print(f"error: {args.model or args.checkpoint}: no training frame size stored with the "
              "network; give --size H W", file=sys.stderr)
        return 2
    shard = current_shard(args.shard) if args.frames else Shard()
    try:
        if args.frames and not Path(args.frames).is_dir():
            raise FileNotFoundError(f"{args.frames}: no such folder (give extract_frame.py's --out)")
        if args.frames:
            run = infer_frames(model, args.frames, args.out, device, size, args.batch_size,
                               args.workers, args.overlay, shard=shard,
                               timeout=args.video_timeout, with_registers=args.register_attention,
                               overlay_scale=args.overlay_scale)
        else:
            run = render_videos(network, args.videos, args.out, size, args.window,
                                args.batch_size, args.workers, timeout=args.video_timeout,
                                overlay_scale=args.overlay_scale)
        run.write()
    except OSError as err:  # a missing input, or an output folder that cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2
    for wanted, folder, what in ((args.overlay, overlay_folder(args.out), "overlays"),
                                 (args.register_attention, register_folder(args.out),
                                  "register attention"),
                                 (args.all_frames, Path(args.out), "overlay videos")):
        if wanted:
            print(f"{what} written to {folder}/")
    return run.summary()


if __name__ == "__main__":
    run_script(main)
