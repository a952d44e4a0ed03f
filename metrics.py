"""Video-quality and saliency metrics shared by training and evaluation (docs/design.md,
sections 6 and 9).

VQA (over all test videos): ``vqa_metrics`` gives PLCC raw and after the 4-parameter logistic
mapping, SRCC and KRCC on raw predictions, and RMSE after the mapping in MOS units.

Saliency (per frame, then the plain mean over frames, as the DHF1K benchmark pools):
``saliency_metrics`` gives CC, NSS, SIM, KLD, AUC-Judd and shuffled AUC. With P the predicted
map, G the continuous ground truth and F the binary fixation map of one frame:

- CC: Pearson correlation of P and G over pixels.
- NSS: P z-scored over the frame (standard deviation with ddof=1, as the MIT benchmark code),
  averaged over the pixels where F > 0.
- SIM: both maps min-max normalised, then normalised to sum 1; sum of the element-wise minimum.
- KLD: both maps normalised to sum 1; sum G * log(eps + G / (P + eps)), eps = 2.2204e-16.
- AUC-Judd: thresholds at the distinct values of P at fixated pixels; TPR = fraction of fixated
  pixels with P >= threshold, FPR = fraction of non-fixated pixels with P >= threshold; ROC area
  by the trapezoid rule with (0, 0) and (1, 1) added.
- s-AUC: P min-max normalised; thresholds 1.0, 0.9, ..., 0.0; positives = P at fixated pixels,
  negatives = P at the other-frame fixation pixels; 100 draws, each of min(#fixations,
  #negatives) negatives without replacement; ROC area as for AUC-Judd, mean over the draws.

Every metric is listed once, in `QUALITY_METRICS` and `SALIENCY_METRICS` (a `Metric` each: its
key in the dicts above, its title, how training curves group it); training logs, printed
lines, results and ablation tables and figures all iterate over these lists, so a new metric
is its function here and one entry in its list.

Degenerate frames. A metric is left out of the frame mean only for reasons of the ground truth,
never of the prediction, so that a model cannot raise its score by predicting blank frames:

- left out (undefined): CC and SIM when G is constant (all zero included); KLD when G sums to 0;
  NSS and AUC-Judd when the frame has no fixation (AUC-Judd also when every pixel is fixated);
  s-AUC when the frame has no fixation or no negative. A metric left out of every frame is nan.
- constant P (an uninformative prediction): CC = 0, NSS = 0, AUC-Judd = s-AUC = 0.5, and for
  SIM and KLD the prediction counts as the uniform distribution.
"""

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
import torch

KLD_EPS = 2.2204e-16
SAUC_DRAWS = 100
SAUC_THRESHOLDS = np.linspace(0.0, 1.0, 11)  # ascending; the ROC walks them from 1.0 down to 0.0
OTHER_FRAMES = 10  # DHF1K: negatives for s-AUC are the fixations of 10 random other frames


# ----------------------------------------------------------------------------- the metrics, listed once

@dataclass(frozen=True)
class Metric:
    """A metric as logs, tables and figures name it. `name`: its key in the dict of
    `vqa_metrics` or `saliency_metrics` (and `val_<name>` in training logs); `title`: its name
    in tables and figures. Training curves draw the metrics of one `panel` (one scale) in one
    plot titled `validation <panel>` (default: the title). `headline`: in training logs and
    summary tables (False: only in the full results table). `averaged`: a mean over datasets
    means something (not for a metric in each dataset's own units)."""
    name: str
    title: str
    panel: str = ""
    headline: bool = True
    lower_is_better: bool = False
    averaged: bool = True

    @property
    def curves_panel(self) -> str:
        return self.panel or self.title


CORRELATIONS = "correlations and score"  # the quality correlations share a panel with the score
UNIT_SCALE = "CC, SIM, AUC-J, s-AUC"     # saliency metrics in [0, 1] (CC in [-1, 1]) share one
# mutable lists: what reads them iterates over them when it runs, so a test can extend them
QUALITY_METRICS: list[Metric] = [
    Metric("plcc", "PLCC", CORRELATIONS),
    Metric("srcc", "SRCC", CORRELATIONS),
    Metric("krcc", "KRCC", CORRELATIONS),
    Metric("rmse", "RMSE", "RMSE (MOS units)", lower_is_better=True, averaged=False),
    Metric("plcc_logistic", "PLCC (logistic)", CORRELATIONS, headline=False),
]
SALIENCY_METRICS: list[Metric] = [
    Metric("cc", "CC", UNIT_SCALE),
    Metric("nss", "NSS"),
    Metric("sim", "SIM", UNIT_SCALE),
    Metric("kld", "KLD", lower_is_better=True),
    Metric("auc_j", "AUC-J", UNIT_SCALE),
    Metric("s_auc", "s-AUC", UNIT_SCALE),
]
# quality training keeps the epoch of the best validation `quality_score`
QUALITY_SCORE = Metric("score", "score", CORRELATIONS)


def quality_score(metrics: dict[str, float]) -> float:
    """QUALITY_SCORE of `vqa_metrics`' values: (SRCC + PLCC) / 2 (nan when either is)."""
    return (metrics["srcc"] + metrics["plcc"]) / 2


def headline(metrics: Iterable[Metric]) -> list[Metric]:
    """The metrics that training logs and summary tables show."""
    return [metric for metric in metrics if metric.headline]


def names(metrics: Iterable[Metric]) -> list[str]:
    return [metric.name for metric in metrics]


def titles(metrics: Iterable[Metric]) -> list[str]:
    return [metric.title for metric in metrics]


# ----------------------------------------------------------------------------- input handling

def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any array-like or tensor as a numpy array of the same shape, copied only where needed."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bf16
    return np.asarray(x)


def _as_float_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(_as_numpy(x), dtype=np.float64)


def _as_mask(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A fixation map (bool, 0/1 or 0/255) as a bool array: True where x > 0."""
    return _as_numpy(x) > 0


def _check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{what} holds {int(bad.sum())} NaN or infinite value(s), "
                         f"the first at index {tuple(int(i) for i in np.argwhere(bad)[0])}")


# ----------------------------------------------------------------------------- VQA metrics

def _paired_scores(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    """pred and mos as two float64 vectors (N,), checked for equal length, N > 0 and finiteness."""
    x, y = _as_float_array(pred).ravel(), _as_float_array(mos).ravel()
    if x.size != y.size:
        raise ValueError(f"pred has {x.size} values but mos has {y.size}")
    if x.size == 0:
        raise ValueError("pred and mos are empty: there are no videos to score")
    _check_finite(x, "pred")
    _check_finite(y, "mos")
    return x, y


def _logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """y = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)), written with expit to avoid overflow."""
    return b2 + (b1 - b2) * scipy.special.expit((x - b3) / np.abs(b4))


def _fitted_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares 4-parameter logistic of x fitted to y, evaluated at x: (N,).

    x is standardised first: p0's b4 = 0.5 then means half a standard deviation of the
    predictions whatever their scale. (x - b3) / |b4| with x = mean + std * z keeps the same
    4-parameter family, so this is the fit of design.md, section 6, only well conditioned.
    Raises RuntimeError when no fit is possible.
    """
    if x.size < 4:
        raise RuntimeError(f"{x.size} video(s) are too few for a 4-parameter fit")
    if np.ptp(x) == 0:
        raise RuntimeError("the predictions are constant")
    z = (x - x.mean()) / x.std()
    p0 = [y.max(), y.min(), 0.0, 0.5]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # The covariance is not used; when it cannot be estimated (e.g. constant MOS) the fit
        # itself is still exact.
        warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
        try:
            params, _ = scipy.optimize.curve_fit(_logistic, z, y, p0=p0, maxfev=10_000)
        except (RuntimeError, ValueError) as error:
            raise RuntimeError(f"curve_fit failed ({error})") from error
        mapped = _logistic(z, *params)
    if not np.isfinite(mapped).all():
        raise RuntimeError("curve_fit returned a non-finite mapping")
    return mapped


def _fitted_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares a * x + b fitted to y, evaluated at x: (N,). Constant x gives mean(y)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    return design @ coefficients


def logistic_map(pred, mos) -> np.ndarray:
    """Predictions mapped to MOS units by the 4-parameter logistic (design.md, section 6) fitted
    to mos.

    pred, mos: array-likes or tensors of N values. Returns float64 (N,). When the logistic
    cannot be fitted (fewer than 4 videos, constant predictions, no convergence) it warns and
    falls back to the least-squares line a * pred + b.
    """
    x, y = _paired_scores(pred, mos)
    try:
        return _fitted_logistic(x, y)
    except RuntimeError as error:
        warnings.warn(f"logistic_map: {error}; using a least-squares line instead",
                      RuntimeWarning, stacklevel=2)
        return _fitted_line(x, y)


def _undefined_correlation_reason(x: np.ndarray, y: np.ndarray) -> str | None:
    if x.size < 3:
        return f"only {x.size} video(s), correlations need at least 3"
    if np.ptp(x) == 0:
        return "the predictions are constant"
    if np.ptp(y) == 0:
        return "the MOS values are constant"
    return None


def vqa_metrics(pred, mos) -> dict[str, float]:
    """PLCC (raw and after the logistic mapping), SRCC, KRCC, RMSE and n over N videos.

    pred, mos: array-likes or tensors of N values (MOS in the dataset's units). SRCC, KRCC and
    plain PLCC use the raw predictions; plcc_logistic and rmse (MOS units) use logistic_map.
    Correlations that are undefined (constant predictions or MOS, fewer than 3 videos) are nan,
    with a RuntimeWarning saying why. NaN or infinite inputs raise ValueError.
    """
    x, y = _paired_scores(pred, mos)
    mapped = logistic_map(x, y)
    reason = _undefined_correlation_reason(x, y)
    if reason is None:
        # A constant logistic mapping (possible only in a degenerate fit) makes pearsonr
        # itself warn and return nan.
        correlations = {
            "plcc": float(scipy.stats.pearsonr(x, y).statistic),
            "plcc_logistic": float(scipy.stats.pearsonr(mapped, y).statistic),
            "srcc": float(scipy.stats.spearmanr(x, y).statistic),
            "krcc": float(scipy.stats.kendalltau(x, y).statistic),
        }
    else:
        warnings.warn(f"vqa_metrics: {reason}; undefined correlations are reported as nan",
                      RuntimeWarning, stacklevel=2)
        correlations = dict.fromkeys(("plcc", "plcc_logistic", "srcc", "krcc"), float("nan"))
    rmse = float(np.sqrt(np.mean((mapped - y) ** 2)))
    return correlations | {"rmse": rmse, "n": x.size}


# ----------------------------------------------------------------------------- saliency metrics

def other_frame_fixations(fixations, count: int = OTHER_FRAMES, seed: int = 0) -> np.ndarray:
    """Per frame, the union of the fixations of `count` random other frames (all the other
    frames when there are fewer). fixations: binary maps (T, H, W). Returns bool (T, H, W);
    all False when T == 1."""
    mask = _as_mask(fixations)
    frames = mask.shape[0]
    chosen = min(count, frames - 1)
    rng = np.random.default_rng(seed)
    union = np.zeros_like(mask)
    for t in range(frames):
        others = rng.choice(frames - 1, size=chosen, replace=False)
        others[others >= t] += 1  # skip frame t itself
        union[t] = mask[others].any(axis=0)
    return union


# The per-frame metrics below take one frame flattened: maps float64 (N,), masks bool (N,).
# One frame at a time stays in the CPU cache, which is several times faster than whole clips.

def _is_constant(values: np.ndarray) -> bool:
    return bool(values.min() == values.max())


def _distribution(values: np.ndarray) -> np.ndarray:
    """Non-negative values (N,) normalised to sum 1; all zeros become the uniform distribution."""
    total = values.sum()
    return values / total if total > 0 else np.full_like(values, 1.0 / values.size)


def _shifted_distribution(values: np.ndarray) -> np.ndarray:
    """values (N,) min-max scaled, then normalised to sum 1. The scaling's division cancels in
    the normalisation, so only the shift is applied; a constant map becomes uniform."""
    return _distribution(values - values.min())


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a @ b for vectors (N,), without BLAS: OpenBLAS's threads make a single dot product
    100 times slower on a busy CPU (e.g. next to data-loader workers)."""
    return float(np.einsum("i,i->", a, b))


def _cc(pred: np.ndarray, gt: np.ndarray) -> float:
    if _is_constant(gt):
        return float("nan")
    if _is_constant(pred):
        return 0.0
    p, g = pred - pred.mean(), gt - gt.mean()
    return _dot(p, g) / np.sqrt(_dot(p, p) * _dot(g, g))


def _nss(pred: np.ndarray, fixated: np.ndarray) -> float:
    """fixated: pred's values at the fixated pixels (M,)."""
    if fixated.size == 0:
        return float("nan")
    if _is_constant(pred):
        return 0.0
    return float((fixated.mean() - pred.mean()) / pred.std(ddof=1))


def _sim(pred: np.ndarray, gt: np.ndarray) -> float:
    if _is_constant(gt):
        return float("nan")
    return float(np.minimum(_shifted_distribution(pred), _shifted_distribution(gt)).sum())


def _kld(pred: np.ndarray, gt: np.ndarray) -> float:
    if gt.sum() == 0:
        return float("nan")
    g = _distribution(gt)
    ratio = _distribution(pred) + KLD_EPS
    np.divide(g, ratio, out=ratio)  # in place: validation runs this on every frame
    ratio += KLD_EPS
    return _dot(g, np.log(ratio, out=ratio))


def _count_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of sorted_values (M,) are >= each threshold (K,): int (K,)."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _roc_area(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Trapezoid area under the ROC points of ascending thresholds, with (0, 0) and (1, 1)
    added. fpr, tpr: broadcastable (..., K). Returns (...)."""
    fpr, tpr = np.broadcast_arrays(fpr, tpr)
    ends = [(0, 0)] * (fpr.ndim - 1) + [(1, 1)]
    # Reversed, the points run from the highest threshold, (0, 0), up to (1, 1).
    x = np.pad(fpr[..., ::-1], ends, constant_values=(0, 1))
    y = np.pad(tpr[..., ::-1], ends, constant_values=(0, 1))
    return (np.diff(x, axis=-1) * (y[..., 1:] + y[..., :-1])).sum(axis=-1) / 2


def _auc_judd(fixated: np.ndarray, unfixated: np.ndarray) -> float:
    """fixated, unfixated: pred's values at the fixated (M,) and the other pixels (N - M,)."""
    if fixated.size == 0 or unfixated.size == 0:
        return float("nan")
    fixated = np.sort(fixated)
    thresholds = np.unique(fixated)
    tpr = _count_at_or_above(fixated, thresholds) / fixated.size
    fpr = _count_at_or_above(np.sort(unfixated), thresholds) / unfixated.size
    return float(_roc_area(fpr, tpr))


def _shuffled_auc(pred: np.ndarray, fix: np.ndarray, other: np.ndarray,
                  rng: np.random.Generator) -> float:
    """fix, other: bool (N,), the frame's fixations and its negatives' locations."""
    if not fix.any() or not other.any():
        return float("nan")
    low, span = pred.min(), np.ptp(pred)
    scale = 1.0 / span if span > 0 else 0.0  # a constant map scales to all zeros
    positives, pool = (np.sort((pred[mask] - low) * scale) for mask in (fix, other))
    drawn = min(positives.size, pool.size)
    tpr = _count_at_or_above(positives, SAUC_THRESHOLDS) / positives.size
    # Only how many drawn negatives reach each threshold matters, so the draws (without
    # replacement) are made on the pool binned between thresholds: multivariate hypergeometric.
    pool_at_or_above = _count_at_or_above(pool, SAUC_THRESHOLDS)
    pool_bins = pool_at_or_above - np.append(pool_at_or_above[1:], 0)
    drawn_bins = rng.multivariate_hypergeometric(pool_bins, drawn, size=SAUC_DRAWS)
    fpr = np.cumsum(drawn_bins[:, ::-1], axis=1)[:, ::-1] / drawn  # (SAUC_DRAWS, K)
    return float(_roc_area(fpr, tpr).mean())


def _frame_metrics(pred: np.ndarray, gt: np.ndarray, fix: np.ndarray, other: np.ndarray,
                   rng: np.random.Generator) -> dict[str, float]:
    """All six metrics of one frame: pred, gt float64 (N,); fix, other bool (N,)."""
    fixated = pred[fix]
    return {
        "cc": _cc(pred, gt),
        "nss": _nss(pred, fixated),
        "sim": _sim(pred, gt),
        "kld": _kld(pred, gt),
        "auc_j": _auc_judd(fixated, pred[~fix]),
        "s_auc": _shuffled_auc(pred, fix, other, rng),
    }


def _frames(x: np.ndarray, what: str) -> np.ndarray:
    """(H, W) or (T, H, W) -> (T, H, W)."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{what} must have shape (T, H, W) or (H, W), got {x.shape}")
    return x[None] if x.ndim == 2 else x


def _saliency_maps(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A stack of saliency maps (T, H, W), checked finite and non-negative, in its own dtype."""
    maps = _frames(_as_numpy(x), what)
    _check_finite(maps, what)
    if (maps < 0).any():
        raise ValueError(f"{what} has negative values; saliency maps must be non-negative")
    return maps


def _nanmean(values: list[float]) -> float:
    """Mean over the frames where the metric is defined; nan when it is defined nowhere."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def saliency_metrics(pred, gt, fixations, other_fixations=None, *, seed: int = 0
                     ) -> dict[str, float]:
    """CC, NSS, SIM, KLD, AUC-Judd and s-AUC, computed per frame and pooled by the plain mean
    over the frames where each is defined (see the module docstring).

    pred, gt: non-negative maps (T, H, W) or (H, W), numpy or torch. fixations: binary maps of
    the same shape (> 0 means fixated). other_fixations: binary maps of the same shape whose
    ones are each frame's s-AUC negatives; when None they are built by other_frame_fixations
    (T > 1) and s_auc is nan for a single frame. seed drives that choice and the s-AUC draws.
    """
    p, g = _saliency_maps(pred, "pred"), _saliency_maps(gt, "gt")
    fix = _frames(_as_mask(fixations), "fixations")
    if not p.shape == g.shape == fix.shape:
        raise ValueError(f"pred {p.shape}, gt {g.shape} and fixations {fix.shape} differ in shape")
    if other_fixations is None:
        other = other_frame_fixations(fix, seed=seed)
    else:
        other = _frames(_as_mask(other_fixations), "other_fixations")
        if other.shape != fix.shape:
            raise ValueError(f"other_fixations {other.shape} and fixations {fix.shape} differ")
    rng = np.random.default_rng(seed)
    per_frame = [
        _frame_metrics(np.asarray(p[t], dtype=np.float64).ravel(),
                       np.asarray(g[t], dtype=np.float64).ravel(),
                       fix[t].ravel(), other[t].ravel(), rng)
        for t in range(p.shape[0])
    ]
    return {name: _nanmean([frame[name] for frame in per_frame]) for name in per_frame[0]}
