"""Dice against compute from one run: the warm-up-stable-decay schedule, budgets branched off a run (each the
model a separate run of that budget ends with, the main run untouched), and the benchmark's curve, plateau and
cost outputs. Tiny models, seconds on a CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny

import retinasynth.segmenter.model as seg_model
from retinasynth.bench import benchmark_downstream
from retinasynth.bench.report import arm_plateaus
from retinasynth.data import DataConfig, load_dataset
from retinasynth.errors import ConfigError
from retinasynth.segmenter import train_segmenter
from retinasynth.segmenter.model import lr_factor, wsd_decay_start

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_wsd_schedule_is_stable_then_decays_over_the_last_fifth():
    cfg = tiny("lr_schedule=wsd", "steps=1000")
    f = lr_factor(cfg)
    assert f(0) == pytest.approx(1 / 50) and f(49) == 1.0 and f(799) == 1.0
    assert wsd_decay_start(1000) == 800 and f(800) < 1.0 and f(999) == pytest.approx(0.01)
    # a shorter budget shares warm-up and stable phase, and decays over its own last fifth
    g = lr_factor(cfg, budget=500)
    assert [g(s) for s in range(400)] == [f(s) for s in range(400)]
    assert g(499) == pytest.approx(0.01) and f(499) == 1.0
    # cosine keeps its shape: 3% warm-up, then cosine to 1%
    c = lr_factor(tiny("steps=1000"))
    assert c(29) == 1.0 and c(999) == pytest.approx(0.01, abs=1e-4)


def test_a_branch_is_the_shorter_run_and_leaves_the_main_run_untouched(real_root, monkeypatch):
    monkeypatch.setattr(seg_model, "WSD_WARMUP", 4)  # both budgets warm up 4 steps (>= 10 x 4 steps each)
    real = load_dataset(real_root, "train", DataConfig(size=64)).samples
    dev = torch.device("cpu")
    cfg = tiny("lr_schedule=wsd", "steps=80")
    seen = {}

    def keep(b, model, log):
        seen[b] = ({k: v.clone() for k, v in model.state_dict().items()}, log, model.training)

    main, log = train_segmenter(cfg, real, [], "real", 0, dev, branches=(40,), on_branch=keep)
    plain, _ = train_segmenter(cfg, real, [], "real", 0, dev)
    short, _ = train_segmenter(tiny("lr_schedule=wsd", "steps=40"), real, [], "real", 0, dev)
    for k, v in plain.state_dict().items():
        assert torch.equal(main.state_dict()[k], v), k
    weights, blog, training = seen[40]
    assert not training and blog["steps"] == 40 and blog["decay_steps"] == 8
    for k, v in short.state_dict().items():
        assert torch.equal(weights[k], v), k
    assert log["branches"][0]["steps"] == 40
    assert any(not torch.equal(weights[k], v) for k, v in plain.state_dict().items())


def test_curve_needs_wsd_and_fractions():
    with pytest.raises(ConfigError, match="lr_schedule=wsd"):
        tiny("curve=0.5")
    with pytest.raises(ConfigError, match="fractions in"):
        tiny("lr_schedule=wsd", "curve=0.5,1.5")
    with pytest.raises(ConfigError, match="lr_schedule=wsd"):
        train_segmenter(tiny("steps=4"), [object()], [], "real", 0, torch.device("cpu"), branches=(2,))
    assert tiny("lr_schedule=wsd", "curve=0.25,0.5").curve == (0.25, 0.5)


def test_benchmark_scores_every_budget_and_reports_dice_against_steps(tmp_path, real_root, synth_dir):
    cfg = tiny("lr_schedule=wsd", "curve=0.5", "steps=4", "arms=real,pretrain")
    out = tmp_path / "o"
    res = benchmark_downstream(real_root, synth_dir, out, cfg, progress=False)
    real = next(r for r in res["runs"] if r["arm"] == "real")
    assert [p["total_steps"] for p in real["curve"]] == [2, 4]
    assert (out / real["branches"][0]["model"]).is_file()
    pre = next(r for r in res["runs"] if r["arm"] == "pretrain")
    assert [p["total_steps"] for p in pre["curve"]] == [6, 8]  # 4 pretraining steps + fine-tune of 2, 4
    rows = [r for r in res["curves"] if r["eval"] == "test"]
    assert {(r["arm"], r["steps"]) for r in rows} == {("real", 2), ("real", 4), ("pretrain", 6), ("pretrain", 8)}
    plats = {p["arm"]: p for p in res["arm_plateaus"] if p["eval"] == "test"}
    assert plats["real"]["half_steps"] == 2 and plats["pretrain"]["half_steps"] == 6
    d = {r["steps"]: r["dice_mean"] for r in rows}
    assert plats["real"]["last_doubling"] == pytest.approx(d[4] - d[2])
    cost = {c["arm"]: c for c in res["cost"]}
    assert cost["pretrain"]["pretrain_steps"] == 4 and cost["real"]["steps"] == 4
    assert (out / "dice_vs_steps.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Dice against compute" in report and "dice_vs_steps.png" in report
    # rerun: every model and every budget's score comes from the cache
    again = benchmark_downstream(real_root, synth_dir, out, cfg, progress=False)
    assert again["n_trained"] == 0 and again["curves"] == res["curves"]
    # a deleted branch model whose scores are cached is not needed: nothing is retrained (records suffice)
    (out / real["branches"][0]["model"]).unlink()
    kept = benchmark_downstream(real_root, synth_dir, out, cfg, progress=False)
    assert kept["n_trained"] == 0 and kept["curves"] == res["curves"]
    # ... but without weights and without one of its scores, the cell is retrained
    for f in (out / "scores" / real["branches"][0]["train_key"][:20]).glob("*.json"):
        f.unlink()
    third = benchmark_downstream(real_root, synth_dir, out, cfg, progress=False)
    assert third["n_trained"] == 1 and third["curves"] == res["curves"]
    json.dumps(third)


def test_arm_plateaus_reads_the_last_doubling():
    rows = [{"eval": "val", "arm": "real", "regime": 15, "steps": s, "run_steps": s, "dice_mean": d}
            for s, d in ((800, 0.70), (1600, 0.80), (3200, 0.803))]
    rows += [{"eval": "val", "arm": "pretrain", "regime": 15, "steps": 3200 + s, "run_steps": s, "dice_mean": d}
             for s, d in ((1600, 0.78), (3200, 0.80))]
    p = {r["arm"]: r for r in arm_plateaus(rows)}
    assert p["real"]["half_steps"] == 1600 and p["real"]["at_plateau"]
    assert p["real"]["last_doubling"] == pytest.approx(0.003)
    assert p["pretrain"]["half_steps"] == 4800 and not p["pretrain"]["at_plateau"]


def test_real_is_read_off_real_2x_branch_bitwise_as_its_own_run(tmp_path, real_root, monkeypatch):
    """With curve 0.5, 'real' is the branch of 'real-2x' at its steps: one run trained instead of two, and the
    scores are exactly those of a separate 'real' run (same keys, same numbers)."""
    monkeypatch.setattr(seg_model, "WSD_WARMUP", 1)  # both budgets warm up 1 step, as 50 steps do at scale
    cfg = tiny("lr_schedule=wsd", "steps=10", "curve=[0.25,0.5]", "arms=real,real-2x")
    both = benchmark_downstream(real_root, None, tmp_path / "both", cfg, progress=False)
    assert both["n_trained"] == 1 and both["n_read_off"] == 1
    runs = {r["arm"]: r for r in both["runs"]}
    assert runs["real"]["read_off"]["run"] == "real-2x_n2_s0" and runs["real"]["total_steps"] == 10
    alone = benchmark_downstream(real_root, None, tmp_path / "alone", tiny("lr_schedule=wsd", "steps=10",
                                                                          "curve=[0.25,0.5]", "arms=real"),
                                 progress=False)
    own = alone["runs"][0]
    assert own["train_key"] == runs["real"]["train_key"] and "read_off" not in own
    assert own["scores"]["test"]["per_image"] == runs["real"]["scores"]["test"]["per_image"]
    # its curve: the source's branches below its steps (5 of 20), then itself
    assert [p["total_steps"] for p in runs["real"]["curve"]] == [5, 10]
    assert [p["total_steps"] for p in runs["real-2x"]["curve"]] == [5, 10, 20]
    assert "read off a longer run's branch" in (tmp_path / "both" / "report.md").read_text()
    # rerun: everything cached, nothing trained or read off again
    again = benchmark_downstream(real_root, None, tmp_path / "both", cfg, progress=False)
    assert again["n_trained"] == 0 and again["n_read_off"] == 0 and again["summary"] == both["summary"]


def test_a_stop_file_does_not_stop_a_free_read_off(tmp_path, real_root, monkeypatch):
    """OUT/STOP stops before a model would be trained, not before one read off a branch already trained: asked
    to stop while the last model to train trains, the benchmark still reads 'real' off and finishes."""
    import retinasynth.bench.runner as runner_mod

    monkeypatch.setattr(seg_model, "WSD_WARMUP", 1)
    out, trained = tmp_path / "out", []
    real_train = runner_mod.train_segmenter

    def train_then_stop(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        trained.append(desc)
        if len(trained) == 2:
            (out / "STOP").touch()
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(runner_mod, "train_segmenter", train_then_stop)
    res = benchmark_downstream(real_root, None, out, tiny("lr_schedule=wsd", "steps=10", "curve=[0.5]",
                                                          "arms=real,real-2x,real+aug"), progress=False)
    assert trained == ["real-2x_n2_s0", "real+aug_n2_s0"] and (out / "STOP").exists()
    assert res["n_trained"] == 2 and res["n_read_off"] == 1 and (out / "results.json").exists()
