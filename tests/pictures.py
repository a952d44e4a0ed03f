"""Checks that a file is a real picture of something (a PNG that decodes, not blank), the size
of a saliency overlay, and a spy on the figures that the trainers draw."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dagr import figures
from dagr.overlays import MIN_HEIGHT, colour_bar

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def overlay_size(height: int, width: int, scale: str = "frame") -> tuple[int, int]:
    """(H, W) of the overlay of a height x width frame: at least MIN_HEIGHT high (aspect
    kept), with the colour bar of `scale` on its right."""
    if height < MIN_HEIGHT:
        height, width = MIN_HEIGHT, round(width * MIN_HEIGHT / height)
    return height, width + colour_bar(height, scale).shape[1]


def png_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The decoded image (H, W, 3) uint8 of the PNG at `path`, after asserting that it is one,
    that it is `size` (H, W) pixels when given, and that it is drawn on (not one flat colour:
    spread of values, dozens of distinct colours from lines, text and markers)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} does not decode"
    if size is not None:
        assert image.shape[:2] == size, (image.shape, size)
    assert image.std() > 10, f"{path} is blank"
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 30, f"{path} has only {len(colours)} colours"
    return image


def spy_on_curves(monkeypatch) -> list[tuple[pd.DataFrame, object]]:
    """Every (log, figure) that figures.curves_figure draws from now on."""
    drawn, real = [], figures.curves_figure

    def spy(logs, *args, **kwargs):
        figure = real(logs, *args, **kwargs)
        drawn.append((*logs.values(), figure))
        return figure

    monkeypatch.setattr(figures, "curves_figure", spy)
    return drawn


def assert_curves_of(drawn: tuple[pd.DataFrame, object], log: pd.DataFrame, best_epoch: int) -> None:
    """The figure shows `log`'s training loss and marks `best_epoch`."""
    drawn_log, figure = drawn
    pd.testing.assert_frame_equal(drawn_log, log)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert lines["LOSS"].get_ydata().tolist() == log["train_loss"].tolist()
    assert list(lines[f"best epoch {best_epoch}"].get_xdata()) == [best_epoch, best_epoch]
