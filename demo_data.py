"""Synthetic data sets in the publishers' layouts, written by code from a seed (SPEC section 11).

    python demo_data.py --out demo/DHF1K --train 48 --val 12 --frames 16 --size 64 112

Saliency set (DHF1K layout): `video/NNN.AVI` plus `annotation/NNNN/maps/NNNN.png` and
`annotation/NNNN/fixation/NNNN.png` (1-based frame files). Every video shows a static textured
background and several objects that look exactly alike; one of them moves, the others stand
still. People are assumed to look at the mover: its ground-truth map is a Gaussian blob on it and
the fixation points are drawn from that blob. A single frame cannot tell the mover from the
distractors, so the task needs temporal cues. Video numbers end at 600 (training split) and
start at 601 (validation split), as DHF1K's official split expects.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

# ----------------------------------------------------------------------------- config
OUT = "demo/DHF1K"
TRAIN_VIDEOS = 12
VAL_VIDEOS = 6
FRAMES = 16               # frames per video
HEIGHT, WIDTH = 64, 112
SEED = 0
OBJECTS = 4               # one mover and OBJECTS - 1 static look-alikes
SPEED = (1.5, 3.0)        # pixels per frame of the mover, drawn uniformly
FIXATIONS = 12            # fixation points drawn per frame
FPS = 30.0
LAST_TRAIN = 600          # DHF1K: videos 1-600 train, 601-700 validation
# -----------------------------------------------------------------------------


@dataclass
class Scene:
    """One synthetic video: `frames` (T, H, W, 3) uint8 BGR, `maps` (T, H, W) uint8 density,
    `fixations` (T, H, W) uint8 (255 at fixated pixels), `centres` (T, 2) mover (row, col)."""
    frames: np.ndarray
    maps: np.ndarray
    fixations: np.ndarray
    centres: np.ndarray


def textured_background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour blobs plus fine grain, so that objects are not the only
    structure in the frame."""
    height, width = size
    coarse = rng.uniform(40, 200, size=(max(height // 12, 2), max(width // 12, 2), 3))
    smooth = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 12, size=(height, width, 3))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def object_sprite(radius: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A checkered disk in two random colours: ((2r+1, 2r+1, 3) uint8 image, bool mask)."""
    span = np.arange(-radius, radius + 1)
    rows, cols = np.meshgrid(span, span, indexing="ij")
    mask = rows**2 + cols**2 <= radius**2
    colours = rng.integers(0, 256, size=(2, 3))
    square = max(radius // 2, 1)
    checker = ((rows // square + cols // square) % 2).astype(int)
    return colours[checker].astype(np.uint8), mask


def paste(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, centre: np.ndarray) -> None:
    """Draw `sprite` where `mask` holds, centred at `centre` (row, col), clipped at the border."""
    radius = sprite.shape[0] // 2
    top, left = int(round(centre[0])) - radius, int(round(centre[1])) - radius
    rows = slice(max(top, 0), min(top + sprite.shape[0], frame.shape[0]))
    cols = slice(max(left, 0), min(left + sprite.shape[1], frame.shape[1]))
    inner = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    region = frame[rows, cols]
    region[mask[inner]] = sprite[inner][mask[inner]]


def mover_path(frames: int, size: tuple[int, int], radius: int,
               rng: np.random.Generator) -> np.ndarray:
    """(T, 2) centres (row, col) of an object moving in a straight line at a random speed,
    bouncing off the borders."""
    low = np.array([radius, radius], float)
    high = np.array([size[0] - 1 - radius, size[1] - 1 - radius], float)
    position = rng.uniform(low, high)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(*SPEED) * np.array([np.sin(angle), np.cos(angle)])
    path = []
    for _ in range(frames):
        path.append(position.copy())
        position += velocity
        for axis in range(2):  # reflect at the border
            if not low[axis] <= position[axis] <= high[axis]:
                velocity[axis] = -velocity[axis]
                position[axis] = np.clip(position[axis], low[axis], high[axis])
    return np.array(path)


def gaze(centres: np.ndarray, size: tuple[int, int], sigma: float, fixations: int,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth for a mover at `centres` (T, 2): Gaussian density maps (T, H, W) uint8 with
    peak 255, and binary fixation maps (T, H, W) uint8 of points drawn from that Gaussian."""
    rows, cols = np.mgrid[:size[0], :size[1]]
    maps, points = [], []
    for centre in centres:
        density = np.exp(-((rows - centre[0])**2 + (cols - centre[1])**2) / (2 * sigma**2))
        maps.append(np.round(255 * density).astype(np.uint8))
        drawn = np.round(rng.normal(centre, sigma, size=(fixations, 2))).astype(int)
        drawn = np.clip(drawn, 0, np.array(size) - 1)
        fixated = np.zeros(size, np.uint8)
        fixated[drawn[:, 0], drawn[:, 1]] = 255
        points.append(fixated)
    return np.stack(maps), np.stack(points)


def moving_object_scene(frames: int, size: tuple[int, int], rng: np.random.Generator,
                        objects: int = OBJECTS) -> Scene:
    """One video of `objects` identical objects of which only the first moves."""
    radius = max(min(size) // 10, 3)
    background = textured_background(size, rng)
    sprite, mask = object_sprite(radius, rng)
    still = rng.uniform([radius, radius], [size[0] - 1 - radius, size[1] - 1 - radius],
                        size=(objects - 1, 2))
    centres = mover_path(frames, size, radius, rng)
    video = np.repeat(background[None], frames, axis=0)
    for frame, centre in zip(video, centres):
        for spot in still:
            paste(frame, sprite, mask, spot)
        paste(frame, sprite, mask, centre)
    maps, fixations = gaze(centres, size, sigma=1.2 * radius, fixations=FIXATIONS, rng=rng)
    return Scene(video, maps, fixations, centres)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not be written")


def write_dhf1k_video(root: Path, number: int, scene: Scene) -> None:
    """`video/NNN.AVI` (Motion-JPEG) and its `annotation/NNNN/{maps,fixation}/NNNN.png`."""
    path = root / "video" / f"{number:03d}.AVI"
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = scene.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write Motion-JPEG here")
    for frame in scene.frames:
        writer.write(frame)
    writer.release()
    folder = root / "annotation" / f"{number:04d}"
    for i, (density, fixated) in enumerate(zip(scene.maps, scene.fixations), start=1):
        _write_png(folder / "maps" / f"{i:04d}.png", density)
        _write_png(folder / "fixation" / f"{i:04d}.png", fixated)


def write_saliency_set(root: str | Path, n_train: int = TRAIN_VIDEOS, n_val: int = VAL_VIDEOS,
                       frames: int = FRAMES, size: Sequence[int] = (HEIGHT, WIDTH),
                       seed: int = SEED) -> Path:
    """Write a DHF1K-layout set of moving-object videos under `root` and return `root`.

    Training videos are numbered 600 - n_train + 1 ... 600, validation videos 601 ...
    600 + n_val. Video `number` depends only on (seed, number), so a larger set extends a
    smaller one with the same seed.
    """
    if not (0 <= n_train <= LAST_TRAIN and 0 <= n_val <= 100):
        raise ValueError("DHF1K numbering allows at most 600 training and 100 validation videos")
    root = Path(root)
    size = (int(size[0]), int(size[1]))
    numbers = range(LAST_TRAIN - n_train + 1, LAST_TRAIN + n_val + 1)
    for number in numbers:
        scene = moving_object_scene(frames, size, np.random.default_rng((seed, number)))
        write_dhf1k_video(root, number, scene)
    return root


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--train", type=int, default=TRAIN_VIDEOS, help="training videos")
    parser.add_argument("--val", type=int, default=VAL_VIDEOS, help="validation videos")
    parser.add_argument("--frames", type=int, default=FRAMES, help="frames per video")
    parser.add_argument("--size", type=int, nargs=2, default=(HEIGHT, WIDTH), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = write_saliency_set(args.out, args.train, args.val, args.frames, args.size, args.seed)
    print(f"{args.train} training and {args.val} validation videos written to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
