"""`retinasynth synthesize`: render real, perturbed and procedural masks into a synthetic dataset.

Output folder (a generic-layout dataset that `load_dataset` reads directly)::

    images/syn_000000.png  masks/syn_000000.png (0/255)  fov/syn_000000.png
    manifest.jsonl   one line per pair: files, mask source, source mask, recipe, seeds, generator sha256
    metadata.jsonl   the same pairs for the Hugging Face `imagefolder` loader
    synth.json       settings, the generator run and its training data (for leakage checks)
    README.md        dataset card      preview.png   contact sheet

Pair ``p`` depends only on (seed, p): its mask source and mask come from ``default_rng([seed, p //
samples_per_mask])``. Pairs are rendered in fixed chunks of ``batch_size`` (chunk ``p // batch_size`` of the
whole run, rendered whole even where a shard holds only part of it), so a resumed, sharded or torchrun
run writes the same bytes as one uninterrupted run.

Scale-out: under ``torchrun`` (WORLD_SIZE > 1) rank r renders the share ``r/WORLD_SIZE`` into the same
folder, recording its pairs in ``.manifest.rank<r>.inprogress.jsonl``; after the last rank is done, rank 0
writes the one merged manifest, metadata, synth.json, card and preview. Folders of ``--shard i/N`` runs
(e.g. SLURM array tasks) are joined by :func:`merge_shards` into the folder a single run would write. Files are written atomically by worker threads
while the generator renders the next chunk; a pair enters the manifest only once its files exist.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retinasynth.config import from_dict
from retinasynth.data.dataset import DataConfig, load_dataset
from retinasynth.data.preprocess import resize_image, resize_mask
from retinasynth.data.similarity import mask_digest
from retinasynth.device import pick_device
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.locking import clear, entries, hold
from retinasynth.precision import PRECISIONS, describe
from retinasynth.profiles import DEFAULT_SOURCES
from retinasynth.provenance import (
    run_record,
    versions,
    write_json_atomic,
    write_png_atomic,
    write_text_atomic,
)
from retinasynth.rundir import load_generator, read_run_config
from retinasynth.scaleout import init_ranks, parse_share, rank_device
from retinasynth.synth.appearance import (
    DEFAULT_APPEARANCE,
    appearance_seed,
    apply_appearance,
    check_appearance,
)
from retinasynth.synth.sources import MaskFactory, MaskSpec, parse_mix

MANIFEST = "manifest.jsonl"
PARTIAL = ".manifest.inprogress.jsonl"
RANK_PARTIAL = ".manifest.rank{}.inprogress.jsonl"  # one per torchrun rank: ranks never share a file
DROPPED = "filtered_out.jsonl"


@dataclass(frozen=True)
class SynthConfig:
    n: int = 1000
    sources: str = DEFAULT_SOURCES
    seed: int = 0
    samples_per_mask: int = 1
    resolution: int | None = None  # None: the generator's working resolution
    batch_size: int = 8
    shard: str = "0/1"
    workers: int = 2
    stochastic: bool = True  # seeded per pair; chosen on validation (RESULTS.md section 12); always on when samples_per_mask > 1
    ema: bool = True
    filter_model: str | None = None  # a segmentation checkpoint (benchmark-downstream OUT/models/*.safetensors)
    filter_min_dice: float = 0.5
    # The generator's forward pass (retinasynth.precision): auto = bf16 autocast where the hardware computes bf16
    # natively, else fp32. synth.json's settings hold the resolved value: a resume must render at the same one.
    precision: str = "auto"
    # A folder of unlabelled photographs of the target camera: each pair's colours are mapped onto one of them
    # (retinasynth.synth.style); None: the generator's own look. style_strength blends (0: off, 1: full).
    style: str | None = None
    style_strength: float = 1.0
    # A sampled look per pair (retinasynth.synth.appearance): 'camera' = the photometric half of the real+aug
    # arm's camera-shift augmentation, seeded by (seed, pair); 'none': the generator's own look. None (the default):
    # DEFAULT_APPEARANCE, or 'none' with a ``style``, whose camera a sampled look would overwrite.
    appearance: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n <= 0:
            raise ConfigError(f"--n must be a positive integer, got {self.n!r}.")
        for name in ("samples_per_mask", "batch_size", "workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}.")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 32):
            raise ConfigError(f"--resolution must be an integer >= 32, got {self.resolution!r}.")
        parse_mix(self.sources)
        self.shard_range(self.n)
        if not 0.0 <= self.filter_min_dice <= 1.0:
            raise ConfigError(f"--filter-min-dice must be in [0, 1], got {self.filter_min_dice!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {self.precision!r}; valid: {', '.join(PRECISIONS)}.")
        if not (isinstance(self.style_strength, (int, float)) and 0.0 <= self.style_strength <= 1.0):
            raise ConfigError(f"--style-strength must be in [0, 1], got {self.style_strength!r}.")
        if self.appearance is None:
            object.__setattr__(self, "appearance", "none" if self.style else DEFAULT_APPEARANCE)
        check_appearance(self.appearance)

    @property
    def mix(self) -> dict[str, float]:
        return parse_mix(self.sources)

    def shard_range(self, n: int, shard: str | None = None) -> range:
        i, k = parse_share(shard or self.shard, "--shard")
        return range(i * n // k, (i + 1) * n // k)


def _pair_id(p: int) -> str:
    return f"syn_{p:06d}"


def _prepare_out(out: Path, resume: bool, overwrite: bool, settings: dict) -> set[int]:
    """Check/prepare the output folder; return the pair indices already complete (on resume)."""
    if out.exists() and not out.is_dir():
        raise RetinaSynthError(f"{out}: exists and is a file; choose a folder for --out.")
    # A folder holding only the empty sub-folders of a run killed at start-up counts as empty.
    non_empty = out.is_dir() and any(not (p.is_dir() and p.name in ("images", "masks", "fov")
                                          and not any(p.iterdir())) for p in entries(out))
    if non_empty and overwrite:
        clear(out)  # the lock file stays: this process holds it
        non_empty = False
    if non_empty and not resume:
        raise RetinaSynthError(f"{out}: folder is not empty; pass --resume to continue it or --overwrite "
                               "to replace it.")
    done: set[int] = set()
    if non_empty:
        meta = out / "synth.json"
        if not meta.is_file():
            raise RetinaSynthError(f"{out}: not a retinasynth synthetic set (no synth.json); cannot resume.")
        old = _legacy_settings(_read_synth_json(meta)["settings"])
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            raise RetinaSynthError(f"{out}: --resume with different settings ({', '.join(diff)}); use the "
                                   "original ones or --overwrite.")
        for path in _manifest_files(out):
            for rec in _read_manifest(path):
                if all((out / rec[k]).is_file() for k in ("image", "mask", "fov")):
                    done.add(int(rec["pair"]))
        done |= {int(r["pair"]) for r in _read_manifest(out / DROPPED)}
    return done


def _legacy_settings(settings: dict) -> dict:
    """Settings of a set written before ``precision`` (then always fp32), ``style`` or ``appearance`` existed."""
    return {"precision": "fp32", "style": None, "style_strength": 1.0, "appearance": "none", **settings}


def _manifest_files(out: Path) -> list[Path]:
    """The final manifest and every in-progress one (single process and per torchrun rank)."""
    return [out / MANIFEST, out / PARTIAL, *sorted(out.glob(RANK_PARTIAL.format("*")))]


def _read_manifest(path: Path) -> list[dict]:
    """Manifest lines; a line cut short by a kill is ignored."""
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RetinaSynthError(f"{path}: not UTF-8 text (byte {e.start}); the synthetic set is damaged, rerun "
                               "with --overwrite.") from None
    out = []
    for ln in text.splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        # a record without what a pair needs is treated like a cut line: that pair is rendered again
        if isinstance(rec, dict) and isinstance(rec.get("pair"), int) and all(
                isinstance(rec.get(k), str) for k in ("image", "mask", "fov")):
            out.append(rec)
    return out


def _read_synth_json(path: Path) -> dict:
    """A synthetic set's synth.json; damage is one RetinaSynthError that says how to go on."""
    fix = "the synthetic set is damaged; rerun with --overwrite to write it again."
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RetinaSynthError(f"{path}: not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise RetinaSynthError(f"{path}: not valid JSON ({e.msg}); {fix}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise RetinaSynthError(f"{path}: not a retinasynth synth.json (no settings); {fix}")
    return meta


def synthesize(run_dir: str | Path, out: str | Path, cfg: SynthConfig | None = None, *, resume: bool = False,
               overwrite: bool = False, data_root: str | Path | None = None, progress: bool = True,
               device: str | None = None) -> dict:
    """Write ``cfg.n`` synthetic image/mask pairs (this shard's share) rendered by the run's generator.

    Args:
        run_dir: a `retinasynth fit` run directory.
        out: output folder (refused if non-empty unless ``resume`` or ``overwrite``).
        cfg: what to synthesise.
        data_root: the dataset whose training masks feed the real/perturbed sources (default: the
            run's own training data, as recorded in its config.json).

    Returns:
        A summary dict: counts per source, timings (generator-only and total), paths.
    """
    cfg = cfg or SynthConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RetinaSynthError(f"{out}: exists and is a file; choose a folder for --out.")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 holds --out for every rank
        return _synthesize(run_dir, out, cfg, resume, overwrite, data_root, progress, device)
    with hold(out, what="the output folder"):
        return _synthesize(run_dir, out, cfg, resume, overwrite, data_root, progress, device)


def _synthesize(run_dir, out: Path, cfg: SynthConfig, resume: bool, overwrite: bool, data_root, progress: bool,
                device) -> dict:
    ranks = init_ranks()
    if ranks.distributed and cfg.shard != "0/1":
        raise ConfigError(f"--shard {cfg.shard} under torchrun: each rank already takes its share from "
                          "RANK/WORLD_SIZE; drop --shard (or run the shards as separate jobs and merge them).")
    device = rank_device(device, ranks)
    shard_range = (cfg.shard_range(cfg.n, f"{ranks.rank}/{ranks.world}") if ranks.distributed
                   else cfg.shard_range(cfg.n))
    run_cfg = read_run_config(run_dir)
    gen = load_generator(run_dir, ema=cfg.ema, device=device, precision=cfg.precision)
    if cfg.filter_model:  # a damaged filter checkpoint is refused before anything is written
        from retinasynth.segmenter import load_segmenter

        load_segmenter(cfg.filter_model)
    styles, style_sigs = [], []
    if cfg.style:  # a missing or empty folder is refused before anything is written
        from retinasynth.synth.style import load_styles

        styles, style_sigs = load_styles(cfg.style)
    size = gen.size
    res = cfg.resolution or size
    stochastic = cfg.stochastic or cfg.samples_per_mask > 1
    mix = cfg.mix
    # the resolved precision: the same settings then mean the same bytes (on the same machine)
    settings = {**asdict(cfg), "precision": gen.precision, "generator_sha256": gen.weights_sha256}
    if ranks.main:
        try:
            done = _prepare_out(out, resume, overwrite, settings)
        except RetinaSynthError:
            ranks.agree(True, "to prepare the output folder")
            raise
    ranks.agree(False, "to prepare the output folder")  # no rank writes into a folder rank 0 refused

    run_data = run_cfg["data"]
    train_masks: list = []
    mask_sha: dict[str, str] = {}
    source_data = None
    if any(k in mix for k in ("real", "perturbed")):
        root = Path(data_root or run_data["root"])
        data_cfg = from_dict(DataConfig, {**run_cfg["config"]["data"], "size": size})
        ds = load_dataset(root, "train", data_cfg)  # never a test split
        train_masks = [(s.id, s.mask, s.fov) for s in ds]
        mask_sha = {s.id: mask_digest(s.mask) for s in ds}
        source_data = str(root.resolve())
    factory = MaskFactory(mix, train_masks, size, cfg.seed)

    record = run_record(cfg.seed)
    meta = {"settings": settings, "run_dir": str(Path(run_dir).resolve()), "generator_sha256": gen.weights_sha256,
            "run_data": {k: run_data.get(k) for k in ("root", "layout", "train_ids", "val_ids", "config",
                                                       "fingerprint", "sample_fingerprints", "image_signatures")},
            "labelled_images": run_cfg.get("labelled_images"), "init_from": run_cfg.get("init_from"),
            "n": cfg.n, "resolution": res, "mix": mix, "stochastic": stochastic,
            "precision": describe(gen.precision, gen.device),
            "memory_format": "channels_last" if gen.channels_last else "contiguous", "record": record,
            "status": "running"}
    if styles:
        from retinasynth.data.similarity import encode_signature

        meta["style"] = {"folder": cfg.style, "n": len(styles), "ids": [st.id for st in styles],
                         "strength": cfg.style_strength, "labels_used": False,
                         "image_signatures": {st.id: encode_signature(sig) for st, sig in zip(styles, style_sigs)}}
    if ranks.main:
        write_json_atomic(out / "synth.json", meta)
        for sub in ("images", "masks", "fov"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    if ranks.distributed:
        ranks.barrier()  # rank 0 has checked (and on --overwrite emptied) --out before any rank writes
        if not ranks.main:
            done = {int(r["pair"]) for path in _manifest_files(out) for r in _read_manifest(path)
                    if all((out / r[k]).is_file() for k in ("image", "mask", "fov"))}
            done |= {int(r["pair"]) for r in _read_manifest(out / DROPPED)}

    todo = [p for p in shard_range if p not in done]
    chunks: dict[int, list[int]] = {}
    for p in todo:
        chunks.setdefault(p // cfg.batch_size, []).append(p)
    vers = {k: v for k, v in versions().items() if k in ("retinasynth", "torch", "numpy", "cv2")}
    base_line = {"generator_sha256": gen.weights_sha256, "precision": gen.precision, "run_dir": meta["run_dir"],
                 "versions": vers}

    def masks_for(pairs: list[int]) -> dict[int, MaskSpec]:
        return {mi: factory(mi) for mi in sorted({p // cfg.samples_per_mask for p in pairs})}

    def write_pair(p: int, image: np.ndarray, spec: MaskSpec) -> dict:
        mask, fov = spec.mask, spec.fov
        style_id = None
        if styles:
            from retinasynth.synth.style import match_style, pick

            _, style = pick(styles, cfg.seed, p)
            image, style_id = match_style(image, fov, style, cfg.style_strength), style.id
        look_seed = None
        if cfg.appearance != "none":
            look_seed = appearance_seed(cfg.seed, p)
            image = apply_appearance(cfg.appearance, image, fov, look_seed)
        if res != size:
            image = resize_image(image, (res, res))
            fov = resize_mask(fov, (res, res), thin=False)
            mask = resize_mask(mask, (res, res)) & fov
        pid = _pair_id(p)
        files = {"image": f"images/{pid}.png", "mask": f"masks/{pid}.png", "fov": f"fov/{pid}.png"}
        write_png_atomic(out / files["image"], image)
        write_png_atomic(out / files["mask"], mask.astype(np.uint8) * 255)
        write_png_atomic(out / files["fov"], fov.astype(np.uint8) * 255)
        return {"id": pid, "pair": p, **files, "source": spec.source, "source_mask_id": spec.source_mask_id,
                "source_split": "train" if spec.source_mask_id else None,
                "source_data": source_data if spec.source_mask_id else None,
                # the source mask's content: the benchmark checks it against the evaluated masks
                "source_mask_sha256": mask_sha.get(spec.source_mask_id) if spec.source_mask_id else None,
                "recipe": spec.recipe,
                "procedural": spec.info, "seed": [cfg.seed, p // cfg.samples_per_mask],
                "sample_index": p % cfg.samples_per_mask, "stochastic": stochastic,
                "render_seed": (cfg.seed * 1_000_003 + p) if stochastic else None,
                **({"style_id": style_id} if styles else {}),
                **({"appearance": cfg.appearance, "appearance_seed": look_seed} if look_seed is not None else {}),
                **base_line}

    gen_time, t_start = 0.0, time.perf_counter()
    bar = None
    if progress and ranks.main:
        from retinasynth.progress import progress as progress_bar

        bar = progress_bar(total=len(shard_range), initial=len(shard_range) - len(todo),
                           desc="synthesize", unit="pair", dynamic_ncols=True)
    keys = sorted(chunks)
    partial = out / (RANK_PARTIAL.format(ranks.rank) if ranks.distributed else PARTIAL)
    if partial.is_file() and partial.stat().st_size and not partial.read_bytes().endswith(b"\n"):
        # A line cut short by a kill: end it, or the next record would be glued onto it and lost.
        with open(partial, "a") as f:
            f.write("\n")
    with ThreadPoolExecutor(cfg.workers) as pool, open(partial, "a") as manifest:
        pending: list[Future] = []
        nxt = pool.submit(masks_for, chunks[keys[0]]) if keys else None
        for k_i, k in enumerate(keys):
            specs = nxt.result()
            nxt = pool.submit(masks_for, chunks[keys[k_i + 1]]) if k_i + 1 < len(keys) else None
            pairs = chunks[k]
            t0 = time.perf_counter()
            if stochastic:
                images = [gen.render(specs[p // cfg.samples_per_mask].mask, specs[p // cfg.samples_per_mask].fov,
                                     stochastic=True, seed=cfg.seed * 1_000_003 + p)[0] for p in pairs]
            else:
                # Render the whole fixed chunk of the run, so bytes never depend on which pairs were
                # already done or where a shard boundary cuts the chunk.
                full = list(range(k * cfg.batch_size, min((k + 1) * cfg.batch_size, cfg.n)))
                if len(full) != len(pairs):
                    specs = masks_for(full)
                rendered = gen.render([specs[p // cfg.samples_per_mask].mask for p in full],
                                      [specs[p // cfg.samples_per_mask].fov for p in full])
                images = [rendered[full.index(p)] for p in pairs]
            gen_time += time.perf_counter() - t0
            pending += [pool.submit(write_pair, p, img, specs[p // cfg.samples_per_mask])
                        for p, img in zip(pairs, images)]
            pending = _drain(pending, manifest, bar, block=len(pending) > 2 * cfg.batch_size)
        _drain(pending, manifest, bar, block=True)
    if bar is not None:
        bar.close()
    total = time.perf_counter() - t_start
    n_todo = len(todo)
    if ranks.distributed:
        # A collective: every rank has finished and closed its partial manifest after this.
        n_todo = ranks.sum([len(todo)])[0]
        if not ranks.main:
            ranks.finish()  # wait for rank 0's merged manifest, card and preview
            return {"out": str(out), "n": len(shard_range), "counts": {}, "rank": ranks.rank,
                    "timing": {"pairs_this_call": len(todo), "generator_s": gen_time, "total_s": total}}
        shard_range = range(cfg.n)

    lines = {r["pair"]: r for path in _manifest_files(out) for r in _read_manifest(path)}
    dropped = {r["pair"]: r for r in _read_manifest(out / DROPPED)}
    shard = [p for p in shard_range if p not in dropped]
    missing = [p for p in shard if p not in lines]
    if missing:
        raise RetinaSynthError(f"{out}: {len(missing)} pairs missing after synthesis (first {missing[:5]}); "
                               "rerun with --resume.")
    ordered = [lines[p] for p in shard]
    write_text_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in ordered))
    for path in _manifest_files(out)[1:]:
        path.unlink(missing_ok=True)
    if cfg.filter_model:
        ordered = consistency_filter(out, ordered, cfg.filter_model, cfg.filter_min_dice, device, progress)
    write_text_atomic(out / "metadata.jsonl", _metadata(ordered))
    counts = Counter(r["source"] for r in ordered)
    if cfg.filter_model and not ordered:
        from retinasynth.data.io import warn_once

        warn_once(f"{out}: the consistency filter dropped every pair (min Dice {cfg.filter_min_dice}); "
                  "see filtered_out.jsonl and lower --filter-min-dice.")
    timing = {"pairs_this_call": n_todo, "generator_s": gen_time, "total_s": total,
              "pairs_per_s": n_todo / total if total > 0 else None,
              "overhead_vs_generator": (total / gen_time - 1) if gen_time > 0 else None}
    if ranks.distributed:
        timing["world_size"] = ranks.world  # generator_s/total_s: rank 0's
    meta.update(status="complete", counts=dict(counts), timing=timing,
                filtered_out=len(_read_manifest(out / DROPPED)))
    _finish(out, meta, ordered, run_cfg)
    ranks.finish()
    return {"out": str(out), "n": len(ordered), "counts": dict(counts), "timing": timing}


def _finish(out: Path, meta: dict, ordered: list[dict], run_cfg: dict | None) -> None:
    """synth.json, the dataset card and the preview of a complete folder."""
    write_json_atomic(out / "synth.json", meta)
    write_text_atomic(out / "README.md", _dataset_card(meta, run_cfg, len(ordered)))
    write_png_atomic(out / "preview.png", contact_sheet(out, ordered[:16]))


# Fields of synth.json that differ between runs that wrote the same pairs: when and where (record) and
# how long (timing). merge_shards keeps the first shard's record and lists the shards under timing.
VOLATILE = ("record", "timing")
# Settings that choose the share of pairs, not what any pair is.
_SHARE_KEYS = ("shard",)


def merge_shards(out: str | Path, shard_dirs: list[str | Path], *, overwrite: bool = False) -> dict:
    """Join the folders of ``--shard i/N`` runs (all N of them, same settings otherwise) into ``out``.

    The result is the folder one run with the same seed and batch size writes: every image, mask and
    FOV file, manifest.jsonl, metadata.jsonl, filtered_out.jsonl, README.md and preview.png are
    byte-identical, and so is synth.json apart from ``record`` and ``timing`` (:data:`VOLATILE`).

    Raises:
        RetinaSynthError (one line): a shard is incomplete, missing, repeated or from another run.
    """
    out = Path(out)
    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise ConfigError("merge: name the shard folders to merge.")
    metas = []
    for d in dirs:
        f = d / "synth.json"
        if not f.is_file():
            raise RetinaSynthError(f"{d}: not a retinasynth synthetic set (no synth.json); cannot merge it.")
        m = _read_synth_json(f)
        if m.get("status") != "complete":
            raise RetinaSynthError(f"{d}: shard {m['settings'].get('shard')} is not complete; finish it with "
                                   "--resume before merging.")
        metas.append(m)
    ref = metas[0]
    fixed = ("settings", "run_dir", "generator_sha256", "run_data", "n", "resolution", "mix", "stochastic")
    for d, m in zip(dirs[1:], metas[1:]):
        s0 = {k: v for k, v in _legacy_settings(ref["settings"]).items() if k not in _SHARE_KEYS}
        s1 = {k: v for k, v in _legacy_settings(m["settings"]).items() if k not in _SHARE_KEYS}
        diff = sorted({k for k in s0.keys() | s1.keys() if s0.get(k) != s1.get(k)}
                      | {k for k in fixed[1:] if ref.get(k) != m.get(k)})
        if diff:
            raise RetinaSynthError(f"{d}: not a shard of the same run as {dirs[0]} (differs in "
                                   f"{', '.join(diff)}); merge only shards of one synthesis.")
    shares = [parse_share(m["settings"]["shard"], "--shard") for m in metas]
    k = shares[0][1]
    got = sorted(i for i, _ in shares)
    if any(n != k for _, n in shares) or got != list(range(k)):
        raise RetinaSynthError(f"merge: shards {', '.join(m['settings']['shard'] for m in metas)} are not the "
                               f"shards 0/{k}..{k - 1}/{k} of one run, each once.")
    if out.exists() and not out.is_dir():
        raise RetinaSynthError(f"{out}: exists and is a file; choose a folder for --merge.")
    with hold(out, what="the output folder"):
        return _merge(out, dirs, metas, shares, overwrite)


def _merge(out: Path, dirs: list[Path], metas: list[dict], shares, overwrite: bool) -> dict:
    if entries(out):
        if not overwrite:
            raise RetinaSynthError(f"{out}: folder is not empty; choose a new folder or pass --overwrite.")
        clear(out)
    for sub in ("images", "masks", "fov"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ordered, dropped = [], []
    for _share, d in sorted(zip(shares, dirs), key=lambda x: x[0][0]):
        recs = _read_manifest(d / MANIFEST)
        for r in recs:
            for key in ("image", "mask", "fov"):
                shutil.copyfile(d / r[key], out / r[key])
        ordered += recs
        dropped += _read_manifest(d / DROPPED)
    ordered.sort(key=lambda r: r["pair"])
    write_text_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in ordered))
    if dropped:
        dropped.sort(key=lambda r: r["pair"])
        write_text_atomic(out / DROPPED, "".join(json.dumps(r) + "\n" for r in dropped))
    write_text_atomic(out / "metadata.jsonl", _metadata(ordered))
    counts = Counter(r["source"] for r in ordered)
    ref = metas[0]
    meta = {**ref, "settings": {**ref["settings"], "shard": "0/1"}, "counts": dict(counts),
            "timing": {"merged_from": [str(d.resolve()) for d in dirs],
                       "shards": {m["settings"]["shard"]: m.get("timing") for m in metas}},
            "filtered_out": len(dropped)}
    _finish(out, meta, ordered, None)
    return {"out": str(out), "n": len(ordered), "counts": dict(counts), "shards": len(dirs)}


def _metadata(ordered: list[dict]) -> str:
    return "".join(json.dumps({
        "file_name": r["image"], "mask_file_name": r["mask"], "fov_file_name": r["fov"], "source": r["source"],
        "source_mask_id": r["source_mask_id"]}) + "\n" for r in ordered)


def consistency_filter(out: Path, recs: list[dict], model_path: str, min_dice: float, device: str | None,
                       progress: bool) -> list[dict]:
    """Segment every synthetic image with a segmenter trained on real data; drop pairs whose segmentation
    disagrees with their mask (Dice inside the FOV below ``min_dice``).

    Each pair is scored as the benchmark would score it: image, mask and FOV brought to the segmenter's
    working resolution, its input preprocessing and inference window, binarised at its threshold.

    Scores go into the manifest (``consistency_dice``); dropped pairs' files are deleted and their
    manifest lines moved to ``filtered_out.jsonl``, so a resume does not render them again.
    """

    from retinasynth.data.io import read_image, read_mask
    from retinasynth.metrics.seg import dice
    from retinasynth.segmenter import load_segmenter
    from retinasynth.segmenter.model import segment_at_working_size

    dev = pick_device(device)
    model, seg_cfg = load_segmenter(model_path, dev)
    kept, dropped = [], []
    it = recs
    if progress:
        from retinasynth.progress import progress as progress_bar

        it = progress_bar(recs, desc="consistency filter", unit="pair", dynamic_ncols=True)
    for r in it:
        if "consistency_dice" not in r:
            prob, mask, fov = segment_at_working_size(
                model, seg_cfg, read_image(out / r["image"]), read_mask(out / r["mask"], warn_non_binary=False),
                read_mask(out / r["fov"], warn_non_binary=False), dev)
            r = {**r, "consistency_dice": float(dice(prob, mask, fov, threshold=seg_cfg.threshold)),
                 "consistency_model": str(Path(model_path).resolve())}
        (kept if r["consistency_dice"] >= min_dice else dropped).append(r)
    if dropped:
        with open(out / DROPPED, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in dropped)
        for r in dropped:
            for k in ("image", "mask", "fov"):
                (out / r[k]).unlink(missing_ok=True)
    write_text_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _drain(pending: list[Future], manifest, bar, block: bool) -> list[Future]:
    """Record finished writes in the manifest, in order; keep the rest pending."""
    while pending and (block or pending[0].done()):
        rec = pending.pop(0).result()
        manifest.write(json.dumps(rec) + "\n")
        manifest.flush()
        if bar is not None:
            bar.update(1)
    return pending


def contact_sheet(out: Path, recs: list[dict], tile: int = 160, cols: int = 4, zoom: int = 2) -> np.ndarray:
    """Image | mask tiles of the first pairs, ``cols`` pairs per row; below them, for the first ``cols // 2``
    pairs, a crop at full resolution (1:1 pixels, shown ``zoom`` times larger, nearest) of the mask and the
    image side by side, where the mask's vessels are densest, so that thin vessels can be judged by eye."""
    from retinasynth.data.io import read_image, read_mask

    if not recs:  # every pair filtered out: an empty sheet rather than no file
        return np.zeros((tile, 2 * tile * cols, 3), np.uint8)
    tiles, zooms = [], []
    side = tile * zoom  # a zoomed panel's side; a mask | image pair of panels fills the width of cols/2 tiles
    for i, r in enumerate(recs):
        full = read_image(out / r["image"])
        mask = read_mask(out / r["mask"], warn_non_binary=False)
        img = resize_image(full, (tile, tile))
        m = resize_mask(mask, (tile, tile))
        tiles.append(np.concatenate([img, np.repeat(m[:, :, None].astype(np.uint8) * 255, 3, 2)], axis=1))
        if i < cols // 2:
            zooms.append(_zoom_pair(full, mask, side // zoom, side))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    width = rows[0].shape[1]
    strip = np.zeros((side, width, 3), np.uint8)
    x = 0
    for z in zooms:
        if x + z.shape[1] > width:
            break
        strip[:, x:x + z.shape[1]] = z
        x += z.shape[1]
    return np.concatenate([*rows, strip], axis=0)


def _zoom_pair(image: np.ndarray, mask: np.ndarray, crop: int, side: int) -> np.ndarray:
    """Mask | image, a ``crop`` x ``crop`` window at full resolution where the mask is densest, each enlarged
    (nearest neighbour) to ``side`` x ``side``."""
    import cv2

    h, w = mask.shape
    c = min(crop, h, w)
    dens = cv2.boxFilter(mask.astype(np.float32), -1, (c, c), normalize=False, borderType=cv2.BORDER_CONSTANT)
    lo_y, lo_x = c // 2, c // 2
    inner = dens[lo_y:h - (c - c // 2) + 1, lo_x:w - (c - c // 2) + 1]
    cy, cx = np.unravel_index(int(np.argmax(inner)), inner.shape) if inner.size else (0, 0)
    y0, x0 = int(cy), int(cx)
    win_m = mask[y0:y0 + c, x0:x0 + c]
    win_i = image[y0:y0 + c, x0:x0 + c]
    big_m = cv2.resize(win_m.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
    big_i = cv2.resize(win_i, (side, side), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([np.repeat(big_m[:, :, None], 3, 2), big_i], axis=1)


_TERMS = {
    "drive": ("DRIVE", "J. Staal et al., Ridge-based vessel segmentation in color images of the retina, "
              "IEEE TMI 23(4):501-509, 2004", "research use only; no redistribution of the original images"),
    "kaggle": ("Kaggle 'Retina Blood Vessel' (DRIVE resized to 512x512)", "the DRIVE paper (Staal et al., 2004)",
               "as DRIVE: research use only"),
    "chase": ("CHASE_DB1", "Fraz et al., IEEE TBME 59(9):2538-2548, 2012", "see the CHASE_DB1 terms"),
    "stare": ("STARE", "Hoover et al., IEEE TMI 19(3):203-210, 2000", "see the STARE terms"),
    "hrf": ("HRF", "Budai et al., Int. J. Biomed. Imaging 2013:154860", "see the HRF terms"),
}


def _appearance_line(settings: dict) -> str:
    look = settings.get("appearance", "none")
    if look == "none":
        return ""
    return (f"\n- Look: `--appearance {look}`: each pair's colours, contrast, illumination, blur, noise and JPEG "
            "quality sampled\n  per pair (seeded; `appearance_seed` in `manifest.jsonl`); the masks are unchanged.")


def _dataset_card(meta: dict, run_cfg: dict, n: int) -> str:
    layout = meta["run_data"].get("layout")
    name, cite, terms = _TERMS.get(layout, (f"{layout} dataset", "see its source", "see its source's terms"))
    counts = "\n".join(f"| {k} | {v} |" for k, v in sorted(meta["counts"].items()))
    s = meta["settings"]
    return f"""# Synthetic retinal fundus images with vessel masks (retinasynth)

{n} synthetic fundus photographs at {meta['resolution']}x{meta['resolution']}, each with the binary vessel
mask it was rendered from (`masks/`, 0/255) and a field-of-view mask (`fov/`). Generic layout: load it
with `retinasynth.data.load_dataset(DIR, "all")`, or with Hugging Face `datasets` as
`load_dataset("imagefolder", data_dir=DIR)` (`metadata.jsonl`).

## How it was made
- Generator: Pix2Pix U-Net from the run `{meta['run_dir']}` ({'EMA' if s['ema'] else 'raw'} weights,
  sha256 `{meta['generator_sha256']}`, rendered at {s.get('precision', 'fp32')}), trained on the training split of {name}
  (`{meta['run_data'].get('root')}`, {len(meta['run_data'].get('train_ids') or [])} images).
- Masks: mix {s['sources']}; seed {s['seed']}; {s['samples_per_mask']} image(s) per mask
  ({'stochastic' if meta['stochastic'] else 'deterministic'} rendering).{_appearance_line(s)}
  Real and perturbed masks come from the training split only; every pair's source mask and
  perturbation recipe are in `manifest.jsonl`.

| mask source | pairs |
|---|---|
{counts}

## Terms and citation
The generator learned from {name}: {terms}. Treat these synthetic images under the same terms, and cite
{cite}.

## Limitations
The images are as realistic as the generator; they can carry its artefacts. Use them to augment real
data, and measure the benefit with `retinasynth benchmark-downstream`, which refuses synthetic sets that
saw the evaluation images.
"""
