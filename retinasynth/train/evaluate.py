"""`retinasynth evaluate`: image similarity of generated vs real photographs on a held-out split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from retinasynth.config import from_dict
from retinasynth.data.dataset import DataConfig, load_dataset
from retinasynth.errors import RetinaSynthError
from retinasynth.locking import hold
from retinasynth.metrics.image import (
    NOTEBOOK_REPORTED,
    beats_notebook,
    notebook_scores,
    sound_scores,
    summarize,
)
from retinasynth.precision import describe
from retinasynth.progress import progress as progress_bar
from retinasynth.provenance import (
    run_record,
    write_csv_atomic,
    write_json_atomic,
    write_png_atomic,
)
from retinasynth.rundir import load_generator, read_run_config


def _notebook_view(img: np.ndarray, size: int) -> np.ndarray:
    """The notebook compared at 256x256 after a nearest-neighbour resize. Generated and real images get
    exactly the same resampling: smoothing only the generated side (area interpolation) would lower its
    MSE and favour the generator."""
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def evaluate(run_dir: str | Path, data_root: str | Path, split: str = "test", out: str | Path | None = None,
             notebook_size: int = 256, ema: bool = True, n_grid: int = 4, progress: bool = True,
             device: str | None = None, reader_steps: int = 600, precision: str = "auto",
             appearance: str | None = None, appearance_seed_base: int = 0) -> dict:
    """Score the run's generator on ``split`` of ``data_root`` under both protocols; write the results.

    Writes ``metrics.json``, ``per_image.csv`` and ``comparison.png`` (mask | generated | real) into
    ``out`` (default ``RUN_DIR/eval-<split>``). Also scores a trivial predictor, the mean training
    image, so the numbers can be read against what needs no model at all.

    With ``reader_steps`` > 0 it also reports **vessel consistency**, a proxy for how useful the rendered
    images are as training data: a segmenter (the benchmark's network and CLAHE input, seed 1) is trained
    for ``reader_steps`` steps on the run's own training images, then segments each evaluated image's
    rendering G(mask) and the real photograph; Dice against the mask inside the FOV, for both. Rendered
    Dice far below real Dice means vessels drawn too faintly; far above, vessels cleaner than real ones.

    ``precision`` ('auto', 'fp32', 'bf16', 'fp16'; :mod:`retinasynth.precision`) is resolved once for the device;
    the generator's and the reader's forward passes run at it, and metrics.json records it (``precision``).

    ``appearance`` (:mod:`retinasynth.synth.appearance`; None: ``synthesize``'s default) scores the renders as
    ``synthesize --appearance`` writes them: evaluated image ``i`` gets the look of pair ``i`` of a set with seed
    ``appearance_seed_base``. Every measure (similarity, fidelity, consistency, KID) is then of the set a user
    receives; ``'none'`` scores the generator's own look.
    """
    out = Path(out) if out else Path(run_dir) / f"eval-{split}"
    read_run_config(run_dir)  # a missing or foreign run is refused before anything is created
    with hold(out, what="the evaluation folder"):
        return _evaluate(run_dir, data_root, split, out, notebook_size, ema, n_grid, progress, device,
                         reader_steps, precision, appearance, appearance_seed_base)


def _evaluate(run_dir, data_root, split: str, out: Path, notebook_size: int, ema: bool, n_grid: int, progress: bool,
              device, reader_steps: int, precision: str, appearance: str | None, appearance_seed_base: int) -> dict:
    from retinasynth.synth.appearance import (
        DEFAULT_APPEARANCE,
        appearance_seed,
        apply_appearance,
        check_appearance,
    )

    appearance = DEFAULT_APPEARANCE if appearance is None else appearance
    check_appearance(appearance)
    if not isinstance(reader_steps, int) or reader_steps < 0:
        raise RetinaSynthError(f"reader_steps must be an integer >= 0 (0: no vessel-consistency proxy), got "
                               f"{reader_steps!r}.")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    data_cfg = from_dict(DataConfig, cfg["config"]["data"])
    if split not in EVAL_SPLITS:
        raise RetinaSynthError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}.")
    held = set(held_out_ids(cfg)) if split == "val" else set()
    if split == "val" and not held:
        raise RetinaSynthError(f"{run_dir}: the run holds out none of its training images, so there is no 'val' "
                               "split to score; fit with -o data.exclude=ID,ID,... (or train.val_count > 0), "
                               "or evaluate --split test.")
    gen = load_generator(run_dir, ema=ema, device=device, precision=precision)
    if split == "val":
        ds = load_dataset(data_root, "train", replace(data_cfg, exclude=()))
        ds.samples = [s for s in ds.samples if s.id in held]
        missing = sorted(held - {s.id for s in ds.samples})
        if missing:
            raise RetinaSynthError(f"{data_root}: the run's held-out training image(s) {', '.join(missing[:5])} are "
                                   "not in this folder's training split; give the dataset the run was fitted on.")
    else:
        ds = load_dataset(data_root, split, data_cfg)
    if split not in ("test", "val"):
        from retinasynth.data.io import warn_once

        warn_once(f"evaluating on the {split!r} split: scores on images the generator was trained on "
                  "are not a measure of generalisation.")
    train_fp = cfg["data"]["fingerprint"]
    if split != "val" and train_fp in (ds.fingerprint(), ds.legacy_fingerprint()):
        raise RetinaSynthError(f"{data_root} split {split!r} is the very data the run was trained on; "
                               "evaluate on a held-out split (--split test, or --split val for the training "
                               "images the run held out).")
    train = _training_samples(cfg, data_cfg)
    mean_img = np.clip(np.mean([s.image.astype(np.float64) for s in train], axis=0).round(), 0, 255).astype(np.uint8)
    reader = None
    if reader_steps:
        from retinasynth.segmenter import train_reader

        model, bc = train_reader(train, data_cfg.size, reader_steps, 1, gen.device, preprocess="green_clahe",
                                 progress=progress, desc="vessel-consistency reader", precision=gen.precision)
        reader = {"model": model, "cfg": bc, "n": len(train), "device": gen.device, "precision": gen.precision}
    rows, grid, fid = [], [], []
    it = progress_bar(ds.samples, desc=f"evaluate {split}", unit="img", disable=not progress)
    for i, s in enumerate(it):
        fake = gen.render(s.mask, s.fov)[0]
        if appearance != "none":
            fake = apply_appearance(appearance, fake, s.fov, appearance_seed(appearance_seed_base, i))
        nb = notebook_scores(_notebook_view(fake, notebook_size), _notebook_view(s.image, notebook_size))
        so = sound_scores(fake, s.image, s.fov)
        mb = notebook_scores(_notebook_view(mean_img, notebook_size), _notebook_view(s.image, notebook_size))
        ms = sound_scores(mean_img, s.image, s.fov)
        rows.append({"id": s.id, **{f"notebook_{k}": v for k, v in nb.items()},
                     **{f"sound_{k}": v for k, v in so.items()},
                     **{f"meanimage_notebook_{k}": v for k, v in mb.items()},
                     **{f"meanimage_sound_{k}": v for k, v in ms.items()},
                     **(_consistency_row(reader, fake, s) if reader else {})})
        fid.append(_fidelity_row(fake, s))
        if len(grid) < n_grid:
            m = np.repeat(s.mask[:, :, None].astype(np.uint8) * 255, 3, axis=2)
            grid.append(np.concatenate([m, fake, s.image], axis=1))

    def block(prefix: str) -> dict:
        keys = [k for k in rows[0] if k.startswith(prefix)]
        return summarize([{k[len(prefix):]: r[k] for k in keys} for r in rows])

    result = {
        "run": str(run_dir), "data": str(data_root), "split": split, "n_images": len(rows),
        "image_ids": [s.id for s in ds.samples],
        "weights": "ema" if ema else "raw", "weights_sha256": gen.weights_sha256,
        "working_resolution": gen.size,
        "appearance": {"name": appearance, "seed": appearance_seed_base,
                       "what": ("the generator's own look" if appearance == "none" else
                                f"image i rendered with the look synthesize --appearance {appearance} --seed "
                                f"{appearance_seed_base} gives pair i")},
        "notebook_protocol": {"resolution": notebook_size, "resampling": "nearest-neighbour, generated and real alike",
                              "range": "[-1, 1]", "data_range": 2.0,
                              "ssim_window": "uniform 7x7, channel-wise", "region": "whole frame",
                              "scores": block("notebook_")},
        "sound_protocol": {"resolution": gen.size, "range": "[0, 1]", "data_range": 1.0,
                           "ssim_window": "gaussian sigma 1.5", "region": "inside FOV",
                           "scores": block("sound_")},
        "mean_training_image_baseline": {"notebook_protocol": block("meanimage_notebook_"),
                                         "sound_protocol": block("meanimage_sound_")},
        "notebook_reported": dict(NOTEBOOK_REPORTED),
        "precision": describe(gen.precision, gen.device),
        "memory_format": "channels_last" if gen.channels_last else "contiguous",
        "record": run_record(),
    }
    if reader:
        rd, rl = block("consistency_rendered_"), block("consistency_real_")
        result["vessel_consistency"] = {
            "reader": {"network": f"{reader['cfg'].arch}/{reader['cfg'].encoder}", "input": "green_clahe",
                       "steps": reader_steps, "seed": 1, "trained_on": f"{reader['n']} training images of the run",
                       "precision": reader["precision"]},
            "rendered": rd["dice"], "real": rl["dice"], "ratio": rd["dice"]["mean"] / max(rl["dice"]["mean"], 1e-9)}
    result["fidelity"] = _fidelity_summary(fid, reader, ds.samples, train, gen)
    nb = result["notebook_protocol"]["scores"]
    result["beats_notebook"] = beats_notebook({k: v["mean"] for k, v in nb.items()})
    write_json_atomic(out / "metrics.json", result)
    write_csv_atomic(out / "per_image.csv", rows)
    write_png_atomic(out / "comparison.png", np.concatenate(grid, axis=0))
    result["out"] = str(out)
    return result


EVAL_SPLITS = ("test", "val", "train", "all")


def held_out_ids(run_cfg: dict) -> tuple[str, ...]:
    """The training-split images a run never trained on: those its fit excluded (``data.exclude``, e.g. the
    benchmark's ``eval=val`` images) and those it kept for its validation L1 (``val_ids``). ``evaluate --split
    val`` scores these, so a generator option can be chosen without touching the test split."""
    excluded = run_cfg["config"]["data"].get("exclude") or []
    held = {str(i) for i in excluded} | {str(i) for i in run_cfg["data"].get("val_ids", [])}
    return tuple(sorted(held - {str(i) for i in run_cfg["data"].get("train_ids", [])}))


def _consistency_row(reader: dict, fake: np.ndarray, s) -> dict:
    from retinasynth.data.preprocess import enhance
    from retinasynth.metrics.seg import dice
    from retinasynth.segmenter import predict_prob

    return {f"consistency_{name}_dice": dice(predict_prob(reader["model"], enhance(img, reader["cfg"].preprocess),
                                                         reader["device"], reader["cfg"].multiple,
                                                         reader.get("precision", "fp32")),
                                             s.mask, s.fov)
            for name, img in (("rendered", fake), ("real", s.image))}


def _fidelity_row(fake: np.ndarray, s) -> dict:
    """The fidelity measures (retinasynth.metrics.fidelity) of one rendering and of the real photograph of its mask."""
    from retinasynth.metrics.fidelity import disc_offset, stripe_index, vessel_contrast

    return {name: {"stripe": stripe_index(img, s.fov, s.mask), "contrast": vessel_contrast(img, s.mask, s.fov),
                   "disc": disc_offset(img, s.mask, s.fov)}
            for name, img in (("rendered", fake), ("real", s.image))} | {"fake": fake}


def _fidelity_summary(rows: list[dict], reader: dict | None, evaluated: list, train: list, gen) -> dict:
    """Renders against real photographs of the same masks, each measure with the real images' own value (the
    target) and the ratio rendered / real; KID on the reader's encoder features when a reader was trained."""
    from retinasynth.metrics.fidelity import STRIPE_PERIODS, WIDTH_BINS, encoder_features, kid

    def mean(vals) -> float:
        a = np.asarray([v for v in vals if np.isfinite(v)], np.float64)
        return float(a.mean()) if a.size else float("nan")

    def pair(key) -> dict:
        rd, rl = mean(key(r["rendered"]) for r in rows), mean(key(r["real"]) for r in rows)
        return {"rendered": rd, "real": rl, "ratio": rd / rl if rl else float("nan")}

    out = {
        "stripe_index": {**pair(lambda m: m["stripe"]), "periods_px": list(STRIPE_PERIODS),
                         "what": "share of background high-pass power at the stride-2 upsampling frequencies"},
        "vessel_contrast": {name: pair(lambda m, n=name: m["contrast"][n]["contrast"]) for name, _, _ in WIDTH_BINS},
        "disc_offset": {**pair(lambda m: m["disc"]["distance_rel"]),
                        "what": "disc to large-vessel convergence point, over the FOV diameter"},
    }
    thin = [out["vessel_contrast"][b]["ratio"] for b in ("1", "2")]
    out["vessel_contrast"]["thin_1_2_px_ratio"] = mean(thin)
    if reader:
        kw = {"preprocess": reader["cfg"].preprocess, "precision": reader["precision"]}
        f_fake = encoder_features(reader["model"], [r["fake"] for r in rows], reader["device"], **kw)
        f_real = encoder_features(reader["model"], [s.image for s in evaluated], reader["device"], **kw)
        f_train = encoder_features(reader["model"], [s.image for s in train], reader["device"], **kw)
        out["kid"] = {"rendered_vs_real": kid(f_fake, f_real), "real_train_vs_real": kid(f_train, f_real),
                      "features": "the vessel-consistency reader's deepest encoder features, average-pooled"}
    for r in rows:
        r.pop("fake", None)
    return out


def _training_samples(cfg: dict, data_cfg: DataConfig) -> list:
    """The run's own training images (for the mean-image baseline and the consistency reader), loaded once."""
    if not Path(cfg["data"]["root"]).is_dir():
        raise RetinaSynthError(f"{cfg['data']['root']}: the run's training data folder is gone; it is needed "
                               "for the mean-image baseline.")
    ids = set(cfg["data"]["train_ids"])
    return [s for s in load_dataset(cfg["data"]["root"], "train", data_cfg) if s.id in ids]


def format_result(r: dict) -> str:
    def line(name: str, sc: dict) -> str:
        return (f"  {name:<34} MSE {sc['mse']['mean']:.4f} ± {sc['mse']['std']:.4f}   "
                f"SSIM {sc['ssim']['mean']:.4f} ± {sc['ssim']['std']:.4f}   "
                f"PSNR {sc['psnr']['mean']:.2f} ± {sc['psnr']['std']:.2f} dB")

    nbp, sop = r["notebook_protocol"], r["sound_protocol"]
    base = r["mean_training_image_baseline"]
    return "\n".join([
        f"evaluated {r['n_images']} {r['split']} images ({r['weights']} weights; renders with appearance "
        f"{r.get('appearance', {}).get('name', 'none')!r})",
        f"notebook protocol ({nbp['resolution']}x{nbp['resolution']}, [-1,1], whole frame):",
        line("generator", nbp["scores"]), line("mean training image (no model)", base["notebook_protocol"]),
        f"  notebook's reported numbers        MSE {NOTEBOOK_REPORTED['mse']:.4f}   SSIM "
        f"{NOTEBOOK_REPORTED['ssim']:.4f}   PSNR {NOTEBOOK_REPORTED['psnr']:.2f} dB",
        f"sound protocol ({sop['resolution']}x{sop['resolution']}, [0,1], Gaussian SSIM, inside FOV):",
        line("generator", sop["scores"]), line("mean training image (no model)", base["sound_protocol"]),
        f"beats the notebook on all three: {'yes' if r['beats_notebook'] else 'no'}",
        *([f"vessel consistency (a segmenter trained on the run's training images reads them): Dice on "
           f"rendered {r['vessel_consistency']['rendered']['mean']:.4f}, on real "
           f"{r['vessel_consistency']['real']['mean']:.4f} (ratio {r['vessel_consistency']['ratio']:.3f})"]
          if "vessel_consistency" in r else []),
        *_fidelity_lines(r.get("fidelity")),
        f"written to {r['out']}/ (metrics.json, per_image.csv, comparison.png)"])


def _fidelity_lines(f: dict | None) -> list[str]:
    if not f:
        return []
    s, dsc, vc = f["stripe_index"], f["disc_offset"], f["vessel_contrast"]
    lines = ["fidelity (rendered vs the real photographs of the same masks; the real value is the target):",
             f"  stripe index          rendered {s['rendered']:.4f}   real {s['real']:.4f}   ratio {s['ratio']:.2f}",
             "  vessel contrast       " + "   ".join(f"{b} px {vc[b]['rendered']:.3f}/{vc[b]['real']:.3f}"
                                               for b in ("1", "2", "3-4", "5+"))
             + f"   thin (1-2 px) ratio {vc['thin_1_2_px_ratio']:.2f}",
             f"  disc offset (/FOV)    rendered {dsc['rendered']:.3f}   real {dsc['real']:.3f}   ratio {dsc['ratio']:.2f}"]
    if "kid" in f:
        a, b = f["kid"]["rendered_vs_real"], f["kid"]["real_train_vs_real"]
        lines.append(f"  KID (reader features) rendered vs real {a['kid']:.4f} [{a['ci95'][0]:.4f}, {a['ci95'][1]:.4f}]"
                     f"   real train vs real {b['kid']:.4f} [{b['ci95'][0]:.4f}, {b['ci95'][1]:.4f}]")
    return lines
