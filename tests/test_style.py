"""`synthesize --style DIR`: renders take the colours of unlabelled target-camera photographs, reproducibly, and
the benchmark refuses a style taken from evaluated images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from retinasynth.errors import DataError
from retinasynth.synth.style import Style, channel_cdfs, load_styles, match_style, pick


def _flat(value: int, n: int = 32) -> np.ndarray:
    return np.full((n, n, 3), value, np.uint8)


def test_match_style_maps_colours_inside_the_fov_only():
    fov = np.zeros((32, 32), bool)
    fov[4:28, 4:28] = True
    image = _flat(100)
    image[~fov] = 0
    target = Style("t", channel_cdfs(_flat(200), np.ones((32, 32), bool)))
    out = match_style(image, fov, target)
    assert (out[fov] == 200).all() and (out[~fov] == 0).all()
    assert (match_style(image, fov, target, 0.5)[fov] == 150).all()
    assert np.array_equal(match_style(image, fov, target, 0.0), image)


def test_match_style_keeps_the_order_of_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    fov = np.ones((40, 40), bool)
    target = Style("t", channel_cdfs(np.clip(rng.normal(60, 10, (40, 40, 3)), 0, 255).astype(np.uint8), fov))
    out = match_style(image, fov, target)
    for c in range(3):
        order = np.argsort(image[..., c].ravel(), kind="stable")
        assert (np.diff(out[..., c].ravel()[order].astype(int)) >= 0).all()  # monotone mapping
        assert abs(out[..., c].mean() - 60) < 3


def test_load_styles_errors_and_pick_is_seeded(tmp_path, make_fundus, save_image):
    with pytest.raises(DataError, match="not a folder"):
        load_styles(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_styles(tmp_path / "empty")
    for i in range(3):
        save_image(tmp_path / "cam" / f"p{i}.png", make_fundus(48, 48, seed=i)[0])
    styles, sigs = load_styles(tmp_path / "cam")
    assert [s.id for s in styles] == ["p0.png", "p1.png", "p2.png"] and len(sigs) == 3
    assert all(s.cdf.shape == (3, 256) and s.cdf[:, -1].min() == pytest.approx(1.0) for s in styles)
    assert pick(styles, 0, 5) == pick(styles, 0, 5) and {pick(styles, 0, p)[0] for p in range(30)} == {0, 1, 2}


def test_synthesize_with_style_records_it_and_the_benchmark_refuses_scored_style_images(run_dir, data_root,
                                                                                       tmp_path):
    from retinasynth.bench import benchmark_downstream, build_bench_config
    from retinasynth.bench.guards import LeakageError
    from retinasynth.data import DataConfig, load_dataset
    from retinasynth.synth.synthesize import SynthConfig, synthesize

    test = load_dataset(data_root, "test", DataConfig(size=None))
    scored = tmp_path / "scored"
    scored.mkdir()
    for s in test:
        shutil.copy(s.source, scored / f"{s.id}.png")
    cfg = SynthConfig(n=4, batch_size=2, seed=0, style=str(scored), style_strength=1.0)
    out = synthesize(run_dir, tmp_path / "styled", cfg, progress=False)["out"]
    meta = json.loads((tmp_path / "styled" / "synth.json").read_text())
    assert meta["style"]["n"] == len(test) and meta["style"]["labels_used"] is False
    lines = [json.loads(x) for x in (tmp_path / "styled" / "manifest.jsonl").read_text().splitlines()]
    assert all(x["style_id"] in meta["style"]["ids"] for x in lines)
    again = synthesize(run_dir, tmp_path / "styled2", cfg, progress=False)["out"]
    for x in lines:  # same seed, same bytes
        assert (tmp_path / "styled" / x["image"]).read_bytes() == (tmp_path / "styled2" / x["image"]).read_bytes()
    assert out and again
    bench = build_bench_config("tiny", overrides=["steps=1", "regimes=1", "seeds=0", "arms=real,synth"])
    with pytest.raises(LeakageError, match="style photograph .* Refusing: take the style from photographs"):
        benchmark_downstream(data_root, tmp_path / "styled", tmp_path / "b", bench, progress=False)
