"""Downstream benchmark on tiny in-code datasets: arms, subsets, determinism, leakage guards, resume,
outputs and the CLI. Each test takes seconds on a CPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny, write_synth  # noqa: F401 - shared with test_bench_cache.py

import retinasynth.bench.runner as bench_mod
from retinasynth.bench import benchmark_downstream, build_bench_config
from retinasynth.bench.arms import get_arm
from retinasynth.bench.guards import LeakageError
from retinasynth.bench.plan import Environment, pretrain_key, train_key
from retinasynth.data import DataConfig, load_dataset
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.segmenter import train_segmenter
from retinasynth.segmenter.sampling import PatchSampler, draw_batch, real_subset

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------- config


def test_profiles_build_and_validate():
    for p in ("cpu", "gpu", "tiny"):
        cfg = build_bench_config(p)
        assert cfg.profile == p and cfg.encoder_weights is None
    cpu = build_bench_config("cpu")
    assert cpu.arms == ("real", "real+synth", "synth", "pretrain", "real-2x") and cpu.regimes == (2, 5, 20) and cpu.seeds == (0, 1, 2)
    quick = build_bench_config(None, str(Path(__file__).resolve().parents[1] / "benchmarks/configs/bench-quick.json"))
    assert quick.arms == ("real", "real+synth", "synth") and quick.profile == "quick" and cpu.preprocess == "green_clahe"
    cfg = build_bench_config("tiny", None, ["bench.arms=real,synth", "steps=3", "regimes=[1]"])
    assert cfg.arms == ("real", "synth") and cfg.steps == 3 and cfg.regimes == (1,)


@pytest.mark.parametrize("override,match", [
    ("arch=Unett", "valid \\(smp\\): unet"),
    ("encoder=resnet19", "resnet18"),
    ("patch=36", "multiple of 2\\*\\*encoder_depth"),
    ("arms=real,fake", "bench.arms"),
    ("synth_ratio=1.0", "synth_ratio"),
    ("encoder_weights=imagenet", "never downloads"),
    ("nope=1", "unknown config key"),
    ("other.steps=1", "unknown config section"),
])
def test_invalid_config_names_key(override, match):
    with pytest.raises(ConfigError, match=match):
        build_bench_config("tiny", None, [override])


# ---------------------------------------------------------------- sampling and determinism


def test_subsets_deterministic_and_shared(real_root):
    train = load_dataset(real_root, "train", DataConfig(size=64)).samples
    a = [s.id for s in real_subset(train, 2, seed=0)]
    assert a == [s.id for s in real_subset(list(reversed(train)), 2, seed=0)]  # order of the split is irrelevant
    assert len(set(a)) == 2
    subsets = {tuple(s.id for s in real_subset(train, 2, seed)) for seed in range(6)}
    assert len(subsets) > 1  # the seed matters
    with pytest.raises(ConfigError, match="regime n=9"):
        real_subset(train, 9, 0)


def test_batches_pure_function_of_seed_and_step(real_root, synth_dir):
    real = load_dataset(real_root, "train", DataConfig(size=64)).samples
    synth = load_dataset(synth_dir, "all", DataConfig(size=64)).samples
    sampler = PatchSampler(32, 64, 0.5)
    x1, y1, k1 = draw_batch(real, synth, "real+synth", 0.5, 4, seed=3, step=7, sampler=sampler)
    x2, y2, k2 = draw_batch(real, synth, "real+synth", 0.5, 4, seed=3, step=7, sampler=PatchSampler(32, 64, 0.5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and k1 == k2
    assert x1.shape == (4, 3, 32, 32) and y1.shape == (4, 1, 32, 32)
    assert draw_batch(real, synth, "real", 0.5, 4, 3, 7, sampler)[2] == 0
    assert draw_batch(real, synth, "synth", 0.5, 4, 3, 7, sampler)[2] == 4
    shares = [draw_batch(real, synth, "real+synth", 0.5, 8, 0, s, sampler)[2] for s in range(10)]
    assert 0 < sum(shares) < 80


def test_training_is_deterministic_on_cpu(real_root, synth_dir):
    real = load_dataset(real_root, "train", DataConfig(size=64)).samples
    synth = load_dataset(synth_dir, "all", DataConfig(size=64)).samples
    cfg = tiny("steps=2")
    m1, log1 = train_segmenter(cfg, real, synth, "real+synth", 0, torch.device("cpu"))
    m2, log2 = train_segmenter(cfg, real, synth, "real+synth", 0, torch.device("cpu"))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert log1["loss_curve"] == log2["loss_curve"]


def test_channels_last_is_a_keyed_setting_that_trains_saves_and_reloads_in_nhwc(tmp_path, real_root):
    """channels_last (the default) changes kernels, not maths: the same seed trains nearly the same model in
    either memory order; the order is part of the cache key, and a reloaded model keeps it."""
    from retinasynth.segmenter import load_segmenter, save_segmenter
    from retinasynth.segmenter.model import predict_prob

    real = load_dataset(real_root, "train", DataConfig(size=64)).samples
    nhwc, nchw = tiny("steps=2"), tiny("steps=2", "channels_last=false")
    assert nhwc.channels_last is True
    m1, log1 = train_segmenter(nhwc, real, [], "real", 0, torch.device("cpu"))
    m2, log2 = train_segmenter(nchw, real, [], "real", 0, torch.device("cpu"))
    conv = next(p for p in m1.parameters() if p.ndim == 4 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert abs(log1["final_loss"] - log2["final_loss"]) < 1e-2  # fp32 rounding, amplified by two Adam steps
    save_segmenter(tmp_path / "m.safetensors", m1, nhwc)
    m3, cfg3 = load_segmenter(tmp_path / "m.safetensors")
    assert cfg3.channels_last is True
    assert next(p for p in m3.parameters() if p.ndim == 4 and p.shape[-1] > 1).is_contiguous(
        memory_format=torch.channels_last)
    img = real[0].image
    np.testing.assert_allclose(predict_prob(m1, img, torch.device("cpu"), nhwc.multiple),
                               predict_prob(m3, img, torch.device("cpu"), nhwc.multiple), atol=1e-6)
    env = Environment(precision="fp32", device_type="cpu", versions={})
    key = train_key(nhwc, get_arm("real"), 2, 0, "subset", "", env)
    assert key != train_key(nchw, get_arm("real"), 2, 0, "subset", "", env)
    with pytest.raises(ConfigError, match="bench.channels_last must be true"):
        tiny("channels_last=3")


# ---------------------------------------------------------------- the benchmark


def test_one_step_per_arm_outputs_and_resume(tmp_path, real_root, synth_dir, monkeypatch):
    out = tmp_path / "out"
    res = benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    assert res["n_trained"] == 3 and res["synth"]["verified"] is True
    for arm in ("real", "real+synth", "synth"):
        rec = json.loads((out / "runs" / f"{arm}_n2_s0.json").read_text())
        assert rec["status"] == "complete" and len(rec["train_key"]) == 64
        per_image = next(r for r in res["runs"] if r["arm"] == arm)["scores"]["test"]["per_image"]
        assert sorted(per_image) == ["test-im0", "test-im1"]
        assert 0.0 <= per_image["test-im0"]["dice"] <= 1.0
    runs = {r["arm"]: r for r in res["runs"]}
    assert runs["real"]["real_ids"] == runs["real+synth"]["real_ids"] and len(runs["real"]["real_ids"]) == 2
    assert runs["synth"]["real_ids"] == []
    # outputs exist and parse
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["versions"]["torch"] and len(results["runs"]) == 3
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["arm"] for r in rows} == {"real", "real+synth", "synth"} and "dice_mean" in rows[0]
    report = (out / "report.md").read_text()
    assert "real+synth - real" in report and "Wilcoxon" in report and "Verdict" in report
    for p in results["paired"]:  # the report states each comparison's own verdict
        if p["metric"] == "dice":
            lo, hi = p["ci95"]
            assert f"[{lo:+.4f}, {hi:+.4f}] — {p['verdict']}" in report
    assert (out / "dice_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun trains nothing
    def boom(*a, **k):
        raise AssertionError("train_segmenter must not be called for cached runs")

    monkeypatch.setattr(bench_mod, "train_segmenter", boom)
    again = benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    assert again["n_trained"] == 0 and again["n_cached"] == 3
    assert again["summary"] == res["summary"]
    # a changed setting invalidates the cache
    with pytest.raises(AssertionError, match="must not be called"):
        benchmark_downstream(real_root, synth_dir, out, tiny("lr=0.01"), progress=False)


def test_synth_arm_trained_once_across_regimes(tmp_path, real_root, synth_dir):
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o", tiny("arms=real,synth", "regimes=[1,2]"),
                               progress=False)
    assert res["n_trained"] == 3 and res["n_reused"] == 1  # real n1, real n2, synth once
    synth_runs = [r for r in res["runs"] if r["arm"] == "synth"]
    assert synth_runs[0]["scores"] == synth_runs[1]["scores"] and synth_runs[1]["reused_from"] == "synth_n1_s0"
    assert (tmp_path / "o" / "runs" / "synth_n2_s0.json").is_file()


def test_real_arm_without_synth_and_external_test_set(tmp_path, real_root, make_fundus, save_image):
    ext = tmp_path / "ext"
    for i in range(2):
        image, mask, _ = make_fundus(48, 56, seed=300 + i, n_vessels=3, thickness=2)
        save_image(ext / "images" / f"e{i}.png", image)
        save_image(ext / "masks" / f"e{i}.png", mask)
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"), test_data=ext, progress=False)
    assert res["synth"] is None and res["data"]["eval"]["ext"]["split"] == "all"
    rec = res["runs"][0]["scores"]
    assert set(rec) == {"test", "ext"} and len(rec["ext"]["per_image"]) == 2
    with pytest.raises(ConfigError, match="--synth"):
        benchmark_downstream(real_root, None, tmp_path / "o2", tiny(), progress=False)


def test_native_resolution_scoring(tmp_path, make_fundus, save_image):
    """Test images of 80x72 are scored at 80x72 although the working resolution is 64."""
    root = tmp_path / "r"
    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            image, mask, _ = make_fundus(72, 80, seed=i + (10 if split == "test" else 0), n_vessels=4, thickness=2)
            save_image(root / split / "images" / f"a{i}.png", image)
            save_image(root / split / "masks" / f"a{i}.png", mask)
    res = benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real"), progress=False)
    s = res["runs"][0]["scores"]["test"]["per_image"]["test-a0"]
    native = load_dataset(root, "test", DataConfig(size=None)).samples[0]
    assert s["tp"] + s["fp"] + s["fn"] + s["tn"] == int(native.fov.sum())
    assert native.image.shape[:2] == (72, 80)


# ---------------------------------------------------------------- leakage guards


def _refused(real_root, synth, tmp_path, match):
    with pytest.raises(LeakageError, match=match):
        benchmark_downstream(real_root, synth, tmp_path / "o", tiny(), progress=False)


def test_refuses_manifest_with_test_split(tmp_path, real_root, make_fundus, save_image):
    def edit(lines):
        lines[1]["source_split"] = "test"

    synth = write_synth(tmp_path / "s", real_root, make_fundus, save_image, manifest_edit=edit)
    _refused(real_root, synth, tmp_path, r"manifest\.jsonl:2: pair 's1' has source_split 'test'")


def test_refuses_manifest_with_test_mask_id(tmp_path, real_root, make_fundus, save_image):
    def edit(lines):
        lines[2]["source_mask_id"] = "test-im1"
        lines[2]["source_split"] = None

    synth = write_synth(tmp_path / "s", real_root, make_fundus, save_image, manifest_edit=edit)
    _refused(real_root, synth, tmp_path, r"manifest\.jsonl:3: .*mask 'test-im1'.*evaluated test split")


def test_recomputes_fingerprints_when_absent(tmp_path, real_root, make_fundus, save_image):
    def clean(run_data):
        del run_data["sample_fingerprints"]

    synth = write_synth(tmp_path / "s", real_root, make_fundus, save_image, run_edit=clean)
    res = benchmark_downstream(real_root, synth, tmp_path / "o", tiny("arms=real,synth"), progress=False)
    assert res["synth"]["verified"] and res["synth"]["fingerprints_recomputed"]

    def dirty(run_data):
        del run_data["sample_fingerprints"]
        run_data["train_ids"].append("test-im0")

    synth = write_synth(tmp_path / "s2", real_root, make_fundus, save_image, run_edit=dirty)
    _refused(real_root, synth, tmp_path, r"trained on 1 image\(s\) of the evaluated test split .*test-im0")


def test_refuses_unverified_folder_unless_allowed(tmp_path, real_root, synth_dir):
    (synth_dir / "manifest.jsonl").unlink()
    with pytest.raises(RetinaSynthError, match="not a retinasynth synthetic set.*--allow-unverified-synth"):
        benchmark_downstream(real_root, synth_dir, tmp_path / "o", tiny(), progress=False)
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        res = benchmark_downstream(real_root, synth_dir, tmp_path / "o", tiny("arms=real,synth"), progress=False,
                                   allow_unverified_synth=True)
    assert res["synth"]["verified"] is False and "UNVERIFIED" in res["warnings"][0]
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert "UNVERIFIED" in saved["warnings"][0]
    assert "UNVERIFIED" in (tmp_path / "o" / "report.md").read_text()


# ---------------------------------------------------------------- CLI


def test_cli_runs_and_reports_errors(tmp_path, real_root, synth_dir):
    from retinasynth_cli.bench import benchmark_downstream as cmd

    runner = CliRunner()
    args = ["--data", str(real_root), "--synth", str(synth_dir), "--out", str(tmp_path / "o"), "--profile", "tiny",
            "-o", "bench.steps=1", "-o", "bench.regimes=[2]", "-o", "bench.seeds=[0]", "--quiet"]
    r = runner.invoke(cmd, args)
    assert r.exit_code == 0, r.output
    assert "| real+synth |" in r.output and "report.md" in r.output
    r = runner.invoke(cmd, [*args[:-1], "-o", "bench.arch=nope", "--quiet"])
    assert r.exit_code == 2 and "unknown bench.arch" in r.output
    assert np.isfinite(json.loads((tmp_path / "o" / "results.json").read_text())["wall_s"])


def test_comma_separated_overrides_parse_numbers_and_names():
    cfg = build_bench_config("cpu", overrides=["regimes=2,5", "seeds=0", "arms=real,real+synth"])
    assert cfg.regimes == (2, 5) and cfg.seeds == (0,) and cfg.arms == ("real", "real+synth")


# ---------------------------------------------------------------- data-bound protocol (issue 9)


def test_pretrain_arm_fine_tunes_the_cached_synth_model(tmp_path, real_root, synth_dir, monkeypatch):
    calls = []
    real_train = bench_mod.train_segmenter

    def spy(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        calls.append((arm, len(real), len(synth), init is not None))
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(bench_mod, "train_segmenter", spy)
    out = tmp_path / "o"
    res = benchmark_downstream(real_root, synth_dir, out, tiny("arms=pretrain,real", "regimes=[1,2]", "steps=2"),
                               progress=False)
    # real n1, pretraining (once), fine-tune n1, real n2, fine-tune n2 (pretraining loaded from OUT/models)
    assert calls == [("real", 1, 0, False), ("synth", 0, 3, False), ("real", 1, 0, True), ("real", 2, 0, False),
                     ("real", 2, 0, True)]
    pre = {r["regime"]: r for r in res["runs"] if r["arm"] == "pretrain"}
    assert pre[1]["pretrain_reused"] is False and pre[2]["pretrain_reused"] is True
    assert pre[1]["pretrained_from"] == pre[2]["pretrained_from"] and (out / pre[1]["pretrained_from"]).is_file()
    assert pre[1]["total_steps"] == 4 and res["arm_steps"] == {"pretrain": 4, "real": 2}
    assert "pretrain: 4 (synthetic pretraining + real fine-tune)" in (out / "report.md").read_text()
    assert any(p["comparison"] == "pretrain - real" for p in res["paired"])
    # a run with the synth arm trains the pretraining itself, and pretrain reuses it: 1 synth + 1 fine-tune
    calls.clear()
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o2", tiny("arms=pretrain,synth", "steps=2"),
                               progress=False)
    assert calls == [("synth", 0, 3, False), ("real", 2, 0, True)]
    assert [r["arm"] for r in res["runs"]] == ["synth", "pretrain"]


def test_finetune_lr_changes_only_the_pretrain_fine_tune(tmp_path, real_root, synth_dir, monkeypatch):
    base, ft = tiny("steps=2"), tiny("steps=2", "finetune_lr=1e-4")
    env = Environment("fp32", "cpu")
    args = (1, 0, "subset", "synth", env)
    # every other arm's key and the pretraining's key ignore it; cells recorded before it existed stay valid
    for arm in ("real", "real+synth", "synth", "real-2x"):
        assert train_key(base, get_arm(arm), *args) == train_key(ft, get_arm(arm), *args)
    assert train_key(base, get_arm("pretrain"), *args) != train_key(ft, get_arm("pretrain"), *args)
    assert pretrain_key(base, 0, "synth", env) == pretrain_key(ft, 0, "synth", env)
    lrs = []
    real_train = bench_mod.train_segmenter

    def spy(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        lrs.append((arm, init is not None, cfg.lr))
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(bench_mod, "train_segmenter", spy)
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o", tiny("arms=synth,pretrain", "regimes=[1]",
                                                                          "steps=2", "finetune_lr=1e-4"),
                               progress=False)
    assert lrs == [("synth", False, base.lr), ("real", True, 1e-4)]
    assert res["runs"][1]["finetune_lr"] == 1e-4
    with pytest.raises(ConfigError, match="bench.finetune_lr must be null or > 0"):
        tiny("finetune_lr=0")


def test_pretrain_mix_pretrains_per_regime_on_real_and_synthetic_patches(tmp_path, real_root, synth_dir,
                                                                         monkeypatch):
    calls = []
    real_train = bench_mod.train_segmenter

    def spy(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        calls.append((arm, len(real), len(synth), init is not None, cfg.synth_ratio))
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(bench_mod, "train_segmenter", spy)
    cfg = tiny("arms=synth,pretrain", "regimes=[1,2]", "steps=2", "pretrain_mix=0.25")
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o", cfg, progress=False)
    # the synth arm once; then per regime a pretraining on 75% synthetic / 25% real patches, and its fine-tune
    assert calls == [("synth", 0, 3, False, 0.5), ("real+synth", 1, 3, False, 0.75), ("real", 1, 0, True, 0.5),
                     ("real+synth", 2, 3, False, 0.75), ("real", 2, 0, True, 0.5)]
    pre = [r for r in res["runs"] if r["arm"] == "pretrain"]
    assert [r["pretrain_mix"] for r in pre] == [0.25, 0.25] and pre[0]["pretrained_from"] != pre[1]["pretrained_from"]
    assert res["arm_steps"]["pretrain"] == 4  # same steps as before: real-2x stays its compute-matched control
    args = (1, 0, "subset", "synth", Environment("fp32", "cpu"))
    for arm in ("real", "synth", "real+synth"):
        assert train_key(tiny(), get_arm(arm), *args) == train_key(tiny("pretrain_mix=0.25"), get_arm(arm), *args)
    assert train_key(tiny(), get_arm("pretrain"), *args) != train_key(tiny("pretrain_mix=0.25"), get_arm("pretrain"),
                                                                      *args)
    with pytest.raises(ConfigError, match=r"bench.pretrain_mix must be in \[0, 1\)"):
        tiny("pretrain_mix=1")


def test_pretraining_equals_synth_arm_bit_for_bit(tmp_path, real_root, synth_dir):
    """The pretrain arm fine-tunes exactly the synth arm's model: same result whether the pretraining was
    trained in this run or loaded from the cache."""
    a = benchmark_downstream(real_root, synth_dir, tmp_path / "a", tiny("arms=synth,pretrain", "steps=2"),
                             progress=False)
    b = benchmark_downstream(real_root, synth_dir, tmp_path / "b", tiny("arms=pretrain", "steps=2"), progress=False)
    pa = next(r for r in a["runs"] if r["arm"] == "pretrain")["scores"]
    assert pa == b["runs"][0]["scores"]


def test_validation_mode_never_loads_the_test_split(tmp_path, make_fundus, save_image, monkeypatch):
    root = tmp_path / "r"
    for split, n in (("train", 5), ("test", 2)):
        for i in range(n):
            image, mask, _ = make_fundus(64, 64, seed=i + 40 * (split == "test"), n_vessels=4, thickness=2)
            save_image(root / split / "images" / f"v{i}.png", image)
            save_image(root / split / "masks" / f"v{i}.png", mask)
    import retinasynth.data.dataset as ds_mod

    opened = []
    real_read = ds_mod.read_image

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_read(path, *a, **k)

    monkeypatch.setattr(ds_mod, "read_image", spy)
    res = benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real", "eval=val", "val_count=2",
                                                                 "regimes=1,3"), progress=False)
    assert opened and not any("/test/" in p for p in opened)
    val = res["data"]["real"]["val_ids"]
    assert len(val) == 2 and set(val) <= {f"train-v{i}" for i in range(5)}
    assert res["data"]["eval"]["val"]["ids"] == val and res["data"]["real"]["n_train"] == 3
    for r in res["runs"]:
        assert not set(r["real_ids"]) & set(val)
        assert sorted(r["scores"]["val"]["per_image"]) == val
    assert "Validation mode" in (tmp_path / "o" / "report.md").read_text()
    # the held-out ids are a fixed function of the ids and val_seed
    again = benchmark_downstream(root, None, tmp_path / "o2", tiny("arms=real", "eval=val", "val_count=2",
                                                                    "regimes=[1]"), progress=False)
    assert again["data"]["real"]["val_ids"] == val
    with pytest.raises(ConfigError, match=r"exceed the 3 training images left after holding out 2"):
        benchmark_downstream(root, None, tmp_path / "o3", tiny("arms=real", "eval=val", "val_count=2",
                                                                "regimes=[4]"), progress=False)
    # an external set beside eval=val is an external *validation* set (e.g. STARE): scored, while the real
    # dataset's test split is still never decoded
    from conftest import write_external

    ext = write_external(tmp_path / "ext")
    opened.clear()
    res = benchmark_downstream(root, None, tmp_path / "o4", tiny("arms=real", "eval=val", "val_count=2",
                                                                  "regimes=[1]"), test_data=f"ext={ext}",
                               progress=False)
    assert not any("/real/test/" in p or p.startswith(str(root / "test")) for p in opened)
    assert {ev for r in res["runs"] for ev in r["scores"]} == {"val", "ext"}


# The statistics' unit tests (bootstrap, paired, families, Holm) are in tests/test_bench_stats.py.


def test_sliding_window_matches_whole_image_for_a_pointwise_model():
    from retinasynth.segmenter import predict_prob

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 1).eval()
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    whole = predict_prob(model, image, torch.device("cpu"), 1)
    tiled = predict_prob(model, image, torch.device("cpu"), 1, tile=32, overlap=0.5)
    assert tiled.shape == (70, 90) and np.allclose(tiled, whole, atol=1e-6)
    small = predict_prob(model, image[:20, :20], torch.device("cpu"), 1, tile=32)  # padded up to one tile
    assert np.allclose(small, whole[:20, :20], atol=1e-6)


def test_plateau_check_and_preprocessing(tmp_path, real_root):
    from retinasynth.data.preprocess import enhance

    img = load_dataset(real_root, "train", DataConfig(size=64)).samples[0].image
    g = enhance(img, "green_clahe")
    assert g.shape == img.shape and np.array_equal(g[..., 0], g[..., 2])
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real", "plateau=1", "preprocess=green_clahe",
                                                                     "infer_tile=32"), progress=False)
    pl = res["plateau"]
    assert pl["regime"] == 2 and pl["steps"] == 2 and pl["seeds"] == [0]
    assert res["plateau_runs"][0]["name"] == "real-2x_n2_s0" and res["plateau_runs"][0]["train"]["steps"] == 2
    assert {p["metric"] for p in pl["paired"]} >= {"dice"}
    assert "Plateau check" in (tmp_path / "o" / "report.md").read_text()
    assert res["runs"][0]["train"]["steps"] == 1


def test_real_2x_arm_is_the_compute_matched_control_and_the_plateau_run(tmp_path, real_root, synth_dir):
    """real-2x trains on the real subset with twice the steps (pretrain's total); pretrain is compared with it;
    its cell at the largest regime doubles as the plateau run, so no extra cell is trained; and a plateau
    run cached by a benchmark without the arm is picked up by one with it (the same hash)."""
    base = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real", "plateau=1", "steps=1"),
                                progress=False)
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o",
                               tiny("arms=real,pretrain,real-2x", "plateau=1", "steps=1"), progress=False)
    assert res["arm_steps"] == {"real": 1, "pretrain": 2, "real-2x": 2}
    twice = next(r for r in res["runs"] if r["arm"] == "real-2x")
    assert twice["total_steps"] == 2 and twice["train"]["steps"] == 2 and twice["real_ids"]
    assert twice["scores"] == base["plateau_runs"][0]["scores"]
    assert res["n_trained"] == 1 and res["n_cached"] == 2  # the pretrain cell; real and real-2x came from the cache
    assert [r["name"] for r in res["plateau_runs"]] == ["real-2x_n2_s0"] and res["plateau"]["paired"]
    comps = {p["comparison"] for p in res["paired"] if p["metric"] == "dice"}
    assert comps == {"pretrain - real", "real-2x - real", "pretrain - real-2x"}
    report = (tmp_path / "o" / "report.md").read_text()
    assert "real-2x: 2 (real only: the compute-matched control of pretrain)" in report
    assert "pretrain - real-2x" in report


def test_cli_prints_plateau_and_learning_curve(tmp_path, real_root):
    from retinasynth_cli.bench import benchmark_downstream as cmd

    r = CliRunner().invoke(cmd, ["--data", str(real_root), "--out", str(tmp_path / "o"), "--profile", "tiny",
                                 "-o", "steps=1", "-o", "arms=real", "-o", "seeds=[0]", "-o", "plateau=1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "plateau check, test: real 2x steps - real (n=2): ΔDice" in r.output and "real 1" in r.output
    assert "| real n=2 - real n=1 | 2 vs 1 | Dice |" in r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    lc = next(p for p in res["paired"] if p["metric"] == "dice" and p["arm"] == p["base"] == "real")
    # one seed, one step: the learning-curve CI is whatever it is, and the warning follows it exactly
    assert ("compute-bound" in r.output) == (lc["ci95"][0] <= 0)
