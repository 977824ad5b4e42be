"""Precision chosen by the hardware (retinasynth.precision) in `fit`, `synthesize` and `evaluate`: resolution
rules, fp32 bit-identity with the code before precision existed, bf16 runs, resume keeping the recorded
precision, old `amp` run directories, and the one-line errors. Tiny runs, 2 steps, one thread, CPU."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import retinasynth.precision as P
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.train import checkpoint as ck
from retinasynth.train.config import build_fit_config
from retinasynth.train.fit import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TWO = ["train.steps=2", "train.ckpt_every=1", "train.sample_every=2", "train.log_every=1", "train.threads=1"]
native_bf16 = pytest.mark.skipif(not P.cpu_native_bf16(), reason="this CPU has no native bf16")

# sha256 of generator.safetensors after the 2-step fp32 fit of `_fit` below (TWO, ckpt_every=2), recorded with
# the code from before `precision` existed. Floating-point results depend on the kernels, so it is checked only
# on the machine kind it was recorded on: (torch version, CPU capability, CPU model).
BASELINE_FP32 = {("2.14.1+cu130", "AVX512", "AMD EPYC"):
                 "bbf1e32759ff3bf846cf87fa03cdedf983c9fd694addae73150ab1551fab14c6"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fit(data_root, out, *extra, **kw) -> Path:
    return fit(build_fit_config("tiny", overrides=[*TWO, *extra]), data_root, out, progress=False, **kw)


def _config(run: Path) -> dict:
    return json.loads((run / ck.CONFIG).read_text())


# ------------------------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_cpu_resolution_rules(monkeypatch, native, expected):
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: native)
    assert P.resolve_precision("auto", "cpu") == expected
    assert P.resolve_precision("fp32", "cpu") == "fp32"
    if native:
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    else:
        with pytest.raises(ConfigError, match=r"precision bf16 requested but this cpu has no native bf16") as e:
            P.resolve_precision("bf16", "cpu")
        assert "\n" not in str(e.value) and "--precision fp32 or auto" in str(e.value)
    with pytest.raises(ConfigError, match="fp16 is for CUDA devices only"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match=r"unknown precision 'fp8'; valid: auto, fp32, bf16, fp16"):
        P.resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("flags, precision, expected", [
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "bf16", True),   # Xeon with AMX: NHWC measured faster at bf16
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "fp32", False),
    ({"avx512_bf16", "avx512f"}, "bf16", False),                # EPYC without AMX: NHWC measured 0.85x
    ({"avx2"}, "fp32", False),
])
def test_fit_memory_format_follows_the_cpu_flags(monkeypatch, flags, precision, expected):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(flags))
    assert P.fit_channels_last("cpu", precision) is expected
    assert P.fit_channels_last("cuda", precision) is True
    assert P.infer_channels_last("cpu", precision) is False


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_resolution_rules(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert P.resolve_precision("auto", "cuda") == expected
    assert P.resolve_precision("fp16", "cuda") == "fp16" and P.resolve_precision("fp32", "cuda") == "fp32"
    if not bf16:
        with pytest.raises(ConfigError, match="this CUDA device has no bf16"):
            P.resolve_precision("bf16", "cuda")


def test_autocast_and_scaler_per_precision():
    assert P.autocast("fp32", "cpu").__class__.__name__ == "nullcontext"
    assert isinstance(P.autocast("bf16", "cpu"), torch.autocast)
    assert not P.grad_scaler("fp32", "cpu").is_enabled() and not P.grad_scaler("bf16", "cpu").is_enabled()


def test_config_accepts_precisions_and_maps_legacy_amp():
    assert build_fit_config("tiny").train.precision == "auto"
    assert build_fit_config("tiny", overrides=["train.precision=bf16"]).train.precision == "bf16"
    assert build_fit_config("tiny", overrides=["train.amp=off"]).train.precision == "fp32"
    assert build_fit_config("tiny", overrides=["train.amp=fp16"]).train.precision == "fp16"
    assert build_fit_config("tiny", overrides=["train.amp=off", "train.precision=bf16"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match=r"unknown train.precision 'half'; valid: auto, fp32, bf16, fp16"):
        build_fit_config("tiny", overrides=["train.precision=half"])
    with pytest.raises(ConfigError, match=r"unknown train.amp 'on'"):
        build_fit_config("tiny", overrides=["train.amp=on"])


# ------------------------------------------------------------------------------------------------- fit


def test_fp32_fit_is_bit_identical_to_the_code_before_precision(tmp_path, data_root):
    a = _fit(data_root, tmp_path / "a", "train.precision=fp32", "train.ckpt_every=2")
    b = _fit(data_root, tmp_path / "b", "train.ckpt_every=2", precision="fp32")  # the library's explicit request
    assert _sha(a / ck.WEIGHTS) == _sha(b / ck.WEIGHTS) and _sha(a / ck.WEIGHTS_EMA) == _sha(b / ck.WEIGHTS_EMA)
    cfg = _config(a)
    assert cfg["config"]["train"]["precision"] == "fp32"
    assert cfg["precision"] == {**P.describe("fp32", "cpu"), "requested": "fp32"}
    key = (torch.__version__, torch.backends.cpu.get_cpu_capability(), " ".join(_cpu_model().split()[:2]))
    if key in BASELINE_FP32:
        assert _sha(a / ck.WEIGHTS) == BASELINE_FP32[key]


@native_bf16
def test_bf16_fit_runs_records_bf16_and_resumes_identically(tmp_path, data_root):
    full = _fit(data_root, tmp_path / "full")  # auto: bf16 on this CPU
    cfg = _config(full)
    assert cfg["config"]["train"]["precision"] == "bf16"
    assert cfg["precision"]["precision"] == "bf16" and cfg["precision"]["requested"] == "auto"
    assert cfg["precision"]["cpu_native_bf16"] is True and cfg["precision"]["device_type"] == "cpu"
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["g_l1"])) for r in log)
    fp32 = _fit(data_root, tmp_path / "fp32", precision="fp32")
    assert _sha(full / ck.WEIGHTS) != _sha(fp32 / ck.WEIGHTS)  # bf16 really ran
    part = _fit(data_root, tmp_path / "part", stop_at=1)
    fit(build_fit_config("tiny"), None, part, resume=True, progress=False, precision="bf16")
    assert _sha(part / ck.WEIGHTS) == _sha(full / ck.WEIGHTS)
    assert _config(part)["precision"]["requested"] == "auto"


def test_resume_keeps_the_recorded_precision(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    full = _fit(data_root, tmp_path / "full")  # auto resolves to fp32 on a CPU without bf16
    part = _fit(data_root, tmp_path / "part", stop_at=1)
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: True)  # now auto would mean bf16
    with pytest.raises(ConfigError, match=r"the run trains at precision fp32 \(recorded in config.json\); "
                                          r"--resume cannot switch it to bf16") as e:
        fit(build_fit_config("tiny"), None, part, resume=True, progress=False, precision="bf16")
    assert "\n" not in str(e.value)
    fit(build_fit_config("tiny", overrides=["train.precision=bf16"]), None, part, resume=True, progress=False,
        precision="auto")
    assert _config(part)["config"]["train"]["precision"] == "fp32"
    assert _sha(part / ck.WEIGHTS) == _sha(full / ck.WEIGHTS)


def test_resume_of_a_bf16_run_where_bf16_is_missing_is_one_line(tmp_path, data_root, monkeypatch):
    part = _fit(data_root, tmp_path / "part", stop_at=1, precision="fp32")
    cfg = _config(part)
    cfg["config"]["train"]["precision"] = "bf16"  # as if it had been trained on a bf16 machine
    (part / ck.CONFIG).write_text(json.dumps(cfg))
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"trains at precision bf16 .*which this cpu cannot run .*resume it on a "
                                          "device that can, or start a new run") as e:
        fit(build_fit_config("tiny"), None, part, resume=True, progress=False)
    assert "\n" not in str(e.value)


def test_legacy_amp_run_resumes_at_fp32_on_cpu(tmp_path, data_root, monkeypatch):
    """A run directory from before `precision` (config.json with train.amp, no precision record) trained fp32 on
    a CPU whatever its amp said; its resume stays fp32 even where 'auto' now means bf16."""
    full = _fit(data_root, tmp_path / "full", precision="fp32")
    part = _fit(data_root, tmp_path / "part", stop_at=1, precision="fp32")
    cfg = _config(part)
    cfg["config"]["train"].pop("precision")
    cfg["config"]["train"]["amp"] = "auto"
    cfg.pop("precision")
    (part / ck.CONFIG).write_text(json.dumps(cfg))
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: True)
    from retinasynth.rundir import load_generator

    assert load_generator(part).precision == "fp32"  # reading an old run directory works as before
    fit(build_fit_config("tiny"), None, part, resume=True, progress=False)
    after = _config(part)
    assert after["config"]["train"]["precision"] == "fp32" and "amp" not in after["config"]["train"]
    assert after["precision"]["precision"] == "fp32" and after["precision"]["requested"] == "amp=auto"
    assert _sha(part / ck.WEIGHTS) == _sha(full / ck.WEIGHTS)


def test_forced_bf16_without_hardware_is_one_line_before_anything_is_written(tmp_path, data_root, monkeypatch,
                                                                              cli):
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="precision bf16 requested but this cpu has no native bf16"):
        _fit(data_root, tmp_path / "run", precision="bf16")
    assert not (tmp_path / "run").exists()
    r = cli("fit", "--data", data_root, "--out", tmp_path / "cli", "--profile", "tiny", "--precision", "bf16",
            "--quiet", *[a for o in TWO for a in ("-o", o)])
    assert r.exit_code == 2 and not (tmp_path / "cli").exists()
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: precision bf16 requested but this cpu has no native bf16")


def test_cli_help_shows_precision_choices_and_defaults(cli):
    from retinasynth_cli.main import PRECISION_CHOICES

    assert PRECISION_CHOICES == P.PRECISIONS
    for cmd, default in (("fit", "[default: (the profile's train.precision: auto)]"), ("synthesize", "[default: auto]"),
                         ("evaluate", "[default: auto]")):
        text = " ".join(cli(cmd, "--help").output.split())
        option = text[text.index("--precision [auto|fp32|bf16|fp16]"):]
        assert default in option[:option.index("--device")], cmd


# ------------------------------------------------------------------------------------ synthesize / evaluate


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, data_root, one_thread):
    return fit(build_fit_config("tiny", overrides=TWO), data_root, tmp_path_factory.mktemp("runs") / "fp32",
               progress=False, precision="fp32")


def _synth(run, out, **kw):
    from retinasynth.synth.synthesize import SynthConfig, synthesize

    synthesize(run, out, SynthConfig(n=3, batch_size=2, workers=1, **kw), progress=False)
    return out


def _images(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=native_bf16)])
def test_synthesize_records_precision_and_is_byte_reproducible(tmp_path, fp32_run, precision):
    a, b = _synth(fp32_run, tmp_path / "a", precision=precision), _synth(fp32_run, tmp_path / "b", precision=precision)
    assert _images(a) == _images(b)
    meta = json.loads((a / "synth.json").read_text())
    assert meta["settings"]["precision"] == precision and meta["precision"] == P.describe(precision, "cpu")
    assert {json.loads(x)["precision"] for x in (a / "manifest.jsonl").read_text().splitlines()} == {precision}
    assert f"rendered at {precision}" in (a / "README.md").read_text()


def test_synthesize_auto_resolves_and_resume_needs_the_same_precision(tmp_path, fp32_run, monkeypatch):
    from retinasynth.synth.synthesize import SynthConfig, synthesize

    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    out = _synth(fp32_run, tmp_path / "s")  # auto -> fp32 here
    assert json.loads((out / "synth.json").read_text())["settings"]["precision"] == "fp32"
    assert _images(out) == _images(_synth(fp32_run, tmp_path / "f", precision="fp32"))
    meta = json.loads((out / "synth.json").read_text())
    del meta["settings"]["precision"]  # a set written before precision existed: rendered fp32
    (out / "synth.json").write_text(json.dumps(meta))
    synthesize(fp32_run, out, SynthConfig(n=3, batch_size=2, workers=1, precision="fp32"), resume=True,
               progress=False)
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: True)
    with pytest.raises(RetinaSynthError, match=r"--resume with different settings \(precision\)"):
        synthesize(fp32_run, out, SynthConfig(n=3, batch_size=2, workers=1, precision="bf16"), resume=True,
                   progress=False)
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="precision bf16 requested but this cpu has no native bf16"):
        _synth(fp32_run, tmp_path / "x", precision="bf16")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="unknown --precision 'fp64'"):
        SynthConfig(precision="fp64")


def test_evaluate_records_precision(tmp_path, fp32_run, data_root, monkeypatch):
    from retinasynth.train.evaluate import evaluate

    r = evaluate(fp32_run, data_root, out=tmp_path / "e32", reader_steps=0, progress=False, precision="fp32")
    assert r["precision"] == P.describe("fp32", "cpu")
    assert json.loads((tmp_path / "e32" / "metrics.json").read_text())["precision"]["precision"] == "fp32"
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="precision bf16 requested but this cpu has no native bf16"):
        evaluate(fp32_run, data_root, out=tmp_path / "e16", reader_steps=0, progress=False, precision="bf16")
