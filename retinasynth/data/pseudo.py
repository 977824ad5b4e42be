"""`retinasynth pseudo-label`: a target camera's unlabelled photographs paired with the vessel maps a segmenter
trained on source labels draws on them, written as a dataset `fit --init RUN` can fine-tune a generator on.

The generator then learns the target camera's look (colour, illumination, blur, grain) from the photographs; the
pseudo-labels only tell it where the vessels are. `synthesize --data SOURCE` afterwards renders on the source's
true masks, so no pseudo-label ever becomes a training label of a segmenter. No target label is used.

Output (generic layout, training split only, so that `fit` trains on every photograph rather than holding a
seeded quarter out as test): ``train/images/<id>.png`` (the photographs, re-encoded losslessly),
``train/masks/<id>.png`` (the pseudo-labels, 0/255, at the photographs' resolution), ``train/fov/<id>.png`` (the
derived field of view) and ``pseudo.json`` (the segmenter, its threshold, each photograph's source file, vessel
share and disc offset).

The disc offset (:func:`retinasynth.metrics.fidelity.disc_offset`) is the distance, in FOV diameters, from the
photograph's brightest spot to the point where the pseudo-mask's large vessels converge, where a generator with the
disc plane draws the optic disc. On a photograph whose disc is cut by the FOV's edge, dark or red, the two part;
fine-tuned on it, the generator learns "no bright disc at the hub" (benchmarks/RESULTS.md section 29).
``max_disc_offset`` (label-free) leaves such photographs out, listed in ``pseudo.json`` under ``left_out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retinasynth.errors import DataError, RetinaSynthError
from retinasynth.provenance import portable_path, run_record, sha256_file, write_png_atomic, write_text_atomic


def pseudo_label(photos: str | Path, out: str | Path, model: str | Path, device: str | None = None,
                 threshold: float | None = None, progress: bool = True, split: str | None = None,
                 max_disc_offset: float | None = None) -> dict:
    """Label every photograph under ``photos`` (or, with ``split``, the images of that split of the dataset
    there, its labels unused) with the segmenter ``model`` (a benchmark-downstream ``OUT/models/*.safetensors``)
    and write the pairs to ``out``, leaving out (with ``max_disc_offset``) photographs whose brightest spot lies
    farther than that many FOV diameters from the pseudo-mask's vessel hub. Returns the content of
    ``pseudo.json``."""
    from retinasynth.data.io import derive_fov, read_image
    from retinasynth.data.layouts import IMAGE_EXTS
    from retinasynth.device import pick_device
    from retinasynth.locking import hold
    from retinasynth.metrics.fidelity import disc_offset
    from retinasynth.segmenter.model import load_segmenter, segment_at_working_size, to_native
    from retinasynth.synth.style import _image_files

    photos, out = Path(photos), Path(out)
    dev = pick_device(device)
    if not photos.is_dir():
        raise DataError(f"--photos {photos}: not a folder; pass a folder of unlabelled photographs of the target "
                        "camera.")
    if split is not None:
        from retinasynth.data.dataset import DataConfig, load_dataset

        files = [Path(smp.source) for smp in load_dataset(photos, split, DataConfig(size=None), progress=False)]
    else:
        files = _image_files(photos)
    if not files:
        raise DataError(f"--photos {photos}: no image files found (png, jpg, tif, gif, ppm[.gz], bmp).")
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise RetinaSynthError(f"{out}: not empty; pass a new --out folder for the pseudo-labelled set.")
    seg, cfg = load_segmenter(model, dev)
    thr = cfg.threshold if threshold is None else float(threshold)
    if not 0.0 < thr < 1.0:
        raise DataError(f"--threshold {thr}: must lie between 0 and 1.")
    if max_disc_offset is not None and not max_disc_offset > 0:
        raise DataError(f"--max-disc-offset {max_disc_offset}: must be > 0 (a share of the FOV's diameter, e.g. "
                        "0.15).")
    it = files
    if progress:
        from retinasynth.progress import progress as bar

        it = bar(files, desc="pseudo-label", unit="image", dynamic_ncols=True)
    out.mkdir(parents=True, exist_ok=True)
    items, left_out = [], []
    with hold(out, what="the pseudo-labelled set"):
        for p in it:
            img = read_image(p)  # a damaged file is a one-line RetinaSynthError naming it
            fov = derive_fov(img)
            prob, _, _ = segment_at_working_size(seg, cfg, img, None, fov, dev)
            inside = fov.astype(bool)
            mask = (to_native(prob, img.shape[:2]) >= thr) & inside
            rel = (p.relative_to(photos) if p.is_relative_to(photos) else Path(p.name)).as_posix()
            ext = next((e for e in sorted(IMAGE_EXTS, key=len, reverse=True) if rel.lower().endswith(e)), "")
            pid = rel[:len(rel) - len(ext)].replace("/", "__")  # im0004.ppm.gz -> im0004
            item = {"id": pid, "photo": portable_path(p, out), "vessel_share_in_fov":
                    float(mask[inside].mean()) if inside.any() else 0.0,
                    "disc_offset": round(disc_offset(img, mask, inside)["distance_rel"], 4)}
            if max_disc_offset is not None and item["disc_offset"] > max_disc_offset:
                left_out.append(item)
                continue
            for sub, arr in (("images", img), ("masks", mask.astype(np.uint8) * 255),
                             ("fov", fov.astype(np.uint8) * 255)):
                write_png_atomic(out / "train" / sub / f"{pid}.png", arr)
            items.append(item)
        if not items:
            raise DataError(f"--photos {photos}: every photograph's brightest spot lies more than "
                            f"--max-disc-offset {max_disc_offset} FOV diameters from its vessels' hub (offsets "
                            f"{', '.join(str(i['disc_offset']) for i in left_out)}); raise it or leave it unset.")
        meta = {"labels": "pseudo", "labels_used": False, "photos": portable_path(photos, out), "split": split,
                "max_disc_offset": max_disc_offset, "left_out": left_out, "n": len(items),
                "segmenter": {"path": portable_path(model, out), "sha256": sha256_file(model), "config": cfg.to_dict()},
                "threshold": thr, "items": items, "record": run_record()}
        write_text_atomic(out / "pseudo.json", json.dumps(meta, indent=2) + "\n")
    return meta
