"""Procedural retinal vessel trees: optic disc, arcades around the macula, Murray-law branching.

Model (all lengths are given in pixels at a 512 x 512 reference and scaled by ``size / 512``):

* A FOV disc, an optic disc (OD) left or right of centre and a fovea 2.5 disc diameters temporal
  of the OD, slightly lower.
* Trunks leave the OD rim: superior/inferior temporal veins and arteries, superior/inferior nasal
  vessels, a nasal vessel and small macular branches.
* Each vessel is a smooth random walk (tortuosity) steered by a flow field: a source at the OD
  plus a temporal uniform flow on the temporal side (a Rankine half-body, whose streamlines are
  arcades curving round the macula) plus a repelling source at the fovea. Thick vessels follow the
  field, thin ones mostly wander; all turn away from space already occupied by other vessels.
* At intervals proportional to the radius a vessel bifurcates: daughter radii follow Murray's law
  ``r^3 = r_a^3 + r_b^3`` with asymmetry ``r_b / r_a``, daughter angles follow Murray's
  minimum-work angles (the thinner daughter turns more). Radii also taper along segments.
* A vessel stops below the minimal radius, at the FOV edge, in the foveal avascular zone (FAZ),
  or when it runs into a crowded region while thin.

Segments are rendered as tapered polylines by disc stamping on a 2x finer grid, then clipped to
the FOV. One 512 tree takes a fraction of a second; a 64 tree a few milliseconds (the minimal
radius has an absolute floor, so small images get only the vessels they can show).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np

from retinasynth.errors import ConfigError
from retinasynth.masks.ops import disc_fov, render_paths

REF_SIZE = 512

#: Default parameters; lengths and radii in pixels at 512 x 512 (scaled by size / 512).
DEFAULT_PARAMS: dict[str, Any] = {
    "fov_radius_frac": 0.45,      # FOV disc radius / size
    "fov_jitter_frac": 0.01,      # random jitter of FOV centre and radius / size
    "od_radius": 34.0,            # optic disc radius
    "od_offset_frac": 0.30,       # horizontal distance of the OD from the FOV centre / size
    "fovea_dd": 2.5,              # OD-to-fovea distance in disc diameters
    "fovea_drop": 0.3,            # fovea below the OD, in disc radii
    "faz_radius": 32.0,           # foveal avascular zone: visible vessels stop here
    "vein_radius": 4.0,           # trunk radii at the OD rim
    "artery_radius": 3.0,
    "min_radius": 0.5,            # growth stops below this radius ...
    "min_radius_abs": 0.35,       # ... and never below this many pixels, whatever the size
    "step": 2.5,                  # growth step
    "tortuosity": 0.05,           # std of the angular acceleration per step (radians)
    "turn_damping": 0.6,          # persistence of the angular velocity (0..1)
    "field_gain": 0.20,           # steering towards the flow field, for vessels >= field_radius
    "field_radius": 3.5,
    "space_seeking": 0.08,        # turn (radians) of thin vessels towards free space, per cell
    "field_gain_min": 0.012,       # steering of the thinnest vessels
    "flow_source": 90.0,         # OD source strength / temporal flow (half-body scale)
    "fovea_repulsion": 40.0,      # fovea source strength relative to the OD source
    "branch_interval": (4.0, 8.0),  # mean distance between branchings: a + b * radius
    "branch_jitter": 0.5,         # relative jitter of the branching interval
    "asymmetry": (0.25, 0.95),    # range of r_small / r_large at a bifurcation
    "asymmetric_p": 0.7,          # probability of a strongly asymmetric bifurcation ...
    "asymmetric_max": 0.6,        # ... with asymmetry below this
    "angle_jitter_deg": 10.0,     # noise on Murray's optimal branch angles
    "taper": 0.0015,              # radius decay per pixel of length
    "crowd_cell": 7.0,            # occupancy grid cell size
    "crowd_stop_radius": 1.2,     # vessels thinner than this stop in crowded space
    "max_segments": 6000,
}


def _params(size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigError(f"unknown procedural tree parameter(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(DEFAULT_PARAMS)}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ConfigError(f"procedural tree size must be an integer >= 16, got {size!r}")
    p = dict(DEFAULT_PARAMS)
    p.update(overrides)
    return p


def murray_split(r_parent: float, asymmetry: float) -> tuple[float, float]:
    """Daughter radii ``(r_a, r_b)``, ``r_b = asymmetry * r_a``, with ``r_a^3 + r_b^3 = r_parent^3``."""
    r_a = r_parent / (1.0 + asymmetry**3) ** (1.0 / 3.0)
    return r_a, asymmetry * r_a


def murray_angles(r_parent: float, r_a: float, r_b: float) -> tuple[float, float]:
    """Murray's minimum-work branch angles (radians) of daughters a and b from the parent axis."""
    def angle(r1: float, r2: float) -> float:
        c = (r_parent**4 + r1**4 - r2**4) / (2.0 * r_parent**2 * r1**2)
        return math.acos(max(-1.0, min(1.0, c)))
    return angle(r_a, r_b), angle(r_b, r_a)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


class _Grower:
    """Mutable state of one tree's growth (kept private: the public API is the function)."""

    def __init__(self, size: int, p: dict[str, Any], sc: float, geom: dict[str, Any],
                 rng: np.random.Generator) -> None:
        self.size, self.p, self.sc, self.rng = size, p, sc, rng
        self.fov_c = geom["fov_center"]
        self.fov_r = geom["fov_radius"]
        self.od = geom["od_center"]
        self.od_r = geom["od_radius"]
        self.fovea = geom["fovea_center"]
        self.temporal = geom["temporal"]  # +1: fovea to the right of the OD, -1: to the left
        self.faz_r = p["faz_radius"] * sc
        self.step = max(1.0, p["step"] * sc)
        self.r_min = max(p["min_radius"] * sc, p["min_radius_abs"])
        self.m = p["flow_source"] * sc
        self.q = p["fovea_repulsion"] / 100.0
        self.cell = max(2.0, p["crowd_cell"] * sc)
        n = int(math.ceil(size / self.cell)) + 2
        self.owner = np.full((n, n), -1, dtype=np.int32)  # which vessel first occupied each cell
        self.paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.branchings: list[dict[str, float]] = []
        self.heap: list[tuple[float, int, tuple]] = []
        self.counter = 0

    # -- geometry -------------------------------------------------------------------------------
    def field(self, y: float, x: float) -> float:
        """Direction (radians, image coordinates) of the arcade flow field at (y, x)."""
        dy, dx = y - self.od[0], x - self.od[1]
        d2 = dy * dy + dx * dx + 1e-6
        vy, vx = self.m * dy / d2, self.m * dx / d2
        # temporal uniform flow, switched on smoothly beyond the OD towards the fovea
        along = dx * self.temporal / self.od_r
        u = 1.0 / (1.0 + math.exp(-2.0 * (along - 0.5)))
        vx += u * self.temporal
        fy, fx = y - self.fovea[0], x - self.fovea[1]
        f2 = fy * fy + fx * fx + 1e-6
        vy += self.q * self.m * fy / f2
        vx += self.q * self.m * fx / f2
        return math.atan2(vy, vx)

    def cell_of(self, y: float, x: float) -> tuple[int, int]:
        return int(y / self.cell) + 1, int(x / self.cell) + 1

    def occupied_by_other(self, y: float, x: float, vid: int, family: set[int]) -> bool:
        cy, cx = self.cell_of(y, x)
        if not (0 <= cy < self.owner.shape[0] and 0 <= cx < self.owner.shape[1]):
            return False
        o = int(self.owner[cy, cx])
        return o >= 0 and o != vid and o not in family

    # -- growth ---------------------------------------------------------------------------------
    def push(self, y: float, x: float, theta: float, r: float, parent: int, family: tuple) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (-r, self.counter, (y, x, theta, r, parent, family)))

    def grow_all(self) -> None:
        while self.heap and len(self.paths) < self.p["max_segments"]:
            _, _, (y, x, theta, r, parent, family) = heapq.heappop(self.heap)
            self.grow_vessel(y, x, theta, r, parent, family)

    def next_interval(self, r: float) -> float:
        a, b = self.p["branch_interval"]
        j = self.p["branch_jitter"]
        return (a * self.sc + b * r) * float(self.rng.uniform(1.0 - j, 1.0 + j))

    def grow_vessel(self, y: float, x: float, theta: float, r: float, parent: int, family: tuple) -> None:
        p, rng = self.p, self.rng
        vid = len(self.paths)
        fam = set(family) | {vid}
        ys, xs, rs = [y], [x], [r]
        omega = 0.0
        since_branch = 0.0
        interval = self.next_interval(r)
        rim = self.fov_r + 2.0 * self.step
        steps = 0
        while True:
            steps += 1
            # steering: flow field (strong for thick vessels), smooth random turn, crowd avoidance
            rel = min(1.0, r / (p["field_radius"] * self.sc))
            gain = max(p["field_gain_min"], p["field_gain"] * rel * rel)
            omega = p["turn_damping"] * omega + float(rng.normal(0.0, p["tortuosity"]))
            theta += omega + gain * _wrap(self.field(y, x) - theta)
            look = 2.0 * self.cell
            if steps > 3 and rel < 1.0:
                # thin vessels seek free space: turn towards the emptier side ahead
                free = 0
                for dist in (2.0 * self.cell, 4.0 * self.cell):
                    for s_, da in ((1, 0.5), (-1, -0.5)):
                        if self.occupied_by_other(y + dist * math.sin(theta + da),
                                                  x + dist * math.cos(theta + da), vid, fam):
                            free -= s_
                theta += p["space_seeking"] * free * (1.0 - rel)
            ay, ax = y + look * math.sin(theta), x + look * math.cos(theta)
            if steps > 3 and self.occupied_by_other(ay, ax, vid, fam):
                if r < p["crowd_stop_radius"] * self.sc:
                    break
                # turn towards the freer side
                left = self.occupied_by_other(y + look * math.sin(theta - 0.6),
                                              x + look * math.cos(theta - 0.6), vid, fam)
                theta += 0.25 if left else -0.25
            # foveal avascular zone: turn away when close, stop inside
            fy, fx = y - self.fovea[0], x - self.fovea[1]
            fd = math.hypot(fy, fx)
            if fd < 1.6 * self.faz_r:
                away = math.atan2(fy, fx)
                theta += 0.3 * _wrap(away - theta) * (1.6 * self.faz_r - fd) / self.faz_r
            y += self.step * math.sin(theta)
            x += self.step * math.cos(theta)
            r *= math.exp(-p["taper"] * self.step)
            since_branch += self.step
            ys.append(y)
            xs.append(x)
            rs.append(r)
            cy, cx = self.cell_of(y, x)
            if 0 <= cy < self.owner.shape[0] and 0 <= cx < self.owner.shape[1] and self.owner[cy, cx] < 0:
                self.owner[cy, cx] = vid
            if r < self.r_min or math.hypot(y - self.fov_c[0], x - self.fov_c[1]) > rim:
                break
            if math.hypot(y - self.fovea[0], x - self.fovea[1]) < self.faz_r:
                break
            if steps > 4000:
                break
            if since_branch >= interval:
                # bifurcation: this path continues as the larger daughter, the smaller one is queued
                lo, hi = p["asymmetry"]
                if rng.random() < p["asymmetric_p"]:
                    alpha = float(rng.uniform(lo, min(hi, p["asymmetric_max"])))
                else:
                    alpha = float(rng.uniform(p["asymmetric_max"], hi))
                r_a, r_b = murray_split(r, alpha)
                th_a, th_b = murray_angles(r, r_a, r_b)
                jit = math.radians(p["angle_jitter_deg"])
                th_a = max(0.0, th_a + float(rng.normal(0.0, jit)) * 0.5)
                th_b = max(math.radians(15.0), th_b + float(rng.normal(0.0, jit)))
                side = 1.0 if rng.random() < 0.5 else -1.0
                self.branchings.append({"r_parent": r, "r_a": r_a, "r_b": r_b,
                                        "angle_a_deg": math.degrees(th_a), "angle_b_deg": math.degrees(th_b)})
                if r_b >= self.r_min:
                    self.push(y, x, theta + side * th_b, r_b, vid, (vid, *family[-2:]))
                theta -= side * th_a
                r = r_a
                rs[-1] = r
                since_branch = 0.0
                interval = self.next_interval(r)
        self.paths.append((np.asarray(ys), np.asarray(xs), np.asarray(rs)))


def _trunks(geom: dict[str, Any], p: dict[str, Any], sc: float, rng: np.random.Generator) -> list[tuple]:
    """Start (angle from the temporal direction in degrees, up positive; radius) of the OD trunks."""
    v, a = p["vein_radius"] * sc, p["artery_radius"] * sc
    spec = [
        (62, v), (48, a),        # superior temporal vein / artery
        (-62, v), (-48, a),      # inferior temporal vein / artery
        (115, 0.75 * v), (130, 0.75 * a),    # superior nasal
        (-115, 0.75 * v), (-130, 0.75 * a),  # inferior nasal
        (180, 0.55 * a),         # nasal
        (12, 0.35 * a), (-14, 0.35 * a),  # small macular branches
    ]
    out = []
    for deg, r in spec:
        deg = deg + float(rng.normal(0.0, 6.0))
        out.append((deg, r * float(rng.uniform(0.9, 1.1))))
    return out


def grow_vessel_tree(size: int, rng: np.random.Generator, eye: str | None = None,
                     **params: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Grow one procedural vessel tree.

    Args:
        size: image side in pixels (square image); 16 or more.
        rng: the only source of randomness.
        eye: ``"right"`` (optic disc right of centre), ``"left"`` (left of centre) or None (random).
        **params: overrides of :data:`DEFAULT_PARAMS` (unknown names raise ``ConfigError``).

    Returns:
        ``(mask, fov, info)``: bool vessel mask clipped to the FOV, bool FOV disc, and a
        JSON-serialisable ``info`` dict (eye, FOV/optic disc/fovea geometry as ``[y, x]``, number of
        segments and bifurcations, recorded bifurcation radii/angles, parameters used).
    """
    p = _params(size, params)
    if eye is None:
        eye = "right" if rng.random() < 0.5 else "left"
    if eye not in ("left", "right"):
        raise ConfigError(f"eye must be 'left', 'right' or None, got {eye!r}")
    sc = size / REF_SIZE
    half = (size - 1) / 2.0
    jit = p["fov_jitter_frac"] * size
    fov_c = (half + float(rng.uniform(-jit, jit)), half + float(rng.uniform(-jit, jit)))
    fov_r = p["fov_radius_frac"] * size + float(rng.uniform(-jit, jit))
    od_r = p["od_radius"] * sc * float(rng.uniform(0.9, 1.1))
    side = 1.0 if eye == "right" else -1.0
    od = (fov_c[0] + float(rng.uniform(-0.03, 0.03)) * size,
          fov_c[1] + side * (p["od_offset_frac"] + float(rng.uniform(-0.02, 0.02))) * size)
    temporal = -side
    dist = p["fovea_dd"] * 2.0 * od_r
    drop = p["fovea_drop"] * od_r
    fovea = (od[0] + drop, od[1] + temporal * math.sqrt(max(dist**2 - drop**2, 0.0)))
    geom = {"fov_center": fov_c, "fov_radius": fov_r, "od_center": od, "od_radius": od_r,
            "fovea_center": fovea, "temporal": temporal}

    g = _Grower(size, p, sc, geom, rng)
    t_angle = 0.0 if temporal > 0 else math.pi  # image angle of the temporal direction
    for deg, r in _trunks(geom, p, sc, rng):
        # "up" is -y in image coordinates, so a superior (positive) angle turns towards -y
        ang = t_angle - temporal * math.radians(deg)
        # trunks start together near the disc centre, so the tree is one connected component
        ys = od[0] + 0.1 * od_r * math.sin(ang)
        xs = od[1] + 0.1 * od_r * math.cos(ang)
        g.push(ys, xs, ang, r, -1, ())
    g.grow_all()

    fov = disc_fov((size, size), fov_c, fov_r)
    mask = render_paths((size, size), g.paths, supersample=2) & fov
    info = {
        "size": int(size),
        "eye": eye,
        "fov_center": [float(fov_c[0]), float(fov_c[1])],
        "fov_radius": float(fov_r),
        "optic_disc_center": [float(od[0]), float(od[1])],
        "optic_disc_radius": float(od_r),
        "fovea_center": [float(fovea[0]), float(fovea[1])],
        "segments": len(g.paths),
        "bifurcations": len(g.branchings),
        "branchings": [{k: float(v) for k, v in b.items()} for b in g.branchings[:64]],
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
    }
    return mask, fov, info


class ProceduralTrees:
    """A source of procedural vessel trees of one size and parameter set."""

    def __init__(self, size: int, **params: Any) -> None:
        _params(size, params)  # validate early
        self.size = int(size)
        self.params = dict(params)

    def sample(self, rng: np.random.Generator, eye: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        return grow_vessel_tree(self.size, rng, eye=eye, **self.params)


vessel_tree_class = ProceduralTrees
