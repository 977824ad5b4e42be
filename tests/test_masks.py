"""Mask operations, perturbations with replayable recipes, and procedural vessel trees."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retinasynth.errors import ConfigError
from retinasynth.masks import (
    TRANSFORMS,
    Affine,
    Compose,
    ElasticDeform,
    GrowBranches,
    ProceduralTrees,
    PruneTerminal,
    WidthChange,
    default_perturbation,
    distance_radius,
    grow_vessel_tree,
    largest_component,
    mask_stats,
    murray_split,
    render_from_skeleton,
    replay,
    skeletonize,
)
from retinasynth.masks.ops import stamp_discs


def _tree(size: int = 96, seed: int = 0, **kw):
    return grow_vessel_tree(size, np.random.default_rng(seed), **kw)


def _comb(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A trunk with six short side branches and two long ones, inside a disc FOV."""
    m = np.zeros((size, size), bool)
    m[47:50, 8:93] = True  # 3-px trunk
    for x in (30, 40, 50, 60):
        m[38:47, x] = True  # short branches up
    for x in (35, 55):
        m[50:59, x] = True  # short branches down
    m[50:80, 75] = True  # long branch
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - 47.5) ** 2 + (xx - 47.5) ** 2 <= 46**2
    return m & fov, fov


# ---- ops ----------------------------------------------------------------------------------------

def test_stats_straight_line_of_known_width():
    m = np.zeros((64, 64), bool)
    m[30:35, 5:60] = True  # 5 px wide
    st = mask_stats(m, np.ones_like(m))
    assert st["width_p50"] == 5.0 and st["width_p90"] == 5.0
    assert st["branch_points"] == 0 and st["end_points"] == 2
    assert st["components"] == 1 and st["largest_component_fraction"] == 1.0
    assert st["vessel_fraction"] == pytest.approx(5 * 55 / 64**2)


def test_stats_plus_sign():
    m = np.zeros((41, 41), bool)
    m[20, 5:36] = True
    m[5:36, 20] = True
    st = mask_stats(m, np.ones_like(m))
    assert st["branch_points"] == 1 and st["end_points"] == 4
    assert st["width_p50"] == 1.0
    json.dumps(st)


def test_stats_fov_and_components():
    m = np.zeros((32, 32), bool)
    m[5, 2:10] = True
    m[20, 2:30] = True
    fov = np.zeros_like(m)
    fov[:, :16] = True
    st = mask_stats(m, fov)
    assert st["vessel_fraction"] == pytest.approx((8 + 14) / fov.sum())
    assert st["components"] == 2
    assert st["largest_component_fraction"] == pytest.approx(14 / 22)
    assert largest_component(m).sum() == 28


def test_fractal_dimension_line_vs_filled():
    line = np.zeros((128, 128), bool)
    line[64, :] = True
    assert mask_stats(line)["fractal_dimension"] == pytest.approx(1.0, abs=0.02)
    assert mask_stats(np.ones((128, 128), bool))["fractal_dimension"] == pytest.approx(2.0, abs=0.02)


def test_render_from_skeleton_roundtrip_odd_width():
    m = np.zeros((40, 40), bool)
    m[10:15, 5:35] = True
    out = render_from_skeleton(skeletonize(m), distance_radius(m))
    assert out[10:15, 8:32].all() and not out[:9].any() and not out[16:].any()


def test_stamp_discs_supersampled_even_width():
    ys = np.full(50, 20.5)
    xs = np.linspace(5, 35, 50)
    out = stamp_discs((40, 40), ys, xs, np.full(50, 1.0), supersample=2)
    assert out[20:22, 8:32].all() and not out[18, 8:32].any() and not out[23, 8:32].any()


# ---- perturbations ------------------------------------------------------------------------------

ALL = [ElasticDeform(alpha_range=(2, 4), sigma_range=(15, 25)), Affine(rotate_deg=20, translate_frac=0.05),
       WidthChange(), PruneTerminal(fraction_range=(0.5, 1.0)), GrowBranches(n_range=(3, 6))]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_transform_binary_inside_fov_and_replayable(t):
    mask, fov, _ = _tree(96, 1)
    rng = np.random.default_rng(5)
    params = t.sample_params(rng, mask.shape)
    params = json.loads(json.dumps(params))  # recipes must survive JSON
    m1, f1 = t.apply(mask, fov, **params)
    m2, f2 = TRANSFORMS[t.name]().apply(mask, fov, **params)
    assert m1.dtype == bool and f1.dtype == bool and m1.shape == mask.shape
    assert not (m1 & ~f1).any()
    assert m1.any()
    assert np.array_equal(m1, m2) and np.array_equal(f1, f2)


def test_compose_replay_bit_identical():
    mask, fov, _ = _tree(128, 2)
    comp = default_perturbation(128)
    m1, f1, recipe = comp(mask, fov, np.random.default_rng(3))
    recipe = json.loads(json.dumps(recipe))
    assert [s["name"] for s in recipe] and all(s["name"] in TRANSFORMS for s in recipe)
    m2, f2 = replay(recipe, mask, fov)
    assert np.array_equal(m1, m2) and np.array_equal(f1, f2)
    assert not (m1 & ~f1).any()


def test_default_perturbation_keeps_tree_connected():
    mask, fov, _ = _tree(128, 4)
    before = largest_component(mask).sum() / mask.sum()
    for seed in range(3):
        m, f, _ = default_perturbation(128)(mask, fov, np.random.default_rng(seed))
        assert m.dtype == bool and not (m & ~f).any()
        assert largest_component(m).sum() / m.sum() >= min(0.9, before - 0.05)


def test_replay_unknown_name_lists_valid_names():
    m, f = _comb()
    with pytest.raises(ConfigError, match="valid names: affine, elastic, grow, prune, width"):
        replay([{"name": "swirl", "params": {}}], m, f)
    with pytest.raises(ConfigError, match="bad parameters"):
        replay([{"name": "affine", "params": {"bogus": 1}}], m, f)


def test_affine_rotation_keeps_mask_and_fov_aligned():
    m = np.zeros((33, 33), bool)
    m[5, 10:20] = True
    m[5:12, 10] = True
    fov = np.zeros_like(m)
    fov[2:30, 4:25] = True
    m2, f2 = Affine().apply(m, fov, angle=90.0)
    assert np.array_equal(m2, np.rot90(m))  # counter-clockwise, as displayed
    assert np.array_equal(f2, np.rot90(fov))
    m3, f3 = Affine().apply(m, fov, hflip=True)
    assert np.array_equal(m3, m[:, ::-1]) and np.array_equal(f3, fov[:, ::-1])


def test_affine_removes_vessels_outside_new_fov():
    m, f = _comb()
    m2, f2 = Affine().apply(m, f, tx=0.3)
    assert not (m2 & ~f2).any() and f2.sum() < f.sum()


def test_elastic_zero_alpha_is_identity_and_thin_lines_survive():
    m, f, _ = _tree(96, 3)
    m0, f0 = ElasticDeform().apply(m, f, seed=1, alpha=0.0, sigma=20.0)
    assert np.array_equal(m0, m) and np.array_equal(f0, f)
    line = np.zeros((64, 64), bool)
    rr = np.arange(5, 59)
    line[rr, rr] = True  # 1-px diagonal: the hardest case for interpolation
    m1, _ = ElasticDeform().apply(line, np.ones_like(line), seed=7, alpha=3.0, sigma=16.0)
    assert mask_stats(m1)["components"] == 1


def test_width_change_unit_scale_keeps_mask_and_skeleton():
    m, f = _comb()
    m1, _ = WidthChange().apply(m, f, seed=0, scale=1.0, sigma=0.0)
    assert np.array_equal(m1, m)
    assert np.array_equal(skeletonize(m1), skeletonize(m))


def test_width_change_scale_two_widens_and_keeps_topology():
    m, f, _ = _tree(128, 5)
    m2, f2 = WidthChange().apply(m, f, seed=0, scale=2.0, sigma=0.1)
    assert mask_stats(m2, f2)["width_mean"] > mask_stats(m, f)["width_mean"] * 1.3
    assert (skeletonize(m) <= m2).all()
    m3, _ = WidthChange().apply(m, f, seed=0, scale=0.5, sigma=0.0)
    assert m3.sum() < m.sum() and (skeletonize(m) <= m3).all()


def test_prune_terminal_reduces_end_points():
    m, f = _comb()
    before = mask_stats(m, f)["end_points"]
    m1, _ = PruneTerminal().apply(m, f, seed=0, fraction=1.0, max_length=15.0)
    after = mask_stats(m1, f)
    assert after["end_points"] < before and m1.sum() < m.sum()
    assert m1[47:50, 15:70].all()  # the trunk is untouched (its short right end is terminal too)
    assert m1[60:80, 75].all()  # the long branch is longer than max_length: kept
    m0, _ = PruneTerminal().apply(m, f, seed=0, fraction=0.0, max_length=15.0)
    assert np.array_equal(m0, m)


def test_grow_branches_adds_pixels_inside_fov():
    m, f = _comb()
    m1, f1 = GrowBranches().apply(m, f, seed=3, n=5, length_min=10, length_max=20, radius_min=0.5,
                                  radius_max=1.0, tortuosity=0.05)
    assert m1.sum() > m.sum() and (m <= m1).all() and not (m1 & ~f1).any()
    assert mask_stats(m1, f1)["components"] == 1


def test_compose_probability_skips_transforms():
    m, f = _comb()
    comp = Compose([Affine(p=0.0), WidthChange(p=1.0)])
    _, _, recipe = comp(m, f, np.random.default_rng(0))
    assert [s["name"] for s in recipe] == ["width"]


def test_bad_range_is_config_error():
    with pytest.raises(ConfigError):
        WidthChange(global_scale_range=(2.0, 1.0))


# ---- procedural trees ---------------------------------------------------------------------------

def test_procedural_basic_properties():
    mask, fov, info = _tree(64, 0)
    assert mask.dtype == bool and fov.dtype == bool and mask.shape == (64, 64)
    assert mask.any() and not (mask & ~fov).any()
    json.dumps(info)
    assert info["segments"] > 0 and info["eye"] in ("left", "right")


def test_procedural_deterministic_and_seed_dependent():
    a, fa, ia = _tree(96, 11)
    b, fb, ib = _tree(96, 11)
    c, _, _ = _tree(96, 12)
    assert np.array_equal(a, b) and np.array_equal(fa, fb) and ia == ib
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("eye,right", [("right", True), ("left", False)])
def test_eye_side_places_optic_disc(eye, right):
    _, _, info = _tree(96, 3, eye=eye)
    assert info["eye"] == eye
    od_x, fovea_x = info["optic_disc_center"][1], info["fovea_center"][1]
    assert (od_x > 48) == right and (fovea_x < od_x) == right


def test_procedural_murray_law_and_angles():
    _, _, info = _tree(128, 6)
    assert info["branchings"]
    for b in info["branchings"]:
        assert b["r_parent"] ** 3 == pytest.approx(b["r_a"] ** 3 + b["r_b"] ** 3, rel=1e-9)
        assert b["r_b"] <= b["r_a"]
        assert 15.0 <= b["angle_b_deg"] <= 120.0
    r_a, r_b = murray_split(2.0, 0.5)
    assert r_b == pytest.approx(0.5 * r_a) and r_a**3 + r_b**3 == pytest.approx(8.0)


def test_procedural_tree_is_connected_and_realistic_at_128():
    mask, fov, _ = _tree(128, 7)
    st = mask_stats(mask, fov)
    assert st["largest_component_fraction"] > 0.9
    assert 0.04 < st["vessel_fraction"] < 0.25
    assert st["branch_points"] >= 5 and st["end_points"] >= 5


def test_procedural_params_validation_and_class():
    with pytest.raises(ConfigError, match="unknown procedural tree parameter"):
        _tree(64, 0, bogus=1)
    with pytest.raises(ConfigError):
        _tree(64, 0, eye="middle")
    trees = ProceduralTrees(64, tortuosity=0.02)
    m, f, info = trees.sample(np.random.default_rng(0))
    assert info["params"]["tortuosity"] == 0.02 and m.any()
    assert math.isclose(info["fov_radius"], 0.45 * 64, rel_tol=0.05)
