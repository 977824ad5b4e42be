"""`retinasynth export`: a synthetic set (optionally with a real dataset's training split) in the folder layouts
other tools read: nnU-Net v2 raw datasets and MONAI datalists.

* ``nnunet``: ``imagesTr/<case>_0000.png`` (the RGB photograph as nnU-Net's natural-image reader takes it),
  ``labelsTr/<case>.png`` (0 background, 1 vessel), ``dataset.json`` (channel names R/G/B, labels, numTraining,
  file ending). FOV masks go to ``fovTr/`` (nnU-Net ignores the folder; retinasynth's nnunet layout reads it).
  Name the output folder ``DatasetXXX_Name`` under ``nnUNet_raw`` and run ``nnUNetv2_plan_and_preprocess``.
* ``monai``: ``images/``, ``labels/`` (0/1), ``fov/`` and ``datalist.json`` with a ``training`` list of
  ``{"image", "label", "fov", "source"}`` entries relative to the folder: ``monai.data.load_decathlon_datalist``.

Images and masks are written as decoded (native resolution, no preprocessing); each case is named after its source
(``syn_...`` for synthetic pairs, ``real_...`` for real ones), and ``export.json`` records what went in.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from retinasynth.data.dataset import DataConfig, load_dataset
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.locking import entries, hold
from retinasynth.provenance import run_record, write_json_atomic, write_png_atomic

FORMATS = ("nnunet", "monai")


def _case(prefix: str, sample_id: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9-]+", "-", sample_id).strip("-")


def _cases(synth: str | Path | None, real: str | Path | None, progress: bool) -> list[tuple[str, str, object]]:
    out = []
    if synth is not None:
        if not (Path(synth) / "synth.json").is_file():
            raise RetinaSynthError(f"{synth}: not a synthetic set written by `retinasynth synthesize` (no synth.json); "
                                   "pass --synth DIR of synthesize --out, or export real data with --real only.")
        for s in load_dataset(synth, "all", DataConfig(size=None), progress=progress):
            out.append((_case("", s.id) if s.id.startswith("syn") else _case("syn_", s.id), "synthetic", s))
    if real is not None:
        for s in load_dataset(real, "train", DataConfig(size=None), progress=progress):  # never a test split
            out.append((_case("real_", s.id), "real", s))
    if not out:
        raise ConfigError("export needs --synth DIR and/or --real DIR.")
    names = [c[0] for c in out]
    if len(set(names)) != len(names):
        raise RetinaSynthError("export: two samples map to one case name; rename the files so that their ids differ.")
    return out


def export(out: str | Path, fmt: str, synth: str | Path | None = None, real: str | Path | None = None,
           progress: bool = True, overwrite: bool = False) -> dict:
    """Write the pairs of ``synth`` (and the training split of ``real``) to ``out`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}.")
    out = Path(out)
    cases = _cases(synth, real, progress)  # every input checked before the folder is touched
    with hold(out, what="the export folder"):
        if entries(out) and not overwrite:
            raise RetinaSynthError(f"{out}: folder is not empty; choose a new folder or pass --overwrite.")
        from retinasynth.locking import clear

        clear(out)
        records = []
        for name, source, s in cases:
            label = s.mask.astype(np.uint8)  # 0/1: nnU-Net's and MONAI's integer labels
            fov = s.fov.astype(np.uint8) * 255
            if fmt == "nnunet":
                files = {"image": f"imagesTr/{name}_0000.png", "label": f"labelsTr/{name}.png",
                         "fov": f"fovTr/{name}.png"}
            else:
                files = {"image": f"images/{name}.png", "label": f"labels/{name}.png", "fov": f"fov/{name}.png"}
            write_png_atomic(out / files["image"], s.image)
            write_png_atomic(out / files["label"], label)
            write_png_atomic(out / files["fov"], fov)
            records.append({**files, "case": name, "source": source, "from": s.source})
        counts = {k: sum(r["source"] == k for r in records) for k in ("synthetic", "real")}
        if fmt == "nnunet":
            write_json_atomic(out / "dataset.json", {
                "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "vessel": 1},
                "numTraining": len(records), "file_ending": ".png",
                "name": out.name, "description": f"retinasynth export: {counts['synthetic']} synthetic, "
                                                 f"{counts['real']} real training pairs"})
        else:
            write_json_atomic(out / "datalist.json", {
                "training": [{k: r[k] for k in ("image", "label", "fov", "source")} for r in records]})
        write_json_atomic(out / "export.json", {
            "format": fmt, "synth": str(Path(synth).resolve()) if synth else None,
            "real": str(Path(real).resolve()) if real else None, "counts": counts,
            "cases": [{k: r[k] for k in ("case", "source", "from")} for r in records], "record": run_record()})
    return {"out": str(out), "format": fmt, "n": len(records), "counts": counts}
