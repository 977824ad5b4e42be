"""Vessel masks: operations and statistics, perturbations with replayable recipes, procedural trees."""

from __future__ import annotations

from retinasynth.masks.ops import (
    box_counting_dimension,
    clip_to_fov,
    disc_fov,
    distance_radius,
    largest_component,
    mask_stats,
    render_from_skeleton,
    render_paths,
    skeletonize,
    stamp_discs,
)
from retinasynth.masks.perturb import (
    TRANSFORMS,
    Affine,
    Compose,
    ElasticDeform,
    GrowBranches,
    PruneTerminal,
    Transform,
    WidthChange,
    default_perturbation,
    replay,
)
from retinasynth.masks.procedural import (
    DEFAULT_PARAMS,
    ProceduralTrees,
    grow_vessel_tree,
    murray_angles,
    murray_split,
    vessel_tree_class,
)

__all__ = [
    "DEFAULT_PARAMS", "TRANSFORMS", "Affine", "Compose", "ElasticDeform", "GrowBranches", "ProceduralTrees",
    "PruneTerminal", "Transform", "WidthChange", "box_counting_dimension", "clip_to_fov", "default_perturbation",
    "disc_fov", "distance_radius", "grow_vessel_tree", "largest_component", "mask_stats", "murray_angles",
    "murray_split", "render_from_skeleton", "render_paths", "replay", "skeletonize", "stamp_discs",
    "vessel_tree_class",
]
