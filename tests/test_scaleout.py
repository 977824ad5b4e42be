"""Scale-out: `synthesize` and `benchmark-downstream` under torchrun (2 CPU processes, gloo), the merge of
`--shard i/N` folders and `--cells i/N` shares, each against a single-process run of the same settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retinasynth.bench.plan import Cell, cell_groups
from retinasynth.errors import RetinaSynthError
from retinasynth.synth.synthesize import MANIFEST, VOLATILE, SynthConfig, merge_shards, synthesize

N, BS = 10, 4  # chunk 1 (pairs 4..7) straddles the 0/2 | 1/2 boundary at pair 5


def _tree(out: Path) -> dict[str, bytes]:
    """Every file of a folder (relative path -> bytes), synth.json without its volatile fields."""
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != ".retinasynth.lock":  # who held the folder, not its content
            rel = str(p.relative_to(out))
            if rel == "synth.json":
                meta = json.loads(p.read_text())
                files[rel] = json.dumps({k: v for k, v in meta.items() if k not in VOLATILE}).encode()
            else:
                files[rel] = p.read_bytes()
    return files


def _torchrun(args: list[str], cwd: Path, timeout: int = 150) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    # `-m --`: torchrun's own parser would otherwise read `--run` as an abbreviation of `--run-path`.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "--", "retinasynth_cli.main", *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def single(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scaleout") / "single"
    synthesize(run_dir, out, SynthConfig(n=N, batch_size=BS, seed=0), progress=False)
    return out


def test_torchrun_synthesize_matches_single_process_and_resumes(run_dir, single, tmp_path):
    out = tmp_path / "tr"
    _torchrun(["synthesize", "--run", str(run_dir), "--n", str(N), "--batch-size", str(BS), "--out", str(out),
               "--quiet"], tmp_path)
    assert _tree(out) == _tree(single)
    assert not list(out.glob(".manifest*"))
    # a torchrun run killed midway: two ranks' partial manifests, three pairs never written
    recs = [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]
    (out / MANIFEST).unlink()
    (out / ".manifest.rank0.inprogress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:4]))
    (out / ".manifest.rank1.inprogress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[5:7])
                                                          + '{"cut sho')
    for r in recs[7:]:
        (out / r["image"]).unlink()
    meta = json.loads((out / "synth.json").read_text())
    (out / "synth.json").write_text(json.dumps({**meta, "status": "running"}))
    # resumed by a single process (the number of processes may change between calls)
    synthesize(run_dir, out, SynthConfig(n=N, batch_size=BS, seed=0), resume=True, progress=False)
    assert _tree(out) == _tree(single)
    assert not list(out.glob(".manifest*"))


def test_merge_of_shards_matches_single_process(run_dir, single, tmp_path, cli):
    shards = []
    for i in range(2):
        shards.append(tmp_path / f"shard{i}")
        synthesize(run_dir, shards[-1], SynthConfig(n=N, batch_size=BS, seed=0, shard=f"{i}/2"), progress=False)
    r = cli("synthesize", "--merge", tmp_path / "merged", shards[1], shards[0])
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "merged") == _tree(single)
    merged_meta = json.loads((tmp_path / "merged" / "synth.json").read_text())
    assert merged_meta["settings"]["shard"] == "0/1" and len(merged_meta["timing"]["merged_from"]) == 2

    other = tmp_path / "other"
    synthesize(run_dir, other, SynthConfig(n=N, batch_size=BS, seed=1, shard="1/2"), progress=False)
    for dirs, msg in (([shards[0], other], "not a shard of the same run"),
                      ([shards[0], shards[0]], "are not the shards"),
                      ([shards[0]], "are not the shards")):
        r = cli("synthesize", "--merge", tmp_path / "bad", *dirs)
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "bad").exists()
    with pytest.raises(RetinaSynthError, match="not empty"):
        merge_shards(tmp_path / "merged", shards)
    shard_bs = tmp_path / "bs"
    synthesize(run_dir, shard_bs, SynthConfig(n=N, batch_size=2, seed=0, shard="1/2"), progress=False)
    with pytest.raises(RetinaSynthError, match="batch_size"):
        merge_shards(tmp_path / "bad", [shards[0], shard_bs])


def test_cell_groups_keep_shared_work_together():
    plan = [Cell(arm, n, seed, f"{arm}-{seed}" if arm == "synth" else f"{arm}-{n}-{seed}")
            for n in (1, 2) for seed in (0, 1) for arm in ("real", "synth", "pretrain")]
    groups = cell_groups(plan)
    assert sorted(i for g in groups for i in g) == list(range(len(plan)))
    for g in groups:
        if any(plan[i].arm in ("synth", "pretrain") for i in g):
            assert {plan[i].arm for i in g} == {"synth", "pretrain"} and len({plan[i].seed for i in g}) == 1
            assert len(g) == 4  # synth n1, synth n2 (same hash), pretrain n1, pretrain n2 of one seed
        else:
            assert len(g) == 1


def _bench_args(data_root, synth: Path, out: Path) -> list[str]:
    return ["benchmark-downstream", "--data", str(data_root), "--synth", str(synth), "--out", str(out),
            "--profile", "tiny", "-o", "bench.steps=1", "-o", "bench.regimes=[1,2]", "-o", "bench.seeds=[0,1]",
            "-o", "bench.arms=real,synth,pretrain", "--quiet"]


def _same_results(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    for key in ("summary", "paired", "plateau", "n_comparisons", "config"):
        assert ra[key] == rb[key], key
    assert [(r["name"], r["scores"]) for r in ra["runs"]] == [(r["name"], r["scores"]) for r in rb["runs"]]
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()


def test_benchmark_two_ranks_and_cells_match_one_process(data_root, single, tmp_path, cli):
    synth = tmp_path / "synth"
    shutil.copytree(single, synth)
    one, cells = tmp_path / "one", tmp_path / "cells"
    r = cli(*_bench_args(data_root, synth, one))
    assert r.exit_code == 0, r.output
    for i in range(2):
        r = cli(*_bench_args(data_root, synth, cells), "--cells", f"{i}/2")
        assert r.exit_code == 0 and f"cells {i}/2" in r.output, r.output
        assert not (cells / "results.json").exists()
    r = cli(*_bench_args(data_root, synth, cells))
    assert r.exit_code == 0, r.output
    assert json.loads((cells / "results.json").read_text())["n_trained"] == 0
    _same_results(one, cells)

    two = tmp_path / "two"
    _torchrun(_bench_args(data_root, synth, two), tmp_path)
    _same_results(one, two)
    res = json.loads((two / "results.json").read_text())
    ref = json.loads((one / "results.json").read_text())
    assert (res["n_trained"], res["n_reused"]) == (ref["n_trained"], ref["n_reused"])
