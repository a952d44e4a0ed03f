"""A global-context saliency check: a synthetic "odd one out" set in DHF1K's layout
(docs/registers.md). `python demo.py --data-only --out DIR` writes it to DIR/data/GlobalContext.

Why. demo_data.py's set is solved by motion alone: the salient disk is the only one that
moves, which a small window in space and time sees. Here nothing local gives the salient
object away; only a comparison across the whole clip does.

Scenes. A still, low-saturation textured background and OBJECTS checkered disks that look
exactly alike (same radius, same checker texture, same kind of motion: all still, or all
drifting in straight lines at the same speed in random directions) at random positions. All
disks have colour A except one, of colour B; people are assumed to look at that odd one.
(A, B) is an ordered pair of distinct PALETTE colours; video `number` takes pair number
`number % len(PAIRS)`, so in a set of consecutive videos whose count is a multiple of
len(PAIRS) every colour is exactly as often the majority colour as the odd one. Positions are
drawn for all disks before the odd one is picked (uniformly), so place carries no information.

What a window sees. A disk's look says nothing: a disk of colour c is the odd one in 1 of the
K disks that have colour c, whatever c is (each colour is as often A as B). Its motion says
nothing (all disks move alike), nor does its place. Only seeing other disks does: one other
disk of the same colour marks both as ordinary. So the disks are kept SEPARATION = 150 pixels
apart in Chebyshev distance (max(|d row|, |d col|), over all pairs of frames; receptive fields
are boxes): UNet3D's theoretical receptive field reaches at most UNET_REACH = 136 pixels
(`unet_reach`), so the baseline's logits within 150 - 136 - radius - 1 = 10 pixels of a disk's
centre cannot depend on any other disk, whatever its weights. (A separation beyond the
baseline's *effective* receptive field is not enough: that field grows with training, from a
90 %-mass radius of about 11 pixels to about 50 when the task rewards it.) Three disks that
far apart need a wide frame: the default is a 24 x 384 strip. `counterpart` proves the point
by construction: it rebuilds a scene so that the odd disk becomes an ordinary one (the others
are recoloured: B becomes the majority and the farthest disk turns A) while every pixel within
a stated Chebyshev window of it, in every frame, stays the same.

Variants (VARIANTS, `python demo.py --check-variant`): "palette", the six-colour check above,
and "continuous", which no lookup of colours passes: for each clip the two hues are drawn from
the whole colour circle (at least HUE_GAP apart, each uniform) and the number of disks from 3
to 5, laid out along a 24 x 640 strip with random gaps (`_spaced_paths`), every pair still
SEPARATION apart. A set records its options in SETTINGS, so that fresh clips
(dagr/registers.py's far-context test) are drawn the same way. `odd_one_out_scene` makes a
clip of the check into a scene for demo_data.py's quality set, with a look-alike as decoy.

Ground truth as demo_data.py: per frame a Gaussian blob on the odd disk (sigma = 1.2 x radius,
peak 255) and FIXATIONS points drawn from it. Training videos are numbered up to 600,
validation videos from 601 (DHF1K's split). The set's folder also holds `global_context.csv`
(one row per video: its salient and distractor colours, motion, geometry; for colouring
figures) and provenance.py's synthetic marker. Video `number` depends only on (seed, number).
"""
from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dagr.demo_data import FIXATIONS, LAST_TRAIN, Scene, gaze, paste, write_dhf1k_video
from dagr.files import atomic_path
from dagr.provenance import mark_synthetic

# ----------------------------------------------------------------------------- config
TRAIN, VAL = 600, 100     # videos (numbered up to 600 / from 601)
FRAMES = 8                # frames per video
HEIGHT, WIDTH = 24, 384   # a strip: three disks fit farther apart than UNet3D's receptive field
SEED = 0
OBJECTS = 3               # K look-alike disks, one the odd colour; or (least, most), drawn per clip
COLOURS = "palette"       # "palette": PAIRS of the PALETTE; "continuous": hues drawn per clip
SPACED = False            # lay the disks along the strip with random gaps (`_spaced_paths`)
RADIUS = None             # disk radius in pixels (default: `default_radius`)
UNET_REACH = 136          # UNet3D's theoretical receptive field: +-136 pixels (see `unet_reach`)
SEPARATION = 150          # least Chebyshev distance between disk centres, over all frames
MOTIONS = ("still", "drift")
MOTION = "mixed"          # "still", "drift" or "mixed" (each video draws one of MOTIONS)
SPEED = (0.5, 1.0)        # drift: pixels per frame, one speed per clip, random directions
PALETTE = {               # saturated hues at the same brightness, far from the grey background
    "red": (220, 40, 40), "yellow": (220, 220, 40), "green": (40, 220, 40),
    "cyan": (40, 220, 220), "blue": (40, 40, 220), "magenta": (220, 40, 220),
}
HUE_GAP = 1 / 8           # continuous: least hue difference between the two colours of a clip
BACKGROUND_GREY = 125.0   # mean of every background, each colour channel
SHADE = 0.55              # the checker's second colour: the colour times SHADE
TRIES = 2000              # layouts drawn before giving up on a separation
# -----------------------------------------------------------------------------

COLOUR_MODES = ("palette", "continuous")
# SETTINGS' keys: `video_layout`'s options
LAYOUT_OPTIONS = ("colours", "objects", "spaced", "radius", "separation", "motion")
# the check's variants (docs/registers.md): the six-colour check, and one that no lookup of
# colours passes: two hues drawn from the whole colour circle for each clip, 3 to 5 disks
VARIANTS = {
    "palette": {"colours": "palette", "objects": OBJECTS, "spaced": False,
                "size": (HEIGHT, WIDTH)},
    "continuous": {"colours": "continuous", "objects": (3, 5), "spaced": True,
                   "size": (24, 640)},
}


def variant_options(name: str) -> dict[str, Any]:
    """VARIANTS[name] without its frame size: `video_layout`'s options for that variant."""
    return {key: value for key, value in VARIANTS[name].items() if key != "size"}


# (distractor colour A, salient colour B), ordered so that any len(PALETTE) consecutive pairs of
# one block take every colour once as A and once as B
PAIRS = [(a, list(PALETTE)[(i + shift) % len(PALETTE)])
         for shift in range(1, len(PALETTE)) for i, a in enumerate(PALETTE)]
TABLE = "global_context.csv"
SETTINGS = "global_context.json"  # how the set was drawn: fresh clips for the far-context test
COLUMNS = ["video", "split", "salient_colour", "distractor_colour", "salient_rgb",
           "distractor_rgb", "objects", "motion", "speed", "radius", "separation", "target_row",
           "target_col", "nearest"]


@dataclass(frozen=True)
class Layout:
    """What a clip shows, before it is drawn.

    background (H, W, 3) uint8; paths (K, T, 2) float disk centres (row, col) per frame;
    colours: K colours, PALETTE names or "#rrggbb" (`colour_rgb`); target: index of the
    salient disk; radius in pixels; motion and speed (pixels per frame, 0 when still);
    separation: the least Chebyshev distance between centres asked for (`chebyshev`).
    """
    background: np.ndarray
    paths: np.ndarray
    colours: tuple[str, ...]
    target: int
    radius: int
    motion: str
    speed: float
    separation: float

    @property
    def size(self) -> tuple[int, int]:
        return self.background.shape[0], self.background.shape[1]

    @property
    def salient(self) -> str:
        return self.colours[self.target]

    @property
    def distractor(self) -> str:
        return self.colours[(self.target + 1) % len(self.colours)]

    def same_red(self) -> bool:
        """Whether the salient and the distractor colour lie on the same side of the red
        channel's middle: the one clip-wide fact that FiLM registers learned on the six-colour
        check (docs/registers.md), so the far-context test reports these clips apart."""
        reds = [colour_rgb(colour)[0] > 127.5 for colour in (self.salient, self.distractor)]
        return reds[0] == reds[1]

    def nearest(self) -> float:
        """Least Chebyshev distance from a centre of the salient disk to one of another disk,
        over all pairs of frames (`chebyshev`)."""
        return min(chebyshev(self.paths[self.target], path)
                   for k, path in enumerate(self.paths) if k != self.target)


def colour_rgb(colour: str) -> np.ndarray:
    """(3,) float RGB of a PALETTE name or of "#rrggbb"."""
    if colour in PALETTE:
        return np.array(PALETTE[colour], float)
    if len(colour) != 7 or not colour.startswith("#"):
        raise ValueError(f"a colour is a name of {sorted(PALETTE)} or #rrggbb, not {colour!r}")
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], float)


def colour_hex(colour: str) -> str:
    """"#rrggbb" of a PALETTE name or of "#rrggbb"."""
    return "#" + "".join(f"{round(channel):02x}" for channel in colour_rgb(colour))


def hue_colour(hue: float) -> str:
    """"#rrggbb" at `hue` (0 to 1, red 0, yellow 1/6, ...) with the PALETTE's saturation and
    brightness: hue_colour(k / 6) is the PALETTE's k-th colour."""
    high, low = max(map(max, PALETTE.values())), min(map(min, PALETTE.values()))
    rgb = colorsys.hsv_to_rgb(hue % 1.0, 1 - low / high, high / 255)
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb)


def colour_family(colour: str) -> str:
    """The PALETTE name nearest in hue to `colour` (a name is its own family): the category
    that figures colour a continuous-colour set's videos by."""
    if colour in PALETTE:
        return colour
    hue = colorsys.rgb_to_hsv(*(colour_rgb(colour) / 255))[0]
    return list(PALETTE)[round(hue * len(PALETTE)) % len(PALETTE)]


def continuous_pair(rng: np.random.Generator) -> tuple[str, str]:
    """(distractor, salient) colours: a hue uniform on the colour circle and another at least
    HUE_GAP from it, also uniform on the circle; no colour says by itself which role it has."""
    hue = rng.uniform()
    return hue_colour(hue), hue_colour(hue + rng.uniform(HUE_GAP, 1 - HUE_GAP))


def default_radius(size: Sequence[int]) -> int:
    """Disk radius for an H x W frame: an eighth of the shorter side, at least 3 pixels."""
    return max(min(size) // 8, 3)


def chebyshev(a: np.ndarray, b: np.ndarray) -> float:
    """Least Chebyshev distance max(|d row|, |d col|) between the points of two paths (T, 2),
    over all pairs of frames: convolutional receptive fields are boxes, in space and time."""
    return float(np.abs(a[:, None] - b[None]).max(-1).min())


def unet_reach(size: Sequence[int] = (8, WIDTH), frames: int = 2) -> int:
    """How far, in pixels along the width, UNet3D's theoretical receptive field reaches from
    an output pixel, the most over all output columns of an H x W frame (it depends on the
    column: pooling and resizing do not align exactly). Every path is opened: positive
    weights, average pooling in place of max pooling, a positive input; the gradient of a
    column's logits is then non-zero exactly on the pixels they can depend on."""
    import torch
    from sal_withoutreg import UNet3D  # a network: imported only where the reach is measured
    model = UNet3D(1).double().eval()
    model.pool = torch.nn.AvgPool3d(2, 2, padding=1)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.constant_(module.weight, 1.0 / module.weight[0].numel())
    x = torch.ones(1, 3, frames, *size, dtype=torch.float64, requires_grad=True)
    logits = model(x)[0, 0]
    reach = 0
    for column in range(size[1]):
        grad, = torch.autograd.grad(logits[..., column].sum(), x, retain_graph=True)
        seen = np.nonzero(grad[0].abs().sum((0, 1, 2)).numpy())[0]
        reach = max(reach, column - seen.min(), seen.max() - column)
    return int(reach)


def neutral_background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: smooth grey blobs, faintly tinted, under fine grey gratings (periods of
    3-8 pixels): structure everywhere, but no saturated colour that a disk could be taken for.
    The blobs vary around BACKGROUND_GREY with zero mean over the frame, so that the frame's
    mean colour is about the same in every clip: what varies clip-wide is the disks."""
    import cv2  # as demo_data does; kept local so that importing this module stays cheap
    height, width = size
    coarse = rng.uniform(-55, 55, size=(max(height // 12, 2), max(width // 12, 2), 1))
    coarse = coarse + rng.uniform(-12, 12, size=coarse.shape[:2] + (3,))
    image = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image += BACKGROUND_GREY - image.mean(axis=(0, 1))
    rows, cols = np.mgrid[:height, :width]
    for _ in range(3):
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        phase = (cols * np.cos(angle) + rows * np.sin(angle)) * 2 * np.pi / period
        image += np.sin(phase + rng.uniform(0, 2 * np.pi))[..., None] * rng.uniform(6, 14)
    return np.clip(image, 0, 255).astype(np.uint8)


def disk_sprite(radius: int, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """A disk checkered in `colour` and its SHADE: ((2r+1, 2r+1, 3) uint8, bool mask). Every
    disk has the same pattern; only the colour differs."""
    span = np.arange(-radius, radius + 1)
    rows, cols = np.meshgrid(span, span, indexing="ij")
    mask = rows**2 + cols**2 <= radius**2
    square = max(radius // 2, 1)
    checker = ((rows // square + cols // square) % 2).astype(bool)
    rgb = colour_rgb(colour)
    image = np.where(checker[..., None], rgb * SHADE, rgb)
    return np.round(image).astype(np.uint8), mask


def _draw_paths(frames: int, size: tuple[int, int], objects: int, radius: int,
                separation: float, speed: float, rng: np.random.Generator) -> np.ndarray:
    """(K, T, 2) straight paths inside the frame, pairwise at least `separation` apart
    (`chebyshev`: any frame of one path to any frame of the other); disks are placed one by
    one, a whole layout redrawn when one finds no room."""
    low = np.array([radius, radius], float)
    high = np.array([size[0] - 1 - radius, size[1] - 1 - radius], float)
    steps = np.arange(frames)[:, None]
    for _ in range(TRIES):
        paths = []
        for _ in range(objects):
            for _ in range(100):
                angle = rng.uniform(0, 2 * np.pi)
                velocity = speed * np.array([np.sin(angle), np.cos(angle)])
                start = rng.uniform(low, high)
                path = start + steps * velocity
                inside = np.all((path >= low) & (path <= high))
                apart = all(chebyshev(path, other) >= separation for other in paths)
                if inside and apart:
                    paths.append(path)
                    break
            else:
                break
        if len(paths) == objects:
            return np.stack(paths)
    raise ValueError(f"no room for {objects} disks of radius {radius} at least {separation:.1f} "
                     f"pixels apart in a {size[0]}x{size[1]} frame")


def _spaced_paths(frames: int, size: tuple[int, int], objects: int, radius: int,
                  separation: float, speed: float, rng: np.random.Generator) -> np.ndarray:
    """(K, T, 2) straight paths that follow each other along the frame's width with random gaps,
    the columns of any two at least `separation` apart: a layout by construction, for strips
    that K disks only just fit (where `_draw_paths` would rarely find room)."""
    angles = rng.uniform(0, 2 * np.pi, objects)
    velocity = speed * np.stack([np.sin(angles), np.cos(angles)], axis=1)  # (K, 2)
    sweep = np.abs(velocity) * (frames - 1)  # rows and columns each path crosses
    free = size[1] - 1 - 2 * radius - sweep[:, 1].sum() - (objects - 1) * separation
    if free < 0 or (sweep[:, 0] > size[0] - 1 - 2 * radius).any():
        raise ValueError(f"no room for {objects} disks of radius {radius} at least "
                         f"{separation:.1f} pixels apart in a {size[0]}x{size[1]} frame")
    gaps = rng.dirichlet(np.ones(objects + 1))[:objects] * free
    left = radius + np.cumsum(gaps) + np.concatenate([[0], np.cumsum(sweep[:-1, 1])])
    left += np.arange(objects) * separation
    top = rng.uniform(radius, size[0] - 1 - radius - sweep[:, 0])
    # a path starts at the side of its box it moves away from
    start = np.stack([top, left], axis=1) + np.where(velocity < 0, sweep, 0)
    return start[:, None] + np.arange(frames)[None, :, None] * velocity[:, None]


def clip_objects(objects: int | Sequence[int], rng: np.random.Generator) -> int:
    """A clip's number of disks: `objects`, or drawn uniformly from (least, most)."""
    least, most = (objects, objects) if isinstance(objects, int) else objects
    if least < 3 or most < least:
        raise ValueError("an odd one out needs at least 3 disks (2 to make a majority); "
                         f"objects must be at least 3, or (least, most), not {objects}")
    return least if least == most else int(rng.integers(least, most + 1))


def draw_layout(frames: int, size: Sequence[int], rng: np.random.Generator,
                pair: tuple[str, str] | None = None, objects: int | Sequence[int] = OBJECTS,
                radius: int | None = None, separation: float | None = None,
                motion: str = MOTION, colours: str = COLOURS, spaced: bool = SPACED) -> Layout:
    """A random layout; `pair` = (distractor colour, salient colour), drawn as `colours` says
    when None."""
    count = clip_objects(objects, rng)
    if motion not in MOTIONS + ("mixed",):
        raise ValueError(f"motion must be one of {MOTIONS + ('mixed',)}, not {motion!r}")
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES}, not {colours!r}")
    size = (int(size[0]), int(size[1]))
    radius = radius or default_radius(size)
    separation = SEPARATION if separation is None else float(separation)
    if pair is None:
        pair = (PAIRS[int(rng.integers(len(PAIRS)))] if colours == "palette"
                else continuous_pair(rng))
    if pair[0] == pair[1]:
        raise ValueError(f"pair must be two different colours, not {pair}")
    for colour in pair:
        colour_rgb(colour)  # a name of the PALETTE or #rrggbb
    background = neutral_background(size, rng)
    kind = MOTIONS[int(rng.integers(len(MOTIONS)))] if motion == "mixed" else motion
    speed = float(rng.uniform(*SPEED)) if kind == "drift" else 0.0
    place = _spaced_paths if spaced else _draw_paths
    paths = place(frames, size, count, radius, separation, speed, rng)
    target = int(rng.integers(count))  # after the positions: no place prior
    painted = tuple(pair[1] if k == target else pair[0] for k in range(count))
    return Layout(background, paths, painted, target, radius, kind, speed, separation)


def render(layout: Layout, rng: np.random.Generator) -> Scene:
    """The clip of `layout` as a demo_data Scene (frames, gaze maps on the salient disk,
    fixations drawn with `rng`)."""
    sprites = {c: disk_sprite(layout.radius, c) for c in set(layout.colours)}
    video = np.repeat(layout.background[None], layout.paths.shape[1], axis=0)
    for t, frame in enumerate(video):
        for path, colour in zip(layout.paths, layout.colours):
            paste(frame, *sprites[colour], path[t])
    centres = layout.paths[layout.target]
    maps, fixations = gaze(centres, layout.size, sigma=1.2 * layout.radius,
                           fixations=FIXATIONS, rng=rng)
    return Scene(video, maps, fixations, centres, layout.radius)


def odd_one_out_scene(frames: int, size: Sequence[int], rng: np.random.Generator,
                      radius: int | None = None, **options) -> Scene:
    """A random clip of the check (`draw_layout` with `options`, e.g. a variant's) as a
    quality clip's scene (demo_data.write_quality_set): its decoy is an ordinary disk, one
    that looks exactly like the salient one but for its colour."""
    layout = draw_layout(frames, size, rng, radius=radius, **options)
    decoy = next(path for k, path in enumerate(layout.paths) if k != layout.target)
    return replace(render(layout, rng), decoy=decoy)


def counterpart(layout: Layout, window: float, new_target: int | None = None
                ) -> tuple[Layout, np.ndarray]:
    """The same scene with its salient disk turned into a distractor, unchanged near it.

    The salient disk keeps its colour B, which becomes the majority colour: every other disk
    turns B except `new_target` (default: the disk farthest from the salient one), which turns
    A and is the odd one out now. Returns (the new layout, mask (T, H, W) bool). The mask holds,
    in every frame, the pixels within Chebyshev distance `window` of the salient disk's centre
    in any frame: the box that a receptive field of half-width `window` around any of its
    centres covers in space and time. Both layouts draw the same pixels under the mask; raises
    ValueError when the window would reach another disk.
    """
    old = layout.target
    others = [k for k in range(len(layout.colours)) if k != old]
    distance = {k: chebyshev(layout.paths[k], layout.paths[old]) for k in others}
    if new_target is None:
        new_target = max(others, key=distance.get)
    if new_target not in others:
        raise ValueError(f"new_target must be another disk (one of {others}), not {new_target}")
    # a disk reaches radius + 0.5 pixels from its rounded centre, radius + 1 from its true one
    room = min(distance.values()) - layout.radius - 1.0
    if window > room:
        raise ValueError(f"window {window} reaches another disk (at most {room:.1f} here)")
    distractor, salient = layout.colours[others[0]], layout.colours[old]
    colours = tuple(distractor if k == new_target else salient for k in range(len(layout.colours)))
    rows, cols = np.mgrid[:layout.size[0], :layout.size[1]]
    box = np.zeros(layout.size, bool)
    for r, c in layout.paths[old]:
        box |= np.maximum(np.abs(rows - r), np.abs(cols - c)) <= window
    mask = np.repeat(box[None], layout.paths.shape[1], axis=0)
    return replace(layout, colours=colours, target=new_target), mask


def video_layout(number: int, frames: int, size: Sequence[int], seed: int,
                 colours: str = COLOURS, **options) -> tuple[Layout, np.random.Generator]:
    """Layout of video `number` of a set (with the palette, its colour pair by turns, see the
    module docstring) and the generator that then draws its fixations."""
    rng = np.random.default_rng((seed, number))
    pair = PAIRS[number % len(PAIRS)] if colours == "palette" else None
    return draw_layout(frames, size, rng, pair=pair, colours=colours, **options), rng


def read_settings(root: str | Path) -> dict[str, Any]:
    """The options (`video_layout`'s) that the set at `root` was drawn with, from its SETTINGS
    file; {} for a set written before they were recorded (the six-colour check's defaults).
    A file that is not such a record raises ValueError naming it."""
    path = Path(root) / SETTINGS
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    objects = settings.get("objects", OBJECTS) if isinstance(settings, dict) else None
    valid = (isinstance(settings, dict) and set(settings) <= set(LAYOUT_OPTIONS)
             and settings.get("colours", COLOURS) in COLOUR_MODES
             and settings.get("motion", MOTION) in MOTIONS + ("mixed",)
             and isinstance(settings.get("spaced", SPACED), bool)
             and (isinstance(objects, int) or (isinstance(objects, list) and len(objects) == 2
                                               and all(isinstance(n, int) for n in objects)))
             and all(isinstance(settings.get(key), (int, float, type(None)))
                     for key in ("radius", "separation")))
    if not valid:
        raise ValueError(f"{path}: not the settings of a global-context set (keys "
                         f"{', '.join(LAYOUT_OPTIONS)})")
    return {**settings, "objects": objects if isinstance(objects, int) else tuple(objects)}


def write_global_context_set(root: str | Path, n_train: int = TRAIN, n_val: int = VAL,
                             frames: int = FRAMES, size: Sequence[int] = (HEIGHT, WIDTH),
                             seed: int = SEED, objects: int | Sequence[int] = OBJECTS,
                             radius: int | None = RADIUS, separation: float | None = SEPARATION,
                             motion: str = MOTION, colours: str = COLOURS, spaced: bool = SPACED
                             ) -> Path:
    """Write the odd-one-out set in DHF1K's layout under `root` (training videos
    600 - n_train + 1 ... 600, validation 601 ... 600 + n_val) with its TABLE and SETTINGS;
    returns `root`. VARIANTS holds the options of the check's variants."""
    if not (0 <= n_train <= LAST_TRAIN and 0 <= n_val <= 100):
        raise ValueError("DHF1K numbering allows at most 600 training and 100 validation videos")
    root = Path(root)
    rows = []
    settings = {"colours": colours,
                "objects": objects if isinstance(objects, int) else list(objects),
                "spaced": spaced, "radius": radius, "separation": separation, "motion": motion}
    for number in range(LAST_TRAIN - n_train + 1, LAST_TRAIN + n_val + 1):
        layout, rng = video_layout(number, frames, size, seed, **settings)
        write_dhf1k_video(root, number, render(layout, rng))
        start = layout.paths[layout.target, 0]
        rows.append({"video": f"{number:04d}", "split": "train" if number <= LAST_TRAIN else "val",
                     "salient_colour": colour_family(layout.salient),
                     "distractor_colour": colour_family(layout.distractor),
                     "salient_rgb": colour_hex(layout.salient),
                     "distractor_rgb": colour_hex(layout.distractor),
                     "objects": len(layout.colours), "motion": layout.motion,
                     "speed": round(layout.speed, 3),
                     "radius": layout.radius, "separation": round(layout.separation, 2),
                     "target_row": round(float(start[0]), 2),
                     "target_col": round(float(start[1]), 2),
                     "nearest": round(layout.nearest(), 2)})
    with atomic_path(root / TABLE) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    with atomic_path(root / SETTINGS) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=1), encoding="utf-8")
    mark_synthetic(root, "dagr/global_context.py: a synthetic odd-one-out saliency set in "
                         "DHF1K's layout")
    return root
