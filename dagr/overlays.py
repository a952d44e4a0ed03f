"""Saliency overlays people can look at: a map's colour heat map blended over its frame with a
colour bar beside it (`overlay`), and H.264 overlay videos of every frame of a video
(`render_video`, which `render` runs in a supervised worker process for inference_sal.py's
video mode).

Two colour scales (`SCALES`, inference_sal.py's --overlay-scale): `frame` stretches each
frame's map from its minimum to its maximum (the stored maps' scale: every frame uses all the
colours, so colours do not compare between frames), `fixed` maps a pixel's saliency relative to
its frame's mean (inference.relative_saliency) from 0 to FIXED_SCALE_MAX times it, the same for
every frame and video. The colour bar's ends are labelled with what they mean. Frames lower
than MIN_HEIGHT (stored frames of a small run) are drawn upscaled to it, to be readable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np
import torch
from torch import nn

from dagr.failures import Failure
from dagr.files import atomic_path
from dagr.frames import WRITE_FAILED
from dagr.inference import (SaliencyRecipe, frame_windows, predict_logits,
                            relative_saliency, stored_maps)
from dagr.worker_side import progress, unlimited
from dagr.video_io import DAMAGED, VideoError, VideoReader, ffmpeg_url
from dataloader import to_clip_tensor

# ----------------------------------------------------------------------------- config
OVERLAY_ALPHA = 0.5        # weight of the heat map in an overlay
COLORMAP = cv2.COLORMAP_JET
BAR_TEXT_HEIGHTS = 360     # colour bar label font scale = frame height / this (at least 0.25)
VIDEO_CODEC = "libx264"    # H.264, yuv420p: what browsers and players play
VIDEO_CRF = 20             # x264 constant quality (lower: better, larger)
MIN_HEIGHT = 224           # overlays of lower frames are drawn upscaled to this height
FIXED_SCALE_MAX = 8.0      # the fixed scale's top: this many times a frame's mean saliency
# -----------------------------------------------------------------------------

# The colour bar's labels, top end then bottom end, each one or more lines, per scale
SCALES = {"frame": (("frame", "max"), ("frame", "min")),
          "fixed": ((f"{FIXED_SCALE_MAX:g}x", "mean"), ("0",))}


def shown_maps(logits: torch.Tensor, scale: str) -> torch.Tensor:
    """The maps an overlay draws, uint8 (..., H, W) on the CPU, of the network's `logits`
    on the colour scale `scale` (one of SCALES)."""
    if scale == "frame":
        return stored_maps(logits).cpu()
    fixed = (relative_saliency(logits) / FIXED_SCALE_MAX).clamp(0, 1)
    return (fixed * 255).round().to(torch.uint8).cpu()


def overlay(frame: np.ndarray, saliency: np.ndarray, scale: str = "frame",
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Colour heat map of `saliency` (h, w) uint8 blended over `frame` (H, W, 3) uint8 BGR,
    the map resized to the frame, with `colour_bar(H, scale)` on its right; a frame lower
    than MIN_HEIGHT is first upscaled (aspect kept) to that height. Returns
    (H, W + colour_bar(H, scale).shape[1], 3) uint8 BGR."""
    if frame.shape[0] < MIN_HEIGHT:
        width = round(frame.shape[1] * MIN_HEIGHT / frame.shape[0])
        frame = cv2.resize(frame, (width, MIN_HEIGHT), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(saliency, COLORMAP)
    if heat.shape[:2] != frame.shape[:2]:
        heat = cv2.resize(heat, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = cv2.addWeighted(frame, 1.0 - alpha, heat, alpha, 0.0)
    return np.concatenate([blended, colour_bar(frame.shape[0], scale)], axis=1)


def colour_bar(height: int, scale: str = "frame") -> np.ndarray:
    """The key to the heat map, (height, width, 3) uint8 BGR: a vertical strip of COLORMAP
    from map value 255 (top) to 0 (bottom) on a black panel, its ends labelled with what they
    mean on the colour scale `scale` (SCALES); sizes scale with `height` so that the labels
    stay legible on small frames."""
    font = max(height / BAR_TEXT_HEIGHTS, 0.25)
    thickness = max(1, round(font))
    top_lines, bottom_lines = SCALES[scale]
    sizes = {line: cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)[0]
             for line in top_lines + bottom_lines}
    text_w = max(w for w, _ in sizes.values())
    line_h = round(1.5 * max(h for _, h in sizes.values()))
    margin = max(1, height // 64)
    strip = max(3, height // 24)
    panel = np.zeros((height, margin + strip + margin + text_w + margin, 3), np.uint8)
    top, bottom = margin, height - margin
    values = np.linspace(255, 0, bottom - top).round().astype(np.uint8)[:, None]
    panel[top:bottom, margin:margin + strip] = cv2.applyColorMap(
        np.repeat(values, strip, axis=1), COLORMAP)
    left = margin + strip + margin
    first_bottom = bottom - line_h * (len(bottom_lines) - 1)  # the bottom label ends at `bottom`
    placed = [(line, top + sizes[line][1] + i * line_h) for i, line in enumerate(top_lines)]
    placed += [(line, first_bottom + i * line_h) for i, line in enumerate(bottom_lines)]
    for line, y in placed:
        cv2.putText(panel, line, (left, y), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return panel


# ----------------------------------------------------------------------------- overlay videos

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
            self.container = av.open(ffmpeg_url(self.path), "w", format="mp4")
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
        progress()

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
                  device: torch.device | str, size: Sequence[int], video: OverlayVideo,
                  scale: str) -> None:
    frame_size = windows[0][0][0].shape[:2]
    clips = torch.stack([_model_clip(frames, size) for frames, _ in windows])
    with unlimited():  # the network is trusted and, on a CPU, slow: only decoding is timed
        maps = shown_maps(predict_logits(model, clips, device, frame_size), scale).numpy()
    for (frames, fresh), window_maps in zip(windows, maps):
        for t in fresh:
            video.write(overlay(frames[t], window_maps[t], scale))


def render_video(model: nn.Module, path: str | Path, out_file: str | Path,
                 device: torch.device | str, size: Sequence[int], window: int,
                 batch_size: int, scale: str = "frame") -> int:
    """Write the saliency overlay of every decodable frame of `path` as the MP4 `out_file`
    (atomically), decoding sequentially, on the colour scale `scale` (SCALES). Returns the
    number of frames written."""
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
                    _render_batch(model, pending, device, size, video, scale)
                    pending = []
            if pending:
                _render_batch(model, pending, device, size, video, scale)
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


@dataclass(frozen=True)
class Render:
    """One overlay video to render: the video file, the MP4 to write, the network and the
    rendering settings."""
    path: Path
    target: Path
    network: SaliencyRecipe
    size: tuple[int, int]
    window: int
    batch_size: int
    scale: str = "frame"


def render(job: Render) -> int | Failure:
    """`render_video` of one job, by the network its process loaded (a worker loads it once);
    a video that cannot be used or written comes back as a Failure."""
    model = job.network.load()[0]
    try:
        return render_video(model, job.path, job.target, job.network.device, job.size,
                            job.window, job.batch_size, job.scale)
    except VideoError as err:
        return Failure(err.kind, str(err))
    except (OSError, cv2.error) as err:
        return Failure(WRITE_FAILED, str(err))


def load_network(network: SaliencyRecipe) -> None:
    """A rendering worker's set-up: the network, loaded once."""
    network.load()
