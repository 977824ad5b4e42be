"""The whole chain through the CLI at the smallest settings: phantom data -> fit -> synthesize -> benchmark."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from retinasynth_cli.main import main


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_demo_quick_runs_the_whole_chain(demo_out):
    out, output = demo_out
    assert "retinasynth demo finished" in output
    assert "| arm | n real |" in output  # the benchmark table is in the summary
    assert json.loads((out / "run" / "config.json").read_text())["status"] == "complete"
    synth = json.loads((out / "synth" / "synth.json").read_text())
    assert synth["status"] == "complete" and sum(synth["counts"].values()) == 8
    assert len((out / "synth" / "manifest.jsonl").read_text().splitlines()) == 8
    for name in ("results.json", "summary.csv", "report.md", "dice_vs_n.png"):
        assert (out / "benchmark" / name).is_file(), name
    res = json.loads((out / "benchmark" / "results.json").read_text())
    assert {r["arm"] for r in res["runs"]} == {"real", "real+synth", "synth"}


def test_demo_rerun_skips_finished_steps(demo_out):
    out, _ = demo_out
    r = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "fit: finished run found" in r.output
    assert "synthesize: finished set found" in r.output


def test_consistency_filter_drops_and_records(demo_out, tmp_path):
    out, _ = demo_out
    model = out / "benchmark" / "models" / "real_n2_s0.safetensors"
    assert model.is_file()
    dst = tmp_path / "filtered"
    args = ["synthesize", "--run", str(out / "run"), "--n", "6", "--out", str(dst), "--quiet",
            "--filter-model", str(model), "--filter-min-dice", "1.0"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    dropped = [json.loads(x) for x in (dst / "filtered_out.jsonl").read_text().splitlines()]
    kept = [json.loads(x) for x in (dst / "manifest.jsonl").read_text().splitlines()]
    # A tiny, barely trained segmenter never reaches Dice 1.0: every pair is dropped, with its score.
    assert len(dropped) == 6 and kept == []
    assert all(0.0 <= d["consistency_dice"] < 1.0 for d in dropped)
    assert not any((dst / d["image"]).exists() for d in dropped)
    # Resuming does not render the dropped pairs again.
    r = CliRunner().invoke(main, args + ["--resume"])
    assert r.exit_code == 0, r.output
    assert "0 rendered" in r.output


def test_filter_model_must_be_a_segmentation_checkpoint(demo_out, tmp_path):
    out, _ = demo_out
    bogus = out / "run" / "generator_ema.safetensors"
    r = CliRunner().invoke(main, ["synthesize", "--run", str(out / "run"), "--n", "2", "--out",
                                  str(tmp_path / "x"), "--quiet", "--filter-model", str(bogus)])
    assert r.exit_code == 2
    assert "not a retinasynth segmentation checkpoint" in r.output
