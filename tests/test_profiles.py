"""Profiles with one meaning (cpu, gpu, demo, tiny in every command); retired profiles rebuilt from recorded configs;
a past run rebuilt from its own folder (`fit --config RUN/config.json`, `benchmark-downstream --config results.json`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retinasynth.bench.config import build_bench_config
from retinasynth.config import to_dict
from retinasynth.errors import ConfigError
from retinasynth.profiles import BENCH_PROFILES, FIT_PROFILES, RETIRED
from retinasynth.train.config import build_fit_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"


def test_the_same_profile_names_in_every_command():
    assert FIT_PROFILES == BENCH_PROFILES == ("cpu", "gpu", "demo", "tiny")
    for p in FIT_PROFILES:
        assert build_fit_config(p).profile == p and build_bench_config(p).profile == p


@pytest.mark.parametrize("name", ["cpu-v1", "quick", "paper", "full"])
def test_a_retired_profile_is_refused_with_where_it_went(name):
    build = build_bench_config if name in ("quick", "full") else build_fit_config
    with pytest.raises(ConfigError) as e:
        build(name)
    assert RETIRED[name].split(" ")[0] in str(e.value) and "valid: cpu, gpu, demo, tiny" in str(e.value)


def test_every_recorded_config_rebuilds_under_its_own_name():
    files = sorted(CONFIGS.glob("*.json"))
    assert {f.stem for f in files} >= {"fit-cpu-v1", "fit-cpu-v5", "bench-quick", "bench-cpu-v1"}
    for f in files:
        recorded = json.loads(f.read_text())
        cfg = (build_fit_config if f.stem.startswith("fit-") else build_bench_config)(None, str(f))
        assert cfg.profile == recorded["profile"] == f.stem.split("-", 1)[1]
        assert json.loads(json.dumps(to_dict(cfg))) == recorded  # every setting, none from today's profile


def test_a_benchmark_results_json_rebuilds_its_protocol():
    res = ROOT / "benchmarks" / "results" / "drive-cpu" / "results.json"
    recorded = json.loads(res.read_text())["config"]
    cfg = to_dict(build_bench_config(None, str(res)))
    assert {k: v for k, v in json.loads(json.dumps(cfg)).items() if k in recorded} == recorded
    # the same protocol as the recorded config of the retired 800-step profile
    v1 = json.loads((CONFIGS / "bench-cpu-v1.json").read_text())
    assert {k: v for k, v in cfg.items() if k != "profile"} == {k: v for k, v in v1.items() if k != "profile"}
    # an override still applies on top
    assert build_bench_config(None, str(res), ["steps=5"]).steps == 5


def test_fit_config_from_a_run_folder(run_dir):
    saved = json.loads((Path(run_dir) / "config.json").read_text())["config"]
    cfg = to_dict(build_fit_config(None, str(Path(run_dir) / "config.json")))
    assert json.loads(json.dumps(cfg)) == saved and cfg["profile"] == "tiny"


def test_cli_retired_profile_is_one_error_line(cli, tmp_path):
    r = cli("fit", "--data", tmp_path, "--out", tmp_path / "o", "--profile", "cpu-v1")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert "--config benchmarks/configs/fit-cpu-v1.json" in r.output and not (tmp_path / "o").exists()
    r = cli("benchmark-downstream", "--data", tmp_path, "--out", tmp_path / "b", "--profile", "quick")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "bench-quick.json" in r.output
