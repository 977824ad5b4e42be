"""Formats other tools use: nnU-Net raw folders read as a layout, `export --format nnunet|monai`, a torch Dataset,
and the one device helper every command checks `--device` with. Seconds, on in-code phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_synth

from retinasynth.data import load_dataset
from retinasynth.data.dataset import DataConfig
from retinasynth.device import pick_device
from retinasynth.errors import ConfigError


def _nnunet(root, make_fundus, save_image, n_train=3, n_test=2):
    for tag, n, base in (("Tr", n_train, 0), ("Ts", n_test, 50)):
        for i in range(n):
            image, mask, _ = make_fundus(48, 56, seed=base + i, n_vessels=3, thickness=2)
            save_image(root / f"images{tag}" / f"case{base + i:03d}_0000.png", image)
            save_image(root / f"labels{tag}" / f"case{base + i:03d}.png", mask.astype(np.uint8))  # 0/1 labels
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                   "labels": {"background": 0, "vessel": 1},
                                                   "numTraining": n_train, "file_ending": ".png"}))
    return root


def test_nnunet_raw_folder_is_read_with_its_splits(tmp_path, make_fundus, save_image, cli):
    root = _nnunet(tmp_path / "Dataset501_Vessels", make_fundus, save_image)
    train = load_dataset(root, "train", DataConfig(size=None))
    test = load_dataset(root, "test", DataConfig(size=None))
    assert train.ids == ["case000", "case001", "case002"] and test.ids == ["case050", "case051"]
    ref_image, ref_mask, _ = make_fundus(48, 56, seed=1, n_vessels=3, thickness=2)
    s = train.samples[1]
    assert np.array_equal(s.image, ref_image) and np.array_equal(s.mask, ref_mask)  # 0/1 labels read as vessels
    r = cli("data", "inspect", root, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["layout"] == "nnunet" and rep["splits"] == {"train": 3, "test": 2}


def test_nnunet_second_channel_file_is_a_problem(tmp_path, make_fundus, save_image, cli):
    root = _nnunet(tmp_path / "ds", make_fundus, save_image, n_test=0)
    save_image(root / "imagesTr" / "case000_0001.png", make_fundus(48, 56)[0])
    r = cli("data", "inspect", root)
    assert r.exit_code == 1 and "case000_0001.png is a second channel file" in r.output


def test_benchmark_reads_an_nnunet_folder(tmp_path, make_fundus, save_image):
    from conftest import tiny

    from retinasynth.bench import benchmark_downstream

    root = _nnunet(tmp_path / "ds", make_fundus, save_image)
    res = benchmark_downstream(root, None, tmp_path / "bench", tiny("arms=real"), progress=False)
    assert res["data"]["eval"]["test"]["n"] == 2 and {r["regime"] for r in res["runs"]} == {2}


@pytest.mark.parametrize("fmt", ["nnunet", "monai"])
def test_export_round_trip(fmt, tmp_path, real_root, make_fundus, save_image, cli):
    synth = write_synth(tmp_path / "synth", real_root, make_fundus, save_image, n=3)
    out = tmp_path / f"out-{fmt}"
    r = cli("export", "--format", fmt, "--synth", synth, "--real", real_root, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "7 cases (3 synthetic, 4 real)" in r.output
    src = {f"syn_{s.id}": s for s in load_dataset(synth, None, DataConfig(size=None))}  # ids s0.. -> syn_s0..
    src.update({f"real_{s.id}": s for s in load_dataset(real_root, "train", DataConfig(size=None))})
    if fmt == "nnunet":
        meta = json.loads((out / "dataset.json").read_text())
        assert meta["labels"] == {"background": 0, "vessel": 1} and meta["numTraining"] == 7
        assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["file_ending"] == ".png"
        back = load_dataset(out, "train", DataConfig(size=None))  # the nnunet layout reader
        assert back.samples and all(s.fov_source == "given" for s in back.samples)
        got = {s.id: s for s in back.samples}
    else:
        dl = json.loads((out / "datalist.json").read_text())["training"]
        assert len(dl) == 7 and {d["source"] for d in dl} == {"synthetic", "real"}
        from retinasynth.data.io import read_image, read_mask

        got = {d["image"].split("/")[-1][:-4]: type("S", (), {"image": read_image(out / d["image"]),
                                                               "mask": read_mask(out / d["label"])})
               for d in dl}
    assert sorted(got) == sorted(src)
    for k, s in src.items():
        assert np.array_equal(got[k].image, s.image) and np.array_equal(got[k].mask, s.mask), k
    # a second export into the same folder is refused, --overwrite replaces it
    r = cli("export", "--format", fmt, "--synth", synth, "--out", out, "--quiet")
    assert r.exit_code == 2 and "folder is not empty" in r.output
    assert cli("export", "--format", fmt, "--synth", synth, "--out", out, "--quiet", "--overwrite").exit_code == 0


def test_export_refuses_a_folder_that_is_no_synthetic_set(tmp_path, real_root, cli):
    r = cli("export", "--format", "nnunet", "--synth", real_root, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no synth.json" in r.output and not (tmp_path / "o").exists()


def test_synthetic_set_loads_every_pair_unless_a_split_is_asked(tmp_path, real_root, make_fundus, save_image):
    synth = write_synth(tmp_path / "synth", real_root, make_fundus, save_image, n=4)
    assert len(load_dataset(synth, cfg=DataConfig(size=None))) == 4
    assert len(load_dataset(synth, "train", cfg=DataConfig(size=None))) == 3  # the seeded 75% when asked
    assert len(load_dataset(real_root, cfg=DataConfig(size=None))) == 4  # a real set: its training split


def test_torch_dataset_batches(tmp_path, real_root, make_fundus, save_image):
    import torch

    from retinasynth.data.torchdata import PairDataset

    ds = PairDataset(write_synth(tmp_path / "synth", real_root, make_fundus, save_image, n=3), cfg=DataConfig(size=32))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["mask"].shape == (3, 1, 32, 32)
    assert batch["image"].dtype == torch.float32 and 0 <= float(batch["image"].min()) <= float(batch["image"].max()) <= 1
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0} and batch["id"] == ["s0", "s1", "s2"]


# ------------------------------------------------------------------------------------------------- devices


def test_pick_device_names():
    import torch

    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("auto") == pick_device(None) and pick_device("CPU") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cpu:3", "mps:0", ""):
        if bad == "":
            continue
        with pytest.raises(ConfigError, match=r"unknown device .*valid: auto, cpu, cuda, cuda:N"):
            pick_device(bad)


COMMANDS = [
    ["fit", "--data", "{d}", "--out", "{o}"],
    ["synthesize", "--run", "{o}", "--out", "{o}2"],
    ["evaluate", "--run", "{o}", "--data", "{d}"],
    ["benchmark-downstream", "--data", "{d}", "--out", "{o}", "-o", "arms=real"],
    ["env"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7"])
def test_every_command_refuses_a_bad_device_in_one_line(cmd, device, tmp_path, real_root, cli):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and (device == "cuda" or torch.cuda.device_count() > 7):
        pytest.skip("this machine has that GPU")
    args = [a.format(d=real_root, o=tmp_path / "o") for a in cmd]
    r = cli(*args, "--device", device)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "device" in lines[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_env_prints_what_auto_resolves_to(cli):
    from retinasynth.precision import resolve_precision

    r = cli("env", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["precision"] == resolve_precision("auto", info["device"])
    assert set(info["memory_format"]) == {"fit", "synthesize/evaluate", "benchmark segmenter"}
    assert info["benchmark"]["models"] == 39  # the cpu profile: 9 + 9 + 3 + 9 + 9 (see bench_units)
