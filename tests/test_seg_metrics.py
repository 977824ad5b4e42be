"""Segmentation metrics against hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retinasynth.metrics import seg
from retinasynth.metrics.seg import auc_roc, cldice, confusion, dice, segmentation_scores

iou, sensitivity, specificity, accuracy, binarize = seg.iou, seg.sensitivity, seg.specificity, seg.accuracy, seg.binarize

# 2x4 case: gt has 3 vessel pixels; prediction hits 2 of them and adds 1 false positive.
GT = np.array([[1, 1, 0, 0],
               [1, 0, 0, 0]], bool)
PRED = np.array([[1, 0, 1, 0],
                 [1, 0, 0, 0]], bool)  # TP=2, FP=1, FN=1, TN=4


def test_confusion_counts():
    assert confusion(PRED, GT) == {"tp": 2, "fp": 1, "fn": 1, "tn": 4}


def test_ratios_from_known_counts():
    assert dice(PRED, GT) == pytest.approx(4 / 6)
    assert iou(PRED, GT) == pytest.approx(2 / 4)
    assert sensitivity(PRED, GT) == pytest.approx(2 / 3)
    assert specificity(PRED, GT) == pytest.approx(4 / 5)
    assert accuracy(PRED, GT) == pytest.approx(6 / 8)


def test_fov_excludes_pixels():
    fov = np.ones_like(GT)
    fov[0, 2] = False  # drop the false positive
    fov[1, 3] = False  # and one true negative
    assert confusion(PRED, GT, fov) == {"tp": 2, "fp": 0, "fn": 1, "tn": 3}
    assert dice(PRED, GT, fov) == pytest.approx(4 / 5)


def test_probabilities_are_thresholded():
    prob = np.where(PRED, 0.9, 0.1)
    assert confusion(prob, GT) == confusion(PRED, GT)
    assert confusion(np.full(GT.shape, 0.5), GT)["tp"] == 0  # strictly greater than the threshold
    assert binarize(np.array([0.2, 0.7]), 0.6).tolist() == [False, True]


def test_degenerate_cases():
    empty = np.zeros((3, 3), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert math.isnan(sensitivity(empty, empty))
    assert math.isnan(auc_roc(np.zeros((3, 3)), empty))


def test_auc_perfect_reversed_ties():
    gt = np.array([0, 0, 1, 1, 0, 1], bool)
    prob = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert auc_roc(prob, gt) == 1.0
    assert auc_roc(1 - prob, gt) == 0.0
    assert auc_roc(np.full(6, 0.4), gt) == 0.5


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    gt = rng.random(200) > 0.7
    prob = rng.integers(0, 5, 200) / 4.0  # many ties
    pos, neg = prob[gt], prob[~gt]
    expected = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert auc_roc(prob, gt) == pytest.approx(expected)
    fov = rng.random(200) > 0.3
    pos, neg = prob[gt & fov], prob[~gt & fov]
    expected = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert auc_roc(prob, gt, fov) == pytest.approx(expected)


def test_cldice():
    m = np.zeros((20, 20), bool)
    m[9:12, 2:18] = True
    m[2:18, 9:12] = True
    assert cldice(m, m) == 1.0
    assert cldice(np.zeros_like(m), m) == 0.0
    half = m.copy()
    half[:, 10:] = False
    assert 0.0 < cldice(half, m) < 1.0


def test_segmentation_scores_and_shape_check():
    prob = np.where(PRED, 0.9, 0.1)
    s = segmentation_scores(prob, GT, np.ones_like(GT))
    assert s["dice"] == pytest.approx(4 / 6) and s["tp"] == 2
    assert set(s) >= {"dice", "iou", "sensitivity", "specificity", "accuracy", "auc", "cldice"}
    assert "cldice" not in segmentation_scores(prob, GT, None, with_cldice=False)
    with pytest.raises(ValueError, match="shape"):
        dice(PRED[:, :3], GT)


# ---------------------------------------------------------------- pinned by hand (clDice, AUC, notebook SSIM)


def test_cldice_by_hand_with_fov():
    gt = np.zeros((7, 12), bool)
    gt[3, 1:11] = True  # a 10-px centreline: its own skeleton
    pred = np.zeros_like(gt)
    pred[3, 1:6] = True  # half of it
    pred[5, 1:4] = True  # and a 3-px false vessel
    # tprec = |S(pred) & gt| / |S(pred)| = 5/8, tsens = |S(gt) & pred| / |S(gt)| = 5/10 -> 2*(5/16)/(9/8) = 5/9
    assert cldice(pred, gt) == pytest.approx(5 / 9)
    fov = np.ones_like(gt)
    fov[5:, :] = False  # the false vessel lies outside the FOV: tprec = 1, tsens = 1/2 -> 2/3
    assert cldice(pred, gt, fov) == pytest.approx(2 / 3)
    assert segmentation_scores(pred.astype(float), gt, fov)["cldice"] == pytest.approx(2 / 3)


def test_auc_inside_scores_is_rank_based_not_thresholded():
    gt = np.array([[1, 1, 0, 0]], bool)
    prob = np.array([[0.3, 0.2, 0.25, 0.1]])  # every probability below the 0.5 threshold
    # pairs (pos, neg): 0.3>0.25, 0.3>0.1, 0.2<0.25, 0.2>0.1 -> 3/4; a thresholded AUC would give 0.5
    assert segmentation_scores(prob, gt, None)["auc"] == pytest.approx(0.75)
    fov = np.array([[1, 1, 0, 1]], bool)  # without the 0.25 negative every vessel pixel ranks higher
    s = segmentation_scores(prob, gt, fov)
    assert s["auc"] == pytest.approx(1.0) and s["dice"] == 0.0 and s["tn"] == 1


def _ssim_reference(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """SSIM as scikit-image defines it by default (uniform 7x7 window, sample covariance, K1=0.01,
    K2=0.03, mean over the map without the 3-px border, channel-wise mean), written out independently."""
    from scipy.ndimage import uniform_filter

    vals = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        win, n = 7, 49
        ux, uy = uniform_filter(x, win), uniform_filter(y, win)
        cov = n / (n - 1)
        vx = cov * (uniform_filter(x * x, win) - ux * ux)
        vy = cov * (uniform_filter(y * y, win) - uy * uy)
        vxy = cov * (uniform_filter(x * y, win) - ux * uy)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        vals.append(s[3:-3, 3:-3].mean())
    return float(np.mean(vals))


def test_notebook_ssim_matches_an_independent_computation():
    from retinasynth.metrics.image import notebook_scores

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-40, 41, real.shape), 0, 255).astype(np.uint8)
    got = notebook_scores(fake, real)
    a, b = real / 127.5 - 1.0, fake / 127.5 - 1.0
    assert got["ssim"] == pytest.approx(_ssim_reference(a, b, 2.0), abs=1e-9)
    assert 0.3 < got["ssim"] < 0.95  # a non-trivial pair
    mse = float(((a - b) ** 2).mean())
    assert got["mse"] == pytest.approx(mse) and got["psnr"] == pytest.approx(10 * np.log10(4.0 / mse))


def test_notebook_view_resamples_generated_and_real_alike():
    from retinasynth.train.evaluate import _notebook_view

    img = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    v = _notebook_view(img, 256)
    assert np.array_equal(v, img[::2, ::2]) or np.array_equal(v, img[1::2, 1::2])  # nearest: no smoothing
