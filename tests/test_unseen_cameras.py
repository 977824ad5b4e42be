"""Unseen cameras (issue 19): part of an external set scored (the rest kept for ``synthesize --style``), the
``pretrain+aug`` arm against its control ``real+aug``, and the fit profiles (issue 20: the fidelity options
by default, the old default reachable by name). Tiny in-code datasets; seconds each."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny, write_external

import retinasynth.bench.runner as runner_mod
from retinasynth.bench import benchmark_downstream
from retinasynth.bench.evalsets import parse_test_data
from retinasynth.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_test_data_names_a_split(tmp_path):
    ext = write_external(tmp_path / "ext", n=4)
    assert parse_test_data([f"clinic:train={ext}", f"all={ext}"]) == {"clinic": (ext, "train"), "all": (ext, None)}
    with pytest.raises(ConfigError, match=r"unknown split 'val'; valid: test, train, all"):
        parse_test_data([f"clinic:val={ext}"])


def test_a_named_split_scores_only_its_images(tmp_path, real_root):
    from retinasynth.data.dataset import DataConfig, index_dataset

    ext = write_external(tmp_path / "ext", n=4)
    _, _, records = index_dataset(ext, DataConfig(size=None))
    by_split = {s: sorted(r.id for r in records if r.split == s) for s in ("train", "test")}
    assert by_split["train"] and by_split["test"]  # a seeded split of the 4 images
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"),
                               test_data=[f"part:train={ext}", f"whole={ext}"], progress=False)
    assert res["data"]["eval"]["part"]["split"] == "train" and res["data"]["eval"]["whole"]["split"] == "all"
    scores = res["runs"][0]["scores"]
    assert sorted(scores["part"]["per_image"]) == by_split["train"]
    assert sorted(scores["whole"]["per_image"]) == sorted(by_split["train"] + by_split["test"])


def test_pretrain_aug_fine_tunes_the_shared_pretraining_with_camera_augmentation(tmp_path, real_root, synth_dir,
                                                                                monkeypatch):
    seen = []
    real_train = runner_mod.train_segmenter

    def spy(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        seen.append((desc, arm, cfg.steps, cfg.augment, init is not None))
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(runner_mod, "train_segmenter", spy)
    res = benchmark_downstream(real_root, synth_dir, tmp_path / "o",
                               tiny("arms=real,real-2x,real+aug,synth,pretrain,pretrain+aug"), progress=False)
    # one synthetic pretraining per seed, shared by both fine-tuned arms; pretrain+aug fine-tunes with 'camera'
    assert [s[0] for s in seen].count("synth_n2_s0") == 1 and not any("(pretrain)" in s[0] for s in seen)
    assert ("pretrain+aug_n2_s0", "real", 1, "camera", True) in seen
    assert ("pretrain_n2_s0", "real", 1, "strong", True) in seen
    runs = {r["arm"]: r for r in res["runs"]}
    assert runs["pretrain+aug"]["pretrained_from"] == runs["pretrain"]["pretrained_from"]
    primary = {(p["arm"], p["base"]) for p in res["paired"] if p.get("family") == "primary"}
    assert ("pretrain+aug", "real+aug") in primary and ("pretrain", "real-2x") in primary
    compared = {(p["arm"], p["base"]) for p in res["paired"]}
    assert {("pretrain+aug", b) for b in ("real", "real-2x", "real+aug", "pretrain")} <= compared
    labelled = {(row["arm"], row["regime"]): row for row in res["labelled"]}
    assert labelled[("pretrain+aug", 2)] == {**labelled[("pretrain", 2)], "arm": "pretrain+aug"}


def _recorded(name):
    from retinasynth.train.config import build_fit_config

    return build_fit_config(None, str(Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / f"fit-{name}.json"))


def test_fit_profiles_new_default_and_the_retired_ones_from_their_recorded_configs():
    from retinasynth.train.config import build_fit_config

    default, old = build_fit_config("cpu"), _recorded("cpu-v1")
    assert old.profile == "cpu-v1" and old.train.precision == "fp32"  # the recorded name, the precision it ran at
    new = _recorded("cpu-v5")  # the default until 2026-12-01 afternoon: the default without the disc plane
    assert default.model.disc_prior and not new.model.disc_prior and default.model.in_channels == 5
    assert replace(default.model, disc_prior=False) == new.model and default.train == new.train
    assert (new.model.upsample, new.model.discriminator, new.model.d_scales, new.train.vessel_l1,
            new.train.consistency, new.train.feature_matching, new.train.steps) == \
        ("resize", "multiscale", 2, 4.0, 1.0, 10.0, 3900)
    v4 = _recorded("cpu-v4")  # the default of 2026-12-01, kept reachable: the same without texture terms
    assert replace(new.train, consistency=0.0, feature_matching=0.0) == v4.train
    assert replace(new.model, discriminator="patchgan") == v4.model
    v3 = _recorded("cpu-v3")  # the evening default, kept reachable: only the steps differ from cpu-v4
    assert v3.train.steps == 3000 and replace(v3.train, steps=3900) == v4.train and v3.model == v4.model
    v2 = _recorded("cpu-v2")  # the afternoon default, kept reachable: only the consistency weight differs
    assert v2.train.consistency == 10.0 and replace(v2.train, consistency=0.0) == v3.train and v2.model == v4.model
    assert new.train.steps > old.train.steps == 2500
    # the old default, exactly as runs made with it recorded it (RESULTS.md section 1)
    assert (old.model.upsample, old.model.ngf, old.model.ndf, old.train.crop, old.train.vessel_l1,
            old.train.consistency, old.data.size) == ("transpose", 48, 48, 256, 0.0, 0.0, 512)
    assert new.model.ngf == old.model.ngf and new.data == old.data
