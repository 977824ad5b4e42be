"""Where synthetic pairs' vessel masks come from: real training masks, perturbed ones, procedural trees.

Every mask is a pure function of (seed, pair index), so any subset of pairs (a shard, a resumed run)
is produced identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retinasynth.errors import ConfigError
from retinasynth.masks.perturb import default_perturbation
from retinasynth.masks.procedural import grow_vessel_tree

SOURCES = ("real", "perturbed", "procedural")


def parse_mix(text: str | dict[str, float]) -> dict[str, float]:
    """`real:0.2,perturbed:0.4,procedural:0.4` -> normalised weights; errors name the bad part."""
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, w = part.partition(":")
            if not sep:
                raise ConfigError(f"--source part {part!r} must look like name:weight, e.g. procedural:0.4.")
            try:
                items.append((name.strip(), float(w)))
            except ValueError:
                raise ConfigError(f"--source weight {w!r} for {name!r} is not a number.") from None
    mix: dict[str, float] = {}
    for name, w in items:
        if name not in SOURCES:
            raise ConfigError(f"unknown mask source {name!r}; valid: {', '.join(SOURCES)}.")
        if w < 0 or not np.isfinite(w):
            raise ConfigError(f"mask source weight for {name!r} must be >= 0, got {w}.")
        mix[name] = mix.get(name, 0.0) + w
    total = sum(mix.values())
    if total <= 0:
        raise ConfigError("mask source weights must sum to a positive value, e.g. real:0.2,procedural:0.8.")
    return {k: v / total for k, v in mix.items() if v > 0}


@dataclass
class MaskSpec:
    """One mask to render, with where it came from."""

    mask: np.ndarray
    fov: np.ndarray
    source: str
    source_mask_id: str | None
    recipe: list | None
    info: dict | None


class MaskFactory:
    """Draws the mask of pair ``i`` from the mix, using the training split's masks for real/perturbed."""

    def __init__(self, mix: dict[str, float], train_masks: list[tuple[str, np.ndarray, np.ndarray]], size: int,
                 seed: int) -> None:
        if not train_masks and any(k in mix for k in ("real", "perturbed")):
            raise ConfigError("real/perturbed mask sources need the run's training masks; none were loaded.")
        self.names = sorted(mix)
        self.p = np.array([mix[k] for k in self.names])
        self.train = train_masks
        self.size = size
        self.seed = seed
        self.perturb = default_perturbation(size)

    def __call__(self, mask_index: int) -> MaskSpec:
        rng = np.random.default_rng([self.seed, mask_index])
        source = self.names[int(rng.choice(len(self.names), p=self.p))]
        if source == "procedural":
            mask, fov, info = grow_vessel_tree(self.size, rng)
            return MaskSpec(mask, fov, source, None, None, info)
        mid, mask, fov = self.train[int(rng.integers(len(self.train)))]
        if source == "real":
            return MaskSpec(mask, fov, source, mid, None, None)
        m, f, recipe = self.perturb(mask, fov, rng)
        return MaskSpec(m, f, source, mid, recipe, None)
