"""``retinasynth data inspect`` through click's CliRunner."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner
from retinasynth_cli.main import main


@pytest.fixture
def run(monkeypatch):
    # main() installs its own warnings.showwarning; undo that after each test.
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def invoke(*args: str):
        return CliRunner().invoke(main, ["data", "inspect", *map(str, args)])

    return invoke


@pytest.fixture
def broken_drive(tmp_path, make_drive):
    """DRIVE with a truncated TIFF (23) and an image whose vessel mask is missing (22)."""
    root = make_drive(tmp_path / "DRIVE")
    tif = root / "training" / "images" / "23_training.tif"
    tif.write_bytes(tif.read_bytes()[:300])
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    return root


def test_inspect_text_report(run, tmp_path, make_drive):
    root = make_drive(tmp_path / "DRIVE")
    r = run(root)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"dataset     {root}" in out
    assert "layout      drive (split: official)" in out
    assert "samples     5  test=2  train=3" in out
    assert "image size  48x40 (5)" in out
    assert "mask values [0, 255] -> binary" in out
    assert "FOV         given (5)" in out
    assert "problems    0" in out


def test_inspect_json(run, tmp_path, make_drive, make_fundus):
    root = make_drive(tmp_path / "DRIVE")
    r = run(root, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    for key in ("layout", "splits", "image_sizes", "mask_values", "fov_source", "vessel_fraction_in_fov",
                "problems"):
        assert key in rep, key
    assert rep["layout"] == "drive"
    assert rep["splits"] == {"train": 3, "test": 2}
    assert rep["image_sizes"] == {"48x40": 5}
    assert rep["mask_values"] == [0, 255] and rep["binary_masks"] is True
    assert rep["fov_source"] == {"given": 5}
    assert rep["problems"] == []
    fractions = []
    for i in (21, 22, 23, 1, 2):
        _, mask, fov = make_fundus(seed=i)
        fractions.append(mask[fov].mean())
    vf = rep["vessel_fraction_in_fov"]
    assert vf["min"] == pytest.approx(min(fractions))
    assert vf["max"] == pytest.approx(max(fractions))
    assert vf["mean"] == pytest.approx(sum(fractions) / 5)


def test_inspect_json_non_binary_derived_fov(run, tmp_path, make_fundus, save_image):
    root = tmp_path / "mine"
    for k in range(3):
        image, mask, _ = make_fundus(seed=k)
        save_image(root / "images" / f"{k}.png", image)
        save_image(root / "masks" / f"{k}.png", (mask * 200 + 20).astype("uint8"))  # 20 / 220
    r = run(root, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["layout"] == "generic" and rep["split_source"] == "seeded"
    assert sum(rep["splits"].values()) == 3
    assert rep["mask_values"] == [20, 220] and rep["binary_masks"] is False
    assert rep["fov_source"] == {"derived": 3}
    assert len(rep["warnings"]) == 1 and "not binary" in rep["warnings"][0]


def test_inspect_layout_override(run, tmp_path, make_fundus, save_image):
    root = tmp_path / "both"
    image, mask, _ = make_fundus()
    save_image(root / "images" / "x.png", image)
    save_image(root / "manual1" / "x.png", mask)
    save_image(root / "masks" / "x.png", mask)
    assert json.loads(run(root, "--json").stdout)["layout"] == "hrf"
    r = run(root, "--json", "--layout", "generic")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layout"] == "generic"


def test_inspect_unknown_layout_exits_2(run, tmp_path, make_drive):
    r = run(make_drive(tmp_path / "DRIVE"), "--layout", "drvie")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: unknown layout 'drvie'")
    assert "drive, kaggle" in r.stderr and r.stderr.count("\n") == 1


def test_inspect_lists_every_problem_and_exits_1(run, broken_drive):
    r = run(broken_drive)
    assert r.exit_code == 1
    assert isinstance(r.exception, SystemExit)  # sys.exit(1), not a crash
    out = r.output
    assert "Traceback" not in out
    assert "problems    2" in out
    problems = [line for line in r.stdout.splitlines() if line.startswith("  - ")]
    assert len(problems) == 2
    assert any("22_training.tif" in p and "without vessel masks" in p for p in problems)
    assert any("23_training.tif" in p and "truncated" in p for p in problems)
    assert "samples     3  test=2  train=1" in out  # the good samples are still inspected


def test_inspect_json_with_problems_exits_1(run, broken_drive):
    r = run(broken_drive, "--json")
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert len(rep["problems"]) == 2
    assert rep["splits"] == {"train": 1, "test": 2}


def test_inspect_missing_path_exits_2_with_one_line(run, tmp_path):
    missing = tmp_path / "missing"
    r = run(missing)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith(f"error: {missing}: no such folder")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_inspect_folder_with_no_layout_exits_2(run, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty")
    assert r.exit_code == 2
    assert "matches no known dataset layout" in r.stderr and r.stderr.count("\n") == 1


def test_inspect_forced_layout_that_finds_nothing_is_an_error(run, tmp_path, make_drive):
    root = make_drive(tmp_path / "DRIVE")
    r = run(root, "--json", "--layout", "kaggle")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {root}: no image/mask pairs found as the kaggle layout")
    assert r.stderr.count("\n") == 1


def test_inspect_folder_without_pairs_is_an_error(run, tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    r = run(tmp_path / "pairs")
    assert r.exit_code == 2 and "no image/mask pairs found as the generic layout" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_profile_choices_come_from_the_registries_without_torch():
    import subprocess
    import sys

    from retinasynth.bench.config import PROFILES as BENCH
    from retinasynth.profiles import BENCH_PROFILES, FIT_PROFILES
    from retinasynth.train.config import PROFILES as FIT

    assert tuple(FIT) == FIT_PROFILES and tuple(BENCH) == BENCH_PROFILES
    code = ("import sys\nfrom click.testing import CliRunner\nfrom retinasynth_cli.main import main\n"
            "for c in (['fit', '--help'], ['benchmark-downstream', '--help']):\n"
            "    r = CliRunner().invoke(main, c)\n    assert r.exit_code == 0, r.output\n"
            "    assert 'gpu:' in r.output and 'cpu-v1' not in r.output and 'quick' not in r.output, r.output\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
