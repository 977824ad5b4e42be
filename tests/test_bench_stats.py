"""The benchmark's statistics (retinasynth.bench.stats) and how report.py renders them; no training here."""

from __future__ import annotations

import numpy as np
import pytest

from retinasynth.bench.arms import ABOVE, BELOW, INCLUDES
from retinasynth.bench.stats import (
    EXPLORATORY,
    PRIMARY,
    bonferroni_level,
    ci_method,
    crossed_bootstrap,
    crossed_bootstrap_samples,
    family_sizes,
    holm,
    learning_curve_warnings,
    paired,
    paired_all,
    plateau_summary,
    verdict,
)


def _fake_runs(table: dict, ev: str = "test", metric: str = "dice") -> list[dict]:
    """Run records from {(arm, regime, seed): [per-image values of ``metric``]}."""
    runs = []
    for (arm, n, seed), values in table.items():
        per = {f"im{i:02d}": {metric: float(v)} for i, v in enumerate(values)}
        runs.append({"arm": arm, "regime": n, "seed": seed,
                     "scores": {ev: {"mean": {metric: float(np.nanmean(values))}, "per_image": per}}})
    return runs


def _nested_samples(d: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """The old two-level scheme (images drawn anew within each drawn seed): wrong for a crossed design."""
    s, n = d.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, s, size=(n_boot, s))
    ii = rng.integers(0, n, size=(n_boot, s, n))
    return d[si[:, :, None], ii].mean(axis=(1, 2))


def _crossed(n_images=20, a_sd=0.03, b=(-0.006, 0.0, 0.006), noise=0.001, seed=0):
    """d[s, i] = mu + a_i + b_s + e_si: strong image effects shared by every seed, and the analytic SD of the
    crossed bootstrap's mean, sqrt(var(a) / n_images + var(b) / n_seeds) (plug-in variances, ddof=0)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.0, a_sd, n_images), np.asarray(b, dtype=np.float64)
    d = 0.01 + a[None, :] + b[:, None] + rng.normal(0.0, noise, (b.size, n_images))
    return d, float(np.sqrt(a.var() / n_images + b.var() / b.size))


# ---------------------------------------------------------------- the crossed bootstrap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossed_bootstrap_width_matches_the_crossed_design(seed):
    """Known answer: the bootstrap SD of the mean is sqrt(var(a)/n_images + var(b)/n_seeds), and the 95% CI
    is about 2 x 1.96 of it wide; the old nested scheme is too narrow (it averages the image effect over the
    seeds), so this test fails for it."""
    d, sd = _crossed(seed=seed)
    boot = crossed_bootstrap_samples(d, 2000, seed=seed)
    assert boot.std() / sd == pytest.approx(1.0, abs=0.08)
    lo, hi = crossed_bootstrap(d, 2000, seed=seed)
    assert lo < d.mean() < hi
    assert (hi - lo) / (2 * 1.96 * sd) == pytest.approx(1.0, abs=0.1)
    # the old nested scheme on the same table: clearly too narrow, outside the tolerance above
    nested = _nested_samples(d, 2000, seed)
    assert nested.std() / sd < 0.8
    nlo, nhi = np.percentile(nested, [2.5, 97.5])
    assert (nhi - nlo) / (2 * 1.96 * sd) < 0.85


def test_nested_scheme_is_too_narrow_by_sqrt_n_seeds_when_images_dominate():
    d, sd = _crossed(b=(0.0, 0.0, 0.0), seed=4)  # image effects only (plus small noise)
    crossed = crossed_bootstrap_samples(d, 2000, seed=4).std()
    nested = _nested_samples(d, 2000, 4).std()
    assert crossed / sd == pytest.approx(1.0, abs=0.08)
    assert nested / crossed == pytest.approx(1 / np.sqrt(3), abs=0.07)


def test_crossed_bootstrap_seed_variance_level_and_determinism():
    d = np.array([[0.01] * 20, [0.02] * 20, [0.03] * 20])
    # images carry no variance, seeds do: the CI spans the seeds' range (P(all three draws = 0.01) = 1/27 > 2.5%)
    assert crossed_bootstrap(d, 2000) == pytest.approx((0.01, 0.03), abs=1e-12)
    assert crossed_bootstrap(np.full((3, 5), 0.004), 500) == pytest.approx((0.004, 0.004), abs=1e-12)
    x, _ = _crossed(seed=7)
    assert crossed_bootstrap(x, 700, seed=3) == crossed_bootstrap(x, 700, seed=3)
    assert crossed_bootstrap(x, 700, seed=3) != crossed_bootstrap(x, 700, seed=4)
    lo95, hi95 = crossed_bootstrap(x, 2000, level=0.95)
    lo99, hi99 = crossed_bootstrap(x, 2000, level=bonferroni_level(6))
    assert lo99 < lo95 < hi95 < hi99
    # memory: counts, not an n_boot x seeds x images array
    big = np.random.default_rng(0).normal(size=(3, 400))
    assert crossed_bootstrap_samples(big, 20000).shape == (20000,)


def test_one_seed_is_an_image_bootstrap_and_says_so():
    # 2 images of +-1: the mean of 2 draws is in {-1, 0, 1}
    assert crossed_bootstrap(np.array([[-1.0, 1.0]]), 4000) == (-1.0, 1.0)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, 30)
    assert crossed_bootstrap_samples(a[None, :], 3000).std() / np.sqrt(a.var() / 30) == pytest.approx(1, abs=0.08)
    assert ci_method(1) == "image bootstrap (one seed: images only)"
    assert ci_method(3).startswith("crossed bootstrap")
    runs = _fake_runs({("real", 2, 0): [0.7, 0.8, 0.75], ("real+synth", 2, 0): [0.71, 0.82, 0.74]})
    p = paired(runs, "test", "real+synth", "real", 2, "dice", 500)
    assert p["ci_method"] == "image bootstrap (one seed: images only)" and p["seeds"] == [0]


def test_nan_images_are_left_out():
    d = np.array([[0.1, np.nan, 0.3], [0.1, 0.2, 0.3]])
    assert crossed_bootstrap(d, 500) == crossed_bootstrap(d[:, [0, 2]], 500)
    assert all(np.isnan(crossed_bootstrap(np.full((2, 2), np.nan), 100)))
    # AUC of an image without vessels is NaN: that image drops out of the pair, for every seed
    table = {(arm, 2, s): [0.9 + 0.01 * j, np.nan if (arm, s) == ("real", 1) else 0.8, 0.7] for s in range(3)
             for j, arm in enumerate(("real", "real+synth"))}
    p = paired(_fake_runs(table, metric="auc"), "test", "real+synth", "real", 2, "auc", 300)
    assert p["n_images"] == 2 and p["mean_diff"] == pytest.approx(0.005)


# ---------------------------------------------------------------- paired comparisons, families


def test_paired_learning_curve_wilcoxon_and_warning():
    from scipy.stats import wilcoxon

    base = [0.70, 0.72, 0.74, 0.76, 0.78]
    table = {("real", 2, s): base for s in range(3)}
    table.update({("real", 20, s): [b + g for b, g in zip(base, (0.01, 0.02, 0.03, 0.04, 0.05))] for s in range(3)})
    runs = _fake_runs(table)
    p = paired(runs, "test", "real", "real", 20, "dice", 1000, base_regime=2)
    assert p["mean_diff"] == pytest.approx(0.03) and p["per_seed_diff"] == pytest.approx([0.03] * 3)
    assert p["wilcoxon_p"] == pytest.approx(0.0625) == pytest.approx(wilcoxon([0.01, 0.02, 0.03, 0.04, 0.05]).pvalue)
    assert p["comparison"] == "real n=20 - real n=2" and p["verdict"] == ABOVE and p["family"] == EXPLORATORY
    pairs = paired_all(runs, ("real",), (2, 20), 1000)
    lc = [q for q in pairs if q["arm"] == q["base"] == "real"]
    assert {(q["regime"], q["base_regime"], q["metric"]) for q in lc} == {(20, 2, "dice")}
    assert learning_curve_warnings(pairs) == [] and family_sizes(pairs) == {"test": 0}
    # a flat learning curve: per-seed gains of opposite sign -> CI includes zero -> the warning
    flat = _fake_runs({**table, **{("real", 20, s): [b + d for b in base] for s, d in enumerate((-0.02, 0.0, 0.02))}})
    w = learning_curve_warnings(paired_all(flat, ("real",), (2, 20), 1000))
    assert len(w) == 1 and "compute-bound and cannot show a benefit from extra data of any kind" in w[0]


def test_holm_adjustment_and_verdicts():
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert [verdict(0.001, 0.02), verdict(-0.03, -0.001), verdict(-0.01, 0.01), verdict(0.0, 0.01)] == \
        [ABOVE, BELOW, INCLUDES, INCLUDES]
    assert bonferroni_level(1) == 0.95 and bonferroni_level(4) == pytest.approx(0.9875)


def _arm_runs(arms_gain: dict, regimes=(2, 20), seeds=(0, 1, 2), n_images=20, ev="test"):
    """Dice per image for each arm: real's image effects plus the arm's gain (per regime) and seed noise."""
    rng = np.random.default_rng(0)
    img = rng.normal(0.78, 0.03, n_images)
    table = {}
    for arm, gain in arms_gain.items():
        for n in regimes:
            for s in seeds:
                g = gain(n) if callable(gain) else gain
                table[(arm, n, s)] = img + g + 0.001 * n + rng.normal(0, 0.002, n_images)
    return _fake_runs(table, ev)


def test_primary_family_is_each_arm_against_its_control():
    gains = {"real": 0.0, "real+synth": -0.02, "synth": -0.12, "pretrain": 0.012, "real-2x": 0.01}
    arms, regimes = tuple(gains), (2, 20)
    pairs = paired_all(_arm_runs(gains), arms, regimes, 500)
    dice = [p for p in pairs if p["metric"] == "dice"]
    prim = [p for p in dice if p["family"] == PRIMARY]
    assert {(p["arm"], p["base"]) for p in prim} == {("real+synth", "real"), ("synth", "real"),
                                                       ("pretrain", "real-2x")}
    assert len(prim) == 6 and family_sizes(pairs) == {"test": 6}
    assert pairs[:6] == prim  # primary first
    for p in prim:
        assert p["family_size"] == 6 and p["ci_adj_level"] == pytest.approx(1 - 0.05 / 6)
        assert p["ci_adj"][0] <= p["ci95"][0] and p["ci95"][1] <= p["ci_adj"][1]
        assert p["verdict"] == verdict(*p["ci_adj"]) and "wilcoxon_p_holm" in p
    expl = {(p["comparison"]) for p in dice if p["family"] == EXPLORATORY}
    assert expl == {"pretrain - real", "real-2x - real", "real n=20 - real n=2"}
    assert all("ci_adj" not in p and "wilcoxon_p_holm" not in p for p in pairs if p["family"] == EXPLORATORY)
    assert all(p["family"] == EXPLORATORY for p in pairs if p["metric"] != "dice")
    # Holm over the primary family only
    assert [p["wilcoxon_p_holm"] for p in prim] == pytest.approx(holm([p["wilcoxon_p"] for p in prim]))


def test_missing_control_compares_with_real_as_exploratory():
    gains = {"real": 0.0, "pretrain": 0.01}
    pairs = paired_all(_arm_runs(gains), ("real", "pretrain", "real-2x"), (2, 20), 300)  # real-2x never ran
    pre = [p for p in pairs if p["arm"] == "pretrain"]
    assert pre and all(p["base"] == "real" and p["family"] == EXPLORATORY for p in pre)
    assert all(p["note"] == "control real-2x not run: not compute-matched" for p in pre)
    assert family_sizes(pairs) == {"test": 0}


def test_adjusted_ci_decides_the_verdict_and_the_report_claims_no_benefit():
    """A gain whose 95% CI clears zero but whose Bonferroni CI does not gets 'includes zero', and the report
    prints no benefit sentence for it; the compute-mismatched comparison gets the compute-matched wording."""
    from retinasynth.bench.arms import ARMS
    from retinasynth.bench.report import paired_table, report_markdown, verdict_lines

    rng = np.random.default_rng(3)
    n, img = 20, rng.normal(0.78, 0.03, 20)
    table = {}
    for s in range(3):
        table[("real", 2, s)] = img
        table[("real-2x", 2, s)] = img + 0.004
        table[("synth", 2, s)] = img + rng.normal(0.0, 0.01, n) - 0.05
        table[("pretrain", 2, s)] = img + rng.normal(0.0, 0.01, n) + 0.006  # above real, below real-2x + noise
    arms = ("real", "real+synth", "synth", "pretrain", "real-2x")
    found = None
    for seed in range(40):  # a table whose 95% CI is above zero and adjusted CI is not
        for s in range(3):
            table[("real+synth", 2, s)] = img + np.random.default_rng(100 + seed * 3 + s).normal(0, 0.01, n) + 0.0045
        runs = _fake_runs(table)
        pairs = paired_all(runs, arms, (2,), 1000)
        p = next(q for q in pairs if q["comparison"] == "real+synth - real" and q["metric"] == "dice")
        if p["ci95"][0] > 0 >= p["ci_adj"][0]:
            found = p
            break
    assert found is not None
    assert found["verdict"] == INCLUDES and found["verdict_unadjusted"] == ABOVE
    lines = "\n".join(verdict_lines(pairs, "test"))
    assert ARMS["real+synth"].meaning[ABOVE] not in lines
    assert "pretrain trains twice the steps of real; its verdict is read against real-2x" in lines
    pre = next(q for q in pairs if q["comparison"] == "pretrain - real" and q["metric"] == "dice")
    assert pre["verdict"] == ABOVE and pre["family"] == EXPLORATORY  # a gain over real, but not compute-matched
    ctl = next(q for q in pairs if q["comparison"] == "pretrain - real-2x" and q["metric"] == "dice")
    assert ctl["family"] == PRIMARY and ctl["verdict"] != ABOVE
    assert ARMS["pretrain"].meaning[ABOVE] not in lines
    pt = paired_table(pairs, "test")
    assert "| real+synth - real | 2 | Dice | primary |" in pt and "(98.33%)" in pt  # k = 3: 1 - 0.05/3
    res = {"config": {"arms": list(arms), "bootstrap": 1000, "arch": "Unet", "encoder": "r18"}, "runs": runs,
           "summary": [], "paired": pairs}
    md = report_markdown(res)  # no provenance/labelled/data: rendered without them
    assert "## How to read" in md and ARMS["pretrain"].label in md and "Provenance" not in md
    assert "(test: k=3)" in md and "k = 3 Dice comparisons" in md


def test_report_renders_provenance_labelled_fingerprint_every_eval_set_and_one_seed_plateau():
    from retinasynth.bench.report import report_markdown, summarize

    runs = _arm_runs({"real": 0.0, "real+synth": -0.01}, regimes=(2,), ev="test")
    runs += _arm_runs({"real": 0.0, "real+synth": -0.01}, regimes=(2,), ev="stare")
    merged: dict = {}
    for r in runs:  # one run record scored on both eval sets
        merged.setdefault((r["arm"], r["regime"], r["seed"]), {**r, "scores": {}})["scores"].update(r["scores"])
    runs = list(merged.values())
    plateau_runs = [{**r, "arm": "real", "train": {"steps": 2}, "scores": {
        ev: {"mean": {"dice": s["mean"]["dice"] + 0.001},
             "per_image": {i: {"dice": v["dice"] + 0.001} for i, v in s["per_image"].items()}}
        for ev, s in r["scores"].items()}} for r in runs if r["arm"] == "real" and r["seed"] == 0]
    arms = ("real", "real+synth")
    res = {"config": {"arms": list(arms), "bootstrap": 300}, "runs": runs,
           "summary": summarize(runs, arms, (2,)), "paired": paired_all(runs, arms, (2,), 300),
           "plateau": plateau_summary(runs, plateau_runs, 2, 300),
           "synth": {"synth_dir": "runs/synth", "n": 10, "verified": True, "fingerprint": "ab12cd"},
           "data": {"real": {"root": "data/DRIVE", "layout": "drive", "n_train": 20, "n_test": 20},
                    "eval": {"test": {"root": "data/DRIVE", "split": "test", "n": 20},
                             "stare": {"root": "data/STARE", "split": "test", "n": 20}}},
           "provenance": {"command": "retinasynth bench-downstream --profile cpu", "git_revision": "deadbeef",
                          "code": {"retinasynth/bench/stats.py": "0123"}, "precision": "fp32",
                          "device_type": "cuda", "versions": {"torch": "2.4.0"}},
           "labelled": [{"arm": "real", "regime": 2, "real_images": 2, "generator_images": None},
                        {"arm": "real+synth", "regime": 2, "real_images": 2, "generator_images": 20}]}
    assert res["plateau"]["one_seed"] and res["plateau"]["paired"][0]["ci_method"].startswith("image bootstrap")
    md = report_markdown(res)
    assert "## test: `data/DRIVE`" in md and "## stare: `data/STARE`" in md
    assert "fingerprint `ab12cd`" in md and "deadbeef" in md and "`retinasynth/bench/stats.py`: `0123`" in md
    assert "| real+synth | 2 | 2 | 20 | 22 |" in md and "| real | 2 | 2 | — | 2 |" in md
    assert "Plateau check (protocol check, one seed)" in md and "**One seed**" in md
