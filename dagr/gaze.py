"""Fixation points to the maps a saliency network learns from and is scored on: one rule for
every set that publishes points rather than maps (SALICON, SUN500, a fixation table).

A point (x, y) is in the image's own pixels, x to the right and y down from the top-left
corner, 0-based. It falls on the cell of a map of size (H, W) that covers it: column
floor(x * W / image width), row floor(y * H / image height). Points outside the image are
dropped: eye trackers record gaze that leaves the screen. The density map counts the points of
every cell, blurs the counts with a Gaussian of sigma `SIGMA_OF_WIDTH` times the map's width
(zeros beyond the borders, so a fixation at the edge loses the part of its blob that falls
outside) and scales the result to a maximum of 1, as the 8-bit maps of DHF1K and MIT1003 are.
docs/gaze.md gives the numbers.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

# SALICON's blur, 19 pixels on its 640-pixel-wide maps: about one degree of visual angle
SIGMA_OF_WIDTH = 19 / 640


def point_cells(points: np.ndarray, image_size: tuple[int, int], size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int arrays: the cells of a map of `size` = (H, W) that the `points` (N, 2)
    x, y inside an image of `image_size` = (height, width) fall on; outside points dropped."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = image_size
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    xy = xy[inside & np.isfinite(xy).all(axis=1)]
    rows = np.minimum((xy[:, 1] * size[0] / height).astype(np.int64), size[0] - 1)
    cols = np.minimum((xy[:, 0] * size[1] / width).astype(np.int64), size[1] - 1)
    return rows, cols


def fixation_map(points: np.ndarray, image_size: tuple[int, int], size: tuple[int, int]
                 ) -> np.ndarray:
    """(H, W) float32: 1 on every cell with at least one fixation, else 0."""
    out = np.zeros(size, np.float32)
    rows, cols = point_cells(points, image_size, size)
    out[rows, cols] = 1.0
    return out


def density_map(points: np.ndarray, image_size: tuple[int, int], size: tuple[int, int],
                sigma_of_width: float = SIGMA_OF_WIDTH) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the fixation counts blurred by the module's rule, maximum 1;
    all zeros when no point falls inside the image."""
    counts = np.zeros(size, np.float64)
    rows, cols = point_cells(points, image_size, size)
    np.add.at(counts, (rows, cols), 1.0)
    blurred = scipy.ndimage.gaussian_filter(counts, sigma_of_width * size[1], mode="constant")
    peak = blurred.max()
    return (blurred / peak if peak > 0 else blurred).astype(np.float32)
