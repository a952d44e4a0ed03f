"""What the registers hold and where they look (docs/registers.md).

- `register_states`: each video's register states (the registers after they have read the
  clip), and `write_state_figure`, their first two principal components over many videos, one
  panel per register, coloured by a property of the video (which colour is salient on the
  global-context check, DHF1K's category sheet, ...). The original code's t-SNE plotted its
  input-mode tokens, which are the same for every video; attention registers differ.
- `attention_maps`: for each register, its read attention over every frame, at the frame's
  size and summing to 1 over the frame (inference_sal.py --register-attention draws them).
- `far_context_effect`: on the global-context check, how much a network's saliency at the odd
  disk depends on disks beyond the baseline's receptive field (exactly nothing for the
  baseline, by construction).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dagr import figures
from dagr import global_context as gc
from dagr.checkpoints import unwrap
from dagr.precision import weights_autocast
from dataloader import SaliencyClipDataset, to_clip_tensor
from metrics import Metric

CATEGORY_TABLE = "global_context.csv"  # dagr/global_context.py's per-video table
CATEGORY_COLUMN = "salient_colour"
FAR_WINDOW = gc.SEPARATION - gc.UNET_REACH  # kept around the odd disk: the baseline's reach
FAR_SEED = 1  # fresh clips: the check's sets are drawn with gc.SEED
FAR_CONTEXT_MEASURES = (Metric("far_change", "Far change"), Metric("odd_first", "Odd first"),
                        Metric("odd_first_same_red", "Odd first, same red"),
                        Metric("odd_first_other_red", "Odd first, other red"))
FAR_CHANGE, ODD_FIRST, ODD_SAME_RED, ODD_OTHER_RED = FAR_CONTEXT_MEASURES


@torch.inference_mode()
def register_states(model: nn.Module, data: SaliencyClipDataset, device: torch.device,
                    batch_size: int = 4) -> tuple[list[str], np.ndarray]:
    """(video ids, (V, N, d) float32): each video's register states, averaged over its clips
    in `data`. `model` is a RegisterUNet3D in attention mode."""
    model = model.to(device).eval()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in DataLoader(data, batch_size):
        _, states = model(batch["frames"].to(device), return_registers=True)
        for video_id, state in zip(batch["video_id"], states.float().cpu().numpy()):
            sums[video_id] = sums.get(video_id, 0) + state
            counts[video_id] = counts.get(video_id, 0) + 1
    ids = list(sums)
    return ids, np.stack([sums[i] / counts[i] for i in ids]).astype(np.float32)


def principal_components(points: np.ndarray, count: int = 2) -> np.ndarray:
    """(V, F) -> (V, count): the points' coordinates along their first principal axes."""
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:count].T


def video_categories(path: str | Path, column: str = CATEGORY_COLUMN) -> dict[str, str]:
    """{video id: category} from a CSV whose first column names the videos (as their
    annotation folders are named, e.g. 0601) and `column` holds the category."""
    table = pd.read_csv(path, dtype=str)
    if column not in table.columns:
        raise ValueError(f"{path}: no column {column!r}; it has: {', '.join(table.columns)}")
    ids = table.iloc[:, 0].str.strip().str.zfill(4)
    return dict(zip(ids, table[column].fillna("?")))


def write_state_figure(ids: Sequence[str], states: np.ndarray, path: str | Path, title: str,
                       categories: Mapping[str, str] | None = None) -> Path:
    """One panel per register: the first two principal components of its states over the
    videos (V, N, d), each video a point coloured by its category (all alike without)."""
    labels = np.array([(categories or {}).get(i, "video") for i in ids])
    registers = states.shape[1]
    figure = figures.new_figure(3.4 * registers, 3.6)
    axes = np.atleast_1d(figure.subplots(1, registers))
    for k, axis in enumerate(axes):
        points = principal_components(states[:, k])
        for label in sorted(set(labels)):
            chosen = labels == label
            axis.scatter(points[chosen, 0], points[chosen, 1], s=12, alpha=0.8, label=label)
        axis.set_title(f"register {k + 1}", fontsize=9)
        axis.set_xlabel("PC 1")
        axis.set_ylabel("PC 2")
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, title="salient" if categories else None, title_fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figures.save_png(figure, path)


def has_attention_registers(model: nn.Module) -> bool:
    """Whether `model` (or the network inside its wrappers) has registers that read."""
    plain = unwrap(model)
    return getattr(plain, "register_mode", None) == "attention" and plain.num_registers > 0


@torch.inference_mode()
def attention_maps(model: nn.Module, clips: torch.Tensor,
                   size: Sequence[int] | None = None) -> torch.Tensor:
    """Clips (B, 3, T, H, W) -> (B, N, T, H', W'): where each register looks when it reads the
    first of its read levels, resized to (H', W') = `size` (default: the clip's) and
    normalised to sum 1 over each frame; in fp32 whatever the network's precision."""
    plain = unwrap(model)
    with weights_autocast(plain, clips.device):
        weights = next(iter(plain.read_attention(clips).values())).float()  # (B, N, T', H', W')
    frames = (clips.shape[2], *(size or clips.shape[3:]))
    maps = F.interpolate(weights, size=frames, mode="trilinear", align_corners=False)
    maps = maps.clamp_min(0)
    return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)


def _centre_logits(logits: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """Logits (T, H, W) and disk centres (K, T, 2) -> (K,): each disk's logit at its centre,
    averaged over the frames."""
    frames = np.arange(logits.shape[0])
    centres = np.rint(paths).astype(int)
    return logits[frames, centres[..., 0], centres[..., 1]].mean(axis=1)


@torch.inference_mode()
def far_context_effect(model: nn.Module, size: Sequence[int], frames: int, device: torch.device,
                       videos: int = 100, seed: int = FAR_SEED,
                       settings: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Whether `model` compares the disks of the global-context check (dagr/global_context.py).

    For `videos` fresh clips of `frames` frames of `size`, drawn with the set's `settings`
    (`gc.read_settings`; the six-colour check by default), and their `counterpart`s (the odd
    disk and every pixel within FAR_WINDOW of it kept; the disks beyond the baseline's reach
    recoloured so that it becomes an ordinary one):
    - far_change: the mean drop of the logit at the odd disk's centre from clip to counterpart.
      Exactly 0 for any network whose receptive field is UNet3D's;
    - odd_first: the share of clips and counterparts whose highest logit at a disk's centre is
      at their odd disk. A counterpart swaps which of its two colours is the odd one, so a
      network that only prefers one colour gets 1/2; picking a disk at random, 1 / K;
    - odd_first_same_red, odd_first_other_red: the same over the clips whose two colours agree
      (differ) in the red channel (`Layout.same_red`); nan where there are none.
    """
    model = unwrap(model).to(device).eval()
    drops, firsts, same_red = [], [], []
    for number in range(gc.LAST_TRAIN + 1, gc.LAST_TRAIN + 1 + videos):
        layout, rng = gc.video_layout(number, frames, size, seed, **(settings or {}))
        twin = gc.counterpart(layout, FAR_WINDOW)[0]
        pair = (layout, twin)
        clips = torch.stack([to_clip_tensor(gc.render(scene, rng).frames).permute(1, 0, 2, 3)
                             for scene in pair])  # (2, 3, T, H, W)
        with weights_autocast(model, device):
            logits = model(clips.to(device))[:, 0].float().cpu().numpy()  # (2, T, H, W)
        centre_logits = [_centre_logits(maps, scene.paths) for maps, scene in zip(logits, pair)]
        firsts += [values.argmax() == scene.target for values, scene in zip(centre_logits, pair)]
        drops.append(centre_logits[0][layout.target] - centre_logits[1][layout.target])
        same_red += [layout.same_red()] * len(pair)
    firsts, same_red = np.array(firsts, float), np.array(same_red)
    return {FAR_CHANGE.name: float(np.mean(drops)), ODD_FIRST.name: float(firsts.mean()),
            ODD_SAME_RED.name: _mean_or_nan(firsts[same_red]),
            ODD_OTHER_RED.name: _mean_or_nan(firsts[~same_red])}


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan
