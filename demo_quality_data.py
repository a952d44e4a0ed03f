"""Synthetic quality set with known distortions, in the KoNViD-1k layout (SPEC section 11).

    write_quality_set("demo/konvid", n_videos=120, frames=16, size=(64, 112), seed=0)

writes `KoNViD_1k_videos/<flickr_id>.mp4`, `KoNViD_1k_mos.csv` (flickr_id,mos, as the
publisher ships it) and `KoNViD_1k_distortions.csv` (flickr_id, kind, region, strength, mos).

Each clip is a fine-grained coloured texture with one moving striped disc, the salient
object (the only thing that moves, so it is where people would look). One distortion of strength
s in [0, 1] is applied:
- blur: Gaussian, sigma = BLUR_SIGMA * s pixels;
- noise: Gaussian, standard deviation NOISE_STD * s grey levels;
- blocking: pixelation into square blocks of 1 + round(BLOCK_SIZE * s) pixels;
- freeze: the frame stops changing for a run of round(s * (frames - 1)) frames (whole frame only).
The spatial distortions cover the whole frame, only the disc ("salient") or only the rest
("background"). Ground truth (people notice defects where they look):

    MOS = 5 - 4 * s * REGION_WEIGHT[region],   REGION_WEIGHT = whole 1.0, salient 0.8, background 0.3

so MOS lies in [1, 5], 5 meaning undistorted. Everything is drawn from `seed`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from runtime import atomic_path

KINDS = ("blur", "noise", "blocking", "freeze")
REGIONS = ("whole", "salient", "background")
REGION_WEIGHT = {"whole": 1.0, "salient": 0.8, "background": 0.3}
BLUR_SIGMA = 4.0
NOISE_STD = 60.0
BLOCK_SIZE = 10
FPS = 10.0
FIRST_ID = 3_000_000_000  # KoNViD-1k ids are Flickr ids of about this size


def mos_of(strength: float, region: str) -> float:
    """The ground-truth MOS (1-5) of a clip distorted with `strength` in `region`."""
    return 5.0 - 4.0 * strength * REGION_WEIGHT[region]


def texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: a few random colour gratings with periods of 3-10
    pixels, fine enough that blur of any strength shows."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.zeros((h, w, 3), np.float32)
    for _ in range(4):
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 10)
        wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.3))
        image += wave[..., None] * rng.uniform(10, 30, size=3)
    return np.clip(image + rng.uniform(60, 190, size=3), 0, 255)


def scene(frames: int, size: tuple[int, int], rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Clean clip (T, H, W, 3) float32 in [0, 255] and the salient disc's mask (T, H, W) float32
    in [0, 1]: a striped disc moving in a straight line over a still texture."""
    h, w = size
    background, stripes = texture(size, rng), texture(size, rng)
    radius = 0.22 * min(h, w)
    start = rng.uniform([radius, radius], [h - radius, w - radius])
    end = rng.uniform([radius, radius], [h - radius, w - radius])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    clip, masks = [], []
    for t in np.linspace(0.0, 1.0, frames):
        cy, cx = start + t * (end - start)
        mask = np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0.0, 1.0)  # 1-pixel soft edge
        clip.append(background * (1 - mask[..., None]) + stripes * mask[..., None])
        masks.append(mask)
    return np.stack(clip), np.stack(masks)


def distort(frame: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One frame (H, W, 3) float32 in [0, 255] with a spatial distortion of `strength`."""
    if kind == "blur" and strength > 0:
        return cv2.GaussianBlur(frame, (0, 0), BLUR_SIGMA * strength)
    if kind == "noise":
        return frame + rng.normal(0.0, NOISE_STD * strength, frame.shape).astype(np.float32)
    if kind == "blocking":
        block = 1 + int(round(BLOCK_SIZE * strength))
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (max(w // block, 1), max(h // block, 1)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return frame


def freeze(clip: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The clip with a run of round(strength * (T - 1)) frames repeating the one before it."""
    length = int(round(strength * (len(clip) - 1)))
    if length == 0:
        return clip
    first = int(rng.integers(1, len(clip) - length + 1))
    out = clip.copy()
    out[first:first + length] = clip[first - 1]
    return out


def distorted_clip(clip: np.ndarray, masks: np.ndarray, kind: str, region: str,
                   strength: float, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: `clip` with the distortion applied to `region` of every frame."""
    if kind == "freeze":
        out = freeze(clip, strength, rng)
    else:
        weight = {"whole": np.ones_like(masks), "salient": masks, "background": 1 - masks}[region]
        out = np.stack([frame * (1 - m[..., None]) + distort(frame, kind, strength, rng) * m[..., None]
                        for frame, m in zip(clip, weight)])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def write_mp4(path: Path, clip: np.ndarray) -> None:
    """(T, H, W, 3) uint8 RGB as an MPEG-4 file, written atomically."""
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + ".mp4")  # OpenCV picks the container from the suffix
        try:
            writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                                     (clip.shape[2], clip.shape[1]))
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot write MPEG-4 video here")
            for frame in clip:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)


def write_quality_set(root: str | Path, n_videos: int = 120, frames: int = 16,
                      size: tuple[int, int] = (64, 112), seed: int = 0,
                      kinds: tuple[str, ...] = KINDS, regions: tuple[str, ...] = REGIONS) -> Path:
    """Write the set (see the module docstring) under `root`; returns `KoNViD_1k_mos.csv`.

    Kinds take turns over the videos; strength is uniform on [0, 1]; the region is drawn from
    `regions` (freeze always covers the whole frame)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_videos):
        kind = kinds[index % len(kinds)]
        region = "whole" if kind == "freeze" else str(rng.choice(regions))
        strength = float(rng.uniform(0.0, 1.0))
        clean, masks = scene(frames, tuple(size), rng)
        flickr_id = FIRST_ID + index
        write_mp4(root / "KoNViD_1k_videos" / f"{flickr_id}.mp4",
                  distorted_clip(clean, masks, kind, region, strength, rng))
        rows.append({"flickr_id": flickr_id, "kind": kind, "region": region,
                     "strength": round(strength, 4), "mos": round(mos_of(strength, region), 4)})
    table = pd.DataFrame(rows)
    labels = root / "KoNViD_1k_mos.csv"
    details = root / "KoNViD_1k_distortions.csv"
    for path, columns in ((labels, ["flickr_id", "mos"]), (details, list(table.columns))):
        with atomic_path(path) as tmp:
            table[columns].to_csv(tmp, index=False)
    return labels
