"""dagr/gaze.py's rule from fixation points to maps, and dagr/reference_maps.py's centre prior
and spectral residual, the predictions a saliency network must beat."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagr.gaze import SIGMA_OF_WIDTH, density_map, fixation_map, point_cells
from dagr.reference_maps import CentrePrior, SpectralResidual, fit_centre_prior, gaussian_grid
from dataloader import SaliencyClipDataset, SaliencyVideo
from dagr.images import write_png
from dagr.losses import probability_maps


def test_a_point_falls_on_the_cell_that_covers_it_and_outside_points_are_dropped():
    points = np.array([[0, 0], [99.9, 49.9], [50, 25], [100, 10], [-0.1, 10], [10, 50],
                       [np.nan, 3]])
    rows, cols = point_cells(points, (50, 100), (5, 10))
    assert list(zip(rows, cols)) == [(0, 0), (4, 9), (2, 5)]
    fixated = fixation_map(points, (50, 100), (5, 10))
    assert fixated.sum() == 3 and fixated[4, 9] == 1 and fixated.dtype == np.float32


def test_density_is_a_gaussian_of_the_stated_sigma_with_maximum_one():
    size = (120, 160)
    density = density_map(np.array([[80.0, 60.0]]), size, size)
    assert density.max() == pytest.approx(1.0) and density[60, 80] == density.max()
    profile = density[60].astype(np.float64)  # the row through the point, a 1-D Gaussian
    cols = np.arange(size[1])
    spread = np.sqrt((profile * (cols - 80) ** 2).sum() / profile.sum())
    assert spread == pytest.approx(SIGMA_OF_WIDTH * size[1], rel=0.02)
    # the same sigma, as a share of the width, on a map of another size
    small = density_map(np.array([[80.0, 60.0]]), size, (60, 80))
    profile = small[30].astype(np.float64)
    spread = np.sqrt((profile * (np.arange(80) - 40) ** 2).sum() / profile.sum())
    assert spread == pytest.approx(SIGMA_OF_WIDTH * 80, rel=0.05)


def test_density_counts_repeated_fixations_and_keeps_border_ones():
    size = (40, 60)
    density = density_map(np.array([[10.0, 10.0], [10.2, 10.1], [50.0, 30.0]]), size, size)
    assert density[10, 10] == pytest.approx(1.0)
    assert density[30, 50] == pytest.approx(0.5, rel=0.01)  # one point of two
    corner = density_map(np.array([[59.9, 39.9]]), size, size)
    assert corner[39, 59] == pytest.approx(1.0)  # a fixation at the edge still counts
    # zeros beyond the border: the blob's outside half is lost, not folded back in
    assert corner[39, 55] == pytest.approx(density_map(np.array([[30.0, 20.0]]), size, size)[20, 26])
    assert not density_map(np.array([[-5.0, 3.0]]), size, size).any()  # nothing inside: zeros


def gaussian_images(tmp_path, sigma_rows: float, sigma_cols: float, count: int = 6
                    ) -> SaliencyClipDataset:
    """Still images whose density maps are all the centred Gaussian of the given widths."""
    size = (24, 32)
    prior = (gaussian_grid(size, sigma_rows, sigma_cols) * 255).astype(np.uint8)
    videos = []
    for i in range(count):
        frame, density = tmp_path / f"{i}.png", tmp_path / f"{i}_map.png"
        write_png(frame, np.full((*size, 3), 30 * i, np.uint8))
        write_png(density, prior)
        videos.append(SaliencyVideo(str(i), "train", [density], [], [0], frames=[frame]))
    return SaliencyClipDataset(videos, clip_len=1, size=size, starts="even")


def test_the_centre_prior_fit_finds_the_widths_of_the_training_maps(tmp_path):
    sigma_rows, sigma_cols = fit_centre_prior(gaussian_images(tmp_path, 0.2, 0.35))
    assert sigma_rows == pytest.approx(0.2, abs=0.02) and sigma_cols == pytest.approx(0.35, abs=0.02)
    prior = CentrePrior((24, 32), sigma_rows, sigma_cols)
    logits = prior(torch.zeros(2, 3, 4, 24, 32))
    assert logits.shape == (2, 1, 4, 24, 32)
    maps = probability_maps(logits)
    assert torch.equal(maps[0, 0], maps[1, 3])  # the same for every frame
    assert maps[0, 0].argmax() // 32 in (11, 12) and maps[0, 0].argmax() % 32 in (15, 16)


def test_spectral_residual_finds_the_one_odd_patch():
    # faint grey texture (a flat frame's spectrum is degenerate), and a bright disk in it
    texture = 0.05 * torch.randn(1, 1, 1, 48, 64, generator=torch.Generator().manual_seed(0))
    frames = (0.5 + texture).expand(1, 3, 2, 48, 64).clone()
    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    frames[..., (rows - 23) ** 2 + (cols - 43) ** 2 <= 9] = 1.0
    maps = probability_maps(SpectralResidual()(frames))
    assert maps.shape == (1, 2, 48, 64) and torch.isfinite(maps).all()
    row, col = divmod(int(maps[0, 1].argmax()), 64)
    assert abs(row - 23) <= 3 and abs(col - 43) <= 3
    assert maps[0, 0, 20:27, 40:47].sum() > 2 * maps[0, 0, 20:27, 10:17].sum()
