"""What a first-time user runs into: one override dialect, errors whose suggested fix works, a train/-only
folder recognised as such, and the synthesize argument slip. Seconds each, on tiny in-code data."""

from __future__ import annotations

import re

import pytest
from conftest import tiny

from retinasynth.bench import benchmark_downstream, build_bench_config
from retinasynth.errors import ConfigError, DataError
from retinasynth.train import build_fit_config


def test_one_override_dialect_with_bare_keys_and_did_you_mean():
    assert build_fit_config("tiny", overrides=["steps=5"]).train.steps == 5
    assert build_fit_config("tiny", overrides=["train.steps=5"]).train.steps == 5
    assert build_fit_config("tiny", overrides=["ngf=8"]).model.ngf == 8
    with pytest.raises(ConfigError, match=r"did you mean train\.steps\?"):
        build_fit_config("tiny", overrides=["stepz=5"])
    with pytest.raises(ConfigError, match=r"did you mean train\.steps\?"):
        build_fit_config("tiny", overrides=["train.stepz=5"])
    assert build_bench_config("tiny", overrides=["steps=3"]).steps == 3
    assert build_bench_config("tiny", overrides=["bench.steps=3"]).steps == 3
    with pytest.raises(ConfigError, match=r"did you mean bench\.steps\?"):
        build_bench_config("tiny", overrides=["stepz=3"])


def test_every_command_help_shows_the_same_override_syntax(cli):
    texts = [" ".join(cli(cmd, "--help").output.split()) for cmd in ("fit", "benchmark-downstream")]
    for t in texts:
        assert "-o, --option SECTION.KEY=VALUE" in t
        assert "Override one setting: SECTION.KEY=VALUE, or KEY=VALUE where only one section has KEY" in t
    synth_help = " ".join(cli("synthesize", "--help").output.split())
    assert "--stochastic / --deterministic" in synth_help and "[default: stochastic]" in synth_help


def _small(root, make_fundus, save_image, n_train: int, with_test: bool = True):
    for split, n, base in (("train", n_train, 0), ("test", 2 if with_test else 0, 100)):
        for i in range(n):
            image, mask, _ = make_fundus(64, 64, seed=base + i, n_vessels=4, thickness=2)
            save_image(root / split / "images" / f"im{i}.png", image)
            save_image(root / split / "masks" / f"im{i}.png", mask)
    return root


def test_regimes_error_on_a_small_dataset_suggests_valid_regimes_only(tmp_path, make_fundus, save_image):
    root = _small(tmp_path / "three", make_fundus, save_image, 3)
    with pytest.raises(ConfigError) as e:
        benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real", "regimes=2,5,20"), progress=False)
    msg = str(e.value)
    suggested = re.search(r"-o bench\.regimes=([\d,]+)", msg).group(1)
    assert all(1 <= int(n) <= 3 for n in suggested.split(",")), msg
    # and the suggestion works as written
    res = benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real", f"regimes={suggested}"), progress=False)
    assert sorted({r["regime"] for r in res["runs"]}) == [int(n) for n in suggested.split(",")]


def test_train_only_folder_is_recognised_at_inspect_time(tmp_path, make_fundus, save_image, cli):
    root = _small(tmp_path / "mine", make_fundus, save_image, 4, with_test=False)
    r = cli("data", "inspect", root)
    assert r.exit_code == 0, r.output
    assert "split: train-only" in r.output and "no test split" in r.output
    with pytest.raises(DataError, match=r"no test split.*bench\.eval=val.*--test-data"):
        benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real"), progress=False)
    res = benchmark_downstream(root, None, tmp_path / "o", tiny("arms=real", "eval=val", "val_count=1"),
                               progress=False)
    assert res["data"]["eval"]["val"]["n"] == 1


def test_synthesize_positional_folders_without_flags_ask_for_run_and_out(cli, tmp_path):
    r = cli("synthesize", tmp_path / "runs" / "drive", tmp_path / "synth" / "drive")
    assert r.exit_code == 2 and "did you forget --run/--out?" in r.output and "Traceback" not in r.output
