"""`synthesize --appearance camera`: a sampled look per pair, the masks untouched, the same bytes for the same
seed."""

from __future__ import annotations

import dataclasses
import json

import albumentations as A
import numpy as np
import pytest

from retinasynth.errors import ConfigError
from retinasynth.synth.appearance import (
    appearance_names,
    appearance_seed,
    apply_appearance,
    camera_looks,
)
from retinasynth.synth.synthesize import SynthConfig, synthesize

pytestmark = pytest.mark.usefixtures("one_thread")


def _render(side: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    fov = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side * 0.45) ** 2
    image = np.zeros((side, side, 3), np.uint8)
    image[fov] = np.clip(rng.normal((170, 80, 40), 12, (int(fov.sum()), 3)), 0, 255).astype(np.uint8)
    return image, fov


def test_camera_looks_is_the_photometric_half_of_the_camera_augmentation():
    names = [type(t).__name__ for t in camera_looks(64).transforms]
    assert names == ["RandomGamma", "RandomBrightnessContrast", "RandomToneCurve", "HueSaturationValue",
                     "PlanckianJitter", "Illumination", "PlasmaBrightnessContrast", "OneOf", "GaussNoise",
                     "ImageCompression"]
    assert not any(isinstance(t, A.DualTransform) for t in camera_looks(64).transforms)
    assert appearance_names() == ("none", "camera")


def test_apply_appearance_changes_the_fov_only_and_is_seeded():
    image, fov = _render()
    looks = [apply_appearance("camera", image, fov, appearance_seed(0, p)) for p in range(8)]
    for out in looks:
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.array_equal(out[~fov], image[~fov])
    assert np.array_equal(looks[3], apply_appearance("camera", image, fov, appearance_seed(0, 3)))
    means = {tuple(np.round(out[fov].mean(0)).astype(int)) for out in looks}
    assert len(means) >= 6  # eight pairs, (nearly) eight looks
    assert sum(not np.array_equal(out, image) for out in looks) >= 7
    assert np.array_equal(apply_appearance("none", image, fov, 5), image)
    assert appearance_seed(0, 3) != appearance_seed(1, 3) and appearance_seed(0, 3) != appearance_seed(0, 4)


def test_unknown_appearance_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"unknown --appearance 'sepia'; valid: none, camera\."):
        SynthConfig(appearance="sepia")


def test_synthesize_with_camera_looks(run_dir, tmp_path, cli):
    cfg = SynthConfig(n=6, batch_size=3, workers=2, seed=0, sources="real:1", appearance="none")
    plain, looks, again = tmp_path / "plain", tmp_path / "looks", tmp_path / "again"
    synthesize(run_dir, plain, cfg, progress=False)
    cam = dataclasses.replace(cfg, appearance="camera")
    synthesize(run_dir, looks, cam, progress=False)
    synthesize(run_dir, again, cam, progress=False)
    for p in range(6):
        name = f"syn_{p:06d}.png"
        assert (plain / "masks" / name).read_bytes() == (looks / "masks" / name).read_bytes()
        assert (looks / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
    assert sum((plain / "images" / f"syn_{p:06d}.png").read_bytes() != (looks / "images" / f"syn_{p:06d}.png")
               .read_bytes() for p in range(6)) >= 5
    recs = [json.loads(ln) for ln in (looks / "manifest.jsonl").read_text().splitlines()]
    assert [r["appearance_seed"] for r in recs] == [appearance_seed(0, p) for p in range(6)]
    assert all(r["appearance"] == "camera" for r in recs)
    assert "appearance" not in json.loads((plain / "manifest.jsonl").read_text().splitlines()[0])
    assert json.loads((looks / "synth.json").read_text())["settings"]["appearance"] == "camera"
    assert "--appearance camera" in (looks / "README.md").read_text()
    # a resume with another look is refused, the folder untouched
    r = cli("synthesize", "--run", run_dir, "--out", looks, "--n", 6, "--batch-size", 3, "--source", "real:1",
            "--quiet", "--resume", "--appearance", "none")
    assert r.exit_code == 2 and "--resume with different settings (appearance)" in r.output
    r = cli("synthesize", "--run", run_dir, "--out", tmp_path / "bad", "--n", 2, "--quiet", "--appearance", "sepia")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "valid: none, camera" in r.output
    assert not (tmp_path / "bad").exists()


def test_evaluate_scores_the_renders_with_the_look_synthesize_gives(run_dir, data_root, tmp_path, cli):
    from retinasynth.synth.appearance import DEFAULT_APPEARANCE
    from retinasynth.train.evaluate import evaluate

    def run(name, **kw):
        evaluate(run_dir, data_root, out=tmp_path / name, reader_steps=0, progress=False, **kw)
        return json.loads((tmp_path / name / "metrics.json").read_text())

    plain, looks = run("none", appearance="none"), run("camera", appearance="camera")
    assert plain["appearance"]["name"] == "none" and looks["appearance"] == {
        "name": "camera", "seed": 0, "what": "image i rendered with the look synthesize --appearance camera --seed 0 "
                                            "gives pair i"}
    assert run("default")["appearance"]["name"] == DEFAULT_APPEARANCE
    # the real photographs' values are the same target; the renders' values are of the looked renders
    f0, f1 = plain["fidelity"], looks["fidelity"]
    assert f0["stripe_index"]["real"] == f1["stripe_index"]["real"]
    assert f0["stripe_index"]["rendered"] != f1["stripe_index"]["rendered"]
    assert plain["sound_protocol"]["scores"]["mse"]["mean"] != looks["sound_protocol"]["scores"]["mse"]["mean"]
    assert run("again", appearance="camera")["sound_protocol"] == looks["sound_protocol"]
    r = cli("evaluate", "--run", run_dir, "--data", data_root, "--out", tmp_path / "bad", "--reader-steps", 0,
            "--appearance", "sepia")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "valid: none, camera" in r.output
    assert not (tmp_path / "bad").exists()


def test_default_look_is_camera_unless_a_style_gives_the_camera():
    from retinasynth.synth.appearance import DEFAULT_APPEARANCE
    from retinasynth.synth.synthesize import SynthConfig

    assert DEFAULT_APPEARANCE == "camera"  # adopted on validation, RESULTS.md sections 23-24
    assert SynthConfig().appearance == "camera"
    assert SynthConfig(style="photos").appearance == "none"  # a sampled look would overwrite the target camera's
    assert SynthConfig(style="photos", appearance="camera").appearance == "camera"  # asked for explicitly
    assert SynthConfig(appearance="none").appearance == "none"
