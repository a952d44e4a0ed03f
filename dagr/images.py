"""Image files read and written without handing OpenCV a path: Python does the file I/O and
OpenCV only decodes or encodes bytes (cv2.imdecode / cv2.imencode). OpenCV's own path handling
crashes the process (SIGSEGV) on a name that is not valid UTF-8, and file names come from
elsewhere. Each image counts as progress for a supervised worker (dagr.supervised). Also the
frames and 8-bit maps as the networks read them (RGB, resized).

Imports no project module but dagr.supervised.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from dagr.worker_side import progress


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """The image file `path` as cv2.imread(path, flags) would give it (BGR, or grayscale with
    cv2.IMREAD_GRAYSCALE). Raises OSError naming the file when it cannot be read or is not an
    image."""
    try:
        data = np.frombuffer(Path(path).read_bytes(), np.uint8)
    except OSError as err:
        raise OSError(f"{path}: cannot be read ({err.strerror or err})") from err
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise OSError(f"{path}: cannot be read as an image")
    progress()
    return image


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write `image` (BGR or grayscale uint8) as the PNG file `path`. Raises OSError naming
    the file when it cannot be written."""
    encoded, data = cv2.imencode(".png", image)
    if not encoded:
        raise OSError(f"{path}: could not be encoded as PNG")
    try:
        Path(path).write_bytes(data.tobytes())
    except OSError as err:
        raise OSError(f"{path}: could not be written ({err.strerror or err})") from err
    progress()


def rgb_at(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A BGR image (H', W', 3) as (H, W, 3) uint8 RGB, resized to `size` = (H, W) when it
    differs (INTER_AREA)."""
    if image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_rgb(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, resized to `size` = (H, W) when it differs."""
    return rgb_at(read_image(path, cv2.IMREAD_COLOR), size)


def load_map_levels(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 map from an 8-bit image file, resized to `size` (INTER_LINEAR)."""
    image = read_image(path, cv2.IMREAD_GRAYSCALE)
    if image.shape != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return image
