"""``retinasynth data inspect``: what a dataset folder holds and what is wrong with it."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from retinasynth.data.dataset import DataConfig, index_dataset, load_record
from retinasynth.errors import DataError


def inspect_dataset(root: str | Path, layout: str | None = None) -> dict:
    """Scan every file of a dataset at native resolution and report its properties and problems."""
    cfg = DataConfig(layout=layout, size=None)
    lay, index, records = index_dataset(root, cfg)
    problems = list(index.problems)
    if not records:  # an empty folder, or a forced --layout that does not fit it: nothing to report on
        why = f" ({problems[0].split(': ', 1)[-1]}{' and more' if len(problems) > 1 else ''})" if problems else ""
        raise DataError(f"{Path(root)}: no image/mask pairs found as the {lay.name} layout (expects {lay.expects})"
                        f"{why}; check the folder or the --layout option.")
    splits: Counter = Counter()
    sizes: Counter = Counter()
    fov_sources: Counter = Counter()
    mask_values: set[int] = set()
    fractions = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rec in records:
            s = load_record(rec, cfg, problems)
            if s is None:
                continue
            splits[s.split] += 1
            sizes[f"{s.image.shape[1]}x{s.image.shape[0]}"] += 1
            fov_sources[s.fov_source] += 1
            fractions.append(float(s.mask[s.fov].mean()) if s.fov.any() else float(s.mask.mean()))
            try:
                mask_values.update(int(v) for v in np.unique(_raw_mask_values(rec.mask)))
            except DataError:
                pass
    warns = sorted({str(w.message) for w in caught})
    fr = np.array(fractions) if fractions else np.zeros(0)
    return {
        "root": str(Path(root)),
        "layout": lay.name,
        "split_source": index.split_source,
        "splits": dict(splits),
        "n_samples": int(sum(splits.values())),
        "image_sizes": dict(sizes),
        "mask_values": sorted(mask_values)[:20],
        "binary_masks": mask_values <= {0, 1, 255},
        "fov_source": dict(fov_sources),
        "vessel_fraction_in_fov": ({"mean": float(fr.mean()), "min": float(fr.min()), "max": float(fr.max())}
                                   if fr.size else None),
        "warnings": warns,
        "problems": problems,
    }


def _raw_mask_values(path: Path) -> np.ndarray:
    from retinasynth.data.io import _decode, _to_uint8

    arr = _to_uint8(_decode(Path(path)))
    return arr.max(axis=2) if arr.ndim == 3 else arr


def format_report(rep: dict) -> str:
    lines = [f"dataset     {rep['root']}",
             f"layout      {rep['layout']} (split: {rep['split_source']})",
             f"samples     {rep['n_samples']}  " + "  ".join(f"{k}={v}" for k, v in sorted(rep["splits"].items())),
             "image size  " + ", ".join(f"{k} ({v})" for k, v in rep["image_sizes"].items()),
             f"mask values {rep['mask_values']} -> {'binary' if rep['binary_masks'] else 'thresholded at >127'}",
             "FOV         " + ", ".join(f"{k} ({v})" for k, v in rep["fov_source"].items())]
    vf = rep["vessel_fraction_in_fov"]
    if vf:
        lines.append(f"vessels     {vf['mean']:.3f} of FOV pixels (min {vf['min']:.3f}, max {vf['max']:.3f})")
    if rep["split_source"] == "train-only":
        lines.append("note        train/ only: no test split; `fit` and `synthesize` use every image; "
                     "`benchmark-downstream` needs -o bench.eval=val (held-out training images) or --test-data")
    elif rep["split_source"] == "seeded":
        lines.append("note        no official split: a seeded 75/25 train/test split is drawn (data.split_seed) and "
                     "recorded in every run")
    for w in rep["warnings"]:
        lines.append(f"warning     {w}")
    lines.append(f"problems    {len(rep['problems'])}")
    lines += [f"  - {p}" for p in rep["problems"]]
    return "\n".join(lines)



