"""Progress output that a file or a scheduler log can hold (retinasynth/progress.py), and CLI error lines.

Unit tests drive :class:`PlainProgress` with a fake clock; the end-to-end tests run the installed CLI in a
subprocess with stdout and stderr sent to one file (not a terminal) on two refusals of
``benchmark-downstream`` and check that the file holds whole lines, one of them starting with ``error:``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retinasynth import progress as P


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(P.time, "monotonic", c)
    return c


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(P.MODE_ENV, raising=False)
    monkeypatch.delenv(P.EVERY_ENV, raising=False)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_mode_follows_the_stream_and_the_environment(monkeypatch):
    assert P.mode(io.StringIO()) == "plain"
    assert P.mode(_Tty()) == "tqdm"
    assert isinstance(P.progress(range(3), stream=io.StringIO()), P.PlainProgress)
    assert not isinstance(P.progress(range(3), stream=_Tty()), P.PlainProgress)
    monkeypatch.setenv(P.MODE_ENV, "plain")
    assert isinstance(P.progress(range(3), stream=_Tty()), P.PlainProgress)
    monkeypatch.setenv(P.MODE_ENV, "tqdm")
    assert P.mode(io.StringIO()) == "tqdm"
    monkeypatch.setenv(P.MODE_ENV, "off")
    buf = io.StringIO()
    assert list(P.progress(range(3), stream=buf, desc="x")) == [0, 1, 2]
    assert buf.getvalue() == ""
    monkeypatch.setenv(P.MODE_ENV, "bogus")  # unknown values: the automatic choice
    assert P.mode(io.StringIO()) == "plain"


def test_plain_mode_writes_only_complete_lines(clock):
    buf = io.StringIO()
    bar = P.progress(total=36, desc="benchmark", unit="run", stream=buf)
    for i in range(36):
        clock.t += 7
        bar.set_postfix_str(f"real_n2_s{i}")
        bar.update(1)
    bar.close()
    text = buf.getvalue()
    assert text and text.endswith("\n") and "\r" not in text and "\033" not in text
    lines = text.splitlines()
    assert all(ln.startswith("benchmark: ") for ln in lines)
    assert lines[0] == "benchmark: 4/36 runs (11%), 28s elapsed, ETA 3m44s, real_n2_s3"
    assert lines[-1] == "benchmark: 36/36 runs (100%), 4m12s elapsed, real_n2_s35"

    # iteration, set_postfix and the context manager; no total -> a count without percent
    buf = io.StringIO()
    with P.progress((x for x in range(5)), desc="fit", unit="step", stream=buf, every=0) as bar:
        for _ in bar:
            bar.set_postfix(loss=0.123456, d="0.5")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "fit: 1 steps, 0s elapsed, loss=0.123, d=0.5"
    assert lines[-1] == "fit: 5 steps, 0s elapsed, loss=0.123, d=0.5" and len(lines) == 5


def test_plain_mode_throttles_by_time_and_by_tenths(clock):
    buf = io.StringIO()
    bar = P.progress(total=1000, desc="synthesize", unit="pair", stream=buf, every=30)
    for _ in range(1000):  # 1000 updates over 100 s: a line per tenth (the 30 s rule never comes first)
        clock.t += 0.1
        bar.update(1)
    bar.close()  # the last line already said 1000/1000: no repeat
    lines = buf.getvalue().splitlines()
    assert [ln.split(" ")[1] for ln in lines] == [f"{k}00/1000" for k in range(1, 10)] + ["1000/1000"]

    buf = io.StringIO()
    bar = P.progress(total=10_000, desc="fit", unit="step", stream=buf, every=30)
    for _ in range(720):  # 7.2% in 90 s: the time rule alone, every 30 s
        clock.t += 0.125
        bar.update(1)
    assert [ln.split(" ")[1] for ln in buf.getvalue().splitlines()] == ["240/10000", "480/10000", "720/10000"]

    # the environment sets the interval when the caller gives none
    os.environ[P.EVERY_ENV] = "5"
    try:
        buf = io.StringIO()
        bar = P.progress(total=10_000, stream=buf)
        assert bar.every == 5
    finally:
        del os.environ[P.EVERY_ENV]
    # nothing happened: no line at all; initial counts as done already
    buf = io.StringIO()
    P.progress(total=5, initial=5, stream=buf).close()
    bar = P.progress(total=10, initial=4, desc="b", unit="run", stream=buf)
    clock.t += 60
    bar.update(1)
    assert buf.getvalue() == "b: 5/10 runs (50%), 1m00s elapsed, ETA 5m00s\n"


def test_inner_leave_false_bars_write_only_their_final_line(clock):
    buf = io.StringIO()
    outer = P.progress(total=3, desc="benchmark", unit="run", stream=buf)
    for r in range(3):
        for _ in P.progress(range(100), desc=f"run {r}", unit="step", leave=False, stream=buf, every=0):
            clock.t += 1
        outer.update(1)
    outer.close()
    assert buf.getvalue().splitlines() == [
        "run 0: 100/100 steps (100%), 1m40s elapsed",
        "benchmark: 1/3 runs (33%), 1m40s elapsed, ETA 3m20s",
        "run 1: 100/100 steps (100%), 1m40s elapsed",
        "benchmark: 2/3 runs (67%), 3m20s elapsed, ETA 1m40s",
        "run 2: 100/100 steps (100%), 1m40s elapsed",
        "benchmark: 3/3 runs (100%), 5m00s elapsed",
    ]
    # a loop left by an exception writes no final line
    buf = io.StringIO()
    with pytest.raises(RuntimeError):
        for i in P.progress(range(10), desc="x", leave=False, stream=buf):
            if i == 3:
                raise RuntimeError
    assert buf.getvalue() == ""


def test_ensure_line_start_after_a_tqdm_bar_mid_line(monkeypatch):
    monkeypatch.setenv(P.MODE_ENV, "tqdm")
    buf = io.StringIO()  # a file: the partial bar line is ended with "\n"
    bar = P.progress(total=10, desc="inner", leave=False, stream=buf, position=0, mininterval=0)
    bar.update(3)
    bar.refresh()
    P.ensure_line_start(buf)
    buf.write("error: boom\n")
    assert "\nerror: boom\n" in buf.getvalue()
    assert bar.disable  # closed

    tty = _Tty()  # a terminal: the cleared bar line is erased, not followed by an empty line
    bar = P.progress(total=10, desc="inner", leave=False, stream=tty, position=0, mininterval=0)
    bar.update(3)
    P.ensure_line_start(tty)
    assert tty.getvalue().endswith("\r\033[K") and bar.disable

    tty = _Tty()  # a leave=True bar is closed with its last state on its own line: nothing to add
    bar = P.progress(total=10, desc="outer", stream=tty, mininterval=0)
    bar.update(3)
    P.ensure_line_start(tty)
    last = tty.getvalue().split("\r")[-1]
    assert last.startswith("outer:  30%") and last.endswith("\n") and "\033" not in last


def test_message_mode_writes_a_whole_line_between_bars(monkeypatch):
    buf = io.StringIO()
    bar = P.progress(total=10, desc="plain", stream=buf, every=0)
    bar.update(1)
    with P.message_mode(buf):
        buf.write("warning: w\n")
    assert buf.getvalue() == "plain: 1/10 it (10%), 0s elapsed, ETA 0s\nwarning: w\n"
    bar.close()

    monkeypatch.setenv(P.MODE_ENV, "tqdm")
    tty = _Tty()
    bar = P.progress(total=10, desc="drawn", stream=tty, mininterval=0)
    bar.update(2)
    with P.message_mode(tty):
        tty.write("warning: w\n")
    before, after = tty.getvalue().split("warning: w\n")
    assert before.endswith("\r") and after.startswith("\rdrawn:  20%")  # cleared, written, redrawn
    bar.close()


# ------------------------------------------------------------------------------------------- end to end

SIZE = 64
TINY_FIT = ["train.steps=2", "train.ckpt_every=2", "train.sample_every=2", "train.log_every=1",
            "train.threads=1", f"data.size={SIZE}"]
BENCH = ["--profile", "tiny", "-o", "steps=1", "-o", "regimes=[2]", "-o", "seeds=[0]", "-o", "arms=real,synth",
         "-o", f"size={SIZE}", "-o", "patch=32"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread, save_image_module):
    """A train/test dataset, a clean synthetic set, and a synthetic set made from copies of the test masks."""
    from retinasynth.synth.phantom import render_phantom
    from retinasynth.synth.synthesize import SynthConfig, synthesize
    from retinasynth.train.config import build_fit_config
    from retinasynth.train.fit import fit

    tmp = tmp_path_factory.mktemp("progress")
    real = tmp / "real"
    for split, n, base in (("train", 3, 0), ("test", 2, 100)):
        for i in range(n):
            image, mask, fov, _ = render_phantom(SIZE, np.random.default_rng([7, base + i]))
            save_image_module(real / split / "images" / f"im{i}.png", image)
            save_image_module(real / split / "masks" / f"im{i}.png", mask)
    gen_data = tmp / "gen"
    shutil.copytree(real / "train", gen_data / "train")
    run = fit(build_fit_config("tiny", overrides=TINY_FIT), gen_data, tmp / "run", progress=False)
    clean = tmp / "synth-clean"
    synthesize(run, clean, SynthConfig(n=2, sources="real:1", workers=1), progress=False)
    copy = tmp / "elsewhere"  # the test split stored elsewhere as "train": the masks leak
    shutil.copytree(real / "test", copy / "train")
    leaked = tmp / "synth-leaked"
    synthesize(run, leaked, SynthConfig(n=2, sources="real:1", workers=1), data_root=copy, progress=False)
    return {"real": real, "clean": clean, "leaked": leaked}


def _run_cli_to_file(args, log: Path, **env) -> int:
    environ = {k: v for k, v in os.environ.items() if k not in (P.MODE_ENV, P.EVERY_ENV)}
    environ.update(env)
    with open(log, "wb") as f:  # stdout and stderr into one file: not a terminal
        return subprocess.run([sys.executable, "-m", "retinasynth_cli.main", *map(str, args)], stdout=f,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ,
                              timeout=300).returncode


def _check_log(log: Path, match: str, forced_tqdm: bool = False) -> None:
    text = log.read_bytes().decode()  # not read_text(): universal newlines would turn "\r" into "\n"
    assert "Traceback" not in text, text
    if not forced_tqdm:
        assert "\r" not in text and "\033" not in text, repr(text)
    errors = [ln for ln in text.split("\n") if ln.startswith("error:")]  # "\n" only: a "\r" does not end a line
    assert len(errors) == 1 and match in errors[0], repr(text)
    assert text.endswith("\n")


@pytest.mark.parametrize("case", ["damaged-manifest", "leaked-masks", "damaged-manifest-forced-tqdm"])
def test_cli_refusal_logged_to_a_file_is_whole_lines(tmp_path, world, case):
    if case.startswith("damaged-manifest"):
        synth = Path(shutil.copytree(world["clean"], tmp_path / "set"))
        m = synth / "manifest.jsonl"
        m.write_bytes(m.read_bytes()[: len(m.read_bytes()) // 2])  # cut in the middle of a record
        match = "manifest.jsonl"
    else:
        synth = world["leaked"]
        match = "identical to evaluated test mask"
    forced = case.endswith("forced-tqdm")  # tqdm bars into the file: the error still starts its own line
    log = tmp_path / "bench.log"
    code = _run_cli_to_file(["benchmark-downstream", "--data", world["real"], "--synth", synth,
                             "--out", tmp_path / "out", *BENCH], log, **({P.MODE_ENV: "tqdm"} if forced else {}))
    assert code == 2, log.read_text()
    _check_log(log, match, forced)
    if forced:
        assert "\r" in log.read_bytes().decode()  # the bars were drawn
    assert not list((tmp_path / "out").glob("runs/*.json"))
