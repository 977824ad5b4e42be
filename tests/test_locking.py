"""One writer per output folder (retinasynth.locking): real processes on one folder.

Each case starts a first command in a subprocess, made to stall at a known point while it holds its folder,
then runs the second one: it must be refused in one `error:` line naming the first one's pid, write nothing,
and, after `kill -9` of the first, the next run must proceed at once (the kernel dropped the lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retinasynth.errors import RetinaSynthError
from retinasynth.locking import LOCK_NAME, FolderBusy, entries, hold, try_hold

TIMEOUT = 300  # generous: a busy machine starts a torch process slowly

# Runs the CLI with one library function wrapped so that it hangs (holding whatever the command holds) once
# `when(args)` is true, after writing STALLED next to the marker path given in RETINASYNTH_TEST_STALL.
_STALLING = """
import os, sys, time, importlib
mod_name, attr, when = sys.argv[1], sys.argv[2], sys.argv[3]
mod = importlib.import_module(mod_name)
orig = getattr(mod, attr)
def stalled(*a, **k):
    out = orig(*a, **k) if {'after': True, 'before': False}[when.split(':')[0]] else None
    if eval(when.split(':', 1)[1]):
        open(os.environ['RETINASYNTH_TEST_STALL'], 'w').write(str(os.getpid()))
        time.sleep(600)
    return out if when.startswith('after') else orig(*a, **k)
setattr(mod, attr, stalled)
from retinasynth_cli.main import main
main(sys.argv[4:])
"""


def _start_stalled(tmp_path: Path, patch: tuple[str, str, str], args: list[str]) -> subprocess.Popen:
    marker = tmp_path / "stalled.pid"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RETINASYNTH_TEST_STALL": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", _STALLING, *patch, *[str(a) for a in args]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None and not marker.is_file():
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the first command ended before it stalled: {proc.stderr.read()!r}")
    assert marker.is_file(), "the first command never reached its stalling point"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _refused(result, pid: int, folder: Path) -> None:
    """Exit 2 with exactly one line, `error: FOLDER: ... pid PID ...`, and no traceback."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(folder) in lines[0] and f"pid {pid} " in lines[0] and f"kill {pid}" in lines[0], lines[0]
    assert "Traceback" not in result.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


# ----------------------------------------------------------------------------------------------- the lock


_HOLDER = """
import sys, time
from retinasynth.locking import hold
with hold(sys.argv[1], shared=sys.argv[2] == 'shared'):
    print('held', flush=True)
    time.sleep(600)
"""


def _holder(folder: Path, mode: str = "exclusive") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_refused_with_pid_and_kill_9_frees_at_once(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        with pytest.raises(FolderBusy) as e, hold(folder):
            pass
        msg = str(e.value)
        assert f"pid {proc.pid} on " in msg and f"kill {proc.pid}" in msg and "_HOLDER" not in msg
        assert "\n" not in msg
    finally:
        _kill9(proc)
    with hold(folder):  # the kernel released it with the process: no stale lock
        assert entries(folder) == []


def test_shared_holders_coexist_and_exclude_a_sole_writer(tmp_path):
    folder = tmp_path / "cache"
    a = _holder(folder, "shared")
    try:
        with hold(folder, shared=True):  # a second share of one cache
            pass
        with pytest.raises(FolderBusy, match=f"pid {a.pid} "):
            with hold(folder):
                pass
    finally:
        _kill9(a)
    b = _holder(folder, "exclusive")
    try:
        with pytest.raises(FolderBusy, match=f"pid {b.pid} "):
            with hold(folder, shared=True):
                pass
    finally:
        _kill9(b)


def test_try_hold_is_exclusive_and_released(tmp_path):
    lock = try_hold(tmp_path / "locks" / "cell.lock")
    assert lock is not None
    code = ("import sys; from retinasynth.locking import try_hold; "
            "sys.exit(0 if try_hold(sys.argv[1]) is None else 1)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "locks" / "cell.lock")]).returncode == 0
    lock.release()
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "locks" / "cell.lock")]).returncode == 1


def test_refused_before_writing_leaves_no_folder(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RetinaSynthError, match="boom"), hold(folder):
        raise RetinaSynthError("boom")
    assert not folder.exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RetinaSynthError, match="is a file"), hold(f):
        pass


# ----------------------------------------------------------------------------------------------- commands


def _fit_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--profile", "tiny", "--data", str(data_root), "--out", str(out), "--quiet",
            "-o", "train.steps=40", "-o", "train.ckpt_every=10", "-o", "train.log_every=5", *extra]


def test_fit_second_writer_refused_then_resume_after_kill_9(tmp_path, data_root, cli):
    out = tmp_path / "run"
    first = _start_stalled(tmp_path, ("retinasynth.train.checkpoint", "save_checkpoint",
                                      "after:a[3]['step'] >= 20"), _fit_args(data_root, out))
    try:
        before = _snapshot(out)
        _refused(cli(*_fit_args(data_root, out)), first.pid, out)  # the same command again
        _refused(cli("fit", "--resume", "--out", out, "--quiet"), first.pid, out)  # "the first one died"
        assert _snapshot(out) == before  # nothing of the first one's touched
    finally:
        _kill9(first)
    r = cli("fit", "--resume", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))  # each step once, in order
    assert json.loads((out / "config.json").read_text())["status"] == "complete"


def test_synthesize_second_writer_refused(tmp_path, run_dir, cli):
    out = tmp_path / "synth"
    args = ["synthesize", "--run", run_dir, "--out", out, "--n", "12", "--batch-size", "4", "--quiet",
            "--workers", "1"]
    # Stalled where it is quiescent: every pair written, the writer pool closed, the merged manifest not yet
    # written. (A stall inside a pair's write raced: the main thread could still append finished pairs'
    # manifest lines after the snapshot, and did once on a loaded CI machine.)
    first = _start_stalled(tmp_path, ("retinasynth.synth.synthesize", "write_text_atomic",
                                      "before:str(a[0]).endswith('manifest.jsonl')"), args)
    try:
        before = _snapshot(out)
        _refused(cli(*args, "--resume"), first.pid, out)
        _refused(cli(*args, "--overwrite"), first.pid, out)
        assert _snapshot(out) == before
    finally:
        _kill9(first)
    r = cli(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 12


def _bench_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["benchmark-downstream", "--data", str(root), "--out", str(out), "--profile", "tiny", "--quiet",
            "-o", "arms=real", "-o", "regimes=1,2", "-o", "seeds=0", "-o", "steps=2", *extra]


def test_benchmark_second_writer_refused(tmp_path, real_root, cli):
    out = tmp_path / "bench"
    first = _start_stalled(tmp_path, ("retinasynth.bench.benchmark", "train_cell",
                                      "before:a[1].regime == 2"), _bench_args(real_root, out))
    try:
        before = _snapshot(out)
        _refused(cli(*_bench_args(real_root, out)), first.pid, out)
        _refused(cli(*_bench_args(real_root, out), "--cells", "0/2"), first.pid, out)  # a share, beside a sole run
        assert _snapshot(out) == before
    finally:
        _kill9(first)
    r = cli(*_bench_args(real_root, out))
    assert r.exit_code == 0, r.output
    assert (out / "results.json").is_file()


def test_benchmark_cells_share_a_cache_and_skip_a_busy_cell(tmp_path, real_root, cli):
    one, shared = tmp_path / "one", tmp_path / "shared"
    assert cli(*_bench_args(real_root, one)).exit_code == 0
    # Two processes take the same share: the second finds the cell the first is training and leaves it.
    first = _start_stalled(tmp_path, ("retinasynth.bench.benchmark", "train_cell", "before:a[1].regime == 2"),
                           _bench_args(real_root, shared, "--cells", "0/1"))
    try:
        r = cli(*_bench_args(real_root, shared, "--cells", "0/1"))
        assert r.exit_code == 0, r.output
        assert f"being trained by pid {first.pid} on " in r.output and "1 left to other processes" in r.output
    finally:
        _kill9(first)
    r = cli(*_bench_args(real_root, shared))  # the busy cell's lock went with the killed process
    assert r.exit_code == 0, r.output
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, shared))
    assert a["summary"] == b["summary"] and a["paired"] == b["paired"]
