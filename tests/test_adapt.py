"""Domain-adaptation controls on unlabelled target photographs (`benchmark-downstream --adapt`): the FDA and
histogram-matching functions, the arms real+fda, real+hist and self-train, and the refusal of target photographs
that are scored. Tiny in-code datasets; seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny, write_external

from retinasynth.bench import benchmark_downstream
from retinasynth.bench.guards import LeakageError
from retinasynth.data.adapt import adapt_image, fda, histogram_match
from retinasynth.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _disc(seed: int, tint=(1.0, 1.0, 1.0), size=64):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2 - 3) ** 2
    base = rng.integers(40, 200, (size, size, 3)).astype(np.float64)
    img = np.clip(base * np.array(tint), 0, 255).astype(np.uint8)
    img[~fov] = 0
    return img, fov


def test_fda_swaps_only_low_frequencies_inside_the_fov():
    src, fov = _disc(0)
    tgt, tfov = _disc(1, tint=(1.3, 0.6, 0.4))
    # the image's own amplitudes: itself again (to rounding)
    assert np.abs(fda(src, fov, src, fov, 0.05).astype(int) - src.astype(int)).max() <= 1
    out = fda(src, fov, tgt, tfov, 0.05)
    assert out.dtype == np.uint8 and out.shape == src.shape
    assert np.array_equal(out[~fov], src[~fov])  # outside the FOV untouched
    # the mean colour (the DC term) moves to the target's; the fine structure (high frequencies) stays
    src_m, out_m = src[fov].mean(0), out[fov].mean(0)
    assert out_m[0] > src_m[0] + 10 and out_m[2] < src_m[2] - 10
    hp = lambda a: a[..., 1].astype(float) - np.roll(a[..., 1], 1, axis=1)  # noqa: E731
    assert np.corrcoef(hp(out)[fov], hp(src)[fov])[0, 1] > 0.9
    with pytest.raises(ValueError, match="beta"):
        fda(src, fov, tgt, tfov, 0.0)


def test_histogram_match_takes_the_target_distribution():
    src, fov = _disc(0)
    tgt, tfov = _disc(1, tint=(1.3, 0.6, 0.4))
    out = histogram_match(src, fov, tgt, tfov)
    assert np.array_equal(out[~fov], src[~fov])
    for c in range(3):
        assert abs(np.median(out[fov][:, c]) - np.median(tgt[tfov][:, c])) <= 3
    assert np.array_equal(adapt_image("hist", src, fov, tgt, tfov), out)
    with pytest.raises(KeyError, match="valid: fda, hist"):
        adapt_image("cyclegan", src, fov, tgt, tfov)


def test_adaptation_arms_train_on_target_looks_and_key_the_photographs(tmp_path, real_root):
    target = write_external(tmp_path / "clinic", n=3, seed=700) / "images"
    cfg = tiny("arms=real,real+fda,real+hist,self-train", "adapt_looks=2")
    res = benchmark_downstream(real_root, None, tmp_path / "out", cfg, adapt=f"clinic={target}", progress=False)
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == {"real", "real+fda", "real+hist", "self-train"}
    assert res["adapt"]["name"] == "clinic" and res["adapt"]["n"] == 3
    # each real image in 2 target looks; self-train reuses the 'real' model and adds the pseudo-labels
    assert len(runs["real+fda"]["real_ids"]) == 2 * len(runs["real"]["real_ids"])
    assert all("@" in i for i in runs["real+hist"]["real_ids"])
    st = runs["self-train"]
    assert st["source_reused"] is True and st["source_train_key"] == runs["real"]["train_key"]
    assert st["train"]["pseudo"]["n"] == 3 and st["total_steps"] == 2 * cfg.steps
    assert runs["real+fda"]["total_steps"] == 2 * cfg.steps
    # other photographs: other keys for the adaptation arms, the same for 'real'
    other = write_external(tmp_path / "other", n=3, seed=800) / "images"
    again = benchmark_downstream(real_root, None, tmp_path / "out", cfg, adapt=f"clinic={other}", progress=False)
    assert again["n_cached"] == 1 and again["n_trained"] == 3
    assert {r["arm"]: r["train_key"] for r in again["runs"]}["real"] == runs["real"]["train_key"]


def test_scored_photographs_are_refused_in_one_line(tmp_path, real_root, cli):
    cfg = tiny("arms=real,real+hist")
    with pytest.raises(LeakageError, match=r"--adapt t: photograph 'im0.png' of .* is evaluated test image") as e:
        benchmark_downstream(real_root, None, tmp_path / "o", cfg, adapt=f"t={real_root / 'test' / 'images'}",
                             progress=False)
    assert "\n" not in str(e.value)
    r = cli("benchmark-downstream", "--data", real_root, "--out", tmp_path / "o2", "--profile", "tiny",
            "-o", "arms=real,real+hist", "-o", "steps=1", "-o", "regimes=[2]", "-o", "seeds=[0]",
            "--adapt", f"t={real_root / 'test' / 'images'}", "--quiet")
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "o2" / "results.json").exists()
    # an external set scored under its name is guarded the same way
    ext = write_external(tmp_path / "ext")
    with pytest.raises(LeakageError, match="is evaluated ext image"):
        benchmark_downstream(real_root, None, tmp_path / "o3", cfg, test_data=[f"ext={ext}"],
                             adapt=f"t={ext / 'images'}", progress=False)


def test_adaptation_arms_need_photographs_and_a_folder(tmp_path, real_root):
    with pytest.raises(ConfigError, match=r"arms real\+fda adapt to a target camera: pass --adapt NAME=DIR"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real+fda"), progress=False)
    with pytest.raises(DataError, match="is not a folder"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real+fda"),
                             adapt=f"x={tmp_path / 'nope'}", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files found"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real+fda"),
                             adapt=f"x={tmp_path / 'empty'}", progress=False)
    with pytest.raises(DataError, match="NAME:SPLIT=DIR"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real+fda"),
                             adapt=f"x:val={real_root}", progress=False)


def test_a_dataset_split_serves_as_target_photographs(tmp_path, real_root):
    """NAME:SPLIT=DIR: the other split of a labelled dataset (its labels unused), e.g. STARE's unscored part."""
    ext = write_external(tmp_path / "ext", n=4)
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real+hist", "adapt_looks=1"),
                               test_data=[f"ext:test={ext}"], adapt=f"ext:train={ext}", progress=False)
    assert res["adapt"]["n"] == 3 and all(i.startswith("train/") for i in res["adapt"]["ids"])
    assert res["data"]["eval"]["ext"]["n"] == 1


# ------------------------------------------------------------------ the target look: pseudo-label, fit --init


def test_target_look_generator_from_pseudo_labelled_photographs(tmp_path, data_root, run_dir, real_root, cli):
    """pseudo-label -> fit --init -> synthesize --data SOURCE: the generator starts from the source run, learns
    from the photographs and their pseudo-labels, renders on the source's true masks, and counts only the
    source's labelled images; its photographs join the leakage guard."""
    import json

    from retinasynth.synth.synthesize import SynthConfig, synthesize

    bench = benchmark_downstream(real_root, None, tmp_path / "b", tiny("arms=real"), progress=False)
    model = tmp_path / "b" / bench["runs"][0]["model"]
    photos = write_external(tmp_path / "clinic", n=3, seed=900) / "images"
    r = cli("pseudo-label", "--photos", photos, "--model", model, "--out", tmp_path / "pseudo", "--quiet")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "pseudo" / "pseudo.json").read_text())
    assert meta["n"] == 3 and meta["labels"] == "pseudo" and meta["labels_used"] is False
    assert sorted(p.name for p in (tmp_path / "pseudo" / "train" / "masks").iterdir()) == ["e0.png", "e1.png", "e2.png"]
    # a non-empty --out is refused in one line
    r = cli("pseudo-label", "--photos", photos, "--model", model, "--out", tmp_path / "pseudo", "--quiet")
    assert r.exit_code != 0 and "not empty" in r.output and r.output.count("\n") == 1, r.output
    # fine-tune the source run on them
    r = cli("fit", "--init", run_dir, "--data", tmp_path / "pseudo", "--out", tmp_path / "ft", "--quiet",
            "-o", "train.steps=2", "-o", "train.ckpt_every=1", "-o", "train.sample_every=2", "-o", "train.threads=1")
    assert r.exit_code == 0, r.output
    conf = json.loads((tmp_path / "ft" / "config.json").read_text())
    src = json.loads((run_dir / "config.json").read_text())
    assert conf["init_from"]["run"] == str(run_dir.resolve()) and conf["data"]["labels"] == "pseudo"
    # every photograph is a training image (none held out as a seeded test split)
    assert sorted(conf["data"]["train_ids"] + conf["data"]["val_ids"]) == ["train-e0", "train-e1", "train-e2"]
    assert conf["labelled_images"] == len(src["data"]["train_ids"]) + len(src["data"]["val_ids"])
    assert any(k.startswith("init:") for k in conf["data"]["image_signatures"])
    # renders on the source's true masks; the benchmark counts the source's labelled images only
    synthesize(tmp_path / "ft", tmp_path / "syn", SynthConfig(n=3, batch_size=3, workers=1, sources="real:1"),
               data_root=data_root, progress=False)
    smeta = json.loads((tmp_path / "syn" / "synth.json").read_text())
    assert smeta["labelled_images"] == conf["labelled_images"] and smeta["init_from"]["run"] == str(run_dir.resolve())
    # a run with other model settings cannot be the start
    r = cli("fit", "--init", run_dir, "--data", tmp_path / "pseudo", "--out", tmp_path / "ft2", "--quiet",
            "-o", f"model.ngf={src['config']['model']['ngf'] + 8}", "-o", "train.steps=1")
    assert r.exit_code != 0 and "another generator" in r.output and r.output.count("\n") == 1, r.output


def test_fine_tune_of_norm_parameters_only_keeps_every_other_weight(tmp_path, data_root, run_dir, cli):
    """`-o train.tune=norm`: only the normalisation layers' scale and shift move; every convolution stays
    bit-identical to the run it started from. An unknown name lists the valid ones in one line."""
    import json

    from safetensors.torch import load_file

    from retinasynth.models.factory import create_generator, tunable_parameters
    from retinasynth.train.config import build_fit_config

    r = cli("fit", "--init", run_dir, "--data", data_root, "--out", tmp_path / "ft", "--quiet", "-o", "train.steps=2",
            "-o", "train.ckpt_every=1", "-o", "train.sample_every=2", "-o", "train.threads=1", "-o", "train.tune=norm",
            "-o", "train.lr=0.01")
    assert r.exit_code == 0, r.output
    conf = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert conf["config"]["train"]["tune"] == "norm"
    before, after = load_file(run_dir / "generator.safetensors"), load_file(tmp_path / "ft" / "generator.safetensors")
    assert before.keys() == after.keys()
    moved = {k for k in before if not (before[k] == after[k]).all()}
    G = create_generator(build_fit_config("tiny").model, conf["generator"]["depth"])
    norm = {id(p) for p in tunable_parameters(G, "norm")}
    norm_names = {n for n, p in G.named_parameters() if id(p) in norm}
    assert norm_names and moved and moved <= norm_names, moved - norm_names
    r = cli("fit", "--data", data_root, "--out", tmp_path / "bad", "-o", "train.tune=decoder")
    assert r.exit_code != 0 and "unknown train.tune 'decoder'; valid: all, norm." in r.output
    assert r.output.count("\n") == 1, r.output


def test_anchored_target_keeps_the_start_render_at_the_disc_plane_only():
    """`train.disc_anchor`'s L1 target: the starting generator's render where the disc plane peaks (share 1), the
    photograph where the plane is -1, their blend between; share 0 is the photograph."""
    import torch

    from retinasynth.models.losses import anchored_target

    real, kept = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), -0.5)
    cond = torch.zeros(1, 3, 2, 2)
    cond[0, -1] = torch.tensor([[1.0, -1.0], [0.0, 1.0]])  # the plane: peak, far, half, peak
    out = anchored_target(real, kept, cond, 1.0)
    assert torch.equal(out[0, :, 0, 0], kept[0, :, 0, 0]) and torch.equal(out[0, :, 0, 1], real[0, :, 0, 1])
    assert torch.allclose(out[0, :, 1, 0], torch.zeros(3))  # w = 0.5: halfway
    assert torch.allclose(anchored_target(real, kept, cond, 0.5)[0, :, 0, 0], torch.zeros(3))
    assert torch.equal(anchored_target(real, kept, cond, 0.0), real)


def test_disc_anchor_fine_tune_resumes_exactly_and_needs_a_disc_plane_start(tmp_path, data_root, run_dir, cli):
    """A fine-tune with `-o train.disc_anchor=1` differs from one without (the anchor acts), and a run killed after
    its first step resumes to the same weights (the start's generator is reloaded, not drawn anew). Without a
    start that draws the disc plane, or with a share outside [0, 1], a one-line error."""
    import torch
    from conftest import TINY_FIT
    from safetensors.torch import load_file

    from retinasynth.train.config import build_fit_config
    from retinasynth.train.fit import fit

    src = fit(build_fit_config("tiny", overrides=[*TINY_FIT, "model.disc_prior=true"]), data_root,
              tmp_path / "src", progress=False)
    ft = ["train.steps=2", "train.ckpt_every=1", "train.sample_every=2", f"train.init_from={src.resolve()}"]

    def tune(out, *extra, stop_at=None):
        cfg = build_fit_config(None, str(src / "config.json"), [*ft, *extra])
        return fit(cfg, data_root, tmp_path / out, progress=False, stop_at=stop_at)

    whole, plain = tune("whole", "train.disc_anchor=1"), tune("plain")
    tune("cut", "train.disc_anchor=1", stop_at=1)
    fit(build_fit_config("tiny"), None, tmp_path / "cut", resume=True, progress=False)
    w, p, c = (load_file(d / "generator.safetensors") for d in (whole, plain, tmp_path / "cut"))
    assert all(torch.equal(w[k], c[k]) for k in w)
    assert not all(torch.equal(w[k], p[k]) for k in w)
    r = cli("fit", "--init", run_dir, "--data", data_root, "--out", tmp_path / "bad", "-o", "train.disc_anchor=1")
    assert r.exit_code != 0 and "train.disc_anchor needs" in r.output and "disc_prior" in r.output, r.output
    assert r.output.count("\n") == 1, r.output
    r = cli("fit", "--init", src, "--data", data_root, "--out", tmp_path / "bad", "-o", "train.disc_anchor=1.5")
    assert r.exit_code != 0 and "train.disc_anchor must be a number in [0, 1], got 1.5." in r.output, r.output


def test_pseudo_label_leaves_out_photographs_whose_disc_is_off_the_vessels_hub(tmp_path, real_root, cli):
    """Every photograph's disc offset is recorded; --max-disc-offset keeps exactly those at or below it and lists
    the others; a bound no photograph meets is a one-line error."""
    import json

    bench = benchmark_downstream(real_root, None, tmp_path / "b", tiny("arms=real"), progress=False)
    model = tmp_path / "b" / bench["runs"][0]["model"]
    photos = write_external(tmp_path / "clinic", n=4, seed=900) / "images"
    r = cli("pseudo-label", "--photos", photos, "--model", model, "--out", tmp_path / "all", "--quiet")
    assert r.exit_code == 0, r.output
    offsets = {i["id"]: i["disc_offset"] for i in json.loads((tmp_path / "all" / "pseudo.json").read_text())["items"]}
    assert len(offsets) == 4 and all(0 <= v <= 1.5 for v in offsets.values())
    values = sorted(set(offsets.values()))
    assert len(values) >= 2, offsets
    bound = (values[0] + values[1]) / 2
    r = cli("pseudo-label", "--photos", photos, "--model", model, "--out", tmp_path / "g", "--quiet",
            "--max-disc-offset", bound)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "g" / "pseudo.json").read_text())
    kept = sorted(i for i, v in offsets.items() if v <= bound)
    assert sorted(i["id"] for i in meta["items"]) == kept and meta["n"] == len(kept)
    assert sorted(i["id"] for i in meta["left_out"]) == sorted(set(offsets) - set(kept))
    assert sorted(p.stem for p in (tmp_path / "g" / "train" / "images").iterdir()) == kept
    assert "left out" in r.output
    r = cli("pseudo-label", "--photos", photos, "--model", model, "--out", tmp_path / "none", "--quiet",
            "--max-disc-offset", values[0] / 2 if values[0] > 0 else 1e-9)
    assert r.exit_code != 0 and "--max-disc-offset" in r.output and r.output.count("\n") == 1, r.output
