"""The predictions a saliency network must beat, scored as networks are (`evaluation.validate`):
- the centre prior: one centred Gaussian for every frame, its widths fitted on the training
  maps (the best mean CC); where people look before anything else is known;
- spectral residual (Hou and Zhang, CVPR 2007), a classical bottom-up model: what is left of
  a frame's log amplitude spectrum after its local average, brought back to the image.
Both are modules that map frames (B, 3, T, H, W) to logits (B, 1, T, H, W) whose softmax is
their map, so the validation code scores them on the same clips and by the same metrics.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataloader import SaliencyClipDataset

PRIOR_WIDTHS = np.linspace(0.05, 0.6, 23)  # the Gaussian's sigma tried, as a share of H or W
PRIOR_CLIPS = 200      # training clips the prior is fitted on (a seeded choice when more)
RESIDUAL_WIDTH = 64    # spectral residual works on the frame shrunk to 64 pixels wide
RESIDUAL_SIGMA = 8.0   # and blurs its map by 8 of those pixels, as Hou and Zhang did
LOG_FLOOR = 1e-6       # log(map + floor * max): a zero in a map is not minus infinity


def gaussian_grid(size: tuple[int, int], sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """(H, W) centred Gaussian with sigmas given as shares of H and W, maximum 1."""
    rows = (np.arange(size[0]) + 0.5) / size[0] - 0.5
    cols = (np.arange(size[1]) + 0.5) / size[1] - 0.5
    return np.exp(-rows[:, None] ** 2 / (2 * sigma_rows ** 2) - cols[None] ** 2 / (2 * sigma_cols ** 2))


def fit_centre_prior(data: SaliencyClipDataset, clips: int = PRIOR_CLIPS) -> tuple[float, float]:
    """(sigma_rows, sigma_cols) of the centred Gaussian with the highest mean CC with the
    density maps of the first frames of up to `clips` clips of `data` (a seeded choice), over
    PRIOR_WIDTHS²."""
    chosen = np.random.default_rng(0).permutation(len(data))[:clips]
    maps = np.stack([data[int(i)]["maps"][0, 0].numpy() for i in chosen])  # (N, H, W) float32
    maps = maps.reshape(len(maps), -1)
    maps = maps[maps.std(axis=1) > 0]
    maps = (maps - maps.mean(axis=1, keepdims=True)) / maps.std(axis=1, keepdims=True)
    best, best_cc = (PRIOR_WIDTHS[0],) * 2, -np.inf
    for sigma_rows in PRIOR_WIDTHS:
        for sigma_cols in PRIOR_WIDTHS:
            prior = gaussian_grid(data.size, sigma_rows, sigma_cols).ravel()
            prior = (prior - prior.mean()) / prior.std()
            cc = float((maps @ prior).mean() / prior.size)
            if cc > best_cc:
                best, best_cc = (float(sigma_rows), float(sigma_cols)), cc
    return best


class CentrePrior(nn.Module):
    """The same centred Gaussian for every frame."""

    def __init__(self, size: tuple[int, int], sigma_rows: float, sigma_cols: float):
        super().__init__()
        prior = torch.from_numpy(gaussian_grid(size, sigma_rows, sigma_cols)).float()
        self.register_buffer("logits", torch.log(prior + LOG_FLOOR))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, T, H, W) -> logits (B, 1, T, H, W), the prior's everywhere."""
        batch, _, length = frames.shape[:3]
        return self.logits.expand(batch, 1, length, *self.logits.shape)


class SpectralResidual(nn.Module):
    """Hou and Zhang's spectral residual on each frame's luminance, computed 64 pixels wide
    and blurred there as in their paper, then brought back to the frame's size."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, T, H, W) in [0, 1] -> logits (B, 1, T, H, W)."""
        batch, _, length, height, width = frames.shape
        gray = frames.float().mean(dim=1).reshape(batch * length, 1, height, width)
        small = F.interpolate(gray, size=(max(1, round(height * RESIDUAL_WIDTH / width)),
                                          RESIDUAL_WIDTH), mode="area")
        spectrum = torch.fft.fft2(small)
        log_amplitude = torch.log(spectrum.abs() + 1e-8)
        residual = log_amplitude - F.avg_pool2d(F.pad(log_amplitude, (1, 1, 1, 1), mode="replicate"),
                                                3, stride=1)
        salient = torch.fft.ifft2(torch.exp(torch.complex(residual, torch.angle(spectrum)))).abs() ** 2
        salient = _blur(salient, RESIDUAL_SIGMA)
        salient = F.interpolate(salient, size=(height, width), mode="bilinear", align_corners=False)
        peak = salient.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        logits = torch.log(salient + LOG_FLOOR * peak + 1e-12)
        return logits.reshape(batch, length, height, width)[:, None]


def _blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, 1, H, W) blurred by a separable Gaussian of `sigma` pixels, zeros beyond the border."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=maps.dtype) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    maps = F.conv2d(maps, taps.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(maps, taps.view(1, 1, -1, 1), padding=(radius, 0))
