"""dagr/losses.py: the saliency loss (KL - CC, optional NSS, per frame over its pixels) and the
quality loss (L1, 1 - PLCC, ranking hinge), values and gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagr.losses import plcc_loss, probability_maps, quality_loss, rank_loss, saliency_loss
from metrics import saliency_metrics


def kl_cc(logits, maps, fixations=None, l_kl=1.0, l_cc=1.0, l_nss=0.0):
    """saliency_loss with train_sal.py's default weights."""
    return saliency_loss(logits, maps, fixations, l_kl, l_cc, l_nss)


def blobs(frames: int = 2, height: int = 12, width: int = 16) -> torch.Tensor:
    """(1, 1, T, H, W) positive maps, a Gaussian at a different place in each frame."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    maps = [torch.exp(-((rows - 3 - 2 * t) ** 2 + (cols - 4 - 3 * t) ** 2) / 8.0) + 1e-3
            for t in range(frames)]
    return torch.stack(maps)[None, None].float()


def random_logits(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- loss

def test_perfect_prediction_beats_uniform_and_inverted() -> None:
    g = blobs()
    perfect = kl_cc(g.log(), g)
    uniform = kl_cc(torch.zeros_like(g), g)
    inverted = kl_cc(-g.log(), g)
    assert perfect.item() == pytest.approx(-1.0, abs=1e-5)  # KL 0, CC 1
    assert perfect < uniform < inverted


def test_loss_value_is_kl_minus_cc_of_each_frame_over_its_pixels() -> None:
    g = blobs(frames=3)
    logits = random_logits(g.shape)
    expected = []
    for t in range(3):
        x = logits[0, 0, t].double().flatten().numpy()
        p = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        q = g[0, 0, t].double().flatten().numpy()
        q = q / q.sum()
        expected.append(np.sum(q * np.log(q / p)) - np.corrcoef(p, q)[0, 1])
    assert kl_cc(logits, g).item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_loss_normalises_per_frame_not_over_time() -> None:
    g = blobs(frames=2)
    logits = random_logits(g.shape)
    base = kl_cc(logits, g)
    shifted = logits.clone()
    shifted[:, :, 0] += 7.0  # one frame's logits offset: a softmax over (T, H, W) would change
    scaled = g.clone()
    scaled[:, :, 1] *= 20.0  # one frame's map scaled: a sum over (T, H, W) would change
    assert kl_cc(shifted, g).item() == pytest.approx(base.item(), abs=1e-5)
    assert kl_cc(logits, scaled).item() == pytest.approx(base.item(), abs=1e-5)


def test_frames_without_gaze_or_fixations_are_left_out() -> None:
    g = blobs(frames=2)
    logits = random_logits(g.shape)
    fixations = torch.zeros_like(g)
    fixations[0, 0, 0, 3, 4] = fixations[0, 0, 0, 5, 9] = 1  # frame 1 has none
    blank = g.clone()
    blank[:, :, 1] = 0
    assert kl_cc(logits, blank).item() == pytest.approx(
        kl_cc(logits[:, :, :1], g[:, :, :1]).item(), rel=1e-6)
    nss_only = kl_cc(logits, g, fixations, l_kl=0, l_cc=0, l_nss=1)
    reference = saliency_metrics(probability_maps(logits)[0, :1], g[0, 0, :1], fixations[0, 0, :1])
    assert nss_only.item() == pytest.approx(-reference["nss"], rel=1e-4)
    with pytest.raises(ValueError, match="fixations"):
        kl_cc(logits, g, None, l_nss=1)


def test_probability_maps_sum_to_one_per_frame_and_gradients_are_finite() -> None:
    logits = random_logits((2, 1, 3, 5, 7)).requires_grad_()
    maps = probability_maps(logits)
    assert maps.shape == (2, 3, 5, 7)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(2, 3))
    constant = torch.zeros(1, 1, 2, 4, 4, requires_grad=True)  # CC's worst case: a flat map
    kl_cc(constant, blobs(2, 4, 4), torch.ones(1, 1, 2, 4, 4), l_nss=1).backward()
    assert torch.isfinite(constant.grad).all()


def test_plcc_term_is_one_minus_pearson_and_has_a_gradient():
    pred = torch.tensor([0.1, 0.4, 0.35, 0.9], requires_grad=True)
    target = torch.tensor([0.0, 0.5, 0.2, 1.0])
    loss = plcc_loss(pred, target)
    expected = 1 - np.corrcoef(pred.detach().numpy(), target.numpy())[0, 1]
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    constant = torch.full((4,), 0.5, requires_grad=True)  # a fresh model's first batch
    plcc_loss(constant, target).backward()
    assert torch.isfinite(constant.grad).all()
    assert plcc_loss(torch.tensor([0.3]), torch.tensor([0.2])).item() == 0.0


def test_rank_term_penalises_only_misordered_pairs():
    target = torch.tensor([0.1, 0.5, 0.9])
    assert rank_loss(torch.tensor([0.0, 1.0, 2.0]), target).item() == 0.0
    pred = torch.tensor([2.0, 1.0, 0.0], requires_grad=True)
    loss = rank_loss(pred, target)  # every pair reversed: mean of 1, 2, 1
    assert loss.item() == pytest.approx(4 / 3)
    loss.backward()
    assert pred.grad.tolist() == pytest.approx([2 / 3, 0.0, -2 / 3])
    total = quality_loss(pred.detach(), target, plcc_weight=0.0, rank_weight=0.5)
    assert total.item() == pytest.approx(torch.abs(pred.detach() - target).mean().item() + 2 / 3)
