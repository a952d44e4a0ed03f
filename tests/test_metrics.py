"""metrics.py: VQA metrics against scipy, saliency metrics against plain loop computations."""
import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from metrics import (KLD_EPS, logistic_map, other_frame_fixations, saliency_metrics,
                     vqa_metrics)

SALIENCY_KEYS = {"cc", "nss", "sim", "kld", "auc_j", "s_auc"}


# ----------------------------------------------------------------------------- VQA

def logistic(x, b1, b2, b3, b4):
    return b2 + (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4)))


def noisy_scores(n=60, seed=0):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 1, n)
    return pred, 1 + 4 * pred ** 2 + rng.normal(0, 0.4, n)


def test_vqa_correlations_match_scipy():
    pred, mos = noisy_scores()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = vqa_metrics(pred, mos)
    assert scores["plcc"] == pytest.approx(scipy.stats.pearsonr(pred, mos)[0], abs=1e-12)
    assert scores["srcc"] == pytest.approx(scipy.stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert scores["krcc"] == pytest.approx(scipy.stats.kendalltau(pred, mos)[0], abs=1e-12)
    mapped = logistic_map(pred, mos)
    assert scores["plcc_logistic"] == pytest.approx(scipy.stats.pearsonr(mapped, mos)[0])
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean((mapped - mos) ** 2)))
    assert scores["n"] == 60
    # The fitted curve is a least-squares fit: better than the best constant, in MOS units.
    assert scores["rmse"] < mos.std()


@pytest.mark.parametrize("pred_scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("mos_range", [(1.0, 5.0), (0.0, 100.0)])
def test_logistic_fit_is_exact_when_mos_is_a_logistic_of_pred(pred_scale, mos_range):
    pred = np.linspace(0, 1, 40) * pred_scale
    low, high = mos_range
    mos = logistic(pred, high, low, 0.6 * pred_scale, 0.08 * pred_scale)
    scores = vqa_metrics(pred, mos)
    assert scores["plcc"] < 0.97  # the relation is clearly non-linear...
    assert scores["plcc_logistic"] == pytest.approx(1.0, abs=1e-8)  # ...and fully recovered
    assert scores["rmse"] < 1e-5 * (high - low)
    np.testing.assert_allclose(logistic_map(pred, mos), mos, atol=1e-5 * (high - low))


def test_torch_and_numpy_give_the_same_vqa_scores():
    pred, mos = noisy_scores()
    assert vqa_metrics(torch.tensor(pred), torch.tensor(mos)) == vqa_metrics(pred, mos)


def test_constant_predictions_give_nan_and_a_warning():
    _, mos = noisy_scores(n=10)
    with pytest.warns(RuntimeWarning, match="predictions are constant"):
        scores = vqa_metrics(np.full(10, 0.3), mos)
    for key in ("plcc", "plcc_logistic", "srcc", "krcc"):
        assert math.isnan(scores[key])
    assert scores["rmse"] == pytest.approx(mos.std())  # the best mapping is the mean MOS


def test_constant_mos_gives_nan_and_a_warning():
    pred, _ = noisy_scores(n=10)
    with pytest.warns(RuntimeWarning, match="MOS values are constant"):
        scores = vqa_metrics(pred, np.full(10, 3.5))
    assert math.isnan(scores["plcc"]) and math.isnan(scores["srcc"])
    assert scores["rmse"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_videos_give_nan_correlations(n):
    with (pytest.warns(RuntimeWarning, match="too few for a 4-parameter fit"),
          pytest.warns(RuntimeWarning, match=f"only {n} video")):
        scores = vqa_metrics([0.2, 0.7][:n], [2.0, 4.0][:n])
    assert all(math.isnan(scores[k]) for k in ("plcc", "plcc_logistic", "srcc", "krcc"))
    assert scores["n"] == n and scores["rmse"] == pytest.approx(0.0, abs=1e-9)


def test_three_videos_have_correlations_and_a_linear_mapping():
    pred, mos = np.array([0.1, 0.5, 0.7]), np.array([1.0, 2.0, 4.5])
    with pytest.warns(RuntimeWarning, match="too few for a 4-parameter fit"):
        scores = vqa_metrics(pred, mos)
    assert scores["plcc"] == pytest.approx(scipy.stats.pearsonr(pred, mos)[0])
    line = np.polyval(np.polyfit(pred, mos, 1), pred)
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean((line - mos) ** 2)))


def test_failed_logistic_fit_falls_back_to_a_line(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")
    monkeypatch.setattr(scipy.optimize, "curve_fit", no_convergence)
    pred, mos = noisy_scores()
    with pytest.warns(RuntimeWarning, match="curve_fit failed"):
        mapped = logistic_map(pred, mos)
    np.testing.assert_allclose(mapped, np.polyval(np.polyfit(pred, mos, 1), pred))


@pytest.mark.parametrize("where", ["pred", "mos"])
def test_nan_input_is_an_error(where):
    pred, mos = noisy_scores(n=10)
    (pred if where == "pred" else mos)[3] = np.nan
    with pytest.raises(ValueError, match=f"{where} holds 1 NaN"):
        vqa_metrics(pred, mos)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="5 values but mos has 4"):
        vqa_metrics(np.ones(5), np.ones(4))


# ----------------------------------------------------------------------------- saliency references
# Straightforward per-pixel loops over one frame (H, W), written from SPEC section 6.

def pixels(m):
    return [float(v) for v in np.asarray(m, dtype=np.float64).ravel()]


def ref_cc(p, g):
    p, g = pixels(p), pixels(g)
    mp, mg = sum(p) / len(p), sum(g) / len(g)
    cov = sum((a - mp) * (b - mg) for a, b in zip(p, g))
    return cov / math.sqrt(sum((a - mp) ** 2 for a in p) * sum((b - mg) ** 2 for b in g))


def ref_nss(p, f):
    p, f = pixels(p), pixels(f)
    mean = sum(p) / len(p)
    std = math.sqrt(sum((a - mean) ** 2 for a in p) / (len(p) - 1))
    z = [(a - mean) / std for a, fixated in zip(p, f) if fixated]
    return sum(z) / len(z)


def ref_sim(p, g):
    def normalised(m):
        low, high = min(m), max(m)
        scaled = [(a - low) / (high - low) for a in m]
        return [a / sum(scaled) for a in scaled]
    return sum(min(a, b) for a, b in zip(normalised(pixels(p)), normalised(pixels(g))))


def ref_kld(p, g):
    p, g = pixels(p), pixels(g)
    p, g = [a / sum(p) for a in p], [b / sum(g) for b in g]
    return sum(b * math.log(KLD_EPS + b / (a + KLD_EPS)) for a, b in zip(p, g))


def trapezoid(points):
    points = sorted(points)
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))


def ref_auc_judd(p, f):
    fixated = [a for a, fix in zip(pixels(p), pixels(f)) if fix]
    others = [a for a, fix in zip(pixels(p), pixels(f)) if not fix]
    points = [(0.0, 0.0), (1.0, 1.0)]
    for threshold in set(fixated):
        points.append((sum(a >= threshold for a in others) / len(others),
                       sum(a >= threshold for a in fixated) / len(fixated)))
    return trapezoid(points)


def ref_shuffled_auc(p, f, other, rng, draws=100):
    scaled = pixels(p)
    low, high = min(scaled), max(scaled)
    scaled = [(a - low) / (high - low) for a in scaled]
    positives = [a for a, fix in zip(scaled, pixels(f)) if fix]
    pool = [a for a, neg in zip(scaled, pixels(other)) if neg]
    drawn = min(len(positives), len(pool))
    areas = []
    for _ in range(draws):
        negatives = [pool[i] for i in rng.permutation(len(pool))[:drawn]]
        points = [(0.0, 0.0), (1.0, 1.0)]
        for step in range(10, -1, -1):
            threshold = step / 10
            points.append((sum(a >= threshold for a in negatives) / drawn,
                           sum(a >= threshold for a in positives) / len(positives)))
        areas.append(trapezoid(points))
    return sum(areas) / draws


def random_frame(seed, shape=(9, 11), fixations=12):
    """A smooth-ish positive ground truth, a noisy prediction of it and fixations at random."""
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) ** 3
    pred = np.clip(gt + rng.normal(0, 0.2, shape), 0, None)
    fix = np.zeros(shape, bool)
    fix.flat[rng.choice(fix.size, fixations, replace=False)] = True
    return pred, gt, fix


def random_mask(seed, shape, ones):
    mask = np.zeros(shape, bool)
    mask.flat[np.random.default_rng(seed).choice(mask.size, ones, replace=False)] = True
    return mask


# ----------------------------------------------------------------------------- saliency tests

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saliency_metrics_match_loop_references(seed):
    pred, gt, fix = random_frame(seed)
    other = random_mask(seed + 100, pred.shape, 8)  # fewer than the fixations: all drawn
    scores = saliency_metrics(pred, gt, fix, other)
    assert set(scores) == SALIENCY_KEYS
    assert scores["cc"] == pytest.approx(ref_cc(pred, gt), abs=1e-12)
    assert scores["nss"] == pytest.approx(ref_nss(pred, fix), abs=1e-12)
    assert scores["sim"] == pytest.approx(ref_sim(pred, gt), abs=1e-12)
    assert scores["kld"] == pytest.approx(ref_kld(pred, gt), abs=1e-12)
    assert scores["auc_j"] == pytest.approx(ref_auc_judd(pred, fix), abs=1e-12)
    rng = np.random.default_rng(0)
    assert scores["s_auc"] == pytest.approx(ref_shuffled_auc(pred, fix, other, rng), abs=1e-12)


def test_auc_judd_counts_tied_values_with_at_or_above():
    pred = np.array([[0.5, 0.5, 0.2], [0.2, 0.9, 0.0]])
    fix = np.array([[1, 0, 0], [1, 0, 0]])
    assert saliency_metrics(pred, pred, fix)["auc_j"] == pytest.approx(ref_auc_judd(pred, fix))


def test_shuffled_auc_draws_match_a_loop_reference_on_average():
    pred, gt, fix = random_frame(3, shape=(20, 20), fixations=30)
    other = random_mask(4, pred.shape, 120)  # more negatives than fixations: random draws
    reference = ref_shuffled_auc(pred, fix, other, np.random.default_rng(123))
    scores = [saliency_metrics(pred, gt, fix, other, seed=s)["s_auc"] for s in (0, 1)]
    assert scores[0] != scores[1]  # the draws are random...
    assert saliency_metrics(pred, gt, fix, other, seed=0)["s_auc"] == scores[0]  # ...and seeded
    # Mean over 100 draws of 30 out of 120: standard error about 0.005.
    assert scores[0] == pytest.approx(reference, abs=0.03)


def test_perfect_prediction():
    _, gt, fix = random_frame(0)
    scores = saliency_metrics(gt, gt, fix)
    assert scores["cc"] == pytest.approx(1.0, abs=1e-12)
    assert scores["sim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["kld"] == pytest.approx(0.0, abs=1e-9)


def test_inverted_prediction():
    _, gt, _ = random_frame(0)
    fix = gt >= np.quantile(gt, 0.9)  # people look where the ground truth peaks
    scores = saliency_metrics(gt.max() - gt, gt, fix)
    assert scores["cc"] == pytest.approx(-1.0, abs=1e-12)
    assert scores["auc_j"] < 0.1 and scores["nss"] < 0


def test_uniform_prediction_is_uninformative():
    """A constant map: CC and NSS are 0 (not nan, so the frame still counts), the AUCs 0.5, and
    SIM and KLD treat it as the uniform distribution."""
    _, gt, fix = random_frame(0)
    uniform = np.full_like(gt, 0.7)
    scores = saliency_metrics(uniform, gt, fix, random_mask(1, gt.shape, 20))
    assert scores["cc"] == 0.0 and scores["nss"] == 0.0
    assert scores["auc_j"] == pytest.approx(0.5) and scores["s_auc"] == pytest.approx(0.5)
    gt_distribution = [(b - gt.min()) / (gt - gt.min()).sum() for b in pixels(gt)]
    assert scores["sim"] == pytest.approx(sum(min(1 / gt.size, b) for b in gt_distribution))
    assert scores["kld"] == pytest.approx(ref_kld(np.ones_like(gt), gt))


def test_pooling_is_the_mean_of_frame_values():
    frames = [random_frame(seed) for seed in range(4)]
    pred, gt, fix = (np.stack(parts) for parts in zip(*frames))
    other = np.stack([random_mask(seed, gt.shape[1:], 6) for seed in range(4)])
    clip = saliency_metrics(pred, gt, fix, other)
    single = [saliency_metrics(pred[t], gt[t], fix[t], other[t]) for t in range(4)]
    for key in SALIENCY_KEYS:
        assert clip[key] == pytest.approx(np.mean([s[key] for s in single]), abs=1e-12)


def test_undefined_frames_are_left_out():
    pred, gt, fix = random_frame(0)
    empty_gt, no_fix = np.zeros_like(gt), np.zeros_like(fix)
    clip = saliency_metrics(np.stack([pred, pred]), np.stack([gt, empty_gt]),
                            np.stack([fix, no_fix]), np.stack([no_fix, fix]))
    alone = saliency_metrics(pred, gt, fix, fix)
    for key in ("cc", "sim", "kld", "nss", "auc_j"):
        assert clip[key] == pytest.approx(alone[key])
    assert math.isnan(clip["s_auc"])  # frame 0 has no negatives, frame 1 no fixations
    nothing = saliency_metrics(pred, empty_gt, no_fix)
    assert all(math.isnan(v) for v in nothing.values())


def test_single_frame_without_other_fixations_has_no_shuffled_auc():
    scores = saliency_metrics(*random_frame(0))
    assert math.isnan(scores["s_auc"]) and not math.isnan(scores["auc_j"])


def test_default_negatives_come_from_other_frames():
    frames = [random_frame(seed) for seed in range(3)]
    pred, gt, fix = (np.stack(parts) for parts in zip(*frames))
    built = saliency_metrics(pred, gt, fix, seed=5)
    given = saliency_metrics(pred, gt, fix, other_frame_fixations(fix, seed=5), seed=5)
    assert built == given and not math.isnan(built["s_auc"])


def test_other_frame_fixations_unites_other_frames_only():
    frames, count = 12, 4
    fix = np.zeros((frames, 1, frames), bool)
    fix[np.arange(frames), 0, np.arange(frames)] = True  # frame t fixates pixel t only
    union = other_frame_fixations(fix, count=count, seed=0)
    assert union.shape == fix.shape and union.dtype == bool
    assert (union.sum(axis=(1, 2)) == count).all()
    assert not union[np.arange(frames), 0, np.arange(frames)].any()
    assert (union == other_frame_fixations(fix, count=count, seed=0)).all()
    assert (union != other_frame_fixations(fix, count=count, seed=1)).any()
    assert other_frame_fixations(fix, count=50).sum() == frames * (frames - 1)
    assert not other_frame_fixations(fix[:1]).any()


def test_torch_and_numpy_give_the_same_saliency_scores():
    frames = [random_frame(seed) for seed in range(3)]
    pred, gt, fix = (np.stack(parts) for parts in zip(*frames))
    pred, gt = pred.astype(np.float32), gt.astype(np.float32)
    from_numpy = saliency_metrics(pred, gt, fix.astype(np.uint8) * 255)
    from_torch = saliency_metrics(torch.from_numpy(pred), torch.from_numpy(gt),
                                  torch.from_numpy(fix))
    assert from_numpy == from_torch


@pytest.mark.parametrize("problem, match", [
    ("nan", "pred holds 1 NaN"), ("negative", "pred has negative values"),
    ("shape", "differ in shape"), ("ndim", r"shape \(T, H, W\) or \(H, W\)"),
])
def test_bad_saliency_input_is_an_error(problem, match):
    pred, gt, fix = random_frame(0)
    if problem == "nan":
        pred[2, 3] = np.nan
    elif problem == "negative":
        pred[2, 3] = -0.1
    elif problem == "shape":
        gt = gt[:, :-1]
    else:
        pred, gt, fix = pred[None, None], gt[None, None], fix[None, None]
    with pytest.raises(ValueError, match=match):
        saliency_metrics(pred, gt, fix)
