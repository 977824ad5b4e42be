"""Margins of the near-duplicate leakage guard (how IMAGE_THRESHOLD and MASK_THRESHOLD were set).

Measures, with the signatures of retinasynth.data.similarity:
- false-positive side: the highest similarity between *different* eyes: DRIVE training vs test images
  and masks, and across two phantom datasets drawn with different seeds (another layout and look);
- detection side: the lowest similarity between a DRIVE test image and a disguised copy of it
  (JPEG re-encoding, resizing, squashing to 512x512 as the Kaggle set does, a 5% crop, a flip, and
  combinations) and between a test mask and its perturbations (the `perturbed` source of synthesize).

    .venv/bin/python benchmarks/guard_margins.py --data ../shared/data/DRIVE --out benchmarks/results/guard-margins
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from retinasynth.data import DataConfig, load_dataset
from retinasynth.data.similarity import (
    IMAGE_THRESHOLD,
    MASK_THRESHOLD,
    image_signature,
    mask_signature,
    similarity_matrix,
)
from retinasynth.masks.perturb import default_perturbation
from retinasynth.synth.phantom import write_phantom_dataset


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    if a.dtype == bool:
        return cv2.resize(a.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)


def disguises(image: np.ndarray, fov: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    h, w = fov.shape
    cy, cx = int(0.05 * h), int(0.05 * w)
    return {
        "jpeg q60": (_jpeg(image, 60), fov),
        "resize 0.5": (_resize(image, w // 2, h // 2), _resize(fov, w // 2, h // 2)),
        "resize 1.7": (_resize(image, int(w * 1.7), int(h * 1.7)), _resize(fov, int(w * 1.7), int(h * 1.7))),
        "squash 512 + jpeg q80": (_jpeg(_resize(image, 512, 512), 80), _resize(fov, 512, 512)),
        "crop 5% each side": (image[cy:h - cy, cx:w - cx], fov[cy:h - cy, cx:w - cx]),
        "hflip": (image[:, ::-1], fov[:, ::-1]),
        "vflip + resize 0.7 + jpeg q70": (_jpeg(_resize(image[::-1], int(w * 0.7), int(h * 0.7)), 70),
                                          _resize(fov[::-1], int(w * 0.7), int(h * 0.7))),
        "brightness x1.3 + gamma 0.8": (np.clip(255 * (image / 255.0) ** 0.8 * 1.3, 0, 255).astype(np.uint8), fov),
    }


def _offdiag_max(m: np.ndarray) -> float:
    m = m.copy()
    np.fill_diagonal(m, -np.inf)
    return float(m.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = DataConfig(size=None)
    train = load_dataset(args.data, "train", cfg).samples
    test = load_dataset(args.data, "test", cfg).samples
    res: dict = {"thresholds": {"image": IMAGE_THRESHOLD, "mask": MASK_THRESHOLD}, "data": str(args.data)}

    ti = [image_signature(s.image, s.fov) for s in train]
    si = [image_signature(s.image, s.fov) for s in test]
    tm = [mask_signature(s.mask, s.fov) for s in train]
    sm = [mask_signature(s.mask, s.fov) for s in test]
    res["distinct"] = {
        "drive train vs test images": float(similarity_matrix(si, ti).max()),
        "drive train vs train images": _offdiag_max(similarity_matrix(ti, ti)),
        "drive test vs test images": _offdiag_max(similarity_matrix(si, si)),
        "drive train vs test masks": float(similarity_matrix(sm, tm).max()),
        "drive train vs train masks": _offdiag_max(similarity_matrix(tm, tm)),
    }
    copies: dict[str, list[float]] = {}
    for s, sig in zip(test, si):
        for name, (img, fov) in disguises(s.image, s.fov).items():
            copies.setdefault(name, []).append(float(similarity_matrix([image_signature(img, fov)], [sig])[0, 0]))
    res["image copies (min over the 20 test images)"] = {k: min(v) for k, v in copies.items()}
    pert = default_perturbation(max(test[0].mask.shape))
    rng = np.random.default_rng(0)
    mins = []
    for s, sig in zip(test, sm):
        for _ in range(5):
            m, f, _recipe = pert(s.mask, s.fov, rng)
            mins.append(float(similarity_matrix([mask_signature(m, f)], [sig])[0, 0]))
    res["perturbed test masks (min over 100)"] = min(mins)
    res["perturbed test masks (mean)"] = float(np.mean(mins))
    with tempfile.TemporaryDirectory() as tmp:
        a = load_dataset(write_phantom_dataset(Path(tmp) / "a", 20, 256, seed=1, progress=False), "all",
                         DataConfig(size=None)).samples
        b = load_dataset(write_phantom_dataset(Path(tmp) / "b", 20, 384, seed=2, progress=False), "all",
                         DataConfig(size=None)).samples
    pa = [image_signature(s.image, s.fov) for s in a]
    pb = [image_signature(s.image, s.fov) for s in b]
    res["distinct"]["phantoms seed 1 vs seed 2 images"] = float(similarity_matrix(pa, pb).max())
    res["distinct"]["phantoms seed 1 vs seed 2 masks"] = float(similarity_matrix(
        [mask_signature(s.mask, s.fov) for s in a], [mask_signature(s.mask, s.fov) for s in b]).max())
    res["distinct"]["phantoms vs drive test images"] = float(similarity_matrix(pa, si).max())
    img_fp = max(v for k, v in res["distinct"].items() if "images" in k)
    mask_fp = max(v for k, v in res["distinct"].items() if "masks" in k)
    img_tp = min(res["image copies (min over the 20 test images)"].values())
    res["margins"] = {"image: threshold - highest distinct": IMAGE_THRESHOLD - img_fp,
                      "image: lowest copy - threshold": img_tp - IMAGE_THRESHOLD,
                      "mask: threshold - highest distinct": MASK_THRESHOLD - mask_fp,
                      "mask: lowest perturbed - threshold": res["perturbed test masks (min over 100)"] - MASK_THRESHOLD}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
