"""Leakage guards end to end (issue: guards a reviewer cannot break) and the near-duplicate signatures.

Each scenario trains a real 4-step `tiny` generator or writes a real synthetic set, then runs the benchmark:
a generator trained on a re-encoded or on a resized test image, and a synthetic set made from a copy of the
test masks stored at another path, are refused with one line naming the files; a clean set is accepted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from retinasynth.bench import benchmark_downstream, build_bench_config
from retinasynth.bench.guards import LeakageError
from retinasynth.data import DataConfig, load_dataset
from retinasynth.data.similarity import (
    IMAGE_THRESHOLD,
    MASK_THRESHOLD,
    decode_signature,
    encode_signature,
    image_signature,
    mask_signature,
    similarity,
)
from retinasynth.masks.perturb import ElasticDeform
from retinasynth.synth.synthesize import SynthConfig, synthesize
from retinasynth.train.config import build_fit_config
from retinasynth.train.fit import fit

TINY_FIT = ["train.steps=4", "train.ckpt_every=2", "train.sample_every=2", "train.log_every=1",
            "train.threads=1"]

SIZE = 96


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread, save_image_module):
    """A generic-layout dataset (train 4, test 2) of 96x96 fundus-like images with curved vessel trees."""
    root = tmp_path_factory.mktemp("guards") / "real"
    from retinasynth.synth.phantom import render_phantom

    for split, n, base in (("train", 4, 0), ("test", 2, 100)):
        for i in range(n):
            image, mask, fov, _ = render_phantom(SIZE, np.random.default_rng([7, base + i]))
            save_image_module(root / split / "images" / f"im{i}.png", image)
            save_image_module(root / split / "masks" / f"im{i}.png", mask)
    return root


def _bench(real, synth, out):
    cfg = build_bench_config("tiny", None, ["steps=1", "regimes=[2]", "seeds=[0]", "arms=real,synth",
                                            f"size={SIZE}", "patch=32"])
    return benchmark_downstream(real, synth, out, cfg, progress=False)


def _fit_and_synth(tmp: Path, train_root: Path, name: str, **synth_kw) -> Path:
    cfg = build_fit_config("tiny", overrides=[*TINY_FIT, "data.size=64"])
    run = fit(cfg, train_root, tmp / f"run-{name}", progress=False)
    out = tmp / f"synth-{name}"
    synthesize(run, out, SynthConfig(n=3, sources=synth_kw.pop("sources", "real:1,procedural:1"), workers=1),
               progress=False, **synth_kw)
    return out


def _train_copy(world: Path, dst: Path) -> Path:
    shutil.copytree(world / "train", dst / "train")
    return dst


def test_clean_set_accepted(tmp_path, world):
    synth = _fit_and_synth(tmp_path, _train_copy(world, tmp_path / "clean"), "clean")
    res = _bench(world, synth, tmp_path / "o")
    info = res["synth"]
    assert info["verified"] and not info["signatures_recomputed"]
    assert info["fingerprint_checks"][0]["max_image_similarity"] < IMAGE_THRESHOLD
    assert info["max_mask_similarity"] < MASK_THRESHOLD


def test_generator_trained_on_exact_copy_of_test_image_refused(tmp_path, world):
    leaky = _train_copy(world, tmp_path / "leaky")
    for sub in ("images", "masks"):
        shutil.copy(world / "test" / sub / "im1.png", leaky / "train" / sub / "zz.png")
    synth = _fit_and_synth(tmp_path, leaky, "copy", sources="procedural:1")
    with pytest.raises(LeakageError, match=r"synth\.json: the generator run .* was trained on 1 image\(s\) of the "
                                           r"evaluated test split .*: test-im1 \(= run image train-zz\)"):
        _bench(world, synth, tmp_path / "o")


@pytest.mark.parametrize("disguise", ["jpeg", "resized"])
def test_generator_trained_on_disguised_test_image_refused(tmp_path, world, disguise):
    leaky = _train_copy(world, tmp_path / "leaky")
    img = cv2.imread(str(world / "test" / "images" / "im0.png"))
    mask = cv2.imread(str(world / "test" / "masks" / "im0.png"), cv2.IMREAD_GRAYSCALE)
    if disguise == "jpeg":
        cv2.imwrite(str(leaky / "train" / "images" / "zz.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    else:  # 1.5x larger, then the fit brings it back to the working size
        img = cv2.resize(img, (144, 144), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask, (144, 144), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(leaky / "train" / "images" / "zz.png"), img)
    cv2.imwrite(str(leaky / "train" / "masks" / "zz.png"), mask)
    synth = _fit_and_synth(tmp_path, leaky, disguise, sources="procedural:1")
    with pytest.raises(LeakageError, match=r"generator training image 'train-zz' .* near duplicate of evaluated "
                                           r"test image .*test/images/im0\.png \(similarity"):
        _bench(world, synth, tmp_path / "o")


def test_synthetic_set_from_copied_test_masks_refused(tmp_path, world):
    # the generator is clean; the masks come from a copy of the test split stored elsewhere as "train"
    gen_data = _train_copy(world, tmp_path / "clean")
    copy = tmp_path / "elsewhere"
    shutil.copytree(world / "test", copy / "train")
    cfg = build_fit_config("tiny", overrides=[*TINY_FIT, "data.size=64"])
    run = fit(cfg, gen_data, tmp_path / "run", progress=False)
    synth = tmp_path / "synth"
    synthesize(run, synth, SynthConfig(n=2, sources="real:1", workers=1), data_root=copy, progress=False)
    with pytest.raises(LeakageError, match=r"manifest\.jsonl:\d: pair '\w+' was made from a mask identical to "
                                           r"evaluated test mask .*test/masks/im\d\.png"):
        _bench(world, synth, tmp_path / "o")
    # without the recorded digest the stored mask itself is caught
    lines = (synth / "manifest.jsonl").read_text().replace('"source_mask_sha256": "', '"source_mask_sha256": "x')
    (synth / "manifest.jsonl").write_text(lines)
    with pytest.raises(LeakageError, match=r"synthetic mask is identical to evaluated test mask"):
        _bench(world, synth, tmp_path / "o")


# ---------------------------------------------------------------- signatures, pinned


def test_signatures_separate_copies_from_different_eyes(world):
    test = load_dataset(world, "test", DataConfig(size=None)).samples
    train = load_dataset(world, "train", DataConfig(size=None)).samples
    s0 = image_signature(test[0].image, test[0].fov)
    assert similarity(s0, s0) == pytest.approx(1.0, abs=1e-6)
    flipped = image_signature(test[0].image[:, ::-1], test[0].fov[:, ::-1])
    assert similarity(s0, flipped) > 0.99
    ok, buf = cv2.imencode(".jpg", test[0].image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    big = cv2.resize(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), (200, 170), interpolation=cv2.INTER_CUBIC)
    bigfov = cv2.resize(test[0].fov.astype(np.uint8), (200, 170), interpolation=cv2.INTER_NEAREST) > 0
    assert similarity(s0, image_signature(big, bigfov)) >= IMAGE_THRESHOLD
    assert max(similarity(s0, image_signature(t.image, t.fov)) for t in train) < IMAGE_THRESHOLD
    m0 = mask_signature(test[0].mask, test[0].fov)
    warped, wfov = ElasticDeform(alpha_range=(2, 2), sigma_range=(20, 20)).apply(test[0].mask, test[0].fov, seed=3,
                                                                                  alpha=2.0, sigma=20.0)
    assert similarity(m0, mask_signature(warped, wfov)) >= MASK_THRESHOLD
    assert max(similarity(m0, mask_signature(t.mask, t.fov)) for t in train) < MASK_THRESHOLD
    # the JSON form keeps the correlation
    back = decode_signature(encode_signature(s0))
    assert similarity(back, s0) > 0.999
    with pytest.raises(ValueError):
        decode_signature("AAAA")


def test_val_mode_needs_a_generator_fitted_without_the_held_out_images(tmp_path, world):
    """eval=val scores held-out training images: a generator fitted on them is refused with the fix in the
    message (`-o data.exclude=...`); fitted with that exclusion, its set is accepted and uses none of their masks."""
    from retinasynth.bench.benchmark import val_ids

    cfg = build_bench_config("tiny", None, ["steps=1", "regimes=[2]", "seeds=[0]", "arms=real,synth", "eval=val",
                                            "val_count=2", f"size={SIZE}", "patch=32"])
    held = val_ids(load_dataset(world, "train", DataConfig(size=64)).ids, cfg)
    synth = _fit_and_synth(tmp_path, world, "all", sources="procedural:1")
    with pytest.raises(LeakageError, match=rf"-o data.exclude={','.join(sorted(held))}\)"):
        benchmark_downstream(world, synth, tmp_path / "o1", cfg, progress=False)

    fit_cfg = build_fit_config("tiny", overrides=[*TINY_FIT, "data.size=64", f"data.exclude={','.join(held)}",
                                                   "train.val_count=0"])
    assert fit_cfg.data.exclude == tuple(sorted(held))
    run = fit(fit_cfg, world, tmp_path / "run-held", progress=False)
    out = tmp_path / "synth-held"
    synthesize(run, out, SynthConfig(n=4, sources="real:1", workers=1), progress=False)
    import json

    used = {json.loads(line)["source_mask_id"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert used and not used & set(held)
    res = benchmark_downstream(world, out, tmp_path / "o2", cfg, progress=False)
    assert res["synth"]["verified"] and res["data"]["real"]["val_ids"] == held


def test_data_exclude_drops_ids_and_names_unknown_ones(world):
    ids = load_dataset(world, "train", DataConfig(size=64)).ids
    kept = load_dataset(world, "train", DataConfig(size=64, exclude=f"{ids[0]},{ids[2]}")).ids
    assert kept == [ids[1], ids[3]]
    with pytest.raises(Exception, match=r"data.exclude names id\(s\) nope"):
        load_dataset(world, "train", DataConfig(size=64, exclude=("nope",)))
