"""`retinasynth synthesize`: synthetic image/mask sets from a tiny trained run.

One tiny run (4 steps on six 64x64 phantoms) and one reference synthetic set are made once per module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from retinasynth.config import from_dict
from retinasynth.data.dataset import DataConfig, load_dataset
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.locking import LOCK_NAME
from retinasynth.masks import replay
from retinasynth.provenance import sha256_file
from retinasynth.rundir import load_generator
from retinasynth.synth.synthesize import MANIFEST, PARTIAL, SynthConfig, synthesize

pytestmark = pytest.mark.usefixtures("one_thread")

N = 12
# every source, so the tests cover the procedural path that the default mix leaves out
CFG = SynthConfig(n=N, batch_size=4, workers=2, seed=0, sources="real:0.2,perturbed:0.4,procedural:0.4")
MANIFEST_KEYS = {"id", "image", "mask", "fov", "source", "source_mask_id", "source_split", "recipe", "seed",
                 "generator_sha256", "precision", "versions"}





@pytest.fixture(scope="module")
def reference(tmp_path_factory, run_dir):
    """An uninterrupted synthesis of N pairs with CFG."""
    out = tmp_path_factory.mktemp("synth") / "ref"
    summary = synthesize(run_dir, out, CFG, progress=False)
    return out, summary



def _manifest(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]


def _files(out: Path, subs=("images", "masks", "fov")) -> dict[str, bytes]:
    """Visible files of the pair folders (atomic-write temporaries start with a dot)."""
    return {f"{s}/{p.name}": p.read_bytes() for s in subs for p in sorted((out / s).iterdir())
            if not p.name.startswith(".")}


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"syn_{p:06d}" for p in range(start, n)]


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------------------------------- output


def test_default_mix_leaves_procedural_trees_out():
    """Chosen on validation (RESULTS.md section 12): real and perturbed masks only."""
    assert SynthConfig().mix == {"real": 0.3, "perturbed": 0.7}


def test_writes_exactly_n_pairs(reference):
    out, summary = reference
    assert summary["n"] == N and sum(summary["counts"].values()) == N
    assert set(summary["counts"]) == {"real", "perturbed", "procedural"}  # seed 0 draws all three
    for sub in ("images", "masks", "fov"):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"{i}.png" for i in _ids(N)]
    assert not (out / PARTIAL).exists()
    assert {p.name for p in out.iterdir()} - {LOCK_NAME} == {"images", "masks", "fov", "manifest.jsonl", "metadata.jsonl",
                                               "synth.json", "README.md", "preview.png"}


def test_masks_binary_and_inside_fov(reference):
    out, _ = reference
    for i in _ids(N):
        img, mask, fov = (_read(out / sub / f"{i}.png") for sub in ("images", "masks", "fov"))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert mask.shape == fov.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(fov)) <= {0, 255}
        assert mask.any() and fov.any()
        assert not ((mask > 0) & (fov == 0)).any(), i


def test_manifest_schema_and_provenance(reference, run_dir):
    out, _ = reference
    recs = _manifest(out)
    assert [r["id"] for r in recs] == _ids(N)  # unique, sorted
    sha = sha256_file(run_dir / "generator_ema.safetensors")
    for p, r in enumerate(recs):
        assert MANIFEST_KEYS <= set(r)
        assert (r["image"], r["mask"], r["fov"]) == tuple(f"{s}/{r['id']}.png" for s in ("images", "masks", "fov"))
        assert r["source"] in ("real", "perturbed", "procedural")
        assert r["seed"] == [0, p] and r["generator_sha256"] == sha
        assert {"retinasynth", "torch", "numpy"} <= set(r["versions"])
        if r["source"] == "procedural":
            assert r["source_mask_id"] is None and r["source_split"] is None and r["recipe"] is None
        else:
            assert r["source_split"] == "train" and isinstance(r["source_mask_id"], str)
            assert (r["recipe"] is None) == (r["source"] == "real")
    meta = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["file_name"] for m in meta] == [r["image"] for r in recs]
    assert [m["mask_file_name"] for m in meta] == [r["mask"] for r in recs]
    synth = json.loads((out / "synth.json").read_text())
    assert synth["status"] == "complete" and synth["n"] == N and synth["generator_sha256"] == sha
    assert synth["settings"]["seed"] == 0 and synth["settings"]["n"] == N
    assert synth["counts"] == _count(recs)
    card = (out / "README.md").read_text()
    assert card.startswith("# Synthetic retinal fundus images") and f"{N} synthetic fundus photographs" in card
    assert sha in card
    preview = _read(out / "preview.png")
    # 12 pairs, 4 per row, then a full-resolution zoom (mask | image, 2x) of the first two pairs
    assert preview is not None and preview.shape == (3 * 160 + 320, 4 * 320, 3)
    zoom = preview[3 * 160:]
    assert zoom[:, :320].max() == 255 and set(np.unique(zoom[:, :320])) <= {0, 255}  # the mask panel, binary


def _count(recs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        out[r["source"]] = out.get(r["source"], 0) + 1
    return out


def test_real_and_perturbed_only_use_training_masks(reference, run_dir, data_root):
    out, _ = reference
    run_cfg = json.loads((run_dir / "config.json").read_text())
    train_ids = set(run_cfg["data"]["ids"])
    assert train_ids == set(run_cfg["data"]["train_ids"]) | set(run_cfg["data"]["val_ids"])
    gen = load_generator(run_dir)
    data_cfg = from_dict(DataConfig, {**run_cfg["config"]["data"], "size": gen.size})
    test_ids = set(load_dataset(data_root, "test", data_cfg).ids)
    sources = {s.id: s for s in load_dataset(data_root, "train", data_cfg)}
    checked = {"real": 0, "perturbed": 0}
    for r in _manifest(out):
        if r["source"] == "procedural":
            continue
        assert r["source_split"] == "train"
        assert r["source_mask_id"] in train_ids and r["source_mask_id"] not in test_ids
        src = sources[r["source_mask_id"]]
        mask, fov = _read(out / r["mask"]) > 0, _read(out / r["fov"]) > 0
        if r["source"] == "real":
            assert np.array_equal(mask, src.mask & src.fov) and np.array_equal(fov, src.fov)
        else:
            assert r["recipe"] and all({"name", "params"} == set(step) for step in r["recipe"])
            m, f = replay(r["recipe"], src.mask, src.fov)
            assert np.array_equal(m, mask) and np.array_equal(f, fov)
        checked[r["source"]] += 1
    assert checked["real"] > 0 and checked["perturbed"] > 0


def test_loads_as_generic_dataset(reference):
    out, _ = reference
    ds = load_dataset(out, "all", DataConfig(size=None))
    assert ds.layout == "generic" and len(ds) == N
    assert ds.ids == _ids(N)
    s = ds[0]
    assert s.fov_source == "given" and not (s.mask & ~s.fov).any()


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_other_seed_differs(reference, run_dir, tmp_path):
    ref, _ = reference
    again = tmp_path / "again"
    synthesize(run_dir, again, CFG, progress=False)
    assert _files(again) == _files(ref)
    assert _manifest(again) == _manifest(ref)
    other = tmp_path / "other"
    synthesize(run_dir, other, dataclasses.replace(CFG, seed=1), progress=False)
    a, b = _files(other), _files(ref)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.startswith("images/")) >= N - 1
    assert sum(a[k] != b[k] for k in a if k.startswith("masks/")) >= N // 2


def test_shards_cover_all_pairs_once(reference, run_dir, tmp_path):
    ref, _ = reference
    n = 10
    ids = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        cfg = dataclasses.replace(CFG, n=n, shard=f"{i}/2")
        r = synthesize(run_dir, out, cfg, progress=False)
        assert r["n"] == 5
        recs = _manifest(out)
        assert [x["id"] for x in recs] == _ids(5 * (i + 1), 5 * i)
        ids += [x["id"] for x in recs]
        # a pair's mask depends only on (seed, pair index), not on n, shard or batching
        for x in recs:
            assert (out / x["mask"]).read_bytes() == (ref / x["mask"]).read_bytes()
    assert sorted(ids) == _ids(n) and len(set(ids)) == n


# ------------------------------------------------------------------------------------------------ resume


def _check_resumed(out: Path, ref: Path) -> None:
    recs = _manifest(out)
    assert [r["id"] for r in recs] == _ids(N)  # every pair once, sorted
    for r in recs:
        assert all((out / r[k]).is_file() for k in ("image", "mask", "fov"))
    assert _files(out) == _files(ref)
    assert not (out / PARTIAL).exists()
    assert len(load_dataset(out, "all", DataConfig(size=None))) == N
    assert json.loads((out / "synth.json").read_text())["status"] == "complete"


def test_resume_after_simulated_kill(reference, run_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "killed"
    shutil.copytree(ref, out)
    lines = (out / MANIFEST).read_text().splitlines()
    (out / MANIFEST).unlink()
    for p in (5, 6, 9, 10, 11):
        (out / "images" / f"syn_{p:06d}.png").unlink()
    (out / "masks" / "syn_000011.png").unlink()
    # the partial manifest of a killed run: five whole lines, then one cut short
    (out / PARTIAL).write_text("".join(ln + "\n" for ln in lines[:5]) + lines[5][:40])
    (out / "images" / ".syn_000005.png.x1y2.tmp").write_bytes(b"half a png")  # a write cut short
    r = synthesize(run_dir, out, CFG, resume=True, progress=False)
    assert r["n"] == N and r["timing"]["pairs_this_call"] == N - 5
    _check_resumed(out, ref)


def test_resume_of_complete_set_is_a_no_op(reference, run_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "done"
    shutil.copytree(ref, out)
    r = synthesize(run_dir, out, CFG, resume=True, progress=False)
    assert r["timing"]["pairs_this_call"] == 0
    _check_resumed(out, ref)


def test_resume_with_other_settings_is_refused(reference, run_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "done"
    shutil.copytree(ref, out)
    with pytest.raises(RetinaSynthError, match=r"different settings \(seed\)"):
        synthesize(run_dir, out, dataclasses.replace(CFG, seed=3), resume=True, progress=False)


_STALLING_CLI = """
import sys, time
import retinasynth.synth.synthesize as s
from retinasynth_cli.main import main
write = s.write_png_atomic
def stall(path, image):
    # pairs from 6 on: write the image, then hang before the mask (a kill lands mid-pair)
    if int(str(path)[-10:-4]) >= 6 and "masks" in str(path):
        time.sleep(600)
    return write(path, image)
s.write_png_atomic = stall
main(sys.argv[1:])
"""


def test_resume_after_kill_9_of_cli(reference, run_dir, tmp_path):
    """The CLI in a subprocess, made to stall at pair 6 so that the kill lands at a known point:
    SIGKILL once pairs 0-5 are in the partial manifest, then --resume."""
    ref, _ = reference
    out = tmp_path / "kill9"
    args = ["synthesize", "--run", str(run_dir), "--out", str(out), "--n", str(N), "--batch-size", "4",
            "--workers", "2", "--seed", "0", "--quiet", "--source", CFG.sources]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _STALLING_CLI, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    partial, deadline = out / PARTIAL, time.monotonic() + 300  # generous: a busy machine starts slowly
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.is_file() and partial.read_text().count("\n") >= 6 and \
                    (out / "images" / "syn_000006.png").is_file():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"synthesize ended before it could be killed: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / MANIFEST).exists()
    assert [json.loads(ln)["id"] for ln in partial.read_text().splitlines()] == _ids(6)
    assert (out / "images" / "syn_000006.png").is_file() and not (out / "masks" / "syn_000006.png").exists()
    r = synthesize(run_dir, out, CFG, resume=True, progress=False)
    assert r["timing"]["pairs_this_call"] == N - 6
    _check_resumed(out, ref)


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_synthesize(cli, run_dir, tmp_path):
    out = tmp_path / "cli"
    r = cli("synthesize", "--run", run_dir, "--out", out, "--n", 4, "--batch-size", 4, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"4 pairs in {out}")
    assert len(_manifest(out)) == 4


def test_cli_stochastic_flag(cli, run_dir, tmp_path):
    """--stochastic / --deterministic override the library default; stochastic renders are seeded."""
    outs = {}
    for name, flag in (("s1", "--stochastic"), ("s2", "--stochastic"), ("d", "--deterministic")):
        outs[name] = tmp_path / name
        r = cli("synthesize", "--run", run_dir, "--out", outs[name], "--n", 2, "--quiet", flag, "--source", "real:1")
        assert r.exit_code == 0, r.output
        meta = json.loads((outs[name] / "synth.json").read_text())
        assert meta["stochastic"] is (flag == "--stochastic") and meta["settings"]["stochastic"] is meta["stochastic"]
    img = {k: (v / "images" / "syn_000000.png").read_bytes() for k, v in outs.items()}
    assert img["s1"] == img["s2"] and img["s1"] != img["d"]


def test_cli_non_empty_out_refused_then_overwritten(cli, run_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    r = cli("synthesize", "--run", run_dir, "--out", out, "--n", 4, "--quiet")
    assert r.exit_code == 2 and "error:" in r.output and "--resume" in r.output and "--overwrite" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    r = cli("synthesize", "--run", run_dir, "--out", out, "--n", 4, "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "notes.txt").exists() and len(_manifest(out)) == 4
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.png" for i in _ids(4)]


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be a positive integer, got 0"),
    (["--n", "-3"], "--n must be a positive integer"),
    (["--source", "real:0.5,dreams:0.5"], "unknown mask source 'dreams'; valid: real, perturbed, procedural"),
    (["--source", "real:0"], "must sum to a positive value"),
    (["--source", "real"], "must look like name:weight"),
    (["--shard", "3/2"], "--shard 3/2: need N >= 1 and 0 <= i < N"),
    (["--shard", "half"], "--shard must look like i/N"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
])
def test_cli_bad_options(cli, run_dir, tmp_path, args, message):
    out = tmp_path / "bad"
    r = cli("synthesize", "--run", run_dir, "--out", out, "--quiet", *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and message in r.output
    assert "Traceback" not in r.output
    assert not out.exists()


def test_cli_missing_run_directory(cli, tmp_path):
    r = cli("synthesize", "--run", tmp_path / "nope", "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 2 and r.output.startswith("error: ")
    assert "run directory not found" in r.output and "Traceback" not in r.output


def test_synth_config_validation():
    with pytest.raises(ConfigError, match="--n"):
        SynthConfig(n=0)
    assert SynthConfig(n=10, shard="1/3").shard_range(10) == range(3, 6)
    parts = [SynthConfig(n=10, shard=f"{i}/3").shard_range(10) for i in range(3)]
    assert [p for r in parts for p in r] == list(range(10))
