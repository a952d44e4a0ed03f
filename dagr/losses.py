"""The training losses of both networks (design.md, sections 5 and 9).

Saliency, per frame over its pixels: l_kl * KL(G || P) - l_cc * CC(P, G) - l_nss * NSS(P, F),
with P the softmax of the logits over the frame's pixels, G the ground-truth map normalised to
sum 1 and F the fixations; the mean over frames. (The original code used 0.01 * KL + CC over
the wrong axes.)

Quality, on a batch of B clips: L1(pred, target) + plcc_weight * (1 - PLCC(pred, target)) +
rank_weight * ranking hinge; both extra terms are differentiable (the original "Spearman loss"
had none).

Both are computed in fp32 whatever the precision of the forward pass.
"""
from __future__ import annotations

import torch

UNIT_EPS = 1e-12  # keeps the variance terms of unit-mean maps (values near 1) off zero
CORRELATION_EPS = 1e-8


# ----------------------------------------------------------------------------- saliency

def probability_maps(logits: torch.Tensor) -> torch.Tensor:
    """Per-frame probability maps: softmax of the logits over each frame's pixels.

    logits (B, 1, T, H, W) -> (B, T, H, W) float32, every (H, W) frame summing to 1.
    """
    frames = logits[:, 0].float()
    return torch.softmax(frames.flatten(-2), dim=-1).view_as(frames)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation over the last dim of unit-mean maps (..., N) -> (...)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    # clamp inside the root keeps the gradient finite for a constant map
    return (a * b).sum(-1) * ((a * a).sum(-1) * (b * b).sum(-1)).clamp_min(UNIT_EPS).rsqrt()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def saliency_loss(logits: torch.Tensor, maps: torch.Tensor, fixations: torch.Tensor | None,
                  l_kl: float, l_cc: float, l_nss: float) -> torch.Tensor:
    """l_kl * KL(G || P) - l_cc * CC(P, G) - l_nss * NSS(P, F), per frame, mean over frames.

    logits, maps, fixations: (..., H, W) with the same leading dims, e.g. (B, 1, T, H, W);
    every (H, W) slice is one frame. P = softmax of the frame's logits over its pixels,
    G = the frame's map normalised to sum 1, F = its fixations (> 0). Frames whose map is all
    zero carry no gaze and are left out of KL and CC; frames without fixations out of NSS.
    Computed in fp32 whatever the logits' dtype. Returns a scalar.
    """
    log_p = torch.log_softmax(logits.float().flatten(-2), dim=-1)  # (..., N)
    pixels = log_p.shape[-1]
    gt = maps.float().flatten(-2)
    mass = gt.sum(-1, keepdim=True)
    has_gaze = mass[..., 0] > 0
    g = gt / mass.clamp_min(torch.finfo(gt.dtype).tiny)
    kl = (torch.xlogy(g, g) - g * log_p).sum(-1)
    # CC and NSS are scale-free: unit-mean maps (x N) keep their sums far from fp32 underflow
    p = log_p.exp() * pixels
    loss = _masked_mean(l_kl * kl - l_cc * _pearson(p, g * pixels), has_gaze)
    if l_nss:
        if fixations is None:
            raise ValueError("an NSS term (l_nss != 0) needs the fixations")
        fixated = fixations.flatten(-2) > 0
        z = (p - p.mean(-1, keepdim=True)) * (p.var(-1, keepdim=True) + UNIT_EPS).rsqrt()
        nss = (z * fixated).sum(-1) / fixated.sum(-1).clamp_min(1)
        loss = loss - l_nss * _masked_mean(nss, fixated.any(-1))
    return loss


# ----------------------------------------------------------------------------- quality

def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of a batch: pred, target (B,) -> scalar. Zero for B < 2.
    The epsilon sits inside the square root, so constant predictions still get a finite
    gradient."""
    if pred.numel() < 2:
        return pred.new_zeros(())
    p, t = pred - pred.mean(), target - target.mean()
    return 1.0 - (p * t).sum() / torch.sqrt((p * p).sum() * (t * t).sum() + CORRELATION_EPS)


def rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking hinge: the mean over pairs with target_i > target_j of
    relu(pred_j - pred_i). pred, target (B,) -> scalar; zero when no pair is ordered."""
    ordered = (target[:, None] - target[None, :]) > 0  # (B, B)
    if not ordered.any():
        return pred.new_zeros(())
    return torch.relu(pred[None, :] - pred[:, None])[ordered].mean()


def quality_loss(pred: torch.Tensor, target: torch.Tensor, plcc_weight: float,
                 rank_weight: float) -> torch.Tensor:
    """L1 + plcc_weight * (1 - PLCC) + rank_weight * ranking hinge; pred, target (B,)."""
    loss = torch.nn.functional.l1_loss(pred, target)
    if plcc_weight:
        loss = loss + plcc_weight * plcc_loss(pred, target)
    if rank_weight:
        loss = loss + rank_weight * rank_loss(pred, target)
    return loss
