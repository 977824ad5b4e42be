"""``benchmark-downstream --adapt NAME=DIR``: unlabelled photographs of a target camera, and the domain-adaptation
controls that use them (arms with ``adapt`` set in :mod:`retinasynth.bench.arms`).

The photographs are read as found (any image format, sub-folders included; the FOV derived from each), brought to
the segmenter's working frame, and refused in one line if any of them is an evaluated image (the near-duplicate
guard of the benchmark, at its threshold): adapting to the very images that are scored would measure nothing.

The controls, each at the synthetic arms' compute (twice the steps of 'real'):

- 'real+fda' / 'real+hist': every real training image in ``bench.adapt_looks`` target looks (photographs drawn
  per image with a seeded generator), by Fourier amplitude swap or histogram matching
  (:mod:`retinasynth.data.adapt`), trained on like the real images;
- 'self-train': the 'real' model of the same regime and seed (read from the cache, else trained: the same
  weights) labels the photographs (probability >= ``bench.threshold`` inside their FOV); it is then fine-tuned on
  the real subset plus the pseudo-labelled photographs for ``bench.steps`` more steps.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retinasynth.bench.guards import LeakageError, scored_among
from retinasynth.data.adapt import adapt_image
from retinasynth.data.dataset import Sample
from retinasynth.errors import DataError
from retinasynth.provenance import fingerprint_arrays


@dataclass
class AdaptSet:
    """Unlabelled target photographs at the working frame (``samples``: masks empty) and their native
    near-duplicate signatures."""

    name: str
    root: Path
    samples: list[Sample]
    signatures: list = field(repr=False, default_factory=list)

    def fingerprint(self) -> str:
        items = []
        for s in self.samples:
            items += [(s.id + ":image", s.image), (s.id + ":fov", s.fov)]
        return fingerprint_arrays(items)


def parse_adapt(adapt) -> tuple[str, Path, str | None] | None:
    """'NAME=DIR', 'NAME:SPLIT=DIR' (that split of a dataset folder, its labels unused) or a bare DIR (named
    after its folder) -> (name, folder, split or None); None for None."""
    if adapt is None:
        return None
    text = str(adapt)
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).name, text
    name, _, split = name.partition(":")
    if not name or not path or (split and split not in ("train", "test", "all")):
        raise DataError(f"--adapt {text}: expected NAME=DIR (a folder of unlabelled photographs of the target "
                        "camera) or NAME:SPLIT=DIR (train, test or all of a dataset folder, labels unused).")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"--adapt {text}: {folder} is not a folder; pass a folder of unlabelled photographs of the "
                        "target camera.")
    return name, folder, split or None


def load_adapt_set(name: str, folder: Path, split: str | None, data_cfg, progress: bool = False) -> AdaptSet:
    """Every photograph under ``folder`` (or the ``split`` of the dataset there, its labels dropped) at the
    working frame of ``data_cfg`` (a DataConfig)."""
    from retinasynth.data.preprocess import prepare
    from retinasynth.data.similarity import image_signature
    from retinasynth.synth.style import read_photographs

    if split is not None:
        from retinasynth.data.dataset import load_dataset

        work = load_dataset(folder, split, data_cfg, progress=progress)
        native = load_dataset(folder, split, dataclasses.replace(data_cfg, size=None), progress=progress)
        samples = [dataclasses.replace(s, id=f"{split}/{s.id}", split="adapt", mask=np.zeros(s.fov.shape, bool))
                   for s in work.samples]
        return AdaptSet(name, folder, samples, [image_signature(s.image, s.fov) for s in native.samples])
    samples, sigs = [], []
    for p, img, fov in read_photographs(folder, f"--adapt {name}={folder}"):
        sigs.append(image_signature(img, fov))
        image, _, wfov = prepare(img, None, fov, data_cfg.size, data_cfg.fit, data_cfg.crop_fov)
        samples.append(Sample(p.relative_to(folder).as_posix(), "adapt", image, np.zeros(wfov.shape, bool), wfov,
                              str(p), "derived", img.shape[:2]))
    return AdaptSet(name, folder, samples, sigs)


def refuse_scored(adapt: AdaptSet, evals) -> dict:
    """A one-line LeakageError if a target photograph is an evaluated image; else what the check found."""
    worst, hit = scored_among(adapt.signatures, evals)
    if hit:
        raise LeakageError(f"--adapt {adapt.name}: photograph {adapt.samples[hit.k].id!r} of {adapt.root} is "
                           f"{hit.says()}. Refusing: adapt to photographs that are not scored (e.g. "
                           "--test-data NAME:test=... and the rest of that camera's photographs for --adapt).")
    return {"name": adapt.name, "n": len(adapt.samples), "ids": [s.id for s in adapt.samples],
            "max_image_similarity": worst, "fingerprint": adapt.fingerprint()}


def adapted_pool(method: str, real: list[Sample], adapt: AdaptSet, looks: int, seed: int,
                 beta: float = 0.01) -> list[Sample]:
    """Each real image in ``looks`` target looks (photographs drawn without replacement per image, seeded by
    ``seed`` and the image's position): masks and FOV unchanged."""
    out = []
    k = min(looks, len(adapt.samples))
    for i, s in enumerate(real):
        rng = np.random.default_rng([seed, i, 23])
        for j in sorted(rng.choice(len(adapt.samples), size=k, replace=False)):
            t = adapt.samples[int(j)]
            out.append(dataclasses.replace(s, id=f"{s.id}@{t.id}",
                                           image=adapt_image(method, s.image, s.fov, t.image, t.fov, beta)))
    return out


def pseudo_labelled(model: torch.nn.Module, cfg, adapt: AdaptSet, device: torch.device) -> list[Sample]:
    """The target photographs with the model's vessel map (probability >= ``cfg.threshold``, inside the FOV)
    as their mask."""
    from retinasynth.data.preprocess import enhance
    from retinasynth.segmenter.model import predict_prob, resolved_precision

    out = []
    for t in adapt.samples:
        prob = predict_prob(model, enhance(t.image, cfg.preprocess), device, cfg.multiple,
                            resolved_precision(cfg, device), cfg.infer_tile, cfg.infer_overlap)
        out.append(dataclasses.replace(t, mask=(prob >= cfg.threshold) & t.fov.astype(bool)))
    return out


def self_train(cfg, real: list[Sample], adapt: AdaptSet, seed: int, device: torch.device, source_weights,
               progress: bool = False, desc: str = "self-train") -> tuple[torch.nn.Module, dict]:
    """Fine-tune the source model (``source_weights``: the 'real' model's state dict) on ``real`` (preprocessed)
    plus the pseudo-labelled target photographs, for ``cfg.steps`` steps. Returns (model, log)."""
    from retinasynth.data.preprocess import enhance
    from retinasynth.segmenter import train_segmenter
    from retinasynth.segmenter.model import create_segmenter

    t0 = time.perf_counter()
    source = create_segmenter(cfg)
    source.load_state_dict(source_weights)
    source = source.to(device).eval()
    with torch.no_grad():
        pseudo = pseudo_labelled(source, cfg, adapt, device)
    share = float(np.mean([p.mask[p.fov.astype(bool)].mean() if p.fov.any() else 0.0 for p in pseudo]))
    pool = list(real) + [dataclasses.replace(p, image=enhance(p.image, cfg.preprocess)) for p in pseudo]
    model, log = train_segmenter(cfg, pool, [], "real", seed, device, progress=progress, desc=desc,
                                 init=source_weights)
    log["pseudo"] = {"n": len(pseudo), "vessel_share_in_fov": share, "wall_s": time.perf_counter() - t0}
    return model, log
