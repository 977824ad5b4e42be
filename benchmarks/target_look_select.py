"""Choose the target-look fine-tune (issue 36) without a target label: how long and how fast to fine-tune the source
generator on a target camera's pseudo-labelled photographs, judged by two label-free measures of its renders on
the source's true masks.

- **vessel visibility**: a segmenter trained on source labels segments each render; Dice against the render's own
  (true) mask inside its FOV. The source generator's renders of the same masks are the reference: a fine-tune that
  paints the target's colours but loses the vessels (RESULTS §27's smoke run) scores well below it.
- **target likeness**: the 1-D Wasserstein distance between the renders' and the target photographs' pixel
  intensities inside the FOV (each of R, G, B, 0-255 scale, averaged over channels; scipy.stats), after both
  are brought to the segmenter's working resolution. The source renders and the source's real training images are
  its references (how far the source look is from the target).

- **texture distance** (beside the rule, added with the ``style`` candidate): the same 1-D Wasserstein distance on
  the green channel's local contrast (absolute 3x3 Laplacian) inside the FOV. Histogram matching moves colours,
  not texture: this column shows what a candidate changes beyond colour.

- **disc at the vessels' hub**: :func:`retinasynth.metrics.fidelity.disc_brightness` of the renders (true masks)
  and of the target photographs (pseudo-masks). Added to the rule after the first run (RESULTS §29): every
  fine-tune there halved the disc.

The rule (its first form fixed before any number, the disc term before the second run): among the candidates
whose mean visibility Dice is at least the source renders' minus ``--max-visibility-loss`` (0.02) and whose disc
at the hub is at least ``--min-disc-share`` (0.8) of the target photographs', the smallest target distance wins;
none qualifying -> the source generator (no fine-tune). The candidate ``style`` (added with the third run, the rule
unchanged) is the source generator rendered with ``synthesize --style`` on the same photographs: colours
histogram-matched per pair, no fine-tune. Its target distance is small by construction (per-channel histogram
matching is what that distance measures), so under this rule it wins whenever it keeps visibility and the disc: it
is the colour-only target look that a fine-tune must beat on the other columns. Nothing here reads a target label or a scored image (pass
the unscored part's pseudo-labels).

    python benchmarks/target_look_select.py --source-run RUN --pseudo PSEUDO --data ../shared/data/DRIVE \
        --model BENCH/models/real-2x_n20_s0@3200.safetensors --out runs/target-select \
        --candidates 200:2e-4,800:2e-4,800:5e-5,800:2e-3:norm,800:2e-4:all:guard --pseudo-guarded PSEUDO_G
Each candidate STEPS:LR[:TUNE[:FLAG...]] is a `retinasynth fit --init RUN --data PSEUDO -o train.steps=S -o
train.lr=LR -o train.tune=TUNE` (flag ``guard``: on ``--pseudo-guarded``, a `pseudo-label --max-disc-offset`
folder; flag ``anchor``: with ``-o train.disc_anchor=1``, the source generator's own render as the L1 target inside
the disc plane, added with the fourth run, the rule unchanged) and
a `synthesize --run ... --data SOURCE --n N --appearance none` (resumable: rerun to continue); writes
OUT/results.json, summary.csv, report.md and compare.jpg (rows: source renders, each candidate's renders, the
photographs). The candidate ``style`` is the source run rendered with ``--style PSEUDO/train/images``.
results.json's ``render`` says how the chosen look is rendered: ``{"run": RUN, "style": DIR or null}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rel(path: str) -> str:
    """A path as recorded: relative to the repository (no machine's absolute path in committed results)."""
    return os.path.relpath(os.path.abspath(path), ROOT)


def _rs(*args: str) -> None:
    cmd = [sys.executable, "-m", "retinasynth_cli.main", *args, "--quiet"]
    print("+ retinasynth " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _done(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def _fit(source: str, pseudo: str, out: Path, steps: int, lr: float, tune: str = "all", anchor: float = 0.0) -> None:
    if _done(out / "config.json"):
        return
    if (out / "config.json").is_file():
        _rs("fit", "--resume", "--out", str(out))
    else:
        extra = ["-o", f"train.disc_anchor={anchor}"] if anchor else []
        _rs("fit", "--init", source, "--data", pseudo, "--out", str(out), "-o", f"train.steps={steps}",
            "-o", f"train.lr={lr}", "-o", f"train.sample_every={steps}", "-o", "train.val_count=1",
            "-o", f"train.tune={tune}", *extra)


def _render(run: str, data: str, out: Path, n: int, style: str | None = None) -> None:
    if _done(out / "synth.json"):
        return
    extra = ["--resume"] if out.is_dir() else []
    extra += ["--style", style] if style else []
    _rs("synthesize", "--run", run, "--data", data, "--n", str(n), "--out", str(out), "--appearance", "none", *extra)


def _pairs(folder: Path) -> list[tuple[str, Path, Path, Path]]:
    """(id, image, mask, fov) of a synthetic set (manifest) or of the pseudo-label folder (generic layout)."""
    man = folder / "manifest.jsonl"
    if man.is_file():
        recs = [json.loads(ln) for ln in man.read_text().splitlines() if ln.strip()]
        return [(r["id"], folder / r["image"], folder / r["mask"], folder / r["fov"]) for r in recs]
    d = folder / "train"  # retinasynth pseudo-label writes the training split only
    return [(p.stem, p, d / "masks" / p.name, d / "fov" / p.name) for p in sorted((d / "images").glob("*.png"))]


def _disc_contrast(image: np.ndarray, fov: np.ndarray) -> float:
    """How much the brightest 0.5% of the FOV (the optic disc, in a fundus photograph) stands above its median:
    Lab lightness, 0-255 scale. Reported beside the rule, not part of it (added after the first run showed red
    discs)."""
    import cv2

    light = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0][fov.astype(bool)].astype(np.float32)
    return float(np.percentile(light, 99.5) - np.median(light)) if light.size else 0.0


def _texture(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """The green channel's local contrast, |3x3 Laplacian|, at every FOV pixel 2 px or more inside its edge (the
    FOV's rim would otherwise dominate)."""
    import cv2

    lap = np.abs(cv2.Laplacian(image[..., 1].astype(np.float32), cv2.CV_32F, ksize=3))
    inner = cv2.erode(fov.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return lap[inner]


def _fov_look(image: np.ndarray, mask, fov: np.ndarray, size) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The FOV's RGB pixels, its local contrast (:func:`_texture`) and its (disc contrast, disc brightness at the
    vessels' hub), at the segmenter's working resolution. The hub is found on ``mask``: the true mask of a render
    or a source photograph, the pseudo-mask of a target photograph."""
    from retinasynth.data.preprocess import prepare
    from retinasynth.metrics.fidelity import disc_brightness

    w_img, w_mask, w_fov = prepare(image, mask, fov, size)
    hub = disc_brightness(w_img, w_mask.astype(bool), w_fov)["brightness"]
    return w_img[w_fov.astype(bool)], _texture(w_img, w_fov), (_disc_contrast(w_img, w_fov), hub)


def _measure(pairs, model, seg_cfg, dev, visibility: bool) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the segmenter's Dice against the pair's mask (if ``visibility``); the FOV's pixels (RGB, at the
    segmenter's working resolution) and their local contrast, each pooled over pairs; per pair, (disc contrast,
    disc brightness at the hub)."""
    from retinasynth.data.io import read_image, read_mask
    from retinasynth.metrics.seg import dice
    from retinasynth.segmenter.model import segment_at_working_size

    dices, pix, tex, discs = [], [], [], []
    for _, im, mk, fv in pairs:
        image, mask, fov = read_image(im), read_mask(mk, warn_non_binary=False), read_mask(fv, warn_non_binary=False)
        if visibility:
            prob, m, f = segment_at_working_size(model, seg_cfg, image, mask, fov, dev)
            dices.append(float(dice(prob, m, f, threshold=seg_cfg.threshold)))
        px, tx, disc = _fov_look(image, mask, fov, seg_cfg.size)
        pix.append(px)
        tex.append(tx)
        discs.append(disc)
    return dices, np.concatenate(pix, 0), np.concatenate(tex, 0), np.asarray(discs).reshape(-1, 2)


def _distance(a: np.ndarray, b: np.ndarray, n: int = 200_000, seed: int = 0) -> float:
    """Mean over columns (channels) of the 1-D Wasserstein distance between ``a`` and ``b`` (N, C) or (N,), on at
    most ``n`` seeded rows of each."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)
    a = a[rng.choice(len(a), min(n, len(a)), replace=False)].reshape(min(n, len(a)), -1)
    b = b[rng.choice(len(b), min(n, len(b)), replace=False)].reshape(min(n, len(b)), -1)
    return float(np.mean([wasserstein_distance(a[:, c], b[:, c]) for c in range(a.shape[1])]))


def _grid(rows: list[tuple[str, list[Path]]], path: Path, k: int = 4, s: int = 256) -> None:
    import cv2

    from retinasynth.provenance import write_bytes_atomic

    out = []
    for label, files in rows:
        tiles = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (s, s)) for f in files[:k]]
        tiles += [np.zeros((s, s, 3), np.uint8)] * (k - len(tiles))
        row = np.concatenate(tiles, 1)
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        out.append(row)
    # JPEG: the grid is committed with the results, and a PNG of it is over 2 MB
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.concatenate(out, 0), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"could not encode JPEG for {path}")
    write_bytes_atomic(path, buf.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-run", required=True, help="the source generator (a finished fit run)")
    ap.add_argument("--pseudo", required=True, help="retinasynth pseudo-label's folder: the unscored target photographs")
    ap.add_argument("--data", required=True, help="the source dataset (its training masks are rendered)")
    ap.add_argument("--model", required=True, help="a segmenter trained on source labels (benchmark OUT/models/...)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--candidates", default="200:2e-4,800:2e-4,800:5e-5",
                    help="STEPS:LR[:TUNE[:FLAG...]] (flags: guard, anchor) or 'style' (the source run with --style "
                         "on the photographs),...")
    ap.add_argument("--pseudo-guarded", default=None,
                    help="a `pseudo-label --max-disc-offset` folder of the same photographs, for ':guard' candidates")
    ap.add_argument("--min-disc-share", type=float, default=0.8,
                    help="a candidate's disc at the hub must reach this share of the target photographs'")
    ap.add_argument("--n", type=int, default=32, help="renders per generator")
    ap.add_argument("--max-visibility-loss", type=float, default=0.02)
    a = ap.parse_args()

    from retinasynth.data.dataset import DataConfig, load_dataset
    from retinasynth.device import pick_device
    from retinasynth.provenance import run_record, write_csv_atomic, write_json_atomic, write_text_atomic
    from retinasynth.segmenter import load_segmenter

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cands = []  # (name, steps, lr, tune, pseudo folder, style folder, disc anchor)
    style_dir = str(Path(a.pseudo) / "train" / "images")
    for c in a.candidates.split(","):
        if c == "style":
            cands.append(("style", 0, None, None, a.pseudo, style_dir, 0.0))
            continue
        steps, lr, *rest = c.split(":")
        tune, flags = (rest + ["all"])[0], set(rest[1:])
        if flags - {"guard", "anchor"}:
            ap.error(f"candidate {c}: unknown flag(s) {', '.join(sorted(flags - {'guard', 'anchor'}))}; "
                     "valid: guard, anchor")
        guard, anchor = "guard" in flags, 1.0 if "anchor" in flags else 0.0
        if guard and not a.pseudo_guarded:
            ap.error(f"candidate {c}: ':guard' needs --pseudo-guarded")
        # names of the first run's candidates unchanged (their folders are reused)
        name = f"ft{int(steps)}_lr{lr}" + ("" if tune == "all" else f"_{tune}") + ("_guard" if guard else "") + \
            ("_anchor" if anchor else "")
        cands.append((name, int(steps), float(lr), tune, a.pseudo_guarded if guard else a.pseudo, None, anchor))
    _render(a.source_run, a.data, out / "renders-source", a.n)
    runs = {"source": a.source_run}
    for name, steps, lr, tune, pseudo, style, anchor in cands:
        if style:
            runs[name] = a.source_run
        else:
            runs[name] = str(out / name / "fit")
            _fit(a.source_run, pseudo, out / name / "fit", steps, lr, tune, anchor)
        _render(runs[name], a.data, out / name / "renders", a.n, style)

    dev = pick_device(None)
    model, seg_cfg = load_segmenter(a.model, dev)
    _, target_px, target_tex, target_disc = _measure(_pairs(Path(a.pseudo)), model, seg_cfg, dev, visibility=False)
    real_px, real_tex, real_disc = zip(*[_fov_look(s.image, s.mask, s.fov, seg_cfg.size)
                                         for s in load_dataset(a.data, "train", DataConfig()).samples])
    real_px, real_tex, real_disc = np.concatenate(real_px, 0), np.concatenate(real_tex, 0), np.asarray(real_disc)

    def discs(d: np.ndarray) -> dict:
        return {"disc_contrast": float(d[:, 0].mean()), "disc_at_hub": float(d[:, 1].mean()),
                "disc_at_hub_sd": float(d[:, 1].std())}

    blank = {"steps": None, "lr": None, "tune": None, "photographs": None, "visibility_dice": None,
             "visibility_sd": None}
    rows = [{"generator": "source data (real photographs)", **blank, "target_distance": _distance(real_px, target_px),
             "texture_distance": _distance(real_tex, target_tex), **discs(real_disc)},
            {"generator": "target photographs", **blank, "target_distance": 0.0, "texture_distance": 0.0,
             **discs(target_disc)}]
    for name, folder, steps, lr, tune, pseudo in [("source", out / "renders-source", 0, None, None, None)] + \
            [(n, out / n / "renders", s, lr, tune, p) for n, s, lr, tune, p, *_ in cands]:
        d, px, tx, disc = _measure(_pairs(folder), model, seg_cfg, dev, visibility=True)
        rows.append({"generator": name, "steps": steps, "lr": lr, "tune": tune,
                     "photographs": None if pseudo is None else len(_pairs(Path(pseudo))),
                     "visibility_dice": float(np.mean(d)),
                     "visibility_sd": float(np.std(d)), "target_distance": _distance(px, target_px),
                     "texture_distance": _distance(tx, target_tex), **discs(disc)})
        print(f"{name}: visibility Dice {np.mean(d):.4f} (sd {np.std(d):.4f}), target distance "
              f"{rows[-1]['target_distance']:.2f}", flush=True)
    src, min_disc = rows[2], a.min_disc_share * rows[1]["disc_at_hub"]
    ok = [r for r in rows[3:] if r["visibility_dice"] >= src["visibility_dice"] - a.max_visibility_loss
          and r["disc_at_hub"] >= min_disc]
    chosen = min(ok, key=lambda r: (r["target_distance"], r["steps"]))["generator"] if ok else "source"
    style = next((c[5] for c in cands if c[0] == chosen), None)
    res = {"chosen": chosen, "render": {"run": _rel(runs[chosen]), "style": style and _rel(style)}, "rule": f"smallest target distance among candidates whose visibility Dice >= source's "
           f"- {a.max_visibility_loss} and whose disc at the hub >= {a.min_disc_share} x the target photographs' "
           f"({min_disc:.1f}); else the source generator", "rows": rows,
           "inputs": {"source_run": _rel(a.source_run), "pseudo": _rel(a.pseudo),
                      "pseudo_guarded": a.pseudo_guarded and _rel(a.pseudo_guarded), "data": _rel(a.data),
                      "model": _rel(a.model), "n": a.n},
           "command": "python " + " ".join([_rel(__file__), *(_rel(x) if os.path.exists(x) else x
                                                               for x in sys.argv[1:])]),
           "wall_s": time.perf_counter() - t0, "record": run_record(0)}
    write_json_atomic(out / "results.json", res)
    write_csv_atomic(out / "summary.csv", rows)
    lines = ["# Target-look fine-tune, chosen without target labels", "", f"    {res['command']}", "",
             "| generator | steps | lr | tune | photographs | visibility Dice (sd) | target distance | texture distance "
             "| disc contrast | disc at the vessels' hub (sd) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vis = "" if r["visibility_dice"] is None else f"{r['visibility_dice']:.4f} ({r['visibility_sd']:.4f})"
        lines.append(f"| {r['generator']} | {r['steps'] if r['steps'] is not None else ''} | {r['lr'] or ''} | "
                     f"{r['tune'] or ''} | {r['photographs'] or ''} | {vis} | {r['target_distance']:.2f} | "
                     f"{r['texture_distance']:.2f} | {r['disc_contrast']:.1f} | "
                     f"{r['disc_at_hub']:.1f} ({r['disc_at_hub_sd']:.1f}) |")
    lines += ["", f"Rule: {res['rule']}. **Chosen: {chosen}.**", "",
              "Disc contrast (beside the rule) is the brightest 0.5% of the FOV's Lab lightness above its median; "
              "disc at the vessels' hub (in the rule since the second run) is "
              "`retinasynth.metrics.fidelity.disc_brightness` (the brightest spot within 0.15 FOV diameters of "
              "where the mask's large vessels converge, above the median; pseudo-masks for the target "
              "photographs). Photographs: how many target photographs the fine-tune saw ('guard': those whose "
              "brightest spot lies within `--max-disc-offset` of the pseudo-mask's hub). Texture distance (beside the "
              "rule): the Wasserstein distance of the green channel's |3x3 Laplacian| inside the FOV to the target "
              "photographs'. 'style': the source generator's renders with `synthesize --style` on the same "
              "photographs (colours histogram-matched; its target distance is small by construction).", "",
              "![renders](compare.jpg)", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    grid = [("source", [p[1] for p in _pairs(out / "renders-source")])]
    grid += [(c[0], [p[1] for p in _pairs(out / c[0] / "renders")]) for c in cands]
    grid += [("target photographs", [p[1] for p in _pairs(Path(a.pseudo))])]
    _grid(grid, out / "compare.jpg")
    print(f"chosen: {chosen}; {out}/report.md", flush=True)


if __name__ == "__main__":
    main()
