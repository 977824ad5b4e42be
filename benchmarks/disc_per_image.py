"""Per-image disc offsets of a run's held-out renders (own look and camera looks): what drives `evaluate`'s mean.

    python benchmarks/disc_per_image.py runs/holdval ../shared/data/DRIVE
"""
import json
import sys
from dataclasses import replace

from retinasynth.config import from_dict
from retinasynth.data.dataset import DataConfig, load_dataset
from retinasynth.metrics.fidelity import disc_offset
from retinasynth.rundir import load_generator, read_run_config
from retinasynth.synth.appearance import appearance_seed, apply_appearance
from retinasynth.train.evaluate import held_out_ids

RUN, DATA = sys.argv[1], sys.argv[2]
cfg = read_run_config(RUN)
dc = from_dict(DataConfig, cfg["config"]["data"])
held = set(held_out_ids(cfg))
ds = load_dataset(DATA, "train", replace(dc, exclude=()))
samples = [s for s in ds.samples if s.id in held]
gen = load_generator(RUN, ema=True)
rows = []
for i, s in enumerate(samples):
    fake = gen.render(s.mask, s.fov)[0]
    cam = apply_appearance("camera", fake, s.fov, appearance_seed(0, i))
    r = {"id": s.id, "real": disc_offset(s.image, s.mask, s.fov)["distance_rel"],
         "rendered": disc_offset(fake, s.mask, s.fov)["distance_rel"],
         "camera": disc_offset(cam, s.mask, s.fov)["distance_rel"]}
    rows.append(r)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
