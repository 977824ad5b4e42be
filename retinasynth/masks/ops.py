"""Pure vessel-mask operations and realism statistics.

Conventions: a vessel mask is a 2-D ``bool`` array (True = vessel), a FOV mask is a 2-D ``bool``
array of the same shape. Radii are *geometric* half-widths in pixels: a vessel pixel whose
Euclidean distance transform is ``d`` has radius ``d - 0.5`` (pixel centre to vessel border), so a
straight line ``w`` pixels wide (odd ``w``) has radius ``w / 2`` on its centre line and width
``2 * radius == w``. A one-pixel line has radius 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize as _skimage_skeletonize

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity structuring element
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float32)


def _as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide, 8-connected centre lines of a vessel mask (scikit-image)."""
    return _skimage_skeletonize(_as_mask(mask))


def distance_radius(mask: np.ndarray) -> np.ndarray:
    """Vessel radius at every vessel pixel (EDT - 0.5, so >= 0.5), 0 elsewhere, as float32."""
    m = _as_mask(mask)
    edt = ndi.distance_transform_edt(m)
    return np.where(m, edt - 0.5, 0.0).astype(np.float32)


def vessel_widths(mask: np.ndarray, up: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(centre-line pixels, the vessel's width there in pixels). The width is twice the distance from the centre
    line to the vessel's edge, measured on the mask upsampled ``up`` times (nearest), where the distance
    transform resolves even widths too: a band of w pixels reads w."""
    m = mask.astype(bool)
    skel = _skimage_skeletonize(m)
    h, w = m.shape
    big = cv2.resize(m.astype(np.uint8), (w * up, h * up), interpolation=cv2.INTER_NEAREST)
    dist = cv2.distanceTransform(big, cv2.DIST_L2, 5).reshape(h, up, w, up).max(axis=(1, 3))
    return skel, np.maximum(2.0 * dist / up, 1.0)


def convergence_point(mask: np.ndarray) -> tuple[int, int]:
    """(y, x) where the mask's large vessels converge (near the optic disc): the maximum of the density of the
    widest third of the centre lines (:func:`vessel_widths`), blurred with sigma = 8% of the image side; the
    image centre for an empty mask. The reference point of :func:`retinasynth.metrics.fidelity.disc_offset`
    and of the generator's disc plane (:func:`retinasynth.models.condition.disc_plane`)."""
    m = _as_mask(mask)
    h, w = m.shape
    skel, width = vessel_widths(m)
    widths = width[skel]
    big = skel & (width >= (np.quantile(widths, 2 / 3) if widths.size else np.inf))
    if not big.any():
        return h // 2, w // 2
    dens = cv2.GaussianBlur(big.astype(np.float32), (0, 0), 0.08 * max(h, w))
    y, x = np.unravel_index(int(np.argmax(dens)), dens.shape)
    return int(y), int(x)


def neighbour_count(skeleton: np.ndarray) -> np.ndarray:
    """Number of 8-neighbours of each skeleton pixel that are skeleton pixels (0 off the skeleton)."""
    sk = _as_mask(skeleton, "skeleton")
    counts = cv2.filter2D(sk.astype(np.float32), -1, _NEIGHBOURS, borderType=cv2.BORDER_CONSTANT)
    return np.where(sk, np.rint(counts), 0).astype(np.int32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (all False if the mask is empty)."""
    m = _as_mask(mask)
    labels, n = ndi.label(m, structure=EIGHT)
    if n == 0:
        return np.zeros_like(m)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def clip_to_fov(mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Vessel pixels inside the FOV only."""
    m, f = _as_mask(mask), _as_mask(fov, "fov")
    if m.shape != f.shape:
        raise ValueError(f"mask {m.shape} and fov {f.shape} shapes differ")
    return m & f


def disc_fov(shape: tuple[int, int], center_yx: tuple[float, float], radius: float) -> np.ndarray:
    """A filled disc (pixel centres within ``radius`` of ``center_yx``)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center_yx[0]) ** 2 + (xx - center_yx[1]) ** 2 <= radius**2


_SUMS_OF_SQUARES_CACHE: dict[int, np.ndarray] = {}


def _sums_of_two_squares(limit: int) -> np.ndarray:
    """Sorted integers <= limit that are a sum of two squares: the only r^2 where a disc changes."""
    key = 1 << max(4, int(limit).bit_length())
    if key not in _SUMS_OF_SQUARES_CACHE:
        q = np.arange(int(np.sqrt(key)) + 2)
        s = np.unique((q[:, None] ** 2 + q[None, :] ** 2).ravel())
        _SUMS_OF_SQUARES_CACHE[key] = s[s <= key]
    return _SUMS_OF_SQUARES_CACHE[key]


def _disc_kernel(r2: int) -> np.ndarray:
    k = int(np.floor(np.sqrt(r2)))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    return (yy * yy + xx * xx <= r2).astype(np.uint8)


def stamp_discs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radii: np.ndarray,
                supersample: int = 1) -> np.ndarray:
    """Union of discs (centre ``(ys[i], xs[i])``, radius ``radii[i]`` pixels) as a bool mask.

    With ``supersample == 1`` centres are rounded to pixels and a disc holds the pixels whose centre
    lies within the radius (radius 0.5 -> the single pixel). With ``supersample == s > 1`` discs are
    drawn on an ``s`` times finer grid and a pixel is set when at least half of it is covered, which
    gives sub-pixel centres and even widths; the rounded centre pixels are always set too, so a
    densely sampled path stays 8-connected however thin. Discs are grouped by their exact pixel
    shape (floor of r^2 snapped to a sum of two squares) and drawn with one dilation per group,
    cropped to the group's bounding box, so tens of thousands of discs take milliseconds.
    """
    h, w = int(shape[0]), int(shape[1])
    s = int(supersample)
    if s < 1:
        raise ValueError("supersample must be >= 1")
    ys = np.asarray(ys, dtype=np.float64).ravel()
    xs = np.asarray(xs, dtype=np.float64).ravel()
    rr = np.maximum(np.asarray(radii, dtype=np.float64).ravel(), 0.0) * s
    H, W = h * s, w * s
    canvas = np.zeros((H, W), dtype=np.uint8)
    if ys.size:
        cy = np.rint(ys * s + (s - 1) / 2.0).astype(np.int64)
        cx = np.rint(xs * s + (s - 1) / 2.0).astype(np.int64)
        r2 = np.floor(rr * rr + 1e-9).astype(np.int64)
        sums = _sums_of_two_squares(int(r2.max()))
        r2 = sums[np.searchsorted(sums, r2, side="right") - 1]
        for key in np.unique(r2):
            sel = r2 == key
            k = int(np.floor(np.sqrt(key)))
            gy, gx = cy[sel], cx[sel]
            inside = (gy >= -k) & (gy < H + k) & (gx >= -k) & (gx < W + k)
            gy, gx = gy[inside], gx[inside]
            if gy.size == 0:
                continue
            y0, x0 = int(gy.min()) - k, int(gx.min()) - k
            buf = np.zeros((int(gy.max()) + k + 1 - y0, int(gx.max()) + k + 1 - x0), dtype=np.uint8)
            buf[gy - y0, gx - x0] = 1
            if k > 0:
                buf = cv2.dilate(buf, _disc_kernel(int(key)), borderType=cv2.BORDER_CONSTANT, borderValue=0)
            # paste the part of the buffer that falls on the canvas
            cy0, cx0 = max(y0, 0), max(x0, 0)
            cy1, cx1 = min(y0 + buf.shape[0], H), min(x0 + buf.shape[1], W)
            if cy1 > cy0 and cx1 > cx0:
                canvas[cy0:cy1, cx0:cx1] |= buf[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    if s == 1:
        return canvas.astype(bool)
    cover = canvas.reshape(h, s, w, s).sum(axis=(1, 3), dtype=np.int32)
    out = cover * 2 >= s * s
    py, px = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    out[py[ok], px[ok]] = True
    return out


def render_from_skeleton(skeleton: np.ndarray, radius_map: np.ndarray) -> np.ndarray:
    """Re-draw vessels as discs of ``radius_map`` (pixels, min 0.5) centred on every skeleton pixel.

    The skeleton itself is always part of the result, so its connectivity is preserved.
    """
    sk = _as_mask(skeleton, "skeleton")
    ys, xs = np.nonzero(sk)
    radii = np.maximum(np.asarray(radius_map, dtype=np.float64)[ys, xs], 0.5)
    return stamp_discs(sk.shape, ys, xs, radii, supersample=1)


def resample_path(ys: np.ndarray, xs: np.ndarray, radii: np.ndarray,
                  spacing: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``spacing`` pixels along a polyline, radii linearly interpolated."""
    ys, xs, radii = (np.asarray(a, dtype=np.float64) for a in (ys, xs, radii))
    if ys.size < 2:
        return ys, xs, radii
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(ys), np.diff(xs)))])
    t = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / spacing)) + 1))
    return np.interp(t, arc, ys), np.interp(t, arc, xs), np.interp(t, arc, radii)


def render_paths(shape: tuple[int, int],
                 paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 supersample: int = 2) -> np.ndarray:
    """Render tapered polylines ``(ys, xs, radii)`` as thick vessels (bool mask)."""
    pts = [resample_path(*p) for p in paths if len(p[0])]
    if not pts:
        return np.zeros(shape, dtype=bool)
    ys, xs, rr = (np.concatenate([p[i] for p in pts]) for i in range(3))
    return stamp_discs(shape, ys, xs, rr, supersample=supersample)


def box_counting_dimension(mask: np.ndarray) -> float:
    """Box-counting (Minkowski-Bouligand) dimension of a binary image.

    Box sizes are the powers of two from 2 to a quarter of the shorter side; the dimension is the
    least-squares slope of log(occupied boxes) against log(1 / box size). 0.0 for an empty mask.
    """
    m = _as_mask(mask)
    n = min(m.shape)
    sizes = [2**k for k in range(1, 32) if 2**k <= n // 4]
    counts = []
    for s in sizes:
        hp, wp = -(-m.shape[0] // s) * s, -(-m.shape[1] // s) * s
        padded = np.zeros((hp, wp), dtype=bool)
        padded[: m.shape[0], : m.shape[1]] = m
        counts.append(int(padded.reshape(hp // s, s, wp // s, s).any(axis=(1, 3)).sum()))
    pairs = [(s, c) for s, c in zip(sizes, counts) if c > 0]
    if len(pairs) < 2:
        return 0.0
    x = np.log(1.0 / np.array([p[0] for p in pairs], dtype=np.float64))
    y = np.log(np.array([p[1] for p in pairs], dtype=np.float64))
    return float(np.polyfit(x, y, 1)[0])


def branch_and_end_points(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """End-point pixels (1 neighbour), branch pixels (>= 3 neighbours) and the branch-point count.

    Adjacent branch pixels (junction clusters the skeleton leaves at a crossing or fork) are merged
    into one branch point by 8-connected labelling.
    """
    sk = _as_mask(skeleton, "skeleton")
    nb = neighbour_count(sk)
    ends = sk & (nb == 1)
    branch = sk & (nb >= 3)
    _, n_branch = ndi.label(branch, structure=EIGHT)
    return ends, branch, int(n_branch)


def mask_stats(mask: np.ndarray, fov: np.ndarray | None = None) -> dict[str, float | int]:
    """Realism statistics of a vessel mask, computed on the vessels inside the FOV.

    Returns a JSON-serialisable dict:

    - ``vessel_fraction``: vessel pixels inside the FOV / FOV pixels.
    - ``branch_points``, ``end_points``: from the skeleton's 8-neighbour counts (>= 3 and == 1),
      adjacent branch pixels merged into one point.
    - ``width_mean``, ``width_p10``, ``width_p50``, ``width_p90``: vessel width in pixels,
      ``2 * radius`` (see :func:`distance_radius`) sampled on the skeleton.
    - ``fractal_dimension``: box-counting dimension of the (FOV-clipped) *mask*, not the skeleton
      (:func:`box_counting_dimension`).
    - ``components``: number of 8-connected vessel components; ``largest_component_fraction``:
      share of vessel pixels in the largest one (0.0 if there are no vessels).
    """
    m = _as_mask(mask)
    f = np.ones_like(m) if fov is None else _as_mask(fov, "fov")
    m = clip_to_fov(m, f)
    fov_px = int(f.sum())
    sk = skeletonize(m)
    ends, _, n_branch = branch_and_end_points(sk)
    widths = 2.0 * distance_radius(m)[sk]
    if widths.size:
        p10, p50, p90 = (float(v) for v in np.percentile(widths, [10, 50, 90]))
        wmean = float(widths.mean())
    else:
        p10 = p50 = p90 = wmean = 0.0
    labels, n_comp = ndi.label(m, structure=EIGHT)
    sizes = np.bincount(labels.ravel())[1:]
    return {
        "vessel_fraction": float(m.sum() / fov_px) if fov_px else 0.0,
        "branch_points": n_branch,
        "end_points": int(ends.sum()),
        "width_mean": wmean,
        "width_p10": p10,
        "width_p50": p50,
        "width_p90": p90,
        "fractal_dimension": box_counting_dimension(m),
        "components": int(n_comp),
        "largest_component_fraction": float(sizes.max() / sizes.sum()) if sizes.size else 0.0,
    }
