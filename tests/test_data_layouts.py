"""Dataset layouts: detection from the root folder, indexing, splits and the Sample contract."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from retinasynth.data import LAYOUTS, DataConfig, detect_layout, inspect_dataset, load_dataset
from retinasynth.errors import ConfigError

NATIVE = DataConfig(size=None)


def _check_contract(ds, h: int | None = None, w: int | None = None) -> None:
    for s in ds:
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3, s.id
        assert s.mask.dtype == bool and s.fov.dtype == bool, s.id
        assert s.mask.shape == s.fov.shape == s.image.shape[:2], s.id
        if h is not None:
            assert s.image.shape[:2] == (h, w), s.id
        assert s.mask.any() and s.fov.any(), s.id
        assert s.split in ("train", "test")
        assert s.fov_source in ("given", "derived")


# --- layout builders --------------------------------------------------------------------------


def _kaggle(root: Path, make_fundus, save_image) -> tuple[Path, dict]:
    """train|test/image/*.png + train|test/mask/*.png, masks with grey-level noise around 0 and 255."""
    truth = {}
    rng = np.random.default_rng(0)
    for split, names in (("train", ("0", "1", "2")), ("test", ("0", "1"))):
        for k, name in enumerate(names):
            image, mask, _ = make_fundus(seed=10 * k + len(split))
            grey = np.where(mask, rng.integers(128, 256, mask.shape), rng.integers(0, 128, mask.shape))
            save_image(root / split / "image" / f"{name}.png", image)
            save_image(root / split / "mask" / f"{name}.png", grey.astype(np.uint8))
            truth[f"{split}-{name}"] = mask
    return root, truth


def _chase(root: Path, make_fundus, save_image, ids=range(1, 15)) -> Path:
    for n in ids:
        image, mask, _ = make_fundus(seed=n)
        save_image(root / f"Image_{n:02d}L.jpg", image)
        save_image(root / f"Image_{n:02d}L_1stHO.png", mask)
        save_image(root / f"Image_{n:02d}L_2ndHO.png", mask)
    return root


def _stare(root: Path, make_fundus, save_image, n: int = 5) -> tuple[Path, dict]:
    truth = {}
    for k in range(1, n + 1):
        image, mask, _ = make_fundus(seed=k)
        ext = ".ppm.gz" if k == 2 else ".ppm"
        save_image(root / f"im{k:04d}{ext}", image)
        save_image(root / "labels-ah" / f"im{k:04d}.ah{ext}", mask)
        truth[f"im{k:04d}"] = mask
    # Unlabelled images and the second observer's labels are not samples, and not errors.
    save_image(root / "im0300.ppm", make_fundus(seed=99)[0])
    save_image(root / "labels-vk" / "im0001.vk.ppm", truth["im0001"])
    return root, truth


def _hrf(root: Path, make_fundus, save_image) -> Path:
    for k, name in enumerate(("01_dr", "02_g", "03_h")):
        image, mask, fov = make_fundus(seed=k)
        save_image(root / "images" / f"{name}.jpg", image)
        save_image(root / "manual1" / f"{name}.tif", mask)
        save_image(root / "mask" / f"{name}_mask.tif", fov)
    return root


# --- detection and indexing per layout --------------------------------------------------------


def test_drive_detected_with_official_splits_and_given_fov(tmp_path, make_drive, make_fundus):
    root = make_drive(tmp_path / "DRIVE")
    assert detect_layout(root).name == "drive"
    train = load_dataset(root, "train", NATIVE)
    test = load_dataset(root, "test", NATIVE)
    both = load_dataset(root, "all", NATIVE)
    assert (train.layout, train.split_source) == ("drive", "official")
    assert train.ids == ["21", "22", "23"]
    assert test.ids == ["01", "02"]
    assert sorted(both.ids) == ["01", "02", "21", "22", "23"]
    assert {s.split for s in train} == {"train"} and {s.split for s in test} == {"test"}
    _check_contract(both, 40, 48)
    for s in both:
        image, mask, fov = make_fundus(seed=int(s.id))
        assert s.fov_source == "given"
        np.testing.assert_array_equal(s.mask, mask)
        np.testing.assert_array_equal(s.fov, fov)
        np.testing.assert_array_equal(s.image, image)  # TIFF is lossless
        assert s.native_size == (40, 48)
        assert Path(s.source).name.startswith(s.id)


def test_kaggle_detected_masks_thresholded_fov_derived(tmp_path, make_fundus, save_image):
    root, truth = _kaggle(tmp_path / "kaggle", make_fundus, save_image)
    assert detect_layout(root).name == "kaggle"
    with pytest.warns(UserWarning, match="not binary"):
        ds = load_dataset(root, "all", NATIVE)
    assert ds.layout == "kaggle" and ds.split_source == "official"
    assert sorted(ds.ids) == ["test-0", "test-1", "train-0", "train-1", "train-2"]
    assert sum(s.split == "train" for s in ds) == 3 and sum(s.split == "test" for s in ds) == 2
    _check_contract(ds, 40, 48)
    for s in ds:
        np.testing.assert_array_equal(s.mask, truth[s.id])  # > 127, noise ignored
        assert s.fov_source == "derived"
        disc = make_fundus()[2]
        assert (s.fov & disc).sum() / (s.fov | disc).sum() > 0.85  # derived FOV ~ the disc


def test_chase_conventional_split_01_10_train_11_14_test(tmp_path, make_fundus, save_image):
    root = _chase(tmp_path / "CHASEDB1", make_fundus, save_image)
    assert detect_layout(root).name == "chase"
    ds = load_dataset(root, "all", NATIVE)
    assert ds.layout == "chase" and ds.split_source.startswith("conventional")
    assert len(ds) == 14  # the 2ndHO files are not extra samples
    assert [s.id for s in ds if s.split == "train"] == [f"Image_{n:02d}L" for n in range(1, 11)]
    assert [s.id for s in ds if s.split == "test"] == [f"Image_{n:02d}L" for n in range(11, 15)]
    assert load_dataset(root, "test", NATIVE).ids == [f"Image_{n:02d}L" for n in range(11, 15)]
    _check_contract(ds, 40, 48)
    assert {s.fov_source for s in ds} == {"derived"}
    for s in ds:  # masks come from the 1stHO PNGs, losslessly
        np.testing.assert_array_equal(s.mask, make_fundus(seed=int(s.id[6:8]))[1])


def test_stare_ppm_and_gz_seeded_split(tmp_path, make_fundus, save_image):
    root, truth = _stare(tmp_path / "STARE", make_fundus, save_image)
    assert detect_layout(root).name == "stare"
    ds = load_dataset(root, "all", NATIVE)
    assert ds.layout == "stare" and ds.split_source == "seeded"
    assert ds.ids == [f"im{k:04d}" for k in range(1, 6)]  # unlabelled im0300 is skipped
    _check_contract(ds, 40, 48)
    for s in ds:
        np.testing.assert_array_equal(s.mask, truth[s.id])
    assert ds[1].source.endswith("im0002.ppm.gz")
    np.testing.assert_array_equal(ds[1].image, make_fundus(seed=2)[0])
    n_test = sum(s.split == "test" for s in ds)
    assert n_test == 1  # round(5 * 0.25)


def test_hrf_detected_with_given_fov(tmp_path, make_fundus, save_image):
    root = _hrf(tmp_path / "HRF", make_fundus, save_image)
    assert detect_layout(root).name == "hrf"
    ds = load_dataset(root, "all", NATIVE)
    assert ds.layout == "hrf" and ds.split_source == "seeded"
    assert ds.ids == ["01_dr", "02_g", "03_h"]
    _check_contract(ds, 40, 48)
    for k, s in enumerate(ds):
        _, mask, fov = make_fundus(seed=k)
        assert s.fov_source == "given"
        np.testing.assert_array_equal(s.fov, fov)
        np.testing.assert_array_equal(s.mask, mask)


def test_generic_flat_pairs_by_stem_across_formats(tmp_path, make_fundus, save_image):
    root = tmp_path / "mine"
    exts = {"a": ".png", "b": ".jpg", "c": ".tif", "d": ".gif", "e": ".ppm", "f": ".bmp"}
    mask_names = {"a": "a.png", "b": "b_mask.png", "c": "c.tif", "d": "d.gif", "e": "e_gt.ppm", "f": "f.bmp"}
    for k, (stem, ext) in enumerate(exts.items()):
        image, mask, fov = make_fundus(seed=k)
        save_image(root / "images" / f"{stem}{ext}", image)
        save_image(root / "masks" / mask_names[stem], mask)
        if stem in "ab":
            save_image(root / "fov" / f"{stem}.png", fov)
    assert detect_layout(root).name == "generic"
    ds = load_dataset(root, "all", NATIVE)
    assert ds.layout == "generic" and ds.split_source == "seeded"
    assert ds.ids == list("abcdef")
    _check_contract(ds, 40, 48)
    for k, s in enumerate(ds):
        np.testing.assert_array_equal(s.mask, make_fundus(seed=k)[1], err_msg=s.id)
        assert s.fov_source == ("given" if s.id in "ab" else "derived"), s.id
    assert ds[2].image.tobytes() == make_fundus(seed=2)[0].tobytes()  # tif, lossless


def test_generic_train_test_subfolders(tmp_path, make_fundus, save_image):
    root = tmp_path / "mine"
    for split, stems in (("train", "abc"), ("test", "de")):
        for k, stem in enumerate(stems):
            image, mask, _ = make_fundus(seed=k)
            save_image(root / split / "images" / f"{stem}.png", image)
            save_image(root / split / "masks" / f"{stem}.png", mask)
    assert detect_layout(root).name == "generic"
    train = load_dataset(root, "train", NATIVE)
    test = load_dataset(root, "test", NATIVE)
    assert train.split_source == "official"
    assert train.ids == ["train-a", "train-b", "train-c"]
    assert test.ids == ["test-d", "test-e"]
    assert {s.split for s in test} == {"test"}


def test_layout_override(tmp_path, make_fundus, save_image):
    """images/ + manual1/ + masks/ looks like HRF first; --layout generic reads masks/ instead."""
    root = tmp_path / "both"
    image, mask, _ = make_fundus(seed=0)
    other = make_fundus(seed=5)[1]
    save_image(root / "images" / "x.png", image)
    save_image(root / "manual1" / "x.png", mask)
    save_image(root / "masks" / "x.png", other)
    assert detect_layout(root).name == "hrf"
    hrf = load_dataset(root, "all", DataConfig(size=None))
    gen = load_dataset(root, "all", DataConfig(size=None, layout="generic"))
    assert (hrf.layout, gen.layout) == ("hrf", "generic")
    np.testing.assert_array_equal(hrf[0].mask, mask)
    np.testing.assert_array_equal(gen[0].mask, other)


def test_unknown_layout_name_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        DataConfig(layout="drvie")
    msg = str(e.value)
    assert "'drvie'" in msg and "\n" not in msg
    for name in LAYOUTS:
        assert name in msg
    assert set(LAYOUTS) == {"drive", "kaggle", "chase", "stare", "hrf", "nnunet", "generic"}


# --- Sample contract, ids and seeded splits -----------------------------------------------------


def test_resized_samples_keep_the_contract_and_ids_are_stable(tmp_path, make_drive):
    root = make_drive(tmp_path / "DRIVE")
    cfg = DataConfig(size=32)
    a = load_dataset(root, "all", cfg)
    b = load_dataset(root, "all", cfg)
    _check_contract(a, 32, 32)
    assert a.ids == b.ids == ["21", "22", "23", "01", "02"]
    assert a.fingerprint() == b.fingerprint()
    for s in a:
        assert not (s.mask & ~s.fov).any()  # vessels stay inside the FOV
        assert s.native_size == (40, 48)


def test_seeded_split_is_deterministic_recorded_and_seed_dependent(tmp_path, make_fundus, save_image):
    root = tmp_path / "mine"
    for k in range(20):
        image, mask, _ = make_fundus(h=24, w=24, seed=k)
        save_image(root / "images" / f"{k:02d}.png", image)
        save_image(root / "masks" / f"{k:02d}.png", mask)

    def split(seed: int, which: str = "test") -> list[str]:
        ds = load_dataset(root, which, DataConfig(size=None, split_seed=seed))
        assert ds.split_source == "seeded"
        assert ds.describe()["split_source"] == "seeded"
        return ds.ids

    test0 = split(0)
    assert len(test0) == 5  # test_fraction 0.25 of 20
    assert split(0) == test0  # same seed, same split
    train0 = split(0, "train")
    assert sorted(train0 + test0) == [f"{k:02d}" for k in range(20)] and not set(train0) & set(test0)
    others = [split(seed) for seed in (1, 2, 3)]
    assert any(t != test0 for t in others)
    assert all(len(t) == 5 for t in others)


# --- real data ---------------------------------------------------------------------------------

DRIVE_ROOT = Path(__file__).parents[1] / ".." / "shared" / "data" / "DRIVE"


@pytest.mark.slow
def test_real_drive():
    if not DRIVE_ROOT.is_dir():
        pytest.skip(f"real DRIVE not available at {DRIVE_ROOT.resolve()}")
    assert detect_layout(DRIVE_ROOT).name == "drive"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # DRIVE masks are binary: no warning
        train = load_dataset(DRIVE_ROOT, "train", DataConfig(size=None))
        test = load_dataset(DRIVE_ROOT, "test", DataConfig(size=None))
    assert len(train) == 20 and len(test) == 20
    assert train.ids == [str(i) for i in range(21, 41)]
    assert test.ids == [f"{i:02d}" for i in range(1, 21)]
    for s in [*train, *test]:
        assert s.image.shape == (584, 565, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == s.fov.shape == (584, 565)
        assert s.mask.dtype == bool and s.fov.dtype == bool
        assert s.fov_source == "given"
        frac = s.mask[s.fov].mean()
        assert 0.08 < frac < 0.2, (s.id, frac)
    rep = inspect_dataset(DRIVE_ROOT)
    assert rep["mask_values"] == [0, 255] and rep["binary_masks"] and rep["problems"] == []
