"""Fuzz suite: every file the commands read, damaged systematically.

Each case copies a real input (a tiny phantom dataset, a tiny `fit` run, a tiny synthetic set, a tiny
segmenter checkpoint), damages one file (truncation at several offsets, bit flips, zero length, the wrong
format under the right extension, images of the wrong size/mode/dtype/channels, masks with odd values,
broken configs) and runs one command in-process. It asserts: exit code 2 with exactly one ``error:`` line
(or a clean success where the damage is harmless), no traceback, and no partial output left behind.
The number of cases tried is printed at the end of the session (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_FIT, _save

pytestmark = pytest.mark.usefixtures("one_thread")


# --- damage -------------------------------------------------------------------------------------------------
def _flip(b: bytes, at: float) -> bytes:
    if not b:
        return b
    i = min(len(b) - 1, int(len(b) * at))
    return b[:i] + bytes([b[i] ^ 0x10]) + b[i + 1:]


def _png_bytes() -> bytes:
    import cv2

    return cv2.imencode(".png", np.full((8, 8), 7, np.uint8))[1].tobytes()


DAMAGES = {
    "empty": lambda b: b"",
    "trunc1": lambda b: b[:1],
    "trunc10pct": lambda b: b[: len(b) // 10],
    "trunc50pct": lambda b: b[: len(b) // 2],
    "trunc90pct": lambda b: b[: len(b) * 9 // 10],
    "trunc-1": lambda b: b[:-1],
    "flip_head": lambda b: _flip(b, 0.0),
    "flip_8": lambda b: _flip(b, 8 / max(1, len(b))),
    "flip_mid": lambda b: _flip(b, 0.5),
    "flip_tail": lambda b: _flip(b, 0.999),
    "garbage": lambda b: np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes(),
    "text": lambda b: b"this is not the file you are looking for\n",
    "json": lambda b: b'{"format_version": 1, "a": [1, 2]}\n',
    "png": lambda b: _png_bytes(),
    "non_utf8": lambda b: b"\xff\xfe\x80\x81 not utf-8 \xc3\x28\n",
}
# Commands that train or render get fewer variants, to keep the module under a minute.
FEW = ["empty", "trunc50pct", "trunc-1", "flip_mid", "garbage", "json"]


def damage(path: Path, kind: str) -> None:
    path.write_bytes(DAMAGES[kind](path.read_bytes()))


def listing(folder: Path) -> list[tuple[str, int]]:
    if not folder.exists():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


def invoke(*args) -> tuple[int, str]:
    from retinasynth_cli.main import main

    old = warnings.showwarning
    try:
        res = CliRunner().invoke(main, [str(a) for a in args])
    finally:
        warnings.showwarning = old
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"unhandled {type(res.exception).__name__} (Traceback):\n{res.output}\n{tb}")
    return res.exit_code, res.output


def check(code: int, output: str, ok=(0, 2)) -> None:
    assert "Traceback" not in output, output
    assert code in ok, f"exit {code}:\n{output}"
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    if code == 2:
        assert len(errors) == 1, output
    else:
        assert not errors, output


# --- fixtures: one real input of each kind ------------------------------------------------------------------
@pytest.fixture(scope="module")
def splits(data_root):
    from retinasynth.data import DataConfig, load_dataset

    return {s: load_dataset(data_root, s, DataConfig(size=64)).ids for s in ("train", "test")}


@pytest.fixture(scope="module")
def synth_set(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    code, output = invoke("synthesize", "--run", run_dir, "--n", 4, "--out", out, "--quiet", "--workers", 1,
                          "--batch-size", 4)
    assert code == 0, output
    return out


@pytest.fixture(scope="module")
def segmenter_ckpt(tmp_path_factory):
    from retinasynth.bench import build_bench_config
    from retinasynth.segmenter import create_segmenter, save_segmenter

    cfg = build_bench_config("tiny", None, [])
    path = tmp_path_factory.mktemp("seg") / "real_n2_s0.safetensors"
    save_segmenter(path, create_segmenter(cfg), cfg)
    return path


@pytest.fixture
def data_copy(data_root, tmp_path):
    return Path(shutil.copytree(data_root, tmp_path / "data"))


@pytest.fixture
def run_copy(run_dir, tmp_path):
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _file(root: Path, kind: str, ident: str) -> Path:
    hits = sorted((root / kind).glob(f"{ident}.*"))
    assert hits, (root, kind, ident)
    return hits[0]


# --- image variants: decodable files that are the wrong thing ----------------------------------------------
def _variants():
    rng = np.random.default_rng(1)
    return {
        "grey": lambda a: a.mean(axis=2).astype(np.uint8) if a.ndim == 3 else a,
        "rgba": lambda a: np.dstack([a if a.ndim == 3 else np.dstack([a] * 3), np.full(a.shape[:2], 255, np.uint8)]),
        "uint16": lambda a: a.astype(np.uint16) * 257,
        "wrong_size": lambda a: np.ascontiguousarray(a[:40, :50]),
        "tiny_1x1": lambda a: np.ascontiguousarray(a[:1, :1]),
        "odd_values": lambda a: np.where(a > 0, 200, 60).astype(np.uint8),
        "all_zero": lambda a: np.zeros_like(a),
        "all_255": lambda a: np.full_like(a, 255),
        "noise": lambda a: rng.integers(0, 256, a.shape, dtype=np.uint8),
        "rgb_mask": lambda a: np.dstack([a] * 3) if a.ndim == 2 else a,
        "float_tiff": None,  # written below: a float32 TIFF under the .png name's stem
        "palette": None,
    }


VARIANTS = list(_variants())


def apply_variant(path: Path, kind: str) -> None:
    from PIL import Image

    arr = np.asarray(Image.open(path))
    if kind == "float_tiff":
        Image.fromarray(arr.astype(np.float32) if arr.ndim == 2 else arr[..., 0].astype(np.float32)).save(
            path, format="TIFF")
        return
    if kind == "palette":
        Image.fromarray(arr).convert("P").save(path, format="PNG")
        return
    new = _variants()[kind](arr)
    if new.dtype == np.uint16 and new.ndim == 3:
        import cv2

        cv2.imwrite(str(path), new[..., ::-1])
        return
    _save(path, new)


# --- data inspect: every damage on every kind of file in both splits --------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("kind", ["images", "masks", "fov"])
@pytest.mark.parametrize("how", list(DAMAGES) + [f"variant:{v}" for v in VARIANTS])
def test_inspect(data_copy, splits, split, kind, how):
    f = _file(data_copy, kind, splits[split][0])
    if how.startswith("variant:"):
        apply_variant(f, how.split(":", 1)[1])
    else:
        damage(f, how)
    before = listing(data_copy)
    code, output = invoke("data", "inspect", data_copy)
    # inspect reports problems in its report and exits 1; a raised error is one line and exit 2
    check(code, output, ok=(0, 1, 2))
    assert listing(data_copy) == before


# --- fit: damaged training data, damaged --config files, NaN/inf overrides ----------------------------------
FIT_FAST = [*TINY_FIT[1:], "train.steps=2"]


@pytest.mark.parametrize("kind", ["images", "masks", "fov"])
@pytest.mark.parametrize("how", FEW + ["variant:wrong_size", "variant:odd_values", "variant:uint16"])
def test_fit_damaged_data(data_copy, splits, tmp_path, kind, how):
    f = _file(data_copy, kind, splits["train"][0])
    if how.startswith("variant:"):
        apply_variant(f, how.split(":", 1)[1])
    else:
        damage(f, how)
    out = tmp_path / "run"
    code, output = invoke("fit", "--profile", "tiny", "--data", data_copy, "--out", out, "--quiet",
                          *sum((["-o", o] for o in FIT_FAST), []))
    check(code, output)
    if code == 2:
        assert listing(out) == []


BAD_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", '"x"', "[]", "{}", "-1", "true", "0.5"]
BAD_KEYS = ["train.lr", "train.l1_weight", "train.ema_decay", "train.decay_start", "train.beta1", "train.seed",
            "model.ngf", "data.size", "train.steps", "train.crop"]
CONFIG_TEXTS = {
    "json:empty": ("cfg.json", b""),
    "json:non_utf8": ("cfg.json", b'{"train": {"lr": "\xff\xfe"}}'),
    "json:not_json": ("cfg.json", b"train: lr = 2"),
    "json:list": ("cfg.json", b"[1, 2, 3]"),
    "json:section_list": ("cfg.json", b'{"train": [1]}'),
    "json:unknown_key": ("cfg.json", b'{"train": {"nope": 1}}'),
    "json:unknown_section": ("cfg.json", b'{"nope": {"a": 1}}'),
    "json:truncated": ("cfg.json", b'{"train": {"lr": 0.0'),
    "json:nan_toplevel": ("cfg.json", b"NaN"),
    "json:png": ("cfg.json", None),
    "yaml:empty": ("cfg.yaml", b""),
    "yaml:non_utf8": ("cfg.yaml", b"train:\n  lr: \xff\xfe\n"),
    "yaml:bad_syntax": ("cfg.yaml", b"train: [1, 2\n  lr: : :\n"),
    "yaml:nan": ("cfg.yaml", b"train:\n  lr: .nan\n"),
    "yaml:inf": ("cfg.yaml", b"train:\n  l1_weight: .inf\n"),
    "yaml:neg_inf": ("cfg.yaml", b"train:\n  ema_decay: -.inf\n"),
    "yaml:scalar": ("cfg.yaml", b"just a string\n"),
    "yaml:tabs": ("cfg.yaml", b"train:\n\tlr: 1\n"),
    "yaml:python_tag": ("cfg.yaml", b"train: !!python/object/apply:os.system ['true']\n"),
    "yaml:png": ("cfg.yaml", None),
}


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("value", BAD_VALUES)
def test_fit_config_values(data_root, tmp_path, key, value):
    section, name = key.split(".")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(f'{{"{section}": {{"{name}": {value}}}}}')
    out = tmp_path / "run"
    steps = [] if key == "train.steps" else ["-o", "train.steps=1"]
    code, output = invoke("fit", "--profile", "tiny", "--data", data_root, "--out", out, "--quiet",
                          "--config", cfg, "-o", "train.threads=1", *steps)
    check(code, output)
    if code == 2:
        assert listing(out) == []


@pytest.mark.parametrize("case", list(CONFIG_TEXTS))
def test_fit_config_files(data_root, tmp_path, case):
    name, text = CONFIG_TEXTS[case]
    cfg = tmp_path / name
    cfg.write_bytes(_png_bytes() if text is None else text)
    out = tmp_path / "run"
    code, output = invoke("fit", "--profile", "tiny", "--data", data_root, "--out", out, "--quiet",
                          "--config", cfg, "-o", "train.steps=1", "-o", "train.threads=1")
    check(code, output)
    if code == 2:
        assert listing(out) == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("key", ["train.lr", "train.l1_weight", "train.ema_decay", "model.ngf"])
def test_fit_override_nonfinite(data_root, tmp_path, key, value):
    out = tmp_path / "run"
    code, output = invoke("fit", "--profile", "tiny", "--data", data_root, "--out", out, "--quiet",
                          "-o", f"{key}={value}", "-o", "train.steps=1")
    check(code, output, ok=(2,))
    assert listing(out) == []


# --- fit --resume: damaged config.json, state.pt and weights ------------------------------------------------
RUN_FILES = ["config.json", "state.pt", "generator.safetensors", "generator_ema.safetensors"]


@pytest.mark.parametrize("name", RUN_FILES)
@pytest.mark.parametrize("how", FEW + ["text", "png"])
def test_fit_resume(run_copy, run_dir, data_root, name, how):
    damage(run_copy / name, how)
    code, output = invoke("fit", "--resume", "--out", run_copy, "--quiet", "--data", data_root)
    check(code, output)
    if name != "config.json" and how not in ("flip_mid",):
        # a damaged checkpoint is replaced by the previous one, and the run completes
        assert code == 0, output
        assert "previous checkpoint" in output, output
        # one checkpoint interval was trained again, to the same bytes as the uninterrupted run (CPU)
        for f in ("generator.safetensors", "generator_ema.safetensors"):
            assert (run_copy / f).read_bytes() == (run_dir / f).read_bytes()


@pytest.mark.parametrize("name", ["state", "generator", "generator_ema"])
def test_fit_resume_both_damaged(run_copy, data_root, name):
    suffix = ".pt" if name == "state" else ".safetensors"
    for f in (run_copy / f"{name}{suffix}", run_copy / f"{name}.prev{suffix}"):
        if f.is_file():
            damage(f, "trunc50pct")
    before = listing(run_copy)
    code, output = invoke("fit", "--resume", "--out", run_copy, "--quiet", "--data", data_root)
    check(code, output, ok=(2,))
    assert listing(run_copy) == before


# --- synthesize ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["config.json", "generator_ema.safetensors"])
@pytest.mark.parametrize("how", FEW + ["text", "non_utf8"])
def test_synthesize_damaged_run(run_copy, tmp_path, name, how):
    damage(run_copy / name, how)
    out = tmp_path / "synth"
    code, output = invoke("synthesize", "--run", run_copy, "--n", 1, "--out", out, "--quiet", "--workers", 1)
    check(code, output)
    if code == 2:
        assert listing(out) == []


@pytest.mark.parametrize("name", ["synth.json", "manifest.jsonl"])
@pytest.mark.parametrize("how", FEW + ["text", "non_utf8"])
def test_synthesize_resume_damaged_set(synth_set, run_dir, tmp_path, name, how):
    out = Path(shutil.copytree(synth_set, tmp_path / "set"))
    damage(out / name, how)
    before = listing(out)
    code, output = invoke("synthesize", "--run", run_dir, "--n", 4, "--out", out, "--quiet", "--workers", 1,
                          "--batch-size", 4, "--resume")
    check(code, output)
    if code == 2:
        assert listing(out) == before


@pytest.mark.parametrize("how", FEW + ["text", "png", "flip_head"])
def test_synthesize_damaged_filter_model(run_dir, segmenter_ckpt, tmp_path, how):
    ckpt = Path(shutil.copy(segmenter_ckpt, tmp_path / segmenter_ckpt.name))
    damage(ckpt, how)
    out = tmp_path / "synth"
    code, output = invoke("synthesize", "--run", run_dir, "--n", 1, "--out", out, "--quiet", "--workers", 1,
                          "--filter-model", ckpt)
    check(code, output)
    if code == 2:
        assert listing(out) == []


# --- evaluate -----------------------------------------------------------------------------------------------
READER = ["--reader-steps", "2"]  # the vessel-consistency reader runs, on the damaged inputs too, in seconds


@pytest.mark.parametrize("name", ["config.json", "generator_ema.safetensors", "generator.safetensors"])
@pytest.mark.parametrize("how", FEW)
def test_evaluate_damaged_run(run_copy, data_root, tmp_path, name, how):
    damage(run_copy / name, how)
    out = tmp_path / "eval"
    raw = ["--raw"] if name == "generator.safetensors" else []
    code, output = invoke("evaluate", "--run", run_copy, "--data", data_root, "--out", out, *raw, *READER)
    check(code, output)
    if code == 2:
        assert listing(out) == []


@pytest.mark.parametrize("kind", ["images", "masks", "fov"])
@pytest.mark.parametrize("how", ["empty", "trunc50pct", "garbage", "variant:wrong_size", "variant:odd_values"])
def test_evaluate_damaged_data(run_dir, data_copy, splits, tmp_path, kind, how):
    f = _file(data_copy, kind, splits["test"][0])
    if how.startswith("variant:"):
        apply_variant(f, how.split(":", 1)[1])
    else:
        damage(f, how)
    out = tmp_path / "eval"
    code, output = invoke("evaluate", "--run", run_dir, "--data", data_copy, "--out", out, *READER)
    check(code, output)
    if code == 2:
        assert listing(out) == []


# --- benchmark-downstream -----------------------------------------------------------------------------------
BENCH = ["--profile", "tiny", "--quiet", "-o", "steps=1", "-o", "regimes=[2]", "-o", "seeds=[0]",
         "-o", "arms=real,real+synth"]


def _synth_file(root: Path, which: str) -> Path:
    if which in ("manifest.jsonl", "synth.json"):
        return root / which
    return sorted((root / which).iterdir())[0]


def _bench_synth_cases():
    for which in ("manifest.jsonl", "synth.json", "images", "masks"):
        for how in FEW + ["non_utf8"]:
            yield pytest.param(which, how, id=f"{how}-{which}")


@pytest.mark.parametrize(("which", "how"), list(_bench_synth_cases()))
def test_benchmark_damaged_synth(synth_set, data_root, tmp_path, which, how):
    synth = Path(shutil.copytree(synth_set, tmp_path / "set"))
    damage(_synth_file(synth, which), how)
    out = tmp_path / "bench"
    code, output = invoke("benchmark-downstream", "--data", data_root, "--synth", synth, "--out", out, *BENCH)
    check(code, output)
    if code == 2:
        assert not list(out.glob("runs/*.json")) and not list(out.glob("models/*"))


@pytest.fixture(scope="module")
def bench_out(synth_set, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    code, output = invoke("benchmark-downstream", "--data", data_root, "--synth", synth_set, "--out", out,
                          *BENCH[:-2], "-o", "arms=real")
    assert code == 0, output
    return out


@pytest.mark.parametrize("how", ["empty", "trunc50pct", "json", "garbage", "list"])
def test_benchmark_damaged_run_record(bench_out, synth_set, data_root, tmp_path, how):
    out = Path(shutil.copytree(bench_out, tmp_path / "out"))
    rec = sorted((out / "runs").glob("*.json"))[0]
    if how == "list":
        rec.write_text("[1, 2]\n")
    else:
        damage(rec, how)
    code, output = invoke("benchmark-downstream", "--data", data_root, "--synth", synth_set, "--out", out,
                          *BENCH[:-2], "-o", "arms=real")
    check(code, output)  # a damaged record is a cache miss: that run is trained again


def test_fuzz_case_count(request):
    """Not a check: the number of fuzz cases in this module (printed at the end of the session)."""
    n = sum(1 for item in request.session.items if item.nodeid.startswith(request.node.nodeid.split("::")[0]))
    assert n >= 300


# --- the folder lock (retinasynth.locking): a damaged lock file, and a held one whose records are damaged -----
LOCK_DAMAGES = ["empty", "garbage", "json", "trunc50pct", "non_utf8"]


@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("how", LOCK_DAMAGES + ["directory"])
def test_fit_resume_with_a_damaged_lock_file(run_copy, data_root, how, held):
    from retinasynth.locking import LOCK_NAME, hold

    lock = run_copy / LOCK_NAME
    if how == "directory":
        lock.unlink(missing_ok=True)
        lock.mkdir()
    else:
        lock.write_text('{"pid": 1, "host": "h", "started": "t", "command": "fit"}\n')
        damage(lock, how)
    if held and how != "directory":
        with hold(run_copy):  # a live holder (this process, another open file): its records then damaged
            damage(lock, how)
            code, output = invoke("fit", "--resume", "--out", run_copy, "--quiet", "--data", data_root)
        check(code, output)
        assert code == 2 and str(run_copy) in output, output  # refused in one line, whatever the records hold
    else:
        code, output = invoke("fit", "--resume", "--out", run_copy, "--quiet", "--data", data_root)
        check(code, output)
        if how == "directory":
            assert code == 2, output
