"""The Python API in one shape (retinasynth.api): inputs, output folder, config; config as a dataclass, a profile
name, overrides or a (profile, overrides) pair; every name importable from `retinasynth`."""

from __future__ import annotations

import json

import pytest

import retinasynth as rs
from retinasynth.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_configs_in_every_form_agree():
    from retinasynth.api import bench_config, fit_config, synth_config

    by_pair = fit_config(("tiny", ["train.steps=3"]))
    assert by_pair == rs.FitConfig(**{**by_pair.__dict__}) and by_pair.train.steps == 3 and by_pair.profile == "tiny"
    assert fit_config("tiny").train.steps != 3 and fit_config(by_pair) is by_pair
    assert fit_config(["train.steps=7"]).profile == "cpu" and fit_config(["train.steps=7"]).train.steps == 7
    assert synth_config(["n=5", "seed=3"]) == rs.SynthConfig(n=5, seed=3)
    assert bench_config(("tiny", ["regimes=2"])).regimes == (2,) and isinstance(bench_config(), rs.BenchConfig)
    with pytest.raises(ConfigError, match="has no profiles"):
        synth_config("cpu")
    with pytest.raises(ConfigError, match="profile name"):
        fit_config(3)


def test_the_pipeline_through_the_top_level_api(tmp_path, data_root):
    run = rs.fit(data_root, tmp_path / "run", ("tiny", ["train.steps=2"]), progress=False)
    assert json.loads((run / "config.json").read_text())["config"]["train"]["steps"] == 2
    rs.synthesize(run, tmp_path / "synth", ["n=3"], progress=False)
    assert len(rs.load_dataset(tmp_path / "synth")) == 3  # a synthetic set: every pair
    assert len(rs.PairDataset(tmp_path / "synth")) == 3
    res = rs.benchmark(data_root, tmp_path / "synth", tmp_path / "bench",
                       ("tiny", ["arms=real,synth", "regimes=1", "seeds=0", "bootstrap=50"]), progress=False)
    assert {(r["arm"], r["regime"]) for r in res["summary"]} == {("real", 1), ("synth", 1)}
