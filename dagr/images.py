"""Image files read and written without handing OpenCV a path: Python does the file I/O and
OpenCV only decodes or encodes bytes (cv2.imdecode / cv2.imencode). OpenCV's own path handling
crashes the process (SIGSEGV) on a name that is not valid UTF-8, and file names come from
elsewhere. Each image counts as progress for a supervised worker (dagr.supervised).

Imports no project module but dagr.supervised.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from dagr.supervised import progress


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
