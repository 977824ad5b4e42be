"""The benchmark's paired statistics: the crossed bootstrap, the primary family and its multiplicity adjustment.

Design. Every seed's model is scored on the same test images, so seeds and images are *crossed* (not nested):
an image that is hard for one seed is hard for all of them. A resample therefore draws seeds with replacement
and ONE set of images with replacement, shared by every drawn seed (:func:`crossed_bootstrap`). Drawing the
images anew inside each seed (the nested scheme) averages the image effect over the seeds and makes the
interval about ``sqrt(n_seeds)`` too narrow when images dominate the variance.

Families. On each evaluation set the *primary* family is the Dice comparison of every arm that has a
compute-matched control (``Arm.control`` in :mod:`retinasynth.bench.arms`) against that control, in every
regime. Their intervals are Bonferroni-adjusted (level ``1 - 0.05 / k``, k = the family's size on that set)
and their verdicts come from the adjusted interval; their Wilcoxon p-values are Holm-adjusted over the same
family. Every other comparison (other metrics, an arm against a base that is not its control, the learning
curve) is *exploratory*: an unadjusted 95% interval, reported as such.
"""

from __future__ import annotations

import numpy as np

from retinasynth.bench.arms import ABOVE, ARMS, BELOW, INCLUDES
from retinasynth.metrics.seg import METRICS

ALPHA = 0.05
PAIRED_METRICS = ("dice", "auc", "cldice")  # the metrics compared; Dice carries the verdicts
PRIMARY_METRIC = "dice"
PRIMARY, EXPLORATORY, PROTOCOL = "primary", "exploratory", "protocol check"


def metrics_of(runs: list[dict]) -> list[str]:
    have = set()
    for r in runs:
        for ev in r["scores"].values():
            have |= set(ev["mean"])
    return [m for m in METRICS if m in have]


def eval_names(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        names += [n for n in r["scores"] if n not in names]
    return names


# ---------------------------------------------------------------- the bootstrap


def ci_method(n_seeds: int) -> str:
    """How the interval of a seeds x images table with ``n_seeds`` rows was computed (the report prints it)."""
    if n_seeds <= 1:
        return "image bootstrap (one seed: images only)"
    return "crossed bootstrap (seeds and images resampled; one image draw shared by the drawn seeds)"


def _finite_columns(d: np.ndarray) -> np.ndarray:
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    return d[:, np.all(np.isfinite(d), axis=0)]


def crossed_bootstrap_samples(d: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``d`` (seeds x images) under the crossed design.

    Each replicate draws ``n_seeds`` seed indices with replacement and ONE draw of ``n_images`` image
    indices with replacement, shared by all drawn seeds; the replicate is the mean of ``d[si][:, ii]``.
    Computed from the draw counts (``c_s^T d c_i / (n_seeds n_images)``), so memory is
    O(n_boot * (n_seeds + n_images)), never n_boot x seeds x images. Images with a non-finite value in any
    seed are left out first (as :func:`paired` does); an empty table gives NaNs. Seeded: the same
    ``(d.shape, n_boot, seed)`` draws the same indices.
    """
    d = _finite_columns(d)
    s, n = d.shape
    if s == 0 or n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    si = rng.integers(0, s, size=(n_boot, s))
    ii = rng.integers(0, n, size=(n_boot, n))
    rows = np.arange(n_boot)[:, None]
    cs = np.bincount((si + rows * s).ravel(), minlength=n_boot * s).reshape(n_boot, s).astype(np.float64)
    ci = np.bincount((ii + rows * n).ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    return np.einsum("bi,bi->b", cs @ d, ci) / (s * n)


def percentile_ci(samples: np.ndarray, level: float = 1 - ALPHA) -> tuple[float, float]:
    """The equal-tailed percentile interval of bootstrap replicates at ``level``."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0 or not np.all(np.isfinite(samples)):
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def crossed_bootstrap(d: np.ndarray, n_boot: int, seed: int = 0, level: float = 1 - ALPHA) -> tuple[float, float]:
    """Percentile CI at ``level`` of the mean of ``d`` (seeds x images) from the crossed bootstrap.

    Seeds and test images are crossed: every seed is scored on the same images. A resample draws the seeds
    with replacement and one set of images with replacement, shared by every drawn seed, so the interval
    counts the seed-to-seed variance of training and the variance over test images once each
    (``var(image effect) / n_images + var(seed effect) / n_seeds``). With one seed it is the image
    bootstrap (label it with :func:`ci_method`). See :func:`crossed_bootstrap_samples`.
    """
    return percentile_ci(crossed_bootstrap_samples(d, n_boot, seed), level)


def verdict(lo: float, hi: float) -> str:
    """Where the interval lies against zero: ABOVE, BELOW or INCLUDES (:mod:`retinasynth.bench.arms`)."""
    if lo > 0:
        return ABOVE
    if hi < 0:
        return BELOW
    return INCLUDES


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, out, running = len(idx), list(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bonferroni_level(k: int, alpha: float = ALPHA) -> float:
    """The per-comparison confidence level that keeps the family-wise error of ``k`` intervals at ``alpha``."""
    return 1.0 - alpha / max(int(k), 1)


def _wilcoxon(d: np.ndarray) -> tuple[float | None, str]:
    from scipy.stats import wilcoxon

    if not np.any(d != 0):
        return None, "all differences are zero"
    try:
        return float(wilcoxon(d).pvalue), f"two-sided, n={d.size}"
    except ValueError as e:
        return None, str(e)


# ---------------------------------------------------------------- paired comparisons


def _by_seed(runs: list[dict], ev: str, arm: str, n: int) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["arm"] == arm and r["regime"] == n and ev in r["scores"]}


def _diff_table(runs, ev, arm, base, n, metric, base_regime, runs_base) -> tuple[list, np.ndarray] | None:
    """(seeds, d): per-image differences arm - base, seeds x images, finite images only; None if empty."""
    a = _by_seed(runs, ev, arm, n)
    b = _by_seed(runs if runs_base is None else runs_base, ev, base, base_regime)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    ids = sorted(set.intersection(*[set(a[s]["scores"][ev]["per_image"]) & set(b[s]["scores"][ev]["per_image"])
                                    for s in seeds]))

    def table(by_seed):
        return np.array([[by_seed[s]["scores"][ev]["per_image"][i].get(metric, np.nan) for i in ids]
                         for s in seeds], dtype=np.float64).reshape(len(seeds), len(ids))

    d = _finite_columns(table(a) - table(b))
    return (seeds, d) if d.size else None


def _comparison_name(arm: str, base: str, n: int, base_regime: int) -> str:
    if base_regime == n:
        return f"{arm} - {base}"
    return f"{base} n={n} - {base} n={base_regime}" if arm == base else f"{arm} n={n} - {base} n={base_regime}"


def paired(runs: list[dict], ev: str, arm: str, base: str, n: int, metric: str, n_boot: int,
           seed: int = 0, base_regime: int | None = None, runs_base: list[dict] | None = None, *,
           family: str = EXPLORATORY, adj_level: float | None = None, family_size: int | None = None,
           note: str | None = None) -> dict | None:
    """Paired difference ``arm (n) - base (base_regime, default n)`` on the images of one eval set.

    Pairs are the seeds both sides completed and the images both scored; images whose score is not finite
    in any pair (e.g. AUC of an image without vessels) are left out. The mean difference gets a crossed
    bootstrap percentile 95% CI (``ci95``; ``n_boot`` seeded resamples of seeds and of images, the image
    draw shared by the drawn seeds); the per-seed mean differences are listed; a Wilcoxon signed-rank test
    (scipy, two-sided) runs on the per-image differences averaged over seeds. With ``adj_level`` (a member
    of the primary family) the same resamples also give ``ci_adj`` at that level, and ``verdict`` follows
    it; otherwise ``verdict`` follows ``ci95``.
    """
    base_regime = n if base_regime is None else base_regime
    got = _diff_table(runs, ev, arm, base, n, metric, base_regime, runs_base)
    if got is None:
        return None
    seeds, d = got
    boot = crossed_bootstrap_samples(d, n_boot, seed)
    lo, hi = percentile_ci(boot, 1 - ALPHA)
    out = {"eval": ev, "comparison": _comparison_name(arm, base, n, base_regime),
           "arm": arm, "base": base, "regime": n, "base_regime": base_regime, "metric": metric,
           "seeds": seeds, "n_images": int(d.shape[1]), "mean_diff": float(d.mean()), "ci95": [lo, hi],
           "ci_method": ci_method(len(seeds)), "per_seed_diff": [float(v) for v in d.mean(axis=1)],
           "n_bootstrap": n_boot, "family": family, "verdict": verdict(lo, hi)}
    if adj_level is not None:
        alo, ahi = percentile_ci(boot, adj_level)
        out.update({"ci_adj": [alo, ahi], "ci_adj_level": adj_level, "family_size": family_size,
                    "verdict": verdict(alo, ahi), "verdict_unadjusted": verdict(lo, hi)})
    if note:
        out["note"] = note
    out["wilcoxon_p"], out["wilcoxon_note"] = _wilcoxon(d.mean(axis=0))
    return out


def is_learning_curve(p: dict) -> bool:
    return p["arm"] == "real" and p["base"] == "real" and p["regime"] != p["base_regime"]


def comparisons(arms) -> list[tuple[str, str, str, str | None]]:
    """The registry's comparisons among ``arms``: (arm, base, family of its Dice comparison, note).

    An arm is compared with each arm of its ``Arm.compare`` that is present; the comparison with its
    ``control`` is primary. If its control is absent it is compared with 'real' instead (when present), as
    an exploratory comparison with a note that it is not compute-matched. Unknown arm names are skipped.
    """
    out: list[tuple[str, str, str, str | None]] = []
    present = [a for a in arms if a in ARMS]
    for name in present:
        arm = ARMS[name]
        missing = arm.control is not None and arm.control not in present
        note = f"control {arm.control} not run: not compute-matched" if missing else None
        bases = [b for b in arm.compare if b in present and b != name]
        if missing and "real" in present and "real" not in bases and name != "real":
            bases.append("real")
        for base in bases:
            fam = PRIMARY if base == arm.control else EXPLORATORY
            out.append((name, base, fam, note if base == "real" and missing else None))
    return out


def paired_all(runs: list[dict], arms, regimes, n_boot: int, alpha: float = ALPHA) -> list[dict]:
    """Every registry comparison (:func:`comparisons`) among the arms present in ``runs``, in every regime,
    plus the learning curve 'real n=max - real n=min', for Dice, AUC and clDice.

    Per eval set, the primary family is the Dice comparison of each arm with its compute-matched control in
    every regime; its k members get a Bonferroni-adjusted interval at level ``1 - alpha / k`` (``ci_adj``,
    ``ci_adj_level``, ``family_size``), a verdict from that interval and Holm-adjusted Wilcoxon p-values
    over the family (``wilcoxon_p_holm``). Everything else is ``family: "exploratory"`` with its unadjusted
    95% interval and verdict. Primary entries come first on each eval set.
    """
    have = {r["arm"] for r in runs}
    arms = [a for a in arms if a in have]
    metrics = [m for m in PAIRED_METRICS if m in metrics_of(runs)]
    regimes = sorted(set(regimes))
    specs = []  # (arm, base, n, base_regime, metric, family, note)
    for arm, base, fam, note in comparisons(arms):
        for n in regimes:
            for m in metrics:
                specs.append((arm, base, n, n, m, fam if m == PRIMARY_METRIC else EXPLORATORY, note))
    if "real" in arms and len(regimes) > 1:
        specs += [("real", "real", regimes[-1], regimes[0], m, EXPLORATORY, None) for m in metrics]
    out = []
    for ev in eval_names(runs):
        k = sum(1 for s in specs if s[5] == PRIMARY
                and _diff_table(runs, ev, s[0], s[1], s[2], s[4], s[3], None) is not None)
        these = []
        for arm, base, n, bn, m, fam, note in specs:
            p = paired(runs, ev, arm, base, n, m, n_boot, base_regime=bn, family=fam, note=note,
                       adj_level=bonferroni_level(k, alpha) if fam == PRIMARY else None,
                       family_size=k if fam == PRIMARY else None)
            if p is not None:
                these.append(p)
        primary = [p for p in these if p["family"] == PRIMARY]
        for p, adj in zip(primary, holm([p.get("wilcoxon_p") for p in primary])):
            p["wilcoxon_p_holm"] = adj
        out += primary + [p for p in these if p["family"] != PRIMARY]
    return out


def family_sizes(pairs: list[dict]) -> dict[str, int]:
    """Per eval set, the size of the primary family (0 where it has none)."""
    out: dict[str, int] = {}
    for p in pairs:
        out.setdefault(p["eval"], 0)
        out[p["eval"]] += p.get("family") == PRIMARY
    return out


def learning_curve_warnings(pairs: list[dict]) -> list[str]:
    """A plain warning for each eval set whose learning curve (real n=max - real n=min Dice) is not
    clearly above zero: such a protocol is compute-bound and cannot show a benefit from more data."""
    out = []
    for p in pairs:
        if is_learning_curve(p) and p["metric"] == "dice" and p["ci95"][0] <= 0:
            lo, hi = p["ci95"]
            out.append(f"{p['eval']}: real n={p['regime']} - real n={p['base_regime']} ΔDice {p['mean_diff']:+.4f}, "
                       f"95% CI [{lo:+.4f}, {hi:+.4f}] includes zero or lies below it: the protocol is "
                       "compute-bound and cannot show a benefit from extra data of any kind (more real images "
                       "do not help it either).")
    return out


def plateau_summary(runs: list[dict], plateau_runs: list[dict], n: int, n_boot: int) -> dict:
    """The plateau check (a protocol check, not a verdict on an arm): 'real' at the largest regime trained
    with twice the steps, minus the same runs at the protocol's steps (same seeds and subsets). A small
    difference means the 'real' arm is trained to convergence, so arms with more steps are not ahead by
    compute alone. ``one_seed`` is True when it rests on a single seed (its interval then covers images only).
    """
    seeds = sorted(r["seed"] for r in plateau_runs)
    out: dict = {"regime": n, "seeds": seeds, "one_seed": len(seeds) == 1,
                 "steps": plateau_runs[0]["train"]["steps"] if plateau_runs and "train" in plateau_runs[0] else None,
                 "paired": []}
    twice = [{**r, "arm": "real-2x"} for r in plateau_runs]
    for ev in eval_names(plateau_runs):
        for m in [m for m in PAIRED_METRICS if m in metrics_of(plateau_runs)]:
            p = paired(twice, ev, "real-2x", "real", n, m, n_boot, runs_base=runs, family=PROTOCOL)
            if p is not None:
                p["comparison"] = f"real 2x steps - real (n={n})"
                out["paired"].append(p)
    return out
