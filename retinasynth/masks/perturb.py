"""Vessel-mask perturbations with replayable recipes (albumentations-style, but mask-aware).

Each transform has a ``name``, constructor arguments that are parameter *ranges*,
``sample_params(rng, shape)`` that draws concrete JSON-serialisable parameters, and
``apply(mask, fov, **params)`` that delegates to a pure function. Transforms needing a random
field or random choices store an integer ``seed`` in their parameters and draw from
``np.random.default_rng(seed)``, so a recipe stays small and :func:`replay` reproduces the output
bit for bit. Every output mask is binary and inside the (possibly transformed) FOV.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
from scipy import ndimage as ndi

from retinasynth.errors import ConfigError
from retinasynth.masks.ops import (
    EIGHT,
    branch_and_end_points,
    distance_radius,
    neighbour_count,
    render_from_skeleton,
    render_paths,
    skeletonize,
)

Pair = tuple[np.ndarray, np.ndarray]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _range(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if hi < lo:
        raise ConfigError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def _warp_binary(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Warp a bool image with bilinear interpolation and threshold at 0.5."""
    out = cv2.remap(img.astype(np.float32), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out >= 0.5


_EDGE_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _skeleton_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of 8-adjacent skeleton pixels as float arrays ``(ys, xs)`` of shape (n_edges, 2)."""
    sk = skeletonize(mask)
    py, px = np.nonzero(sk)
    padded = np.pad(sk, 1)
    ys, xs = [np.stack([py, py], axis=1)], [np.stack([px, px], axis=1)]  # every pixel, as a dot
    for dy, dx in _EDGE_OFFSETS:
        hit = padded[py + 1 + dy, px + 1 + dx]
        ys.append(np.stack([py[hit], py[hit] + dy], axis=1))
        xs.append(np.stack([px[hit], px[hit] + dx], axis=1))
    return np.concatenate(ys).astype(np.float64), np.concatenate(xs).astype(np.float64)


def _draw_edges(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Draw 1-px 8-connected line segments between sub-pixel end points."""
    canvas = np.zeros(shape, dtype=np.uint8)
    if ys.size:
        pts = np.stack([xs, ys], axis=-1) * 16.0  # 4 fractional bits
        pts = np.clip(np.rint(pts), -(2**24), 2**24).astype(np.int32)
        cv2.polylines(canvas, list(pts.reshape(-1, 2, 2)), isClosed=False, color=1, thickness=1,
                      lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _warp_mask(mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, forward) -> np.ndarray:
    """Bilinear warp + 0.5 threshold for the vessel shapes, plus the forward-mapped skeleton drawn as
    connected 1-px lines, so thin (1-2 px) vessels cannot break up at sub-pixel sampling offsets."""
    warped = _warp_binary(mask, map_x, map_y)
    ey, ex = _skeleton_edges(mask)
    fy, fx = forward(ey.ravel(), ex.ravel())
    return warped | _draw_edges(mask.shape, fy.reshape(ey.shape), fx.reshape(ex.shape))


# ---- pure functions -----------------------------------------------------------------------------

def elastic_field(shape: tuple[int, int], seed: int, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth displacement field ``(dy, dx)``, max |displacement| = ``alpha`` pixels per axis.

    Random values on a coarse grid with spacing ``sigma`` are upsampled bicubically: smooth and
    much faster than Gaussian-filtering full-size noise.
    """
    h, w = shape
    rng = np.random.default_rng(seed)
    gh, gw = max(2, math.ceil(h / sigma) + 1), max(2, math.ceil(w / sigma) + 1)
    out = []
    for _ in range(2):
        coarse = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
        f = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        f *= alpha / max(float(np.abs(f).max()), 1e-6)
        out.append(f)
    return out[0], out[1]


def elastic_deform(mask: np.ndarray, fov: np.ndarray, seed: int, alpha: float, sigma: float) -> Pair:
    """Warp mask and FOV with the same smooth random field; vessels kept inside the new FOV."""
    h, w = mask.shape
    dy, dx = elastic_field((h, w), seed, alpha, sigma)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx + dx, yy + dy

    def forward(py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the output samples the input at q + d(q); invert by fixed-point iteration (d is smooth, small)
        qy, qx = py, px
        for _ in range(3):
            coords = np.stack([qy, qx])
            qy = py - ndi.map_coordinates(dy, coords, order=1, mode="nearest")
            qx = px - ndi.map_coordinates(dx, coords, order=1, mode="nearest")
        return qy, qx

    new_fov = _warp_binary(fov, map_x, map_y)
    return _warp_mask(mask, map_x, map_y, forward) & new_fov, new_fov


def affine(mask: np.ndarray, fov: np.ndarray, angle: float = 0.0, scale: float = 1.0, tx: float = 0.0,
           ty: float = 0.0, hflip: bool = False, vflip: bool = False) -> Pair:
    """Flip, then rotate ``angle`` degrees counter-clockwise (as displayed) and scale about the image
    centre, then shift by ``(tx, ty)`` fractions of the width/height. Same geometry for mask and FOV;
    vessels outside the resulting FOV are removed."""
    m, f = mask, fov
    if hflip:
        m, f = m[:, ::-1], f[:, ::-1]
    if vflip:
        m, f = m[::-1], f[::-1]
    h, w = m.shape
    M = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), float(scale))
    M[0, 2] += tx * w
    M[1, 2] += ty * h
    # the same bilinear sampling as cv2.warpAffine, via maps, so mask and skeleton share one geometry
    inv = cv2.invertAffineTransform(M)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    map_x = (inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]).astype(np.float32)

    def forward(py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return M[1, 0] * px + M[1, 1] * py + M[1, 2], M[0, 0] * px + M[0, 1] * py + M[0, 2]

    new_fov = _warp_binary(np.ascontiguousarray(f), map_x, map_y)
    return _warp_mask(np.ascontiguousarray(m), map_x, map_y, forward) & new_fov, new_fov


def _segments(skeleton: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Label skeleton segments between junctions (junction zones = branch pixels dilated 3x3)."""
    nb = neighbour_count(skeleton)
    zone = ndi.binary_dilation(skeleton & (nb >= 3), structure=EIGHT) & skeleton
    labels, n = ndi.label(skeleton & ~zone, structure=EIGHT)
    return labels, n, zone


def _nearest_skeleton(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the (row, col) index arrays of its nearest skeleton pixel."""
    _, (iy, ix) = ndi.distance_transform_edt(~skeleton, return_indices=True)
    return iy, ix


def change_width(mask: np.ndarray, fov: np.ndarray, seed: int, scale: float, sigma: float) -> Pair:
    """Multiply vessel radii by ``scale`` and a per-segment log-normal factor (std ``sigma``).

    Where the factor ``k`` of a pixel's nearest skeleton pixel is >= 1, discs of radius
    ``k * radius`` (:func:`distance_radius`, re-rendered with :func:`render_from_skeleton`) are added
    to the vessel; where it is < 1 the vessel is cut back to the pixels within ``k * (radius + 0.5)``
    of the skeleton. A factor of exactly 1 returns the mask unchanged, and the skeleton is always
    kept, so topology is preserved and nothing disappears.
    """
    mask = mask & fov
    sk = skeletonize(mask)
    if not sk.any():
        return mask, fov
    radius = distance_radius(mask)
    labels, n, _ = _segments(sk)
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0.0, sigma, size=n + 1)) if sigma > 0 else np.ones(n + 1)
    factor[0] = 1.0  # junction pixels keep the global factor only
    k = np.where(sk, scale * factor[labels], 1.0)
    grown = render_from_skeleton(sk, radius * np.maximum(k, 1.0))
    dist, (iy, ix) = ndi.distance_transform_edt(~sk, return_indices=True)
    k_near = k[iy, ix]
    # shrinking: keep pixels within k * EDT of their skeleton pixel (EDT = radius + 0.5)
    keep = dist <= k_near * (radius[iy, ix] + 0.5)
    out = np.where(k_near >= 1.0, mask | grown, mask & keep) | sk
    return out & fov, fov


def prune_terminal(mask: np.ndarray, fov: np.ndarray, seed: int, fraction: float, max_length: float) -> Pair:
    """Remove a random ``fraction`` of terminal branches shorter than ``max_length`` pixels.

    A terminal branch is a skeleton segment with an end point that touches a junction. Vessel
    pixels whose nearest skeleton pixel was removed are deleted unless a disc of the remaining
    skeleton (:func:`render_from_skeleton`, original radii) covers them, so the parent vessel
    keeps its shape and untouched vessels stay exactly as they were.
    """
    mask = mask & fov
    sk = skeletonize(mask)
    radius = distance_radius(mask)
    labels, n, zone = _segments(sk)
    if n == 0:
        return mask & fov, fov
    ends, _, _ = branch_and_end_points(sk)
    idx = np.arange(1, n + 1)
    length = ndi.sum_labels(np.ones_like(labels), labels, idx)
    has_end = ndi.maximum(ends, labels, idx) > 0
    near_zone = ndi.binary_dilation(zone, structure=EIGHT)
    touches = ndi.maximum(near_zone, labels, idx) > 0
    terminal = idx[has_end & touches & (length < max_length)]
    rng = np.random.default_rng(seed)
    chosen = terminal[rng.random(terminal.size) < fraction]
    if chosen.size == 0:
        return mask & fov, fov
    kept = sk & ~np.isin(labels, chosen)
    # drop the one-pixel stubs a removed branch leaves in its junction zone
    nb0 = neighbour_count(sk)
    for _ in range(2):
        nb = neighbour_count(kept)
        kept &= ~(zone & (nb <= 1) & (nb0 >= 2))
    removed = sk & ~kept
    iy, ix = _nearest_skeleton(sk)
    drop = removed[iy, ix] & ~render_from_skeleton(kept, radius)
    return mask & ~drop, fov


def _local_direction(sk: np.ndarray, y: int, x: int, half: int = 4) -> float:
    """Angle (radians) of the skeleton's principal direction around (y, x)."""
    y0, x0 = max(0, y - half), max(0, x - half)
    py, px = np.nonzero(sk[y0 : y + half + 1, x0 : x + half + 1])
    if py.size < 2:
        return 0.0
    cov = np.cov(np.stack([px.astype(float), py.astype(float)]))
    vals, vecs = np.linalg.eigh(cov)
    vx, vy = vecs[:, int(np.argmax(vals))]
    return math.atan2(vy, vx)


def grow_branches(mask: np.ndarray, fov: np.ndarray, seed: int, n: int, length_min: float, length_max: float,
                  radius_min: float, radius_max: float, tortuosity: float) -> Pair:
    """Add ``n`` tapered tortuous branches starting on existing vessels, clipped to the FOV.

    Start points are skeleton pixels (preferring thicker vessels); a branch leaves at 35-75 degrees
    to the local vessel direction with a radius no larger than the parent's and tapers to 0.5 px.
    """
    sk = skeletonize(mask & fov)
    ys, xs = np.nonzero(sk)
    if n <= 0 or ys.size == 0:
        return mask & fov, fov
    radius = distance_radius(mask)
    rng = np.random.default_rng(seed)
    weights = radius[ys, xs].astype(np.float64) + 0.5
    picks = rng.choice(ys.size, size=n, replace=True, p=weights / weights.sum())
    step = 1.0
    paths = []
    for i in picks:
        y, x = float(ys[i]), float(xs[i])
        r0 = min(_uniform(rng, (radius_min, radius_max)), max(0.5, 0.8 * float(radius[ys[i], xs[i]])))
        length = _uniform(rng, (length_min, length_max))
        theta = _local_direction(sk, int(ys[i]), int(xs[i]))
        theta += (1.0 if rng.random() < 0.5 else -1.0) * math.radians(rng.uniform(35.0, 75.0))
        theta += math.pi if rng.random() < 0.5 else 0.0
        k = max(2, int(length / step))
        omega = 0.0
        py, px = [y], [x]
        for _ in range(k):
            omega = 0.8 * omega + float(rng.normal(0.0, tortuosity))
            theta += omega
            y += step * math.sin(theta)
            x += step * math.cos(theta)
            py.append(y)
            px.append(x)
        pr = np.linspace(r0, 0.5, len(py))
        paths.append((np.asarray(py), np.asarray(px), pr))
    new = render_paths(mask.shape, paths, supersample=2)
    return (mask | new) & fov, fov


# ---- transform classes --------------------------------------------------------------------------

class Transform:
    """Base class: parameter ranges in the constructor, concrete parameters per call.

    A subclass names its function (``fn``, called as ``fn(mask, fov, **params)``) and the defaults of
    its concrete parameters (``defaults``); ``apply`` fills in the defaults and calls it.
    """

    name: ClassVar[str] = ""
    fn: ClassVar[Callable[..., Pair]]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, p: float = 1.0) -> None:
        self.p = float(p)

    def sample_params(self, rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, mask: np.ndarray, fov: np.ndarray, **params: Any) -> Pair:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.name}: unexpected parameter(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(self.defaults)}")
        return type(self).fn(mask, fov, **{**self.defaults, **params})

    def __call__(self, mask: np.ndarray, fov: np.ndarray, rng: np.random.Generator) -> Pair:
        return self.apply(mask, fov, **self.sample_params(rng, mask.shape))


class ElasticDeform(Transform):
    """Smooth random displacement (``alpha`` px max, correlation length ``sigma`` px)."""

    name = "elastic"
    fn = staticmethod(elastic_deform)
    defaults = {"seed": 0, "alpha": 0.0, "sigma": 50.0}

    def __init__(self, alpha_range: Sequence[float] = (2.0, 6.0), sigma_range: Sequence[float] = (40.0, 80.0),
                 p: float = 1.0) -> None:
        super().__init__(p)
        self.alpha_range = _range(alpha_range, "alpha_range")
        self.sigma_range = _range(sigma_range, "sigma_range")

    def sample_params(self, rng, shape):
        return {"seed": _seed(rng), "alpha": _uniform(rng, self.alpha_range),
                "sigma": max(2.0, _uniform(rng, self.sigma_range))}


class Affine(Transform):
    """Rotation (+-``rotate_deg``), isotropic scale, translation (fraction of size) and flips."""

    name = "affine"
    fn = staticmethod(affine)
    defaults = {"angle": 0.0, "scale": 1.0, "tx": 0.0, "ty": 0.0, "hflip": False, "vflip": False}

    def __init__(self, rotate_deg: float = 10.0, scale_range: Sequence[float] = (0.95, 1.05),
                 translate_frac: float = 0.02, hflip_p: float = 0.5, vflip_p: float = 0.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.rotate_deg = float(rotate_deg)
        self.scale_range = _range(scale_range, "scale_range")
        self.translate_frac = float(translate_frac)
        self.hflip_p, self.vflip_p = float(hflip_p), float(vflip_p)

    def sample_params(self, rng, shape):
        t = self.translate_frac
        return {"angle": _uniform(rng, (-self.rotate_deg, self.rotate_deg)),
                "scale": _uniform(rng, self.scale_range),
                "tx": _uniform(rng, (-t, t)), "ty": _uniform(rng, (-t, t)),
                "hflip": bool(rng.random() < self.hflip_p), "vflip": bool(rng.random() < self.vflip_p)}


class WidthChange(Transform):
    """Global radius factor from ``global_scale_range`` times a per-segment log-normal factor."""

    name = "width"
    fn = staticmethod(change_width)
    defaults = {"seed": 0, "scale": 1.0, "sigma": 0.0}

    def __init__(self, global_scale_range: Sequence[float] = (0.85, 1.2), per_segment_sigma: float = 0.12,
                 p: float = 1.0) -> None:
        super().__init__(p)
        self.global_scale_range = _range(global_scale_range, "global_scale_range")
        self.per_segment_sigma = float(per_segment_sigma)

    def sample_params(self, rng, shape):
        return {"seed": _seed(rng), "scale": _uniform(rng, self.global_scale_range),
                "sigma": self.per_segment_sigma}


class PruneTerminal(Transform):
    """Remove a random fraction of short terminal branches."""

    name = "prune"
    fn = staticmethod(prune_terminal)
    defaults = {"seed": 0, "fraction": 0.0, "max_length": 30.0}

    def __init__(self, fraction_range: Sequence[float] = (0.0, 0.3), max_length_px: float = 30.0,
                 p: float = 1.0) -> None:
        super().__init__(p)
        self.fraction_range = _range(fraction_range, "fraction_range")
        self.max_length_px = float(max_length_px)

    def sample_params(self, rng, shape):
        return {"seed": _seed(rng), "fraction": _uniform(rng, self.fraction_range),
                "max_length": self.max_length_px}


class GrowBranches(Transform):
    """Grow new tapered, tortuous side branches from existing vessels."""

    name = "grow"
    fn = staticmethod(grow_branches)
    defaults = {"seed": 0, "n": 0, "length_min": 15.0, "length_max": 60.0, "radius_min": 0.6,
                "radius_max": 1.5, "tortuosity": 0.05}

    def __init__(self, n_range: Sequence[int] = (0, 12), length_range_px: Sequence[float] = (15.0, 60.0),
                 start_radius_range: Sequence[float] = (0.6, 1.5), tortuosity: float = 0.05,
                 p: float = 1.0) -> None:
        super().__init__(p)
        lo, hi = _range(n_range, "n_range")
        self.n_range = (int(lo), int(hi))
        self.length_range_px = _range(length_range_px, "length_range_px")
        self.start_radius_range = _range(start_radius_range, "start_radius_range")
        self.tortuosity = float(tortuosity)

    def sample_params(self, rng, shape):
        lo, hi = self.n_range
        return {"seed": _seed(rng), "n": int(rng.integers(lo, hi + 1)),
                "length_min": self.length_range_px[0], "length_max": self.length_range_px[1],
                "radius_min": self.start_radius_range[0], "radius_max": self.start_radius_range[1],
                "tortuosity": self.tortuosity}


TRANSFORMS: dict[str, type[Transform]] = {
    t.name: t for t in (ElasticDeform, Affine, WidthChange, PruneTerminal, GrowBranches)
}


class Compose:
    """Apply transforms in order (each with its probability ``p``) and record a replayable recipe."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, mask: np.ndarray, fov: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        mask = np.asarray(mask, dtype=bool)
        fov = np.asarray(fov, dtype=bool)
        mask = mask & fov
        recipe: list[dict[str, Any]] = []
        for t in self.transforms:
            if t.p < 1.0 and not rng.random() < t.p:
                continue
            params = t.sample_params(rng, mask.shape)
            mask, fov = t.apply(mask, fov, **params)
            recipe.append({"name": t.name, "params": params})
        return mask, fov, recipe


def replay(recipe: Sequence[dict[str, Any]], mask: np.ndarray, fov: np.ndarray) -> Pair:
    """Re-apply a recipe recorded by :class:`Compose`; the output is bit-identical."""
    mask = np.asarray(mask, dtype=bool) & np.asarray(fov, dtype=bool)
    fov = np.asarray(fov, dtype=bool)
    for i, step in enumerate(recipe):
        if not isinstance(step, dict) or "name" not in step:
            raise ConfigError(f"perturbation recipe step {i} must be a dict with 'name' and 'params'")
        name = step["name"]
        if name not in TRANSFORMS:
            raise ConfigError(f"unknown perturbation {name!r} in recipe step {i}; "
                              f"valid names: {', '.join(sorted(TRANSFORMS))}")
        try:
            mask, fov = TRANSFORMS[name]().apply(mask, fov, **dict(step.get("params", {})))
        except TypeError as exc:
            raise ConfigError(f"bad parameters for perturbation {name!r} in recipe step {i}: {exc}") from None
    return mask, fov


def default_perturbation(size: int = 512) -> Compose:
    """Moderate perturbations for DRIVE-like masks of ``size`` x ``size`` (lengths scale with size)."""
    s = size / 512.0
    return Compose([
        PruneTerminal(fraction_range=(0.0, 0.3), max_length_px=30.0 * s, p=0.7),
        GrowBranches(n_range=(0, max(1, round(12 * s))), length_range_px=(15.0 * s, 60.0 * s),
                     start_radius_range=(max(0.5, 0.6 * s), max(0.5, 1.5 * s)), tortuosity=0.05, p=0.7),
        WidthChange(global_scale_range=(0.85, 1.2), per_segment_sigma=0.12, p=0.8),
        ElasticDeform(alpha_range=(2.0 * s, 6.0 * s), sigma_range=(40.0 * s, 80.0 * s), p=0.8),
        Affine(rotate_deg=10.0, scale_range=(0.95, 1.05), translate_frac=0.02, hflip_p=0.5, vflip_p=0.0),
    ])
