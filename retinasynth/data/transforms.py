"""Paired augmentation with albumentations: one geometry for image, vessel mask and FOV.

Pipelines are reseeded per call from (seed, step), so the augmentation a training step sees depends
only on the seed and the step number: a resumed run sees exactly what an uninterrupted one saw. Each transform
gets its own seed (:func:`seed_pipeline`), so that each is applied with its own probability.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


def gan_augmentation(crop: int | None, size: int) -> A.Compose:
    """Light geometry only: flips, small rotation/scale, random crop. No colour change, since the
    generator must learn the real photographs' colours."""
    ops: list = [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.95, 1.05), rotate=(-10, 10), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0,
                 fill_mask=0, p=0.5),
    ]
    if crop is not None and crop < size:
        ops.append(A.RandomCrop(crop, crop))
    return A.Compose(ops, additional_targets={"fov": "mask"})


def camera_augmentation(patch: int | None, size: int) -> A.Compose:
    """Real images made to look as if taken by other cameras: the single-source domain-generalisation
    recipe (geometry and scale; gamma, contrast, tone curve, colour and white balance; illumination gradients
    and vignetting; fractal (plasma) brightness and contrast fields, a PixMix-style mix with procedural
    patterns; blur and sharpening; sensor noise; JPEG). The control that synthetic pairs aimed at unseen
    cameras must beat."""
    ops: list = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.7, 1.4), rotate=(-30, 30), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7),
        A.RandomGamma((60, 160), p=0.6),
        A.RandomBrightnessContrast(0.3, 0.3, p=0.7),
        A.RandomToneCurve(scale=0.2, p=0.3),
        A.HueSaturationValue(15, 25, 15, p=0.5),
        A.PlanckianJitter(p=0.3),
        A.Illumination(p=0.4),
        A.PlasmaBrightnessContrast(p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.Sharpen(alpha=(0.2, 0.5))], p=0.4),
        A.GaussNoise(std_range=(0.01, 0.06), p=0.4),
        A.ImageCompression(quality_range=(30, 95), p=0.3),
    ]
    if patch is not None and patch < size:
        ops.append(A.RandomCrop(patch, patch))
    return A.Compose(ops, additional_targets={"fov": "mask"})


def segmentation_augmentation(patch: int | None, size: int, strength: str = "strong") -> A.Compose:
    """A standard pipeline for vessel segmentation. 'strong' (the baseline must be strong): flips,
    rotations, affine, elastic, brightness/contrast, gamma, hue/saturation, noise, blur; 'light':
    flips, 90-degree rotations and mild brightness/contrast only (faster to fit, less invariance);
    'camera': :func:`camera_augmentation`."""
    if strength == "camera":
        return camera_augmentation(patch, size)
    if strength == "light":
        ops: list = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
                     A.RandomBrightnessContrast(0.1, 0.1, p=0.5)]
        if patch is not None and patch < size:
            ops.append(A.RandomCrop(patch, patch))
        return A.Compose(ops, additional_targets={"fov": "mask"})
    if strength != "strong":
        raise ValueError(f"augmentation strength must be 'strong', 'light' or 'camera', got {strength!r}")
    ops = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.8, 1.2), rotate=(-30, 30), shear=(-5, 5), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0,
                 fill_mask=0, p=0.7),
        A.ElasticTransform(alpha=30, sigma=6, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_LINEAR, p=0.2),
        A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
        A.RandomGamma((80, 120), p=0.5),
        A.HueSaturationValue(8, 15, 10, p=0.5),
        A.GaussNoise(std_range=(0.0, 0.03), p=0.3),
        A.GaussianBlur(blur_limit=(3, 3), p=0.1),
    ]
    if patch is not None and patch < size:
        ops.append(A.RandomCrop(patch, patch))
    return A.Compose(ops, additional_targets={"fov": "mask"})


def seed_pipeline(pipeline: A.BaseCompose, seed: int, *, independent: bool = True) -> None:
    """Seed ``pipeline`` for one call.

    albumentations 2.0's ``Compose.set_random_seed`` hands every transform the *same* seed, so every transform
    draws the same first number: transforms whose probability is ``p`` are applied all together or not at all
    (under ``light``, both flips and the 90-degree rotation always come together: 2 of the 8 orientations), and
    their parameters move together. ``independent`` (the default) gives each transform, at every depth, its own
    seed spawned from ``seed``; ``independent=False`` keeps albumentations' shared seed, for runs that must
    stay bit-identical to those recorded with it (the GAN's ``fit``)."""
    seed = int(seed) % (2**32)
    pipeline.set_random_seed(seed)
    if independent:
        _spawn_seeds(pipeline, np.random.SeedSequence(seed))


def _spawn_seeds(node: A.BaseCompose, ss: np.random.SeedSequence) -> None:
    children = list(getattr(node, "transforms", None) or [])
    for child, child_ss in zip(children, ss.spawn(len(children))):
        child.set_random_seed(int(child_ss.generate_state(1)[0]))
        if isinstance(child, A.BaseCompose):
            _spawn_seeds(child, child_ss)


def apply_paired(pipeline: A.Compose, image: np.ndarray, mask: np.ndarray, fov: np.ndarray,
                 seed: int, *, independent: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one sampled geometry to image, mask and FOV; masks come back as bool (threshold 0.5).
    ``independent``: see :func:`seed_pipeline`."""
    seed_pipeline(pipeline, seed, independent=independent)
    out = pipeline(image=image, mask=mask.astype(np.uint8) * 255, fov=fov.astype(np.uint8) * 255)
    return out["image"], out["mask"] > 127, out["fov"] > 127
