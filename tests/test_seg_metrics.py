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
