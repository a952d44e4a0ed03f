"""Shared fixtures: tiny videos and label files built on the fly (no downloads, no ../shared)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A shell that starts the suite in the background (`cmd &` without job control, nohup) starts
# it with SIGINT ignored, which every process it runs would inherit: the Ctrl-C tests would then
# test nothing. Python's own handler here means that the scripts under test start with the
# default disposition, as they do from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LEVEL_STEP = 8  # grey level per frame index: survives MJPEG compression when rounded back


def write_video(path: Path, n_frames: int, size: tuple[int, int] = (48, 64), fps: float = 10.0,
                codec: str = "MJPG") -> Path:
    """A video whose frame i is a flat grey of level LEVEL_STEP * i (so frames carry their
    own index) with a coloured corner marking the channel order (red top-left)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (size[1], size[0]))
    assert writer.isOpened(), f"OpenCV cannot write {codec} to {path}"
    for i in range(n_frames):
        frame = np.full((*size, 3), LEVEL_STEP * i % 256, np.uint8)
        frame[: size[0] // 4, : size[1] // 4] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()
    return path


def frame_level_index(image: np.ndarray) -> int:
    """The index a `write_video` frame encodes, read from its bottom-right quarter."""
    h, w = image.shape[:2]
    return int(round(float(image[h // 2:, w // 2:].mean()) / LEVEL_STEP))


PYAV_STEP = 10  # grey level per frame index in the clips encode_video makes


def encode_video(path: Path, codec: str, n: int, size=(64, 64), rotation: float | None = None) -> Path:
    """Frame i: flat grey PYAV_STEP * i with a red top-left quarter and a white bar on the left
    edge's top half (so that any rotation shows). The container follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            image = np.full((*size, 3), PYAV_STEP * i, np.uint8)
            image[: size[0] // 4, : size[1] // 4] = (255, 0, 0)
            image[: size[0] // 2, : 4] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def pyav_level(image: np.ndarray) -> int:
    """The index an `encode_video` frame encodes, read from its bottom-right quarter."""
    h, w = image.shape[:2]
    return int(round(float(image[h // 2:, w // 2:].mean()) / PYAV_STEP))


@pytest.fixture
def make_video(tmp_path):
    def make(name: str, n_frames: int, **kwargs) -> Path:
        return write_video(tmp_path / name, n_frames, **kwargs)
    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP threads
    waiting on each other make them tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
