"""Leakage guards: a synthetic set may only derive from images and masks that are not evaluated.

Checks, each raising a one-line :class:`RetinaSynthError` that names the offending file(s):

1. ``manifest.jsonl``: every pair's ``source_split`` is 'train' or null, and no ``source_mask_id`` is an
   evaluated id when ``source_data`` is the evaluated dataset's folder.
2. Masks, by content, wherever the files live: the recorded source mask of every real or perturbed pair
   (``source_mask_sha256``) and every stored synthetic mask are compared with the evaluated masks brought
   to the run's preprocessing (exact), and every synthetic mask with every evaluated mask by near-duplicate
   signature (``MASK_THRESHOLD``; robust to the perturbations of ``synthesize``, flips, small rotations).
3. ``synth.json``: the generator run's training images share no image with the evaluated ones: exact
   (``run_data.sample_fingerprints`` against the evaluated images at the run's preprocessing) and near
   duplicate (``run_data.image_signatures``, or recomputed from ``run_data.root`` by the recorded ids,
   against the evaluated images' signatures: ``IMAGE_THRESHOLD``; robust to resizing, squashing,
   re-encoding, flips, mild crops, brightness and gamma); nor, when the run's data folder is the
   evaluated one, any id. The evaluated images are the very samples scored, selected by id.
4. No synthetic image is identical or a near duplicate of an evaluated image.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retinasynth.config import from_dict
from retinasynth.data.dataset import DataConfig, Dataset, load_dataset
from retinasynth.data.io import read_mask
from retinasynth.data.preprocess import prepare
from retinasynth.data.similarity import (
    IMAGE_THRESHOLD,
    MASK_THRESHOLD,
    decode_signature,
    image_signature,
    mask_digest,
    mask_signature,
    similarity_matrix,
)
from retinasynth.errors import RetinaSynthError
from retinasynth.provenance import fingerprint_arrays

MANIFEST = "manifest.jsonl"
SYNTH_META = "synth.json"
ALLOWED_SPLITS = ("train", None)


def _val_fix(ev, otherwise: str) -> str:
    """The fix for a leak into the held-out images of eval=val: a generator fitted without them."""
    if ev.name != "val":
        return otherwise
    return ("for eval=val, fit a generator without the held-out images (retinasynth fit ... "
            f"-o data.exclude={','.join(sorted(ev.ids))}) and synthesize from it.")


class LeakageError(RetinaSynthError):
    """The synthetic set (or its generator) saw evaluated images or masks; never overridable."""


@dataclass
class EvalSet:
    """One evaluated split: ``work`` at the benchmark's working resolution, ``native`` as stored."""

    name: str
    root: Path
    split: str
    work: Dataset
    native: Dataset
    extra: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return self.work.ids

    def image_signatures(self) -> list:
        """Near-duplicate signatures of the evaluated images (native), computed once per eval set."""
        if "image_signatures" not in self.extra:
            self.extra["image_signatures"] = [image_signature(s.image, s.fov) for s in self.native.samples]
        return self.extra["image_signatures"]


def _resolve(p) -> Path | None:
    try:
        return Path(p).expanduser().resolve() if p else None
    except (OSError, RuntimeError):
        return None


def run_data_root(run_data: dict, run_dir) -> Path | None:
    """The generator's training data folder. Older runs stored it relative to the directory `fit` ran in:
    try the current directory, then the folders above the run directory."""
    root = run_data.get("root")
    if not root:
        return None
    p = Path(root).expanduser()
    if p.is_absolute():
        return _resolve(p)
    bases = [Path.cwd()]
    if run_dir:
        rd = Path(run_dir)
        bases += [rd, *rd.parents[:3]]
    for base in bases:
        if (base / p).is_dir():
            return _resolve(base / p)
    return _resolve(p)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RetinaSynthError(f"{path}: not UTF-8 text (byte {e.start}); the {what} is damaged: write it again "
                               "with `retinasynth synthesize`.") from None
    except OSError as e:
        raise RetinaSynthError(f"{path}: cannot be read ({e.strerror}).") from None


def read_manifest(path: Path) -> list[tuple[int, dict]]:
    out = []
    for lineno, line in enumerate(_read_text(path, "synthetic set").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise RetinaSynthError(f"{path}:{lineno}: not valid JSON ({e.msg}); the synthetic set is damaged.") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise RetinaSynthError(f"{path}:{lineno}: expected a JSON object with an 'id'; the synthetic set is damaged.")
        out.append((lineno, rec))
    return out


def _check_manifest(path: Path, entries: list[tuple[int, dict]], evals: list[EvalSet], run_root: Path | None,
                    synth_ids: list[str]) -> None:
    listed = set()
    for lineno, rec in entries:
        sid = rec["id"]
        listed.add(str(sid))
        split = rec.get("source_split")
        if split not in ALLOWED_SPLITS:
            raise LeakageError(f"{path}:{lineno}: pair {sid!r} has source_split {split!r}; synthetic pairs "
                                   "may only use training masks (source_split 'train' or null). Refusing: "
                                   "it would leak evaluation data.")
        mask_id = rec.get("source_mask_id")
        if mask_id is None:
            continue
        src = _resolve(rec.get("source_data")) or run_root
        for ev in evals:
            if src is not None and src == _resolve(ev.root) and str(mask_id) in set(ev.ids):
                raise LeakageError(f"{path}:{lineno}: pair {sid!r} was made from mask {mask_id!r} of "
                                       f"{ev.root}, which is in the evaluated {ev.name} split. Refusing: it "
                                       "would leak evaluation data; "
                                       + _val_fix(ev, "synthesize from training masks only."))
    missing = sorted(set(synth_ids) - listed)
    if missing:
        raise RetinaSynthError(f"{path}: {len(missing)} synthetic pair(s) have no manifest line "
                               f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); their origin "
                               "cannot be verified.")


def _at(ev: EvalSet, cfg: DataConfig, size: int | None) -> list[tuple]:
    """The evaluated samples (the very ones scored, by id) brought to another preprocessing:
    [(id, source file, image, mask, fov)]."""
    out = []
    for s in ev.native.samples:
        image, mask, fov = prepare(s.image, s.mask, s.fov, size, cfg.fit, cfg.crop_fov)
        out.append((s.id, s.mask_source or s.source, image, mask, fov))
    return out


def _run_samples(meta_path: Path, run_data: dict, run_cfg: DataConfig, root: Path | None, need: bool):
    """The generator's training samples, reloaded from its data folder by the recorded ids (None when the
    folder is not needed because fingerprints and signatures are recorded)."""
    if not need:
        return None
    ids = set(run_data.get("train_ids") or []) | set(run_data.get("val_ids") or [])
    if root is None or not root.is_dir():
        raise RetinaSynthError(f"{meta_path}: run_data lacks sample_fingerprints/image_signatures and its training "
                               f"data folder {run_data.get('root')!r} is not available to recompute them; the "
                               "generator's training images cannot be checked against the evaluated images.")
    ds = load_dataset(root, "all", run_cfg)
    return [s for s in ds.samples if not ids or s.id in ids]


def _check_run(meta_path: Path, meta: dict, evals: list[EvalSet]) -> dict:
    run_data = meta.get("run_data")
    if not isinstance(run_data, dict) or not isinstance(run_data.get("config"), dict):
        raise RetinaSynthError(f"{meta_path}: has no run_data.config; the generator's training data cannot be "
                               "verified (was it written by `retinasynth synthesize`?).")
    try:
        run_cfg = from_dict(DataConfig, run_data["config"], "run_data.config.")
    except RetinaSynthError as e:
        raise RetinaSynthError(f"{meta_path}: {e}") from None
    run_root = run_data_root(run_data, meta.get("run_dir"))
    trained_ids = [str(i) for i in (run_data.get("train_ids") or []) + (run_data.get("val_ids") or [])]
    fps, sigs = run_data.get("sample_fingerprints"), run_data.get("image_signatures")
    samples = _run_samples(meta_path, run_data, run_cfg, run_root, not fps or not sigs)
    if not fps:
        fps = {s.id: fingerprint_arrays([("image", s.image)]) for s in samples}
    if sigs:
        try:
            run_sigs = {str(i): decode_signature(t) for i, t in sigs.items()}
        except (ValueError, TypeError, AttributeError) as e:
            raise RetinaSynthError(f"{meta_path}: run_data.image_signatures is damaged ({e}); re-run "
                                   "`retinasynth synthesize` from the run.") from None
    else:
        run_sigs = {s.id: image_signature(s.image, s.fov) for s in samples}
    by_fp: dict[str, str] = {fp: i for i, fp in fps.items()}
    checked = []
    for ev in evals:
        if run_root is not None and run_root == _resolve(ev.root):
            both = sorted(set(trained_ids) & set(ev.ids))
            if both:
                raise LeakageError(f"{meta_path}: the generator run {meta.get('run_dir')} was trained on "
                                   f"{len(both)} image(s) of the evaluated {ev.name} split of {ev.root} "
                                   f"({', '.join(both[:5])}). Refusing: "
                                   + _val_fix(ev, "train the generator on the training split only."))
        ref = _at(ev, run_cfg, run_cfg.size)
        hits = [(i, by_fp[fp]) for i, _, img, _, _ in ref if (fp := fingerprint_arrays([("image", img)])) in by_fp]
        if hits:
            shown = ", ".join(f"{a} (= run image {b})" for a, b in hits[:5])
            raise LeakageError(f"{meta_path}: the generator run {meta.get('run_dir')} was trained on "
                               f"{len(hits)} image(s) of the evaluated {ev.name} split of {ev.root}: "
                               f"{shown}. Refusing: train the generator on images not evaluated here.")
        ev_sigs = ev.image_signatures()
        run_ids = list(run_sigs)
        sim = similarity_matrix(ev_sigs, [run_sigs[i] for i in run_ids])
        if sim.size and sim.max() >= IMAGE_THRESHOLD:
            e, r = np.unravel_index(int(np.argmax(sim)), sim.shape)
            s = ev.native.samples[e]
            where = f"{run_root}" if run_root else str(run_data.get("root"))
            raise LeakageError(f"{meta_path}: generator training image {run_ids[r]!r} (in {where}) is a near "
                               f"duplicate of evaluated {ev.name} image {s.source} (similarity {sim.max():.3f} >= "
                               f"{IMAGE_THRESHOLD}; resized, re-encoded, flipped or cropped copies score this "
                               "high). Refusing: train the generator on images not evaluated here.")
        checked.append({"eval": ev.name, "images": len(ref), "run_images": len(fps),
                        "max_image_similarity": float(sim.max()) if sim.size else None})
    return {"run_dir": meta.get("run_dir"), "generator_sha256": meta.get("generator_sha256"),
            "labelled_images": meta.get("labelled_images"), "init_from": meta.get("init_from"),
            "run_data_root": str(run_root) if run_root else run_data.get("root"), "fingerprint_checks": checked,
            "fingerprints_recomputed": not run_data.get("sample_fingerprints"),
            "signatures_recomputed": not run_data.get("image_signatures"),
            "image_threshold": IMAGE_THRESHOLD}


def _check_masks(synth_dir: Path, entries: list[tuple[int, dict]], synth: Dataset, meta: dict,
                 evals: list[EvalSet]) -> dict:
    """Masks by content: exact digests at the run's preprocessing, then near-duplicate signatures."""
    run_data = meta.get("run_data") or {}
    try:
        run_cfg = from_dict(DataConfig, run_data.get("config") or {}, "run_data.config.")
    except RetinaSynthError:
        run_cfg = DataConfig(size=None)
    res = meta.get("resolution") if isinstance(meta.get("resolution"), int) else None
    manifest = synth_dir / MANIFEST
    by_id = {s.id: s for s in synth.samples}
    same_size = res is not None and synth.config.size == res
    worst = 0.0
    for ev in evals:
        digests = {}
        for size in {run_cfg.size, res}:
            for i, src, _, mask, _ in _at(ev, run_cfg, size):
                digests[mask_digest(mask)] = (i, src)
        for lineno, rec in entries:
            sha = rec.get("source_mask_sha256")
            if sha in digests:
                i, src = digests[sha]
                raise LeakageError(f"{manifest}:{lineno}: pair {rec['id']!r} was made from a mask identical to "
                                   f"evaluated {ev.name} mask {src} (id {i}), whatever folder it was read from. "
                                   "Refusing: synthesize from training masks only.")
            s = by_id.get(str(rec["id"]))
            if s is None:
                continue
            mask = s.mask if same_size else _read_mask(synth_dir, rec)
            hit = digests.get(mask_digest(mask)) if mask is not None else None
            if hit:
                raise LeakageError(f"{synth_dir / str(rec.get('mask'))}: synthetic mask is identical to evaluated "
                                   f"{ev.name} mask {hit[1]} (id {hit[0]}). Refusing: it would leak "
                                   "evaluation data.")
        ev_sigs = [mask_signature(s.mask, s.fov) for s in ev.native.samples]
        sigs = [mask_signature(s.mask, s.fov) for s in synth.samples]
        best, e, k = _closest(similarity_matrix(ev_sigs, sigs))
        worst = max(worst, best)
        if best >= MASK_THRESHOLD:
            raise LeakageError(f"{synth.samples[k].mask_source}: synthetic mask {synth.samples[k].id!r} is a near "
                               f"duplicate of evaluated {ev.name} mask {ev.native.samples[e].mask_source} "
                               f"(similarity {best:.3f} >= {MASK_THRESHOLD}; perturbed copies score this "
                               "high, different eyes below). Refusing: synthesize from training masks only.")
    return {"mask_threshold": MASK_THRESHOLD, "max_mask_similarity": worst}


def _read_mask(synth_dir: Path, rec: dict):
    p = synth_dir / str(rec.get("mask"))
    try:
        return read_mask(p, warn_non_binary=False)
    except RetinaSynthError:
        return None


def verify_synthetic(synth_dir: str | Path, synth: Dataset, evals: list[EvalSet],
                     allow_unverified: bool = False) -> dict:
    """Run the leakage guards; returns what was checked (recorded in results.json).

    With ``allow_unverified`` a folder without manifest.jsonl/synth.json (or whose generator data cannot
    be recomputed) is used anyway, with a loud warning; detected leakage is refused regardless.
    """
    synth_dir = Path(synth_dir)
    manifest, meta_path = synth_dir / MANIFEST, synth_dir / SYNTH_META
    missing = [p.name for p in (manifest, meta_path) if not p.is_file()]
    info: dict = {"synth_dir": str(synth_dir.resolve()), "verified": False}
    if missing:
        msg = (f"{synth_dir}: not a retinasynth synthetic set ({' and '.join(missing)} missing), so nothing proves "
               "its images and masks never saw the test split; write one with `retinasynth synthesize`, or pass "
               "--allow-unverified-synth to use it anyway")
        if not allow_unverified:
            raise RetinaSynthError(msg + ".")
        return _unverified(info, f"UNVERIFIED SYNTHETIC SET: {synth_dir} has no {' and '.join(missing)}; "
                                 "leakage from the test split was NOT checked.")
    try:
        meta = json.loads(_read_text(meta_path, "synthetic set"))
    except json.JSONDecodeError as e:
        raise RetinaSynthError(f"{meta_path}: not valid JSON ({e.msg}); the synthetic set is damaged.") from None
    if not isinstance(meta, dict):
        raise RetinaSynthError(f"{meta_path}: expected a JSON object; the synthetic set is damaged.")
    run_root = run_data_root(meta.get("run_data") or {}, meta.get("run_dir"))
    entries = read_manifest(manifest)
    _check_manifest(manifest, entries, evals, run_root, synth.ids)
    info.update(_check_style(meta_path, meta, evals))
    _check_identical(synth_dir, synth, evals)
    info.update(_check_masks(synth_dir, entries, synth, meta, evals))
    try:
        info.update(_check_run(meta_path, meta, evals))
    except LeakageError:
        raise
    except RetinaSynthError as e:
        if not allow_unverified:
            raise
        return _unverified(info, f"UNVERIFIED GENERATOR DATA: {e}")
    sources: dict[str, int] = {}
    for _, rec in entries:
        sources[str(rec.get("source"))] = sources.get(str(rec.get("source")), 0) + 1
    info.update({"verified": True, "manifest_lines": len(entries), "sources": sources})
    return info


def _closest(sim: np.ndarray) -> tuple[float, int, int]:
    """(highest similarity, its evaluated index, its other index) of a similarity matrix; (0, -1, -1) if empty."""
    if not sim.size:
        return 0.0, -1, -1
    e, k = np.unravel_index(int(np.argmax(sim)), sim.shape)
    return float(sim[e, k]), int(e), int(k)


@dataclass(frozen=True)
class ScoredHit:
    """An outside photograph (index ``k`` of its list) that is evaluated image ``source`` of eval set ``eval``."""
    eval: str
    source: str
    k: int
    similarity: float

    def says(self) -> str:
        return f"evaluated {self.eval} image {self.source} (similarity {self.similarity:.3f} >= {IMAGE_THRESHOLD})"


def scored_among(signatures: list, evals: list[EvalSet]) -> tuple[float, ScoredHit | None]:
    """The highest similarity of any of ``signatures`` (photographs from outside the benchmark: style or
    adaptation images) to any evaluated image, and the first that is one (at or over IMAGE_THRESHOLD)."""
    worst = 0.0
    for ev in evals:
        best, e, k = _closest(similarity_matrix(ev.image_signatures(), signatures))
        worst = max(worst, best)
        if best >= IMAGE_THRESHOLD:
            return worst, ScoredHit(ev.name, str(ev.native.samples[e].source), k, best)
    return worst, None


def _check_style(meta_path: Path, meta: dict, evals: list[EvalSet]) -> dict:
    """``synthesize --style DIR``: the target-camera photographs whose colours the renders took must not be
    evaluated images (near-duplicate signatures, the generator guard's threshold)."""
    style = meta.get("style")
    if not isinstance(style, dict):
        return {}
    try:
        sigs = {str(i): decode_signature(t) for i, t in (style.get("image_signatures") or {}).items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise RetinaSynthError(f"{meta_path}: style.image_signatures is damaged ({e}); re-run `retinasynth "
                               "synthesize --style ...`.") from None
    ids = list(sigs)
    worst, hit = scored_among([sigs[i] for i in ids], evals)
    if hit:
        raise LeakageError(f"{meta_path}: style photograph {ids[hit.k]!r} of {style.get('folder')} is "
                           f"{hit.says()}. Refusing: take the style from photographs that are not scored.")
    return {"style": {"n": len(ids), "max_image_similarity": worst}}


def _check_identical(synth_dir: Path, synth: Dataset, evals: list[EvalSet]) -> None:
    fps = {fp: i for i, fp in synth.sample_fingerprints().items()}
    sigs = [image_signature(s.image, s.fov) for s in synth.samples]
    for ev in evals:
        if ev.work.config == synth.config:
            for i, fp in ev.work.sample_fingerprints().items():
                if fp in fps:
                    raise LeakageError(f"{synth_dir}/images: synthetic image {fps[fp]!r} is identical to evaluated "
                                       f"{ev.name} image {i!r} of {ev.root}. Refusing: it would leak evaluation data.")
        sim = similarity_matrix(ev.image_signatures(), sigs)
        if sim.size and sim.max() >= IMAGE_THRESHOLD:
            e, k = np.unravel_index(int(np.argmax(sim)), sim.shape)
            raise LeakageError(f"{synth.samples[k].source}: synthetic image {synth.samples[k].id!r} is a near "
                               f"duplicate of evaluated {ev.name} image {ev.native.samples[e].source} (similarity "
                               f"{sim.max():.3f} >= {IMAGE_THRESHOLD}). Refusing: it would leak evaluation data.")


def _unverified(info: dict, message: str) -> dict:
    warnings.warn(message, stacklevel=3)
    info["warning"] = message
    return info


def verify_real(real_data, train: Dataset, evals: list[EvalSet]) -> dict:
    """The real training images and their masks against every evaluated image: images identical (at the working
    resolution, when both are loaded alike) or near duplicates by signature (resized, re-encoded, flipped or
    cropped copies, e.g. DRIVE's training split inside the Kaggle copy of DRIVE used as a test set); masks
    identical once brought to the training split's preprocessing. Masks are not compared by near-duplicate
    signature here: annotations of different eyes from one source (or phantoms) can score above the synthetic
    guard's threshold, and a copied photograph is caught by its image. Refuses in one line; returns what was
    checked."""
    fps = {fp: i for i, fp in train.sample_fingerprints().items()}
    sigs = [image_signature(s.image, s.fov) for s in train.samples]
    checked = []
    for ev in evals:
        if ev.work.config == train.config:
            for i, fp in ev.work.sample_fingerprints().items():
                if fp in fps:
                    raise LeakageError(f"{real_data}: training image {fps[fp]!r} is identical to evaluated "
                                       f"{ev.name} image {i!r} of {ev.root}. Refusing: an image cannot be trained "
                                       "on and scored; evaluate on images outside the training split.")
        sim = similarity_matrix(ev.image_signatures(), sigs)
        if sim.size and sim.max() >= IMAGE_THRESHOLD:
            e, k = np.unravel_index(int(np.argmax(sim)), sim.shape)
            raise LeakageError(f"{train.samples[k].source}: real training image {train.samples[k].id!r} is a near "
                               f"duplicate of evaluated {ev.name} image {ev.native.samples[e].source} (similarity "
                               f"{sim.max():.3f} >= {IMAGE_THRESHOLD}; resized or re-encoded copies score this high)."
                               " Refusing: evaluate on images outside the training split (is one dataset a copy "
                               "of the other?).")
        ev_masks = {mask_digest(m): (i, src) for i, src, _, m, _ in _at(ev, train.config, train.config.size)}
        for s in train.samples:
            if mask_digest(s.mask) in ev_masks:
                i, src = ev_masks[mask_digest(s.mask)]
                raise LeakageError(f"{s.mask_source}: the mask of real training image {s.id!r} is identical to "
                                   f"evaluated {ev.name} mask {src} (id {i}). Refusing: evaluate on images outside "
                                   "the training split.")
        checked.append({"eval": ev.name, "images": len(ev.native), "train_images": len(train),
                        "max_image_similarity": float(sim.max()) if sim.size else None})
    return {"image_threshold": IMAGE_THRESHOLD, "masks": "identical at the working resolution", "checks": checked}
