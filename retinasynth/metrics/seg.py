"""Vessel segmentation scores, computed inside the field of view (FOV) only.

Every function takes a prediction (a probability map, binarised as ``prob > threshold``, or a boolean
mask), a binary ground truth and an optional FOV mask of the same shape; pixels outside the FOV are
ignored. Pure numpy (plus skimage's ``skeletonize`` for clDice); no sklearn.

Conventions for degenerate cases: Dice, IoU and clDice of an empty prediction against an empty
ground truth are 1.0; a ratio whose denominator is a class that does not occur in the FOV
(sensitivity without vessels, specificity without background, AUC without both) is NaN.
"""

from __future__ import annotations

import numpy as np

METRICS = ("dice", "iou", "sensitivity", "specificity", "accuracy", "auc", "cldice")


def _select(arr: np.ndarray, fov: np.ndarray | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} (the ground truth's)")
    return arr if fov is None else arr[fov]


def _fov(gt: np.ndarray, fov: np.ndarray | None) -> np.ndarray | None:
    if fov is None:
        return None
    fov = np.asarray(fov)
    if fov.shape != np.shape(gt):
        raise ValueError(f"fov has shape {fov.shape}, expected {np.shape(gt)} (the ground truth's)")
    return fov.astype(bool)


def binarize(pred: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A boolean mask: booleans as they are, numbers as ``pred > threshold``."""
    pred = np.asarray(pred)
    return pred if pred.dtype == bool else pred > threshold


def confusion(pred: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None,
              threshold: float = 0.5) -> dict[str, int]:
    """True/false positives/negatives inside the FOV: {'tp', 'fp', 'fn', 'tn'}."""
    gt = np.asarray(gt)
    f = _fov(gt, fov)
    p = _select(binarize(pred, threshold), f, "pred", gt.shape)
    g = _select(gt.astype(bool), f, "gt", gt.shape)
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: int, den: int, empty: float = float("nan")) -> float:
    return float(num) / den if den else empty


def _from_counts(c: dict[str, int]) -> dict[str, float]:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
            "iou": _ratio(tp, tp + fp + fn, 1.0),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn)}


def dice(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """2TP / (2TP + FP + FN), the F1 score of the vessel class."""
    return _from_counts(confusion(pred, gt, fov, threshold))["dice"]


def iou(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """TP / (TP + FP + FN) (Jaccard index)."""
    return _from_counts(confusion(pred, gt, fov, threshold))["iou"]


def sensitivity(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """TP / (TP + FN) (recall of vessels)."""
    return _from_counts(confusion(pred, gt, fov, threshold))["sensitivity"]


def specificity(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """TN / (TN + FP)."""
    return _from_counts(confusion(pred, gt, fov, threshold))["specificity"]


def accuracy(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """(TP + TN) / all pixels in the FOV."""
    return _from_counts(confusion(pred, gt, fov, threshold))["accuracy"]


def auc_roc(prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Exact area under the ROC curve: the Mann-Whitney U statistic with average ranks for ties.

    AUC = (sum of the positives' ranks - P(P+1)/2) / (P N): the probability that a random vessel
    pixel scores higher than a random background pixel, ties counting one half.
    """
    gt = np.asarray(gt)
    f = _fov(gt, fov)
    s = _select(np.asarray(prob, dtype=np.float64), f, "prob", gt.shape).ravel()
    g = _select(gt.astype(bool), f, "gt", gt.shape).ravel()
    n_pos = int(np.count_nonzero(g))
    n_neg = g.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    avg_rank = last - (counts - 1) / 2.0  # average rank of each group of ties
    u = float(avg_rank[inverse.ravel()][g].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (float(n_pos) * float(n_neg))


def cldice(pred, gt, fov=None, threshold: float = 0.5) -> float:
    """Centerline Dice (Shit et al., CVPR 2021): the harmonic mean of topology precision
    |S(pred) & gt| / |S(pred)| and topology sensitivity |S(gt) & pred| / |S(gt)|, S = skeleton."""
    from skimage.morphology import skeletonize

    gt = np.asarray(gt).astype(bool)
    f = _fov(gt, fov)
    p = binarize(pred, threshold)
    if p.shape != gt.shape:
        raise ValueError(f"pred has shape {p.shape}, expected {gt.shape} (the ground truth's)")
    if f is not None:
        p, gt = p & f, gt & f
    sp, sg = skeletonize(p), skeletonize(gt)
    n_sp, n_sg = int(sp.sum()), int(sg.sum())
    if n_sp == 0 and n_sg == 0:
        return 1.0
    if n_sp == 0 or n_sg == 0:
        return 0.0
    tprec = np.count_nonzero(sp & gt) / n_sp
    tsens = np.count_nonzero(sg & p) / n_sg
    return float(2 * tprec * tsens / (tprec + tsens)) if tprec + tsens > 0 else 0.0


def segmentation_scores(prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None,
                        threshold: float = 0.5, with_cldice: bool = True) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, accuracy (at ``threshold``), AUC (threshold-free) and,
    optionally, clDice, all inside the FOV; plus the confusion counts."""
    c = confusion(prob, gt, fov, threshold)
    out: dict[str, float] = {**_from_counts(c), "auc": auc_roc(prob, gt, fov)}
    if with_cldice:
        out["cldice"] = cldice(prob, gt, fov, threshold)
    return {**out, **c}
