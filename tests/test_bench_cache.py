"""The benchmark's integrity: cache keys that cover what changes a number, training cached apart from scoring,
repeatable evaluation sets, provenance, portable outputs, the real-data guard, and a new arm in one place.
Tiny in-code datasets; each test takes seconds."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import tiny, write_external

import retinasynth.bench.runner as runner_mod
from retinasynth.bench import benchmark_downstream
from retinasynth.bench.arms import ARMS, Arm, register, unregister
from retinasynth.bench.guards import LeakageError
from retinasynth.bench.plan import Environment, score_key, train_key
from retinasynth.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("train_segmenter must not be called")

    monkeypatch.setattr(runner_mod, "train_segmenter", boom)


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_adding_an_evaluation_set_scores_saved_models_and_retrains_nothing(tmp_path, real_root, synth_dir, monkeypatch):
    out = tmp_path / "out"
    first = benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    assert first["n_trained"] == 3 and set(first["data"]["eval"]) == {"test"}
    ext = write_external(tmp_path / "ext")
    _no_training(monkeypatch)
    second = benchmark_downstream(real_root, synth_dir, out, tiny(), test_data=[f"clinic={ext}"], progress=False)
    assert second["n_trained"] == 0 and second["n_cached"] == 3
    assert second["n_scored"] == 3 and second["n_scores_cached"] == 3  # the new set only
    assert set(second["data"]["eval"]) == {"test", "clinic"}
    for r in second["runs"]:
        assert set(r["scores"]) == {"test", "clinic"} and len(r["scores"]["clinic"]["per_image"]) == 2
    # the old set's numbers are the cached ones, untouched
    assert [r for r in second["summary"] if r["eval"] == "test"] == first["summary"]
    assert {r["eval"] for r in second["summary"]} == {"test", "clinic"}
    assert {p["eval"] for p in second["paired"]} == {"test", "clinic"}
    assert "clinic" in (out / "report.md").read_text()


def test_repeatable_test_data_names(tmp_path, real_root):
    a = write_external(tmp_path / "A")
    b = write_external(tmp_path / "B", seed=400)
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"),
                               test_data=[f"one={a}", str(b)], progress=False)
    assert list(res["data"]["eval"]) == ["test", "one", "b"] and res["data"]["eval"]["b"]["split"] == "all"
    with pytest.raises(ConfigError, match="given twice"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"), test_data=[f"x={a}", f"x={b}"],
                             progress=False)
    with pytest.raises(ConfigError, match="reserved"):
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"), test_data=[f"test={a}"],
                             progress=False)


def test_changing_the_fov_of_an_evaluated_image_invalidates_its_scores_only(tmp_path, real_root, monkeypatch):
    out = tmp_path / "out"
    first = benchmark_downstream(real_root, None, out, tiny("arms=real"), progress=False)
    fov = np.zeros((64, 64), np.uint8)
    cv2.circle(fov, (32, 32), 20, 255, -1)  # a smaller FOV than the one derived from the image
    (real_root / "test" / "fov").mkdir()
    for name in ("im0.png", "im1.png"):
        cv2.imwrite(str(real_root / "test" / "fov" / name), fov)
    _no_training(monkeypatch)
    second = benchmark_downstream(real_root, None, out, tiny("arms=real"), progress=False)
    assert second["n_trained"] == 0 and second["n_scored"] == 1
    assert second["data"]["eval"]["test"]["fingerprint"] != first["data"]["eval"]["test"]["fingerprint"]
    assert second["runs"][0]["scores"]["test"] != first["runs"][0]["scores"]["test"]


def test_scoring_code_precision_and_versions_enter_the_keys(tmp_path, real_root, monkeypatch):
    cfg = tiny("arms=real")
    env = Environment(precision="fp32", device_type="cpu")
    from retinasynth.bench.arms import get_arm

    args = (cfg, get_arm("real"), 2, 0, "subset", None)
    base = train_key(*args, env)
    assert train_key(*args, Environment(precision="bf16", device_type="cpu")) != base
    assert train_key(*args, Environment(precision="fp32", device_type="cuda")) != base
    newer = Environment(precision="fp32", device_type="cpu", versions={**env.versions, "torch": "9.9"})
    assert train_key(*args, newer) != base
    assert train_key(*args, Environment("fp32", "cpu", env.versions, "other-train-code", env.score_code)) != base
    # scoring code changes the score key, not the training key
    other_score = Environment("fp32", "cpu", env.versions, env.train_code, "other-score-code")
    assert train_key(*args, other_score) == base
    assert score_key(cfg, base, {"x": 1}, other_score) != score_key(cfg, base, {"x": 1}, env)
    # scoring-only settings change the score key only
    assert train_key(tiny("arms=real", "threshold=0.4"), *args[1:], env) == base
    assert score_key(tiny("arms=real", "threshold=0.4"), base, {}, env) != score_key(cfg, base, {}, env)

    # end to end: changed scoring code rescores the saved model and retrains nothing
    out = tmp_path / "out"
    benchmark_downstream(real_root, None, out, cfg, progress=False)
    import retinasynth.bench.benchmark as bench_mod

    real_env = bench_mod.Environment
    monkeypatch.setattr(bench_mod, "Environment",
                        lambda precision, device_type: real_env(precision, device_type, score_code="changed"))
    _no_training(monkeypatch)
    again = benchmark_downstream(real_root, None, out, cfg, progress=False)
    assert again["n_trained"] == 0 and again["n_scored"] == 1 and again["n_scores_cached"] == 0


def test_precision_is_recorded_and_keys_the_cache(tmp_path, real_root, monkeypatch):
    out = tmp_path / "out"
    res = benchmark_downstream(real_root, None, out, tiny("arms=real", "precision=fp32"), progress=False)
    assert res["provenance"]["precision"] == "fp32" and res["runs"][0]["train"]["precision"] == "fp32"
    import retinasynth.precision as prec

    monkeypatch.setattr(prec, "cpu_native_bf16", lambda: True)
    bf = benchmark_downstream(real_root, None, out, tiny("arms=real", "precision=bf16"), progress=False)
    assert bf["n_trained"] == 1 and bf["provenance"]["precision"] == "bf16"
    assert bf["runs"][0]["train_key"] != res["runs"][0]["train_key"]
    monkeypatch.setattr(prec, "cpu_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        benchmark_downstream(real_root, None, out, tiny("arms=real", "precision=bf16"), progress=False)


def test_report_refuses_runs_made_by_different_code(tmp_path, real_root):
    out = tmp_path / "out"
    res = benchmark_downstream(real_root, None, out, tiny("arms=real", "regimes=[1,2]"), progress=False)
    assert len(res["code_revisions"]["code_sha256"]) == 1 and not res["code_revisions"]["mixed"]
    path = out / "runs" / "real_n1_s0.json"
    rec = json.loads(path.read_text())
    rec["record"]["code_sha256"], rec["record"]["git_revision"] = "f" * 64, "abc1234"
    path.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="different versions of the code.*--allow-mixed-code"):
        benchmark_downstream(real_root, None, out, tiny("arms=real", "regimes=[1,2]"), progress=False)
    mixed = benchmark_downstream(real_root, None, out, tiny("arms=real", "regimes=[1,2]"), progress=False,
                                 allow_mixed_code=True)
    assert mixed["code_revisions"]["mixed"] and "abc1234" in mixed["code_revisions"]["git_revisions"]
    assert any("versions of the code" in w for w in mixed["warnings"])


def test_real_training_image_resized_into_an_evaluation_set_is_refused(tmp_path, real_root):
    ext = write_external(tmp_path / "kaggle")
    src = cv2.imread(str(real_root / "train" / "images" / "im2.png"))
    cv2.imwrite(str(ext / "images" / "e1.png"), cv2.resize(src, (80, 80), interpolation=cv2.INTER_AREA))
    msk = cv2.imread(str(real_root / "train" / "masks" / "im2.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(ext / "masks" / "e1.png"), cv2.resize(msk, (80, 80), interpolation=cv2.INTER_NEAREST))
    with pytest.raises(LeakageError) as e:
        benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real"), test_data=[f"kaggle={ext}"],
                             progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "near duplicate" in msg and "im2" in msg and "kaggle" in msg


def test_outputs_are_portable_with_one_revision_and_the_command(tmp_path, real_root, synth_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["retinasynth", "benchmark-downstream", "--data", str(real_root)])
    import retinasynth.provenance as prov

    monkeypatch.setattr(prov, "_PROCESS", {})
    out = tmp_path / "bench"
    res = benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    text = (out / "results.json").read_text()
    assert str(tmp_path) not in text
    for s in _strings(json.loads(text)):
        assert not s.startswith("/"), s
    assert res["provenance"]["command"] == "retinasynth benchmark-downstream --data real"
    assert res["data"]["real"]["root"] == "../real" and res["synth"]["synth_dir"] == "../synth"
    assert len(res["synth"]["fingerprint"]) == 64
    assert len({r["record"]["git_revision"] for r in res["runs"]}) == 1
    assert {r["record"]["code_sha256"] for r in res["runs"]} == {res["provenance"]["code_sha256"]}
    assert res["labelled"][0]["arm"] == "real" and res["labelled"][0]["real_images"] == 2
    assert str(tmp_path) not in (out / "report.md").read_text()


def test_default_cpu_profile_runs_the_compute_matched_control():
    from retinasynth.bench import build_bench_config

    cfg = build_bench_config("cpu")
    assert "real-2x" in cfg.arms and "pretrain" in cfg.arms
    assert ARMS["pretrain"].control == "real-2x" and ARMS["pretrain"].steps == 2 * ARMS["real"].steps


def test_a_new_arm_is_one_registry_entry(tmp_path, real_root, synth_dir):
    """A toy arm: 'synth-2x' (synthetic pairs only, twice the steps), registered here and nowhere else."""
    toy = Arm(name="synth-2x", sampling="synth", steps=2, uses_real=False, uses_synth=True,
              compare=("real", "real-2x"), control="real-2x", ignores=("synth_ratio",),
              label="synthetic pairs only, twice the steps (a toy arm of the tests)",
              meaning={"CI above zero": "toy arm better", "below zero": "toy arm worse",
                       "includes zero": "toy arm indistinguishable"})
    register(toy)
    try:
        res = benchmark_downstream(real_root, synth_dir, tmp_path / "o", tiny("arms=real,real-2x,synth-2x"),
                                   progress=False)
        assert res["arm_steps"]["synth-2x"] == 2
        toy_runs = [r for r in res["runs"] if r["arm"] == "synth-2x"]
        assert toy_runs and toy_runs[0]["train"]["steps"] == 2 and toy_runs[0]["real_ids"] == []
        comps = {(p["arm"], p["base"]) for p in res["paired"] if p["metric"] == "dice"}
        assert {("synth-2x", "real"), ("synth-2x", "real-2x")} <= comps
        assert "synth-2x" in (tmp_path / "o" / "report.md").read_text()
    finally:
        unregister("synth-2x")
    assert "synth-2x" not in ARMS
    with pytest.raises(ConfigError, match="synth-2x"):
        tiny("arms=real,synth-2x")


def test_real_aug_arm_is_real_2x_with_camera_augmentation(tmp_path, real_root, monkeypatch):
    seen = []
    real_train = runner_mod.train_segmenter

    def spy(cfg, real, synth, arm, seed, device, progress=False, desc="", init=None, **kw):
        seen.append((desc, arm, cfg.steps, cfg.augment))
        return real_train(cfg, real, synth, arm, seed, device, progress=progress, desc=desc, init=init, **kw)

    monkeypatch.setattr(runner_mod, "train_segmenter", spy)
    res = benchmark_downstream(real_root, None, tmp_path / "o", tiny("arms=real,real-2x,real+aug"), progress=False)
    assert ("real+aug_n2_s0", "real", 2, "camera") in seen and ("real-2x_n2_s0", "real", 2, "strong") in seen
    keys = {r["arm"]: r["train_key"] for r in res["runs"]}
    assert keys["real+aug"] != keys["real-2x"] and res["arm_steps"]["real+aug"] == 2
    primary = {(p["arm"], p["base"]) for p in res["paired"] if p.get("family") == "primary"}
    assert ("real+aug", "real-2x") in primary


def test_a_stop_file_stops_between_models_and_the_rerun_finishes(tmp_path, real_root, synth_dir, monkeypatch, cli):
    from retinasynth.errors import Stopped

    out = tmp_path / "out"
    real_train = runner_mod.train_segmenter

    def train_then_stop(*a, **k):
        res = real_train(*a, **k)
        (out / "STOP").touch()  # asked to stop while the first model trains
        return res

    monkeypatch.setattr(runner_mod, "train_segmenter", train_then_stop)
    with pytest.raises(Stopped, match=r"stopped before .* 2 of 3 runs left"):
        benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    # the CLI says so on one line and exits 75 (not done, not an error); nothing more is trained
    r = cli("benchmark-downstream", "--data", real_root, "--synth", synth_dir, "--out", out, "--profile", "tiny",
            "-o", "steps=1", "-o", "regimes=[2]", "-o", "seeds=[0]", "--quiet")
    assert r.exit_code == 75 and r.output.startswith("stopped: ") and r.output.count("\n") == 1, r.output
    (out / "STOP").unlink()
    monkeypatch.setattr(runner_mod, "train_segmenter", real_train)
    res = benchmark_downstream(real_root, synth_dir, out, tiny(), progress=False)
    assert res["n_cached"] == 1 and res["n_trained"] == 2 and (out / "results.json").exists()


def test_records_folder_carries_a_benchmark_to_a_fresh_folder_without_weights(tmp_path, real_root, synth_dir,
                                                                              monkeypatch, cli):
    """--records: the small records (no weights) are enough to assemble the same report in a new OUT; a cell
    missing from them is the only one trained there."""
    rec = tmp_path / "records"
    first = benchmark_downstream(real_root, synth_dir, tmp_path / "a", tiny("curve=[0.5]", "steps=2", "lr_schedule=wsd"),
                                 progress=False, records=rec)
    saved = sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file())
    assert saved and all(p.endswith(".json") for p in saved)
    assert {p.split("/")[0] for p in saved} == {"runs", "scores"}
    assert len([p for p in saved if p.startswith("runs/")]) == 3
    # every model: final + one branch, scored on 'test'
    assert len([p for p in saved if p.startswith("scores/")]) == 2 * 2 + 2  # synth and pretrain's fine-tune... below
    _no_training(monkeypatch)
    second = benchmark_downstream(real_root, synth_dir, tmp_path / "b", tiny("curve=[0.5]", "steps=2", "lr_schedule=wsd"),
                                  progress=False, records=rec)
    assert second["n_trained"] == 0 and not list((tmp_path / "b").rglob("*.safetensors"))
    assert second["summary"] == first["summary"] and second["curves"] == first["curves"]
    # a record removed from the durable folder is trained again, and only that one
    (rec / "runs" / "real_n2_s0.json").unlink()
    monkeypatch.undo()
    third = benchmark_downstream(real_root, synth_dir, tmp_path / "c", tiny("curve=[0.5]", "steps=2", "lr_schedule=wsd"),
                                 progress=False, records=rec)
    assert third["n_trained"] == 1 and (rec / "runs" / "real_n2_s0.json").is_file()
    assert third["summary"] == first["summary"]
    # a --records path that is a file: one line from the CLI, exit 2
    bad = tmp_path / "file.json"
    bad.write_text("{}")
    r = cli("benchmark-downstream", "--data", real_root, "--out", tmp_path / "d", "--profile", "tiny",
            "-o", "arms=real", "-o", "steps=1", "-o", "regimes=[2]", "-o", "seeds=[0]", "--records", bad, "--quiet")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "not a folder" in r.output, r.output
