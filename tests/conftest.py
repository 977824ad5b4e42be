"""Shared fixtures. Data tests: tiny synthetic fundus photographs written to tmp_path in code."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from retinasynth.data import DataConfig as _DataConfig
from retinasynth.data import load_dataset as _load_dataset


def _fundus(h: int = 40, w: int = 48, seed: int = 0, n_vessels: int = 3, thickness: int = 1):
    """(image uint8 HxWx3, vessel mask bool, FOV bool): a bright red disc with a few dark lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = (h - 1) / 2, (w - 1) / 2, 0.45 * min(h, w)
    fov = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    lines = np.zeros((h, w), np.uint8)
    for _ in range(n_vessels):
        a, b = rng.uniform(0, 2 * np.pi, 2)
        p0 = (int(cx + 0.9 * r * np.cos(a)), int(cy + 0.9 * r * np.sin(a)))
        p1 = (int(cx + 0.9 * r * np.cos(b)), int(cy + 0.9 * r * np.sin(b)))
        cv2.line(lines, p0, p1, 1, thickness)
    mask = lines.astype(bool) & fov
    image = np.zeros((h, w, 3), np.uint8)
    image[fov] = (170, 80, 30)
    image[fov] += rng.integers(0, 20, (int(fov.sum()), 1), dtype=np.uint8)
    image[mask] = (100, 30, 10)
    return image, mask, fov


def _save(path: Path, arr: np.ndarray) -> Path:
    """Write an array in the format its name says (.png/.jpg/.tif/.gif/.ppm/.bmp/.ppm.gz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    im = Image.fromarray(arr)
    if path.name.endswith(".ppm.gz"):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PPM")
        path.write_bytes(gzip.compress(buf.getvalue()))
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    elif path.suffix.lower() == ".ppm":
        im.convert("RGB").save(path)
    else:
        im.save(path)
    return path


@pytest.fixture
def make_fundus():
    """make_fundus(h=40, w=48, seed=0, n_vessels=3, thickness=1) -> (image, mask, fov)."""
    return _fundus


@pytest.fixture
def save_image():
    """save_image(path, array) -> path, in the format of the file name; bool arrays as 0/255."""
    return _save


@pytest.fixture
def make_drive():
    """make_drive(root, train=(21, 22, 23), test=(1, 2)) -> root: a DRIVE-layout folder, 48x40 images."""

    def make(root: Path, train=(21, 22, 23), test=(1, 2)) -> Path:
        for folder, tag, ids in (("training", "training", train), ("test", "test", test)):
            for i in ids:
                image, mask, fov = _fundus(seed=i)
                _save(root / folder / "images" / f"{i:02d}_{tag}.tif", image)
                _save(root / folder / "1st_manual" / f"{i:02d}_manual1.gif", mask)
                _save(root / folder / "mask" / f"{i:02d}_{tag}_mask.gif", fov)
        return root

    return make


# --- shared by the training, synthesis and benchmark tests ------------------------------------------------
TINY_FIT = ["train.steps=4", "train.ckpt_every=2", "train.sample_every=2", "train.log_every=1", "train.threads=1"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine they lose a lot to waiting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Six 64x64 phantoms in the generic layout (a seeded train/test split)."""
    from retinasynth.synth.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "data", n=6, size=64, seed=0,
                                 progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root, one_thread):
    """A 4-step `tiny` generator run on ``data_root``."""
    from retinasynth.train.config import build_fit_config
    from retinasynth.train.fit import fit

    return fit(build_fit_config("tiny", overrides=TINY_FIT), data_root, tmp_path_factory.mktemp("runs") / "tiny",
               progress=False)


@pytest.fixture
def cli(monkeypatch):
    """Invoke the `retinasynth` command; main() installs its own warnings.showwarning, undone after."""
    import warnings

    from click.testing import CliRunner
    from retinasynth_cli.main import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="module")
def save_image_module():
    """``save_image`` for module-scoped fixtures."""
    return _save


def pytest_terminal_summary(terminalreporter):
    """Print how many fuzz cases (tests/test_fuzz.py) were tried, and how many failed, for the record."""
    reports = [r for key in ("passed", "failed", "error", "xfailed", "xpassed") for r in terminalreporter.stats.get(key, [])
               if getattr(r, "when", "call") == "call" and "test_fuzz.py" in getattr(r, "nodeid", "")]
    if reports:
        failed = sum(1 for r in reports if r.failed)
        xfailed = sum(1 for r in reports if hasattr(r, "wasxfail"))
        terminalreporter.write_line(f"fuzz cases tried: {len(reports)}, failed: {failed}, "
                                    f"expected failures (fixes owned elsewhere): {xfailed}")


# ---------------------------------------------------------------- benchmark fixtures (test_bench*.py)


@pytest.fixture
def torch_one_thread():
    """One torch thread for the duration of a test (tiny models train faster and steadier that way)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

GEN_SHA = "0" * 64


@pytest.fixture
def real_root(tmp_path, make_fundus, save_image) -> Path:
    """Generic layout with train/ (4 images) and test/ (2 images): 64x64 discs with lines."""
    root = tmp_path / "real"
    for split, n, base in (("train", 4, 0), ("test", 2, 100)):
        for i in range(n):
            image, mask, _ = make_fundus(64, 64, seed=base + i, n_vessels=4, thickness=2)
            save_image(root / split / "images" / f"im{i}.png", image)
            save_image(root / split / "masks" / f"im{i}.png", mask)
    return root


def write_external(root: Path, n: int = 2, seed: int = 300) -> Path:
    """An external evaluation set in the generic layout (images/ + masks/): ``n`` 48x56 discs with lines."""
    for i in range(n):
        image, mask, _ = _fundus(48, 56, seed=seed + i, n_vessels=3, thickness=2)
        _save(root / "images" / f"e{i}.png", image)
        _save(root / "masks" / f"e{i}.png", mask)
    return root


def write_synth(folder: Path, real_root: Path, make_fundus, save_image, n: int = 3, manifest_edit=None,
                run_edit=None) -> Path:
    """A synthetic set as `retinasynth synthesize` writes it, from the real set's training masks."""
    train = _load_dataset(real_root, "train", _DataConfig(size=64))
    lines = []
    for i in range(n):
        image, mask, fov = make_fundus(64, 64, seed=500 + i, n_vessels=5, thickness=2)
        for sub, arr in (("images", image), ("masks", mask), ("fov", fov)):
            save_image(folder / sub / f"s{i}.png", arr)
        rec = {"id": f"s{i}", "image": f"images/s{i}.png", "mask": f"masks/s{i}.png", "fov": f"fov/s{i}.png",
               "source": "real", "source_mask_id": train.ids[i % len(train)], "source_split": "train",
               "source_data": str(real_root.resolve()), "recipe": None, "seed": i, "generator_sha256": GEN_SHA}
        lines.append(rec)
    if manifest_edit:
        manifest_edit(lines)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run_data = {"root": str(real_root.resolve()), "layout": "generic", "train_ids": train.ids[:-1],
                "val_ids": train.ids[-1:], "config": dataclasses.asdict(_DataConfig(size=64)),
                "fingerprint": train.fingerprint(), "sample_fingerprints": train.sample_fingerprints()}
    if run_edit:
        run_edit(run_data)
    meta = {"run_dir": "runs/gan", "generator_sha256": GEN_SHA, "run_data": run_data, "n": n, "resolution": 64}
    (folder / "synth.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def synth_dir(tmp_path, real_root, make_fundus, save_image) -> Path:
    return write_synth(tmp_path / "synth", real_root, make_fundus, save_image)



def tiny(*over: str) :
    from retinasynth.bench import build_bench_config

    return build_bench_config("tiny", None, ["steps=1", "regimes=[2]", "seeds=[0]", *over])
