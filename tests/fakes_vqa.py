"""Tiny stored quality sets and checkpoints for the train_lsvq / evaluate_vqa tests."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from dagr import demo_data as dq
import train_lsvq
from dagr.checkpoints import save_checkpoint
from dagr.scoring import load_scorer, score_to_csv
from dagr.frames import frame_name, write_frames
from dagr.video_io import SampledVideo, find_videos
from sal_withreg import build_saliency_model
from VQA import build_quality_model

SIZE = (32, 56)
FIRST_ID = 1000
# the smallest useful training run: every option that costs time set low
TINY = ["--backbone", "resnet18", "--no-pretrained", "--size", *map(str, SIZE), "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--lr", "1e-4", "--warmup", "0",
        "--test-fraction", "0.34"]  # 12 videos: 4 test, 3 validation, 5 training


def store_clip(frames_dir: Path, maps_dir: Path | None, video_id: str, clip: np.ndarray,
               masks: np.ndarray) -> None:
    """Store an 8-frame clip (T, H, W, 3) uint8 as extract_frame.py does, with the masks
    (T, H, W) in [0, 1] as its saliency maps under the frames' names."""
    sampled = SampledVideo(clip, list(range(0, 2 * len(clip), 2)), 2 * len(clip), 2 * len(clip))
    write_frames(sampled, frames_dir / video_id)
    if maps_dir is not None:
        (maps_dir / video_id).mkdir(parents=True, exist_ok=True)
        for index, mask in zip(sampled.indices, masks):
            cv2.imwrite(str(maps_dir / video_id / frame_name(index)),
                        np.round(mask * 255).astype(np.uint8))


def stored_quality_set(root: Path, n_videos: int = 12, seed: int = 0) -> tuple[Path, Path, Path]:
    """KoNViD-style labels (`KoNViD_1k_mos.csv`), stored frames and saliency maps of
    `n_videos` noisy clips: video i has noise strength i / (n - 1) and MOS 5 - 4 * strength.
    Returns (labels, frames folder, maps folder)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_videos):
        strength = index / max(n_videos - 1, 1)
        scene = dq.moving_object_scene(8, SIZE, rng)
        clip = dq.distorted_clip(scene, "noise", "whole", strength, rng)
        store_clip(root / "frames", root / "maps", str(FIRST_ID + index), clip, scene.maps / 255)
        rows.append({"flickr_id": FIRST_ID + index, "mos": dq.mos_of(strength, "whole")})
    labels = root / "KoNViD_1k_mos.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return labels, root / "frames", root / "maps"


def lsvq_labels(path: Path, konvid_labels: Path, test_ids: list[str]) -> Path:
    """An LSVQ-format label file (name, mos, is_test) for the videos of a KoNViD file."""
    table = pd.read_csv(konvid_labels)
    table = pd.DataFrame({"name": table["flickr_id"].astype(str), "mos": table["mos"] * 20})
    table["is_test"] = table["name"].isin(test_ids)
    table.to_csv(path, index=False)
    return path


def train_argv(labels: Path, frames: Path, maps: Path | None, out: Path, *options: str) -> list[str]:
    """train_lsvq options for a tiny KoNViD run (saliency maps used when `maps` is given)."""
    argv = ["--dataset", "konvid", "--labels", str(labels), "--frames", str(frames),
            "--out", str(out), *TINY, *options]
    return argv + (["--saliency", str(maps)] if maps is not None else ["--saliency-alpha", "0"])


def train_config(labels: Path, frames: Path, maps: Path | None, out: Path,
                 *options: str) -> argparse.Namespace:
    return train_lsvq.parse_args(train_argv(labels, frames, maps, out, *options))


def saliency_checkpoint(path: Path, channels: int = 4) -> Path:
    """A tiny, untrained UNet3D saliency checkpoint, as train_sal.py would describe it."""
    kwargs = {"channels": channels, "registers": 0}
    model = build_saliency_model(**kwargs)
    save_checkpoint(path, {"model_kwargs": kwargs, "model_state": model.state_dict(),
                           "kind": "saliency"})
    return path


def scoring_checkpoints(base: Path, size: tuple[int, int]) -> tuple[Path, Path]:
    """(quality, saliency) checkpoints for scoring and maps at frame size `size`: an untrained
    ResNet-18 quality network with saliency weighting off, a tiny saliency network."""
    sal = saliency_checkpoint(base / "sal.pt")
    payload = torch.load(sal, weights_only=False)
    save_checkpoint(sal, {**payload, "settings": {"size": list(size)}})
    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "saliency_alpha": 0.0, "weights": None, "feedforward": 32}
    quality = base / "quality.pt"
    save_checkpoint(quality, {"kind": "quality", "model_kwargs": kwargs,
                              "model_state": build_quality_model(**kwargs).state_dict(),
                              "mos_scale": {"low": 1.0, "high": 5.0},
                              "frame_size": list(size)})
    return quality, sal


def score_videos(quality: Path, inputs: list[Path], out: Path, saliency: Path | None = None,
                 workers: int | None = 0) -> tuple[pd.DataFrame, dict]:
    """`evaluate_vqa.py --videos INPUTS --out OUT` on the CPU, in this process: (scores,
    failures)."""
    scorer = load_scorer(quality, saliency, torch.device("cpu"))
    paths = [str(path) for _, path in find_videos(inputs)]
    run = score_to_csv(scorer, paths, out, workers, progress=False)
    scored = [run.rows[path] for path in paths if not run.rows[path]["problem"]]
    return (pd.DataFrame({"video": [row["video"] for row in scored],
                          "score": [float(row["score"]) for row in scored]}), run.failures)
