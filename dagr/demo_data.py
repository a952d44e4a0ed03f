"""The demo data: two synthetic sets in their publishers' layouts, written by code from a seed
(docs/demo.md). demo.py writes them first; `python demo.py --data-only` writes only them.

Scenes. Every clip shows a still textured background and OBJECTS checkered disks that look
exactly alike; one of them moves (straight line, bouncing off the borders), the others stand
still. People are assumed to look at the mover, the salient object. A single frame cannot tell
it from its look-alikes, so finding it needs temporal cues.

Saliency set, DHF1K layout (`<out>/DHF1K`): `video/NNN.AVI` (Motion-JPEG) plus
`annotation/NNNN/maps/NNNN.png` and `annotation/NNNN/fixation/NNNN.png` (1-based frame files).
The ground-truth map of a frame is a Gaussian blob on the mover (sigma = 1.2 x its radius,
peak 255) and the fixations are FIXATIONS points drawn from that Gaussian. Training videos are
numbered up to 600 and validation videos from 601 on, as DHF1K's official split expects.

Quality set, KoNViD-1k layout (`<out>/KoNViD-1k`): `KoNViD_1k_videos/<flickr_id>.mp4`,
`KoNViD_1k_mos.csv` (`flickr_id,mos`, as the publisher ships it) and
`KoNViD_1k_distortions.csv` (flickr_id, kind, region, strength, mos: the ground truth behind
each score). Each clip is a scene (by default as above; demo.py's are the global-context
check's, dagr/global_context.py) with one distortion of strength s ~ U[0, 1]:
- blur: Gaussian, sigma = BLUR_SIGMA * s pixels;
- noise: Gaussian, standard deviation NOISE_STD * s grey levels;
- blocking: pixelation into squares of 1 + round(BLOCK_SIZE * s) pixels;
- freeze: a run of round(s * (T - 1)) frames repeats the frame before it (whole frame only).
demo.py uses blur and noise (DEMO_KINDS), which a network trained from scratch for a couple of
minutes learns; blocking and freezing are here for longer runs. A spatial distortion covers a
region: the whole frame, only the salient region (the disk of REGION_REACH object radii around
the salient disk, where its gaze blob holds most of its mass: about a quarter of the frame
here), only the background (the rest), or only the same disk around a decoy, a look-alike
that people do not look at. Kinds take turns over the clips, and regions take turns within a
kind in the order of REGION_TURNS (half the clips whole-frame). Scenes with a decoy (the
demo's) take the DECOY_ settings: noise only, regions of DECOY_REACH radii, DECOY_TURNS (half
the clips whole-frame, a quarter the salient disk, a quarter the decoy). The score (people
notice defects where they look):

    MOS = 5 - 4 * s * REGION_WEIGHT[region],
    REGION_WEIGHT = whole 1.0, salient 0.5, background 0.5
    (scenes with a decoy: DECOY_WEIGHT = whole 1.0, salient 1.0, decoy 0.1)

so MOS lies in [1, 5] (5: undistorted). Here the salient region, a quarter of the pixels,
counts as much as the other three quarters: per pixel, a defect where people look costs about
three times as much as one where they do not. With a decoy, a defect on the salient disk costs
as much as one on the whole frame, and the same defect on the look-alike a tenth of that: only
where people look tells them apart. Saliency weighting (VQA.py) turns the quality network's
attention the same way.

Clip number `i` of either set depends only on (seed, i), so a larger set extends a smaller one.

Each set's folder also holds `SYNTHETIC_DATA.txt` (provenance.py's marker): the trainers
record it in their checkpoints, and scoring videos with a model trained on it says so.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from dagr.files import atomic_path
from dagr.images import write_png
from dagr.provenance import mark_synthetic

# ----------------------------------------------------------------------------- config
SALIENCY_TRAIN = 24       # saliency set: training videos (numbered up to 600)
SALIENCY_VAL = 6          # saliency set: validation videos (601 on)
SALIENCY_FRAMES = 16      # frames per saliency video
QUALITY_CLIPS = 400       # quality set: clips
QUALITY_FRAMES = 4        # frames per quality clip
HEIGHT, WIDTH = 48, 84
SEED = 0
GRATINGS = 3              # fine gratings laid over each background
OBJECTS = 4               # one mover and OBJECTS - 1 still look-alikes
SPEED = (1.5, 3.0)        # pixels per frame of the mover, drawn uniformly
FIXATIONS = 12            # fixation points drawn per frame
FPS = 30.0
LAST_TRAIN = 600          # DHF1K: videos 1-600 train, 601-700 validation
KINDS = ("blur", "noise", "blocking", "freeze")
DEMO_KINDS = ("blur", "noise")
REGION_WEIGHT = {"whole": 1.0, "salient": 0.5, "background": 0.5}
REGION_TURNS = ("whole", "salient", "whole", "background")  # half the clips whole-frame
# scenes with a decoy (the demo's, of the global-context check): a defect on the salient disk
# costs as much as one everywhere, the same defect on a look-alike that people do not look at
# (the same area and look) little
DECOY_WEIGHT = {"whole": 1.0, "salient": 1.0, "decoy": 0.1}
DECOY_TURNS = ("whole", "salient", "whole", "decoy")
DECOY_REACH = 4.0         # their disks are small (3 pixels on a 24-pixel strip): wider regions
DECOY_KINDS = ("noise",)  # blur of a 3-pixel disk is too faint for the demo's quality network
REGIONS = ("whole", "salient", "background", "decoy")
REGION_REACH = 2.0        # the salient region: a disk of this many object radii
BLUR_SIGMA = 3.0
NOISE_STD = 50.0
BLOCK_SIZE = 8
FIRST_ID = 3_000_000_000  # KoNViD-1k ids are Flickr ids of about this size
# -----------------------------------------------------------------------------

SALIENCY_DIR, QUALITY_DIR = "DHF1K", "KoNViD-1k"
QUALITY_LABELS, QUALITY_DETAILS = "KoNViD_1k_mos.csv", "KoNViD_1k_distortions.csv"
QUALITY_VIDEOS = "KoNViD_1k_videos"


# ----------------------------------------------------------------------------- scenes

@dataclass
class Scene:
    """One synthetic clip of T frames of H x W pixels.

    frames (T, H, W, 3) uint8 RGB; maps (T, H, W) uint8 gaze density on the mover;
    fixations (T, H, W) uint8, 255 at fixated pixels; centres (T, 2) the mover's (row, col);
    radius: the disks' radius in pixels; decoy (T, 2): the centres of a look-alike that people
    do not look at (None: the scene has none).
    """
    frames: np.ndarray
    maps: np.ndarray
    fixations: np.ndarray
    centres: np.ndarray
    radius: int
    decoy: np.ndarray | None = None


# a scene of a quality clip: (frames, size, rng, radius=None) -> Scene
SceneMaker = Callable[..., Scene]


def textured_background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour blobs under fine colour gratings (periods of 3-8 pixels),
    so that objects are not the only structure in the frame and blur has detail to remove."""
    height, width = size
    coarse = rng.uniform(50, 200, size=(max(height // 12, 2), max(width // 12, 2), 3))
    image = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    rows, cols = np.mgrid[:height, :width]
    for _ in range(GRATINGS):
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        phase = (cols * np.cos(angle) + rows * np.sin(angle)) * 2 * np.pi / period
        image += np.sin(phase + rng.uniform(0, 2 * np.pi))[..., None] * rng.uniform(8, 20, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


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


def object_radius(size: Sequence[int]) -> int:
    """Radius in pixels of the disks in an H x W frame: a tenth of the shorter side."""
    return max(min(size) // 10, 3)


def moving_object_scene(frames: int, size: Sequence[int], rng: np.random.Generator,
                        objects: int = OBJECTS, radius: int | None = None) -> Scene:
    """One clip of `objects` identical disks (radius `radius`, default `object_radius`) of
    which only the first moves."""
    size = (int(size[0]), int(size[1]))
    radius = radius or object_radius(size)
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
    decoy = np.repeat(still[:1], frames, axis=0) if objects > 1 else None
    return Scene(video, maps, fixations, centres, radius, decoy)


# ----------------------------------------------------------------------------- distortions

def mos_of(strength: float, region: str, weights: Mapping[str, float] = REGION_WEIGHT) -> float:
    """The ground-truth MOS (1-5) of a clip distorted with `strength` in `region`, which
    `weights` weighs."""
    return 5.0 - 4.0 * strength * weights[region]


def near(centres: np.ndarray, size: tuple[int, int], reach: float) -> np.ndarray:
    """(T, H, W) bool: the pixels within `reach` of each of `centres` (T, 2) (row, col)."""
    rows, cols = np.mgrid[:size[0], :size[1]]
    return np.stack([np.hypot(rows - r, cols - c) <= reach for r, c in centres])


def region_mask(scene: Scene, region: str, reach: float = REGION_REACH) -> np.ndarray:
    """(T, H, W) float32, 1 where a distortion of `region` applies: everywhere ("whole"),
    within `reach` radii of the salient disk ("salient") or outside that disk ("background"),
    or within `reach` radii of the scene's decoy ("decoy")."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {sorted(REGIONS)}, got {region!r}")
    if region == "decoy" and scene.decoy is None:
        raise ValueError("region 'decoy' needs a scene with a decoy (a look-alike disk)")
    size, pixels = scene.frames.shape[1:3], reach * scene.radius
    if region == "decoy":
        return near(scene.decoy, size, pixels).astype(np.float32)
    salient = near(scene.centres, size, pixels)
    inside = {"whole": np.ones_like(salient), "salient": salient, "background": ~salient}[region]
    return inside.astype(np.float32)


def distort(frame: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One frame (H, W, 3) float32 in [0, 255] with a spatial distortion of `strength`."""
    if kind == "blur":
        return cv2.GaussianBlur(frame, (0, 0), BLUR_SIGMA * strength) if strength > 0 else frame
    if kind == "noise":
        return frame + rng.normal(0.0, NOISE_STD * strength, frame.shape).astype(np.float32)
    if kind == "blocking":
        block = 1 + int(round(BLOCK_SIZE * strength))
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (max(width // block, 1), max(height // block, 1)),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    raise ValueError(f"{kind!r} is not a spatial distortion")


def freeze(clip: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The clip (T, H, W, 3) with a run of round(strength * (T - 1)) frames repeating the
    frame before it."""
    length = int(round(strength * (len(clip) - 1)))
    if length == 0:
        return clip
    first = int(rng.integers(1, len(clip) - length + 1))
    out = clip.copy()
    out[first:first + length] = clip[first - 1]
    return out


def distorted_clip(scene: Scene, kind: str, region: str, strength: float,
                   rng: np.random.Generator, reach: float = REGION_REACH) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB: the scene's frames with the distortion applied to `region`
    (`region_mask` with `reach`; freezing always takes the whole frame)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "freeze":
        return freeze(scene.frames, strength, rng)
    clip = scene.frames.astype(np.float32)
    weight = region_mask(scene, region, reach)[..., None]
    out = np.stack([frame * (1 - w) + distort(frame, kind, strength, rng) * w
                    for frame, w in zip(clip, weight)])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- files

def write_video(path: str | Path, clip: np.ndarray, codec: str, fps: float = FPS) -> None:
    """(T, H, W, 3) uint8 RGB as a video file in `codec` (a FourCC), written atomically."""
    path = Path(path)
    # OpenCV gets a name of ours in the temporary folder (it crashes on a path that is not
    # valid UTF-8, and the output folder is the user's), with the suffix it picks the
    # container by; the file then moves into place
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix="dagr_video_") as scratch:
        staged = Path(scratch) / f"video{path.suffix}"
        writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*codec), fps,
                                 (clip.shape[2], clip.shape[1]))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write {codec} video here")
        for frame in clip:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        shutil.move(staged, tmp)


def write_mp4(path: str | Path, clip: np.ndarray) -> None:
    """(T, H, W, 3) uint8 RGB as an MPEG-4 file (KoNViD-1k ships MP4), written atomically."""
    write_video(path, clip, "mp4v")


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, image)


def write_dhf1k_video(root: Path, number: int, scene: Scene) -> None:
    """`video/NNN.AVI` (Motion-JPEG) and its `annotation/NNNN/{maps,fixation}/NNNN.png`."""
    write_video(root / "video" / f"{number:03d}.AVI", scene.frames, "MJPG")
    folder = root / "annotation" / f"{number:04d}"
    for i, (density, fixated) in enumerate(zip(scene.maps, scene.fixations), start=1):
        _write_png(folder / "maps" / f"{i:04d}.png", density)
        _write_png(folder / "fixation" / f"{i:04d}.png", fixated)


def write_saliency_set(root: str | Path, n_train: int = SALIENCY_TRAIN, n_val: int = SALIENCY_VAL,
                       frames: int = SALIENCY_FRAMES, size: Sequence[int] = (HEIGHT, WIDTH),
                       seed: int = SEED, radius: int | None = None) -> Path:
    """Write a DHF1K-layout set of moving-object videos under `root` and return `root`.

    Training videos are numbered 600 - n_train + 1 ... 600, validation videos 601 ...
    600 + n_val; video `number` is drawn from the seed (seed, number).
    """
    if not (0 <= n_train <= LAST_TRAIN and 0 <= n_val <= 100):
        raise ValueError("DHF1K numbering allows at most 600 training and 100 validation videos")
    root = Path(root)
    for number in range(LAST_TRAIN - n_train + 1, LAST_TRAIN + n_val + 1):
        scene = moving_object_scene(frames, size, np.random.default_rng((seed, number)),
                                    radius=radius)
        write_dhf1k_video(root, number, scene)
    mark_synthetic(root, "demo_data.py: a synthetic saliency set in DHF1K's layout")
    return root


def clip_design(index: int, kinds: Sequence[str], regions: Sequence[str]) -> tuple[str, str]:
    """(kind, region) of quality clip `index`: kinds take turns, and regions (a sequence that
    may repeat a region) take turns within a kind; freezing takes the whole frame."""
    kind = kinds[index % len(kinds)]
    region = regions[index // len(kinds) % len(regions)]
    return kind, "whole" if kind == "freeze" else region


def write_quality_set(root: str | Path, n_videos: int = QUALITY_CLIPS, frames: int = QUALITY_FRAMES,
                      size: Sequence[int] = (HEIGHT, WIDTH), seed: int = SEED,
                      kinds: Sequence[str] = DEMO_KINDS, regions: Sequence[str] = REGION_TURNS,
                      radius: int | None = None, scene: SceneMaker | None = None,
                      weights: Mapping[str, float] = REGION_WEIGHT,
                      reach: float = REGION_REACH) -> Path:
    """Write the KoNViD-1k-layout set (see the module docstring) under `root`; returns the
    label file `KoNViD_1k_mos.csv`. Clip `index` is drawn from the seed (seed, index), its
    scene by `scene` (default `moving_object_scene`; the demo's is the global-context check's
    `odd_one_out_scene`, with the DECOY_ settings): `kinds` and `regions` take turns, the
    MOS weighs each region by `weights` and a region reaches `reach` disk radii."""
    scene = scene or moving_object_scene
    root = Path(root)
    rows = []
    for index in range(n_videos):
        rng = np.random.default_rng((seed, index))
        kind, region = clip_design(index, kinds, regions)
        strength = float(rng.uniform(0.0, 1.0))
        drawn = scene(frames, size, rng, radius=radius)
        flickr_id = FIRST_ID + index
        write_mp4(root / QUALITY_VIDEOS / f"{flickr_id}.mp4",
                  distorted_clip(drawn, kind, region, strength, rng, reach))
        rows.append({"flickr_id": flickr_id, "kind": kind, "region": region,
                     "strength": round(strength, 4),
                     "mos": round(mos_of(strength, region, weights), 4)})
    table = pd.DataFrame(rows, columns=["flickr_id", "kind", "region", "strength", "mos"])
    labels = root / QUALITY_LABELS
    for path, columns in ((labels, ["flickr_id", "mos"]), (root / QUALITY_DETAILS, table.columns)):
        with atomic_path(path) as tmp:
            table[list(columns)].to_csv(tmp, index=False)
    mark_synthetic(root, "demo_data.py: a synthetic quality set in KoNViD-1k's layout")
    return labels
