"""Helpers shared by the saliency-stage tests: a tiny synthetic DHF1K set, a tiny training
configuration."""
from __future__ import annotations

import argparse
from pathlib import Path


from dagr import demo_data
import train_sal

TINY_SIZE = (32, 48)  # frame height, width


def tiny_dhf1k(root: Path, n_train: int = 3, n_val: int = 2, frames: int = 10) -> Path:
    """Moving-object videos in the DHF1K layout: 0598-0600 train, 0601-0602 validation."""
    return demo_data.write_saliency_set(root, n_train, n_val, frames, TINY_SIZE, seed=0)


def tiny_config(root: Path, out: Path, *options: str) -> argparse.Namespace:
    """train_sal options for a seconds-long CPU run (width 4, 6-frame clips); `options` are
    further command-line options that override these."""
    return train_sal.parse_args([
        "--root", str(root), "--out", str(out), "--saliency-width", "4",
        "--size", *map(str, TINY_SIZE), "--epochs", "2", "--clip-len", "6",
        "--clips-per-video", "1", "--val-clips", "2", "--batch-size", "2", "--lr", "3e-3",
        "--warmup", "0.5", "--registers", "2", "--workers", "0", "--device", "cpu", *options])
