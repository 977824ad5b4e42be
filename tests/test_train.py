"""Pix2Pix core: networks, losses, config validation, the training loop, run directories, resume,
image metrics and the `fit` / `evaluate` commands. Tiny models, a few steps, seeded, on CPU.

One tiny run (4 steps on six 64x64 phantoms) is trained once per module and shared.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_FIT
from safetensors.torch import load_file
from torch import nn

from retinasynth.data.dataset import load_dataset
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.metrics.image import notebook_scores, sound_scores
from retinasynth.models.factory import ModelConfig, create_discriminator, create_generator
from retinasynth.models.losses import GANLoss, reconstruction_l1
from retinasynth.models.networks import PatchDiscriminator, UnetGenerator, init_weights, up_layer
from retinasynth.precision import describe, fit_channels_last, resolve_precision
from retinasynth.provenance import sha256_file
from retinasynth.rundir import load_generator
from retinasynth.synth.phantom import write_phantom_dataset
from retinasynth.train import checkpoint as ck
from retinasynth.train.config import build_fit_config
from retinasynth.train.fit import fit

# threads=1: a long job shares this machine's two cores; one thread is both faster and steadier here.
TINY = ["train.steps=4", "train.ckpt_every=2", "train.sample_every=2", "train.log_every=1", "train.threads=1"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_cfg(*extra: str):
    return build_fit_config("tiny", overrides=[*TINY, *extra])






def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# ----------------------------------------------------------------------------------------- networks


def test_generator_forward_backward_shapes():
    torch.manual_seed(0)
    g = init_weights(UnetGenerator(in_channels=4, out_channels=3, ngf=4, depth=6))
    x = torch.randn(2, 4, 64, 64)
    y = g(x)
    assert y.shape == (2, 3, 64, 64)
    assert y.abs().max() <= 1.0  # tanh output
    y.mean().backward()
    grads = [p.grad for p in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert g.model.model[0].weight.grad.abs().sum() > 0  # the gradient reaches the first layer


def test_discriminator_forward_backward_shapes():
    torch.manual_seed(0)
    d = init_weights(PatchDiscriminator(in_channels=7, ndf=4, n_layers=3))
    x = torch.randn(2, 7, 64, 64)
    y = d(x)
    # 64 -> 32 -> 16 -> 8 (stride 2), -> 7 (stride 1), -> 6 (final 4x4 conv): 6x6 patch logits
    assert y.shape == (2, 1, 6, 6)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_factory_builds_from_model_config():
    cfg = ModelConfig(ngf=4, ndf=4, n_layers=2)
    g, d = create_generator(cfg, depth=6), create_discriminator(cfg)
    assert cfg.in_channels == 4 and g.depth == 6
    fake = g(torch.zeros(1, 4, 64, 64))
    assert d(torch.cat([torch.zeros(1, 4, 64, 64), fake], 1)).shape == (1, 1, 14, 14)
    assert ModelConfig(coords=False).in_channels == 2


def test_generator_rejects_size_not_multiple_of_2_pow_depth():
    g = UnetGenerator(in_channels=4, ngf=4, depth=6)
    with pytest.raises(ConfigError, match=r"multiples of 64 \(e\.g\. 64, 128, 256\); got 96x96"):
        g(torch.zeros(1, 4, 96, 96))


def test_resize_upsampling_has_no_transposed_convolution_and_same_shapes():
    torch.manual_seed(0)
    g = init_weights(UnetGenerator(in_channels=4, ngf=4, depth=6, upsample="resize"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, nn.Upsample) for m in g.modules()) == 6  # one per level
    y = g(torch.randn(2, 4, 64, 64))
    assert y.shape == (2, 3, 64, 64)
    y.mean().backward()
    assert g.model.model[0].weight.grad.abs().sum() > 0
    # On a constant input a random-weight layer gives a constant interior with resize-convolution; the
    # transposed convolution gives a period-2 pattern (each output parity uses other kernel taps).
    torch.manual_seed(0)
    x = torch.ones(1, 8, 8, 8)
    with torch.no_grad():
        resize, plain = up_layer("resize", 8, 4, True)(x), up_layer("transpose", 8, 4, True)(x)
    assert resize.shape == plain.shape == (1, 4, 16, 16)
    assert float(resize[..., 2:-2, 2:-2].std(dim=(-1, -2)).max()) < 1e-6
    assert float((plain[..., 2:-2:2, 2:-2] - plain[..., 3:-2:2, 2:-2]).abs().mean()) > 1e-3
    with pytest.raises(ConfigError, match="unknown model.upsample 'bilinear'; valid: transpose, resize"):
        build_fit_config("tiny", overrides=["model.upsample=bilinear"])


@pytest.mark.parametrize("profile, overrides, key", [
    ("tiny", ["train.steps=0"], "train.steps"),
    ("tiny", ["model.norm=foo"], "model.norm"),
    ("tiny", ["train.gan_loss=bar"], "train.gan_loss"),
    ("tiny", ["data.size=128", "train.crop=100"], "train.crop"),  # depth auto: needs a power of two
    ("tiny", ["train.crop=100"], "train.crop"),  # larger than data.size 64
    ("tiny", ["train.stepz=3"], "train.stepz"),
    ("tiny", ["model.depth=4"], "model.depth"),
    ("tiny", ["train.lr=0"], "train.lr"),
    ("nope", [], "profile 'nope'"),
])
def test_invalid_config_names_the_key(profile, overrides, key):
    with pytest.raises(ConfigError) as e:
        build_fit_config(profile, overrides=overrides)
    assert key in str(e.value)


def test_crop_must_be_multiple_of_explicit_depth():
    with pytest.raises(ConfigError, match=r"valid sizes: 64, 128, 256"):
        build_fit_config("tiny", overrides=["data.size=96", "model.depth=6"])


def test_override_needs_key_value():
    with pytest.raises(ConfigError, match="section.key=value"):
        build_fit_config("tiny", overrides=["train.steps"])


# --------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("kind, logits, real, for_disc, expected", [
    # vanilla: BCE with logits; mean(softplus(-x)) for real, mean(softplus(x)) for fake
    ("vanilla", [0.0, 0.0], True, True, math.log(2.0)),
    ("vanilla", [2.0, -1.0], True, True, (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2),
    ("vanilla", [2.0, -1.0], False, True, (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0))) / 2),
    ("vanilla", [2.0, -1.0], True, False, (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2),
    # lsgan: mean((x - target)^2)
    ("lsgan", [2.0, 0.0], True, True, 1.0),
    ("lsgan", [2.0, 0.0], False, True, 2.0),
    ("lsgan", [0.5, 1.5], True, False, 0.25),
    # hinge: D real mean(relu(1 - x)), D fake mean(relu(1 + x)), G -mean(x)
    ("hinge", [2.0, 0.0], True, True, 0.5),
    ("hinge", [2.0, 0.0], False, True, 2.0),
    ("hinge", [-3.0, -0.5], False, True, 0.25),
    ("hinge", [2.0, 0.0], True, False, -1.0),
])
def test_gan_losses_hand_values(kind, logits, real, for_disc, expected):
    loss = GANLoss(kind)(torch.tensor(logits).view(1, 1, 1, 2), real, for_disc=for_disc)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_vessel_weighted_l1_hand_values():
    real = torch.zeros(1, 3, 1, 5)
    fake = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    cond = torch.full((1, 4, 1, 5), -1.0)
    cond[0, 0, 0, 0] = 1.0  # one vessel pixel; dilated by one pixel it covers x = 0 and 1
    assert reconstruction_l1(fake, real, cond, 0.0).item() == pytest.approx(2 / 5)
    # weights 1 + 3 on x = 0, 1 and 1 elsewhere: sum(w|d|) / sum(w) = (4 + 4) / (4 + 4 + 3)
    assert reconstruction_l1(fake, real, cond, 3.0).item() == pytest.approx(8 / 11)
    # an error away from the vessels counts less than with a plain L1
    far = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert reconstruction_l1(far, real, cond, 3.0).item() == pytest.approx(1 / 11)
    with pytest.raises(ConfigError, match="train.vessel_l1 must be a number >= 0"):
        build_fit_config("tiny", overrides=["train.vessel_l1=-1"])


def test_gan_loss_unknown_kind():
    with pytest.raises(ConfigError, match="unknown gan_loss 'bar'; valid: vanilla, lsgan, hinge"):
        GANLoss("bar")


# ----------------------------------------------------------------------------------------------- init


def test_init_weights_pix2pix_statistics():
    torch.manual_seed(0)
    g = create_generator(ModelConfig(ngf=8), depth=6)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert w.numel() > 100_000
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(m.bias is None or (m.bias == 0).all() for m in convs)
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    nw = torch.cat([m.weight for m in norms])
    assert nw.mean().item() == pytest.approx(1.0, abs=0.01)
    assert nw.std().item() == pytest.approx(0.02, rel=0.3)
    assert all((m.bias == 0).all() for m in norms)


# ----------------------------------------------------------------------------------------- training


def test_one_step_changes_generator_and_logs_finite_losses(tmp_path, data_root):
    cfg = _tiny_cfg("train.steps=1")
    run = fit(cfg, data_root, tmp_path / "one", progress=False)
    torch.manual_seed(cfg.train.seed)  # fit seeds, then builds G first: the same initial weights
    init = create_generator(cfg.model, 6).state_dict()
    raw, ema = _weights(run / ck.WEIGHTS), _weights(run / ck.WEIGHTS_EMA)
    assert set(raw) == set(init)
    deltas = {k: (raw[k] - init[k]).abs().max().item() for k in init}
    convs = [k for k in init if k.endswith(".weight") and init[k].ndim == 4]
    assert convs and all(deltas[k] > 0 for k in convs)
    # Adam's first step moves each weight by lr * g / (|g| + eps): at most lr = 2e-4, up to float32
    # rounding of weights near 1 (norm scales; ulp 1.2e-7).
    assert max(deltas.values()) <= 2e-4 + 2e-7
    assert max(deltas.values()) > 1e-4
    # EMA after step 1 uses decay min(0.999, 1/10) = 0.1.
    for k in init:
        torch.testing.assert_close(ema[k], 0.1 * init[k] + 0.9 * raw[k], rtol=1e-5, atol=1e-7)
    (rec,) = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert rec["step"] == 1
    assert all(math.isfinite(rec[k]) for k in ("d", "g_gan", "g_l1", "val_l1_ema"))
    assert 0 < rec["g_l1"] < 2 and 0 < rec["val_l1_ema"] < 1
    assert (run / "samples" / "step_000001.png").is_file()


def test_log_and_samples_of_tiny_run(run_dir):
    recs = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(r[k]) for r in recs for k in ("d", "g_gan", "g_l1"))
    # lr constant for the first half (decay_start 0.5), then linear to zero
    assert [r["lr"] for r in recs] == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])
    assert ["val_l1_ema" in r for r in recs] == [False, True, False, True]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]


def test_run_directory_contents(run_dir, data_root):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["format_version"] == ck.FORMAT_VERSION
    assert cfg["status"] == "complete"
    assert cfg["config"]["profile"] == "tiny"
    assert cfg["config"]["train"]["steps"] == 4 and cfg["config"]["data"]["size"] == 64
    expected = _tiny_cfg().to_dict()
    expected["train"]["precision"] = resolve_precision("auto", "cpu")  # the resolved precision is recorded
    expected["train"]["channels_last"] = fit_channels_last("cpu", expected["train"]["precision"])  # and format
    assert cfg["config"] == expected
    assert cfg["precision"] == {**describe(expected["train"]["precision"], "cpu"), "requested": "auto"}
    assert cfg["generator"] == {"depth": 6, "in_channels": 4}
    train = load_dataset(data_root, "train", _tiny_cfg().data)
    assert cfg["data"]["fingerprint"] == train.fingerprint()
    assert cfg["data"]["train_ids"] + cfg["data"]["val_ids"] == sorted(train.ids)
    assert len(cfg["data"]["val_ids"]) == 1 and len(cfg["data"]["train_ids"]) == 3
    assert not set(cfg["data"]["ids"]) & set(load_dataset(data_root, "test", _tiny_cfg().data).ids)
    rec = cfg["record"]
    assert "git_revision" in rec
    assert {"python", "torch", "numpy", "retinasynth"} <= set(rec["versions"])
    assert rec["seed"] == 0
    for name in (ck.WEIGHTS, ck.WEIGHTS_EMA):
        assert (run_dir / name).read_bytes()[8:9] == b"{"  # safetensors: u64 header length, JSON header
        assert set(_weights(run_dir / name)) == set(create_generator(_tiny_cfg().model, 6).state_dict())
    st = torch.load(run_dir / ck.STATE, weights_only=True)
    assert st["step"] == 4 and st["data_fingerprint"] == train.fingerprint()
    assert {"discriminator", "opt_g", "opt_d", "sch_g", "sch_d", "scaler", "rng_cpu"} <= set(st)


def test_generator_round_trip_and_render_modes(run_dir, data_root):
    s = load_dataset(data_root, "test", _tiny_cfg().data)[0]
    g1 = load_generator(run_dir)
    assert g1.size == 64 and g1.weights_sha256 == sha256_file(run_dir / ck.WEIGHTS_EMA)
    a, b = g1.render(s.mask, s.fov), g1.render(s.mask, s.fov)
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.array_equal(a, load_generator(run_dir).render(s.mask, s.fov))
    st1 = g1.render(s.mask, s.fov, stochastic=True, seed=1)
    assert np.array_equal(st1, g1.render(s.mask, s.fov, stochastic=True, seed=1))
    assert not np.array_equal(st1, g1.render(s.mask, s.fov, stochastic=True, seed=2))
    assert np.array_equal(g1.render(s.mask, s.fov), a)  # back in eval mode afterwards
    raw = load_generator(run_dir, ema=False)
    assert raw.weights_sha256 == sha256_file(run_dir / ck.WEIGHTS)
    assert not np.array_equal(raw.render(s.mask, s.fov), a)


def test_fidelity_levers_fit_end_to_end_and_resume_identically(tmp_path, data_root):
    """Resize upsampling, vessel-weighted L1 and the vessel-consistency loss in one tiny fit: the frozen
    segmenter is trained on the fit's own training images, saved with the run, logged, and reused on resume,
    which stays bit-identical to an uninterrupted run."""
    over = [*TINY_FIT, "model.upsample=resize", "train.vessel_l1=4", "train.consistency=5",
            "train.consistency_steps=2"]
    cfg = build_fit_config("tiny", overrides=over)
    full = fit(cfg, data_root, tmp_path / "full", progress=False)
    seg = full / "consistency_segmenter.safetensors"
    assert seg.is_file()
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(np.isfinite(r["g_consistency"]) and r["g_consistency"] > 0 for r in log)
    saved = json.loads((full / "config.json").read_text())["config"]
    assert saved["model"]["upsample"] == "resize" and saved["train"]["consistency"] == 5
    g = load_generator(full)  # the checkpoint rebuilds the resize-convolution generator from its config
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.net.modules())
    part = fit(cfg, data_root, tmp_path / "part", progress=False, stop_at=2)
    before = (part / "consistency_segmenter.safetensors").read_bytes()
    fit(cfg, None, part, resume=True, progress=False)
    assert (part / "consistency_segmenter.safetensors").read_bytes() == before == seg.read_bytes()
    assert _weights(part / ck.WEIGHTS_EMA).keys() == _weights(full / ck.WEIGHTS_EMA).keys()
    for k, v in _weights(full / ck.WEIGHTS_EMA).items():
        assert torch.equal(v, _weights(part / ck.WEIGHTS_EMA)[k]), k
    with pytest.raises(ConfigError, match="train.consistency must be a number >= 0"):
        build_fit_config("tiny", overrides=["train.consistency=-1"])


def test_multiscale_discriminator_scales_and_features():
    from retinasynth.models.networks import MultiscaleDiscriminator

    torch.manual_seed(0)
    d = init_weights(MultiscaleDiscriminator(in_channels=7, ndf=4, n_layers=2, num_scales=2))
    x = torch.randn(2, 7, 64, 64)
    out = d(x)
    # finest: 64 -> 32 -> 16 (stride 2), -> 15 (stride 1), -> 14; the second scale sees 32x32: 32 -> 16 -> 8 -> 7 -> 6
    assert [o.shape for o in out] == [(2, 1, 14, 14), (2, 1, 6, 6)]
    with_feats = d(x, features=True)
    assert all(torch.equal(a, b[0]) for a, b in zip(out, with_feats))
    assert [len(f) for _, f in with_feats] == [3, 3]  # one activation per LeakyReLU: n_layers + 1
    assert with_feats[1][1][0].shape == (2, 4, 16, 16)
    single = PatchDiscriminator(in_channels=7, ndf=4, n_layers=2)
    single.load_state_dict(d.scales[0].state_dict())
    assert torch.equal(single(x), out[0])  # scale 0 is a plain PatchGAN on the full-size input


def test_feature_matching_hand_values_and_gradient():
    from retinasynth.models.losses import feature_matching

    real = [(None, [torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 2, 2)])]
    fake_feats = [torch.full((1, 2, 4, 4), 0.5, requires_grad=True), torch.full((1, 1, 2, 2), 1.0, requires_grad=True)]
    loss = feature_matching([(None, fake_feats)], real)
    assert loss.item() == pytest.approx((0.5 + 0.0) / 2)  # mean over layers of each layer's mean |diff|
    loss.backward()
    assert fake_feats[0].grad.abs().sum() > 0
    two = feature_matching([(None, fake_feats)] * 2, real * 2)
    assert two.item() == pytest.approx(loss.item())  # averaged over scales, not summed


def test_multiscale_feature_matching_fit_logs_its_loss_and_resumes_identically(tmp_path, data_root):
    """The texture lever of issue 20 end to end: a two-scale discriminator and feature matching train, log
    g_fm, save both scales in state.pt, and resume bit-identically; default runs keep one PatchGAN."""
    over = [*TINY_FIT, "model.discriminator=multiscale", "model.d_scales=2", "train.feature_matching=10"]
    cfg = build_fit_config("tiny", overrides=over)
    full = fit(cfg, data_root, tmp_path / "full", progress=False)
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(np.isfinite(r["g_fm"]) and r["g_fm"] > 0 for r in log)
    d_state = torch.load(full / ck.STATE, weights_only=True)["discriminator"]
    assert any(k.startswith("scales.1.") for k in d_state)
    part = fit(cfg, data_root, tmp_path / "part", progress=False, stop_at=2)
    fit(cfg, None, part, resume=True, progress=False)
    for k, v in _weights(full / ck.WEIGHTS_EMA).items():
        assert torch.equal(v, _weights(part / ck.WEIGHTS_EMA)[k]), k
    plain = [json.loads(x) for x in (fit(build_fit_config("tiny", overrides=list(TINY_FIT)), data_root,
                                         tmp_path / "plain", progress=False) / "log.jsonl").read_text().splitlines()]
    assert "g_fm" not in plain[0]
    with pytest.raises(ConfigError, match="train.feature_matching must be a number >= 0"):
        build_fit_config("tiny", overrides=["train.feature_matching=-1"])
    with pytest.raises(ConfigError, match="unknown model.discriminator 'msd'; valid: patchgan, multiscale"):
        build_fit_config("tiny", overrides=["model.discriminator=msd"])


def test_consistency_loss_gradient_reaches_the_image():
    from retinasynth.bench.config import BenchConfig
    from retinasynth.segmenter import create_segmenter
    from retinasynth.train.fit import ConsistencyLoss

    torch.manual_seed(0)
    seg = create_segmenter(BenchConfig(size=64, patch=64)).eval().requires_grad_(False)
    fake = torch.zeros(1, 3, 64, 64, requires_grad=True)
    cond = torch.full((1, 4, 64, 64), -1.0)
    cond[:, 0, :, 30:34] = 1.0
    loss = ConsistencyLoss(seg)(fake, cond)
    loss.backward()
    assert loss.item() > 0 and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in seg.parameters())  # the segmenter stays frozen


def test_load_generator_missing_run(tmp_path):
    with pytest.raises(RetinaSynthError, match="run directory not found"):
        load_generator(tmp_path / "nope")


def test_resume_is_bit_identical_to_uninterrupted(tmp_path, data_root, run_dir):
    cfg = _tiny_cfg()
    out = tmp_path / "resumed"
    fit(cfg, data_root, out, progress=False, stop_at=2)
    assert json.loads((out / "config.json").read_text())["status"] == "running"
    assert torch.load(out / ck.STATE, weights_only=True)["step"] == 2
    fit(cfg, None, out, resume=True, progress=False)  # config and data root come from the run
    saved = json.loads((out / "config.json").read_text())
    assert saved["status"] == "complete" and saved["record"]["resumed_from_step"] == 2
    for name in (ck.WEIGHTS, ck.WEIGHTS_EMA):
        a, b = _weights(run_dir / name), _weights(out / name)
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    da = torch.load(run_dir / ck.STATE, weights_only=True)["discriminator"]
    db = torch.load(out / ck.STATE, weights_only=True)["discriminator"]
    assert all(torch.equal(da[k], db[k]) for k in da)
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_checkpoint_keeps_the_previous_one(run_dir):
    """Each checkpoint file has a .prev copy from the checkpoint before, and the state names its weights."""
    st, prev = ck.load_state(run_dir / ck.STATE), ck.load_state(ck.prev_path(run_dir / ck.STATE))
    assert (st["step"], prev["step"]) == (4, 2)
    for name in (ck.WEIGHTS, ck.WEIGHTS_EMA):
        assert st["weights_sha256"][name] == sha256_file(run_dir / name)
        assert prev["weights_sha256"][name] == sha256_file(ck.prev_path(run_dir / name))


@pytest.mark.parametrize("done", [0, 1, 2, 3])
def test_resume_after_a_kill_during_the_checkpoint_rotation(tmp_path, data_root, run_dir, done):
    """Killed while the step-4 checkpoint replaced the step-2 one (``done`` files written, the next one only
    renamed to .prev): resume finds a complete checkpoint and ends with the uninterrupted run's bytes."""
    out = tmp_path / "killed"
    shutil.copytree(run_dir, out)
    files = [out / f for f in ck.CHECKPOINT_FILES]
    for f in files[done:]:  # not yet rotated: the latest is still the step-2 file
        f.replace(f.parent / f"{f.name}.new")
        ck.prev_path(f).replace(f)
        (f.parent / f"{f.name}.new").replace(ck.prev_path(f))
    if done < len(files):
        files[done].replace(ck.prev_path(files[done]))  # renamed to .prev, new file not yet written
    fit(_tiny_cfg(), None, out, resume=True, progress=False)
    for name in (ck.WEIGHTS, ck.WEIGHTS_EMA):
        assert (out / name).read_bytes() == (run_dir / name).read_bytes()


def test_non_empty_out_without_resume_is_refused(tmp_path, data_root):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    with pytest.raises(RetinaSynthError, match="not empty; pass --resume"):
        fit(_tiny_cfg(), data_root, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_with_other_data_is_refused(tmp_path, data_root):
    out = tmp_path / "r"
    fit(_tiny_cfg(), data_root, out, progress=False, stop_at=2)
    other = write_phantom_dataset(tmp_path / "other", n=6, size=64, seed=1, progress=False)
    with pytest.raises(RetinaSynthError, match="fingerprint mismatch"):
        fit(_tiny_cfg(), other, out, resume=True, progress=False)


# -------------------------------------------------------------------------------------------- metrics


def test_notebook_scores_are_in_pm1_units():
    black = np.zeros((16, 16, 3), np.uint8)
    white = np.full((16, 16, 3), 255, np.uint8)
    s = notebook_scores(black, white)
    assert s["mse"] == pytest.approx(4.0)  # (-1 - 1)^2
    assert s["psnr"] == pytest.approx(0.0, abs=1e-12)  # 10 * log10(2^2 / 4)
    grey = np.full((16, 16, 3), 51, np.uint8)
    s = notebook_scores(grey, black)  # 51/255 = 0.2 in [0, 1] is 0.4 in [-1, 1]
    assert s["mse"] == pytest.approx(0.16)
    assert s["psnr"] == pytest.approx(10 * math.log10(4 / 0.16))
    same = notebook_scores(white, white)
    assert same["mse"] == 0.0 and same["ssim"] == pytest.approx(1.0)


def _disc(n: int = 48, r: float = 18.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 <= r * r


def test_sound_scores_known_difference():
    fov = _disc()
    rng = np.random.default_rng(0)
    real = rng.integers(0, 200, (48, 48, 3)).astype(np.uint8)
    fake = real.copy()
    fake[fov] += 51  # 0.2 everywhere inside the FOV
    s = sound_scores(fake, real, fov)
    assert s["mse"] == pytest.approx(0.04)
    assert s["psnr"] == pytest.approx(10 * math.log10(1 / 0.04))  # 13.979 dB
    assert s["psnr"] == pytest.approx(13.9794, abs=1e-4)
    same = sound_scores(real, real, fov)
    assert same["mse"] == 0.0 and same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty FOV"):
        sound_scores(fake, real, np.zeros_like(fov))


def test_sound_scores_ignore_pixels_outside_fov():
    fov = _disc()
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    fake = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    base = sound_scores(fake, real, fov)
    fake2, real2 = fake.copy(), real.copy()
    fake2[~fov], real2[~fov] = 255, 0
    changed = sound_scores(fake2, real2, fov)
    assert changed["mse"] == base["mse"] and changed["psnr"] == base["psnr"]
    # Far from the FOV (beyond the 11x11 Gaussian window, 5 * sqrt(2) px at its corners) SSIM cannot
    # see the change either.
    far = ~_disc(r=26.0)
    fake3 = fake.copy()
    fake3[far] = 0
    assert sound_scores(fake3, real, fov)["ssim"] == base["ssim"]


def test_sound_ssim_ignores_pixels_just_outside_fov():
    fov = _disc()
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    fake = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    fake2 = fake.copy()
    fake2[~fov] = 255
    assert sound_scores(fake2, real, fov)["ssim"] == sound_scores(fake, real, fov)["ssim"]


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_evaluate_writes_metrics(cli, run_dir, data_root, tmp_path):
    out = tmp_path / "eval"
    r = cli("evaluate", "--run", run_dir, "--data", data_root, "--split", "test", "--out", out, "--reader-steps", "3")
    assert r.exit_code == 0, r.output
    assert "notebook protocol" in r.output and "sound protocol" in r.output and "vessel consistency" in r.output
    assert sorted(p.name for p in out.iterdir()) == [".retinasynth.lock", "comparison.png", "metrics.json",
                                                     "per_image.csv"]  # the lock file records the writer
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["n_images"] == 2 and m["weights"] == "ema"
    assert m["weights_sha256"] == sha256_file(run_dir / ck.WEIGHTS_EMA)
    vc = m["vessel_consistency"]
    assert vc["reader"]["steps"] == 3 and vc["reader"]["trained_on"] == "3 training images of the run"
    assert 0 <= vc["rendered"]["mean"] <= 1 and 0 <= vc["real"]["mean"] <= 1 and vc["rendered"]["n"] == 2
    assert vc["ratio"] == pytest.approx(vc["rendered"]["mean"] / vc["real"]["mean"])
    fid = m["fidelity"]  # every measure with the real photographs' own value beside it
    assert "fidelity (rendered vs the real photographs" in r.output and "stripe index" in r.output
    for key in ("stripe_index", "disc_offset"):
        assert {"rendered", "real", "ratio"} <= set(fid[key]) and math.isfinite(fid[key]["real"])
    assert set(fid["vessel_contrast"]) >= {"1", "2", "3-4", "5+", "thin_1_2_px_ratio"}
    assert set(fid["kid"]) >= {"rendered_vs_real", "real_train_vs_real"}
    for proto in ("notebook_protocol", "sound_protocol"):
        for k in ("mse", "ssim", "psnr"):
            sc = m[proto]["scores"][k]
            assert {"mean", "std"} <= set(sc) and math.isfinite(sc["mean"]) and sc["n"] == 2
        assert set(m["mean_training_image_baseline"][proto]) == {"mse", "ssim", "psnr"}
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["id"] for r in rows] == ["phantom_0002", "phantom_0003"]
    mean_mse = np.mean([float(r["sound_mse"]) for r in rows])
    assert mean_mse == pytest.approx(m["sound_protocol"]["scores"]["mse"]["mean"])
    import cv2

    grid = cv2.imread(str(out / "comparison.png"))
    assert grid.shape == (2 * 64, 3 * 64, 3)  # two test images, mask | generated | real


def test_vessel_consistency_dice_hand_value():
    """A reader that calls every pixel a vessel: Dice = 2|M| / (|FOV| + |M|) inside the FOV, for both images."""
    from types import SimpleNamespace

    from retinasynth.bench.config import BenchConfig
    from retinasynth.train.evaluate import _consistency_row

    class AllVessel(nn.Module):
        def forward(self, x):
            return torch.full_like(x[:, :1], 10.0)

    fov = np.zeros((32, 32), bool)
    fov[4:28, 4:28] = True  # 576 pixels
    mask = np.zeros((32, 32), bool)
    mask[10:20, 15] = True  # 10 vessel pixels
    mask[0, 0] = True  # outside the FOV: ignored
    s = SimpleNamespace(image=np.zeros((32, 32, 3), np.uint8), mask=mask, fov=fov)
    reader = {"model": AllVessel(), "cfg": BenchConfig(size=32, patch=32), "device": torch.device("cpu")}
    row = _consistency_row(reader, np.full((32, 32, 3), 9, np.uint8), s)
    assert row == {"consistency_rendered_dice": pytest.approx(20 / 586), "consistency_real_dice": pytest.approx(20 / 586)}


def test_cli_evaluate_refuses_training_data(cli, run_dir, data_root):
    r = cli("evaluate", "--run", run_dir, "--data", data_root, "--split", "train",
            "--out", run_dir.parent / "eval-train")
    assert r.exit_code == 2 and "error:" in r.output and "held-out split" in r.output


def test_cli_fit_tiny(cli, data_root, tmp_path):
    out = tmp_path / "cli_run"
    r = cli("fit", "--data", data_root, "--out", out, "--profile", "tiny", "--quiet",
            "-o", "train.steps=2", "-o", "train.threads=1")
    assert r.exit_code == 0, r.output
    assert "run written to" in r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "complete" and cfg["config"]["profile"] == "tiny"
    assert cfg["config"]["train"]["steps"] == 2 and cfg["config"]["model"]["ngf"] == 8
    assert (out / ck.WEIGHTS_EMA).is_file()
    # a second call without --resume is refused cleanly
    r = cli("fit", "--data", data_root, "--out", out, "--profile", "tiny", "--quiet")
    assert r.exit_code == 2 and "error:" in r.output and "not empty" in r.output


def test_cli_fit_missing_data_folder(cli, tmp_path):
    r = cli("fit", "--data", tmp_path / "nope", "--out", tmp_path / "run", "--profile", "tiny", "--quiet")
    assert r.exit_code == 2
    assert "error:" in r.output and "no such folder" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_cli_fit_bad_override(cli, tmp_path):
    r = cli("fit", "--data", tmp_path, "--out", tmp_path / "run", "--profile", "tiny", "-o", "model.norm=foo")
    assert r.exit_code == 2 and "error:" in r.output and "model.norm" in r.output


def test_cli_fit_resume_of_finished_run_keeps_weights(cli, run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / ck.WEIGHTS_EMA).read_bytes()
    r = cli("fit", "--out", copy, "--resume", "--quiet")
    assert r.exit_code == 0, r.output
    assert (copy / ck.WEIGHTS_EMA).read_bytes() == before


def test_cli_evaluate_val_scores_only_the_held_out_training_images(cli, data_root, tmp_path):
    """`--split val`: the images the fit excluded plus its own validation images, never a trained-on or test one;
    the reader is trained on the run's training images only."""
    out = tmp_path / "held"
    r = cli("fit", "--data", data_root, "--out", out, "--profile", "tiny", "--quiet", "-o", "train.steps=2",
            "-o", "train.threads=1", "-o", "data.exclude=phantom_0000")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    held = sorted(["phantom_0000", *cfg["data"]["val_ids"]])
    assert "phantom_0000" not in cfg["data"]["train_ids"] and len(held) == 2
    r = cli("evaluate", "--run", out, "--data", data_root, "--split", "val", "--out", tmp_path / "ev",
            "--reader-steps", "2")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["split"] == "val" and sorted(m["image_ids"]) == held and m["n_images"] == 2
    assert m["vessel_consistency"]["reader"]["trained_on"] == f"{len(cfg['data']['train_ids'])} training images of the run"
    assert not set(m["image_ids"]) & set(cfg["data"]["train_ids"])


def test_cli_evaluate_val_without_held_out_images_is_one_line_error(cli, data_root, tmp_path):
    out = tmp_path / "noval"
    r = cli("fit", "--data", data_root, "--out", out, "--profile", "tiny", "--quiet", "-o", "train.steps=2",
            "-o", "train.threads=1", "-o", "train.val_count=0")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", "--run", out, "--data", data_root, "--split", "val", "--reader-steps", "0")
    assert r.exit_code == 2 and "holds out none of its training images" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
