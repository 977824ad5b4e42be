"""`retinasynth fit`: train the Pix2Pix generator. The loop itself is `_train_loop`, one screen."""

from __future__ import annotations

import atexit
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from retinasynth.data.dataset import Dataset, load_dataset
from retinasynth.data.transforms import apply_paired, gan_augmentation, seed_pipeline
from retinasynth.device import pick_device
from retinasynth.errors import ConfigError, RetinaSynthError
from retinasynth.locking import entries, hold
from retinasynth.models.condition import (
    disc_plane,
    full_condition,
    image_to_tensor,
    make_condition,
    tensor_to_image,
)
from retinasynth.models.factory import create_discriminator, create_generator, tunable_parameters
from retinasynth.models.losses import (
    GANLoss,
    anchored_target,
    feature_matching,
    gan_mean,
    reconstruction_l1,
    scales,
)
from retinasynth.precision import (
    PRECISIONS,
    autocast,
    describe,
    fit_channels_last,
    grad_scaler,
    resolve_precision,
)
from retinasynth.provenance import run_record, write_png_atomic
from retinasynth.rundir import read_run_config
from retinasynth.scaleout import Ranks as _Dist  # one definition of rank/world/local_rank for all commands
from retinasynth.scaleout import shutdown
from retinasynth.train import checkpoint as ck
from retinasynth.train.config import FitConfig


def _init_distributed(device_type: str) -> _Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process per GPU (or CPU process, gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        atexit.register(shutdown)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _split_val(ds: Dataset, n_val: int) -> tuple[list, list]:
    """Hold out the last ``n_val`` training images (sorted ids) for sample grids and validation."""
    samples = sorted(ds.samples, key=lambda s: s.id)
    if n_val >= len(samples):
        raise RetinaSynthError(f"train.val_count={n_val} leaves no training images out of {len(samples)}; "
                               "lower it (-o train.val_count=0).")
    return (samples[: len(samples) - n_val], samples[len(samples) - n_val:]) if n_val else (samples, samples[:2])


def augment_pair(pipe, s, seed: int, plane: np.ndarray | None = None):
    """(image, mask, fov, plane): one sampled geometry applied to a training sample, with albumentations' shared
    seed (:func:`~retinasynth.data.transforms.apply_paired` with ``independent=False``), and to ``plane`` (a float
    (H, W) map such as the disc plane, moved as an extra mask; None passes through). The plane changes nothing of
    the other three. Kept here, not in ``data.transforms``, whose source keys the benchmark's cached models."""
    if plane is None:
        return (*apply_paired(pipe, s.image, s.mask, s.fov, seed=seed, independent=False), None)
    seed_pipeline(pipe, seed, independent=False)
    out = pipe(image=s.image, mask=s.mask.astype(np.uint8) * 255, fov=s.fov.astype(np.uint8) * 255,
               masks=[plane.astype(np.float32)])
    return out["image"], out["mask"] > 127, out["fov"] > 127, np.asarray(out["masks"][0], np.float32)


def _batch(train: list, cfg: FitConfig, step: int, pipe, rank: int, world: int, planes: dict | None = None):
    """The batch of ``step``: which images, their augmentation and crop depend on (seed, step) only. ``planes``
    (with ``model.disc_prior``) keeps each image's disc plane by id, computed on first use (~0.2 s at 512 px)."""
    t = cfg.train
    rng = np.random.default_rng([t.seed, step])
    idx = rng.integers(0, len(train), size=t.batch_size * world)[rank::world]
    conds, reals = [], []
    for j, i in enumerate(idx):
        s = train[int(i)]
        # The disc plane of the whole (un-augmented) frame, computed once per image, moves with the image's geometry.
        disc = None
        if cfg.model.disc_prior:
            if planes is None:
                planes = {}
            if s.id not in planes:
                planes[s.id] = disc_plane(s.mask)
            disc = planes[s.id]
        # albumentations' shared seed (flip and affine together): every recorded generator stays bit-identical
        img, mask, fov, moved = augment_pair(pipe, s, hash((t.seed, step, rank, j)) & 0xFFFFFFFF, disc)
        size = img.shape[0]
        c = t.crop or size
        y0, x0 = (int(v) for v in rng.integers(0, size - c + 1, size=2))
        sl = np.s_[y0:y0 + c, x0:x0 + c]
        conds.append(make_condition(mask[sl], fov[sl], cfg.model.coords, y0, x0, (size, size),
                                    disc=None if moved is None else moved[sl]))
        reals.append(image_to_tensor(img[sl]))
    return torch.from_numpy(np.stack(conds)), torch.stack(reals)


def image_signatures(samples) -> dict[str, str]:
    from retinasynth.data.similarity import encode_signature, image_signature

    return {s.id: encode_signature(image_signature(s.image, s.fov)) for s in samples}


def _lr_lambda(cfg: FitConfig):
    start = int(cfg.train.steps * cfg.train.decay_start)
    span = max(1, cfg.train.steps - start)
    return lambda step: 1.0 if step < start else max(0.0, 1.0 - (step - start) / span)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ep, mp = list(ema.parameters()), list(ck.unwrap(model).parameters())
    torch._foreach_mul_(ep, decay)
    torch._foreach_add_(ep, mp, alpha=1.0 - decay)
    for eb, mb in zip(ema.buffers(), ck.unwrap(model).buffers()):
        eb.copy_(mb)


@torch.no_grad()
def _sample_grid(G: torch.nn.Module, val: list, cfg: FitConfig, device,
                 precision: str = "fp32") -> tuple[np.ndarray, float]:
    """Rows of mask | generated | real on held-out masks; returns the grid and the mean L1 in [0, 1]."""
    G.eval()
    rows, l1 = [], []
    for s in val:
        x = torch.from_numpy(full_condition(s.mask, s.fov, cfg.model.coords, cfg.model.disc_prior)[None]).to(device)
        with autocast(precision, device):
            y = G(x)
        fake = tensor_to_image(y.float())[0]
        l1.append(float(np.abs(fake.astype(np.float32) - s.image).mean() / 255))
        m = np.repeat(s.mask[:, :, None].astype(np.uint8) * 255, 3, axis=2)
        rows.append(np.concatenate([m, fake, s.image], axis=1))
    G.train()
    return np.concatenate(rows, axis=0), float(np.mean(l1))


def fit(cfg: FitConfig, data_root: str | Path | None, out_dir: str | Path, resume: bool = False,
        progress: bool = True, device: str | None = None, stop_at: int | None = None,
        precision: str | None = None) -> Path:
    """Train a generator (see :func:`_fit`), holding ``out_dir`` for the whole run: a second `fit` (or a
    `fit --resume`) on the same folder is refused in one line naming this one's pid (:mod:`retinasynth.locking`).
    Under torchrun rank 0 holds it for every rank."""
    if resume:
        read_run_config(out_dir)  # a missing or foreign run is refused before anything is created
    if int(os.environ.get("RANK", "0")) != 0:
        return _fit(cfg, data_root, out_dir, resume, progress, device, stop_at, precision)
    with hold(out_dir, what="the run directory"):
        return _fit(cfg, data_root, out_dir, resume, progress, device, stop_at, precision)


def _fit(cfg: FitConfig, data_root: str | Path | None, out_dir: str | Path, resume: bool = False,
         progress: bool = True, device: str | None = None, stop_at: int | None = None,
         precision: str | None = None) -> Path:
    """Train a generator on the training split of ``data_root``; write the run to ``out_dir``.

    With ``resume=True`` an interrupted run continues from its last checkpoint with the config it was
    started with; on CPU the result is identical to an uninterrupted run. ``stop_at`` ends this
    invocation after that step (with a checkpoint), for time-boxed jobs; ``--resume`` continues.

    The forward passes run at ``cfg.train.precision``, resolved once for this device
    (:func:`retinasynth.precision.resolve_precision`) and recorded in config.json (``config.train.precision``
    holds the resolved value, ``precision`` what :func:`~retinasynth.precision.describe` says). ``precision``
    is an explicit request: on a new run it replaces ``cfg.train.precision``; on resume the recorded
    precision is used and a different explicit 'fp32'/'bf16'/'fp16' is a one-line ConfigError.
    """
    out = Path(out_dir)
    requested = None  # on resume: what the run's first start asked for (recorded), for the record only
    if precision is not None and not resume:
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, precision=precision))
    if resume:
        saved = read_run_config(out)
        from retinasynth.train.config import build_fit_config, upgrade_legacy_train

        # A run from before `precision` holds the CUDA-only `amp`: on a CPU it trained fp32.
        train_saved = saved["config"]["train"]
        legacy = isinstance(train_saved, dict) and "amp" in train_saved and "precision" not in train_saved
        requested = f"amp={train_saved['amp']}" if legacy else (saved.get("precision") or {}).get("requested")
        upgrade_legacy_train(train_saved, str(saved.get("device", "cpu")).split(":")[0])
        cfg = build_fit_config(None, None, _flatten(saved["config"]), recorded_profile=saved["config"].get("profile"))
        data_root = saved["data"]["root"] if data_root is None else data_root
    elif entries(out):
        raise RetinaSynthError(f"{out}: run directory is not empty; pass --resume to continue it or "
                               "choose a new --out.")
    if data_root is None:
        raise RetinaSynthError("no training data given; pass --data PATH.")
    dev = pick_device(device)
    dd = _init_distributed(dev.type)
    if dd.world > 1:
        dist.barrier()  # every rank has checked --out before rank 0 writes into it
    if dev.type == "cuda":
        dev = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(dev)
    t = cfg.train
    prec = _resolve_run_precision(t.precision, precision, dev, out if resume else None)
    if t.threads:
        torch.set_num_threads(t.threads)

    ds = load_dataset(data_root, "train", cfg.data, progress=progress and dd.main)
    train, val = _split_val(ds, t.val_count)
    side = t.crop or cfg.data.size
    depth = cfg.model.resolved_depth(side)

    torch.manual_seed(t.seed)
    G = create_generator(cfg.model, depth).to(dev)
    D = create_discriminator(cfg.model).to(dev)
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    init_info = _init_weights(Path(t.init_from), cfg, depth, G, D, ema) if t.init_from and not resume else None
    ref = _anchor_reference(Path(t.init_from), ema) if t.disc_anchor > 0 else None
    if t.channels_last is not None:
        channels_last = t.channels_last
    elif resume:  # a run recorded before the memory format was resolved and recorded: the rule of its time
        channels_last = dev.type == "cuda"
    else:  # by device and precision, as measured (retinasynth.precision.fit_channels_last)
        channels_last = fit_channels_last(dev, prec)
    if channels_last:
        G, D, ema = (m.to(memory_format=torch.channels_last) for m in (G, D, ema))
        ref = ref if ref is None else ref.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(tunable_parameters(G, t.tune), t.lr, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), t.lr, betas=(t.beta1, t.beta2))
    sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, _lr_lambda(cfg))
    sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, _lr_lambda(cfg))
    scaler = grad_scaler(prec, dev)  # enabled for fp16 only

    start = 0
    data_fp = ds.fingerprint()  # hashed once: checked on resume, stored in every checkpoint
    config = cfg.to_dict()
    config["train"]["precision"] = prec  # the resolved precision: what a resume runs at
    config["train"]["channels_last"] = channels_last  # and the resolved memory format
    payload = {"config": config, "generator": {"depth": depth, "in_channels": cfg.model.in_channels},
               "data": {**ds.describe(), "train_ids": [s.id for s in train], "val_ids": [s.id for s in val],
                        # near-duplicate signatures: lets the benchmark's leakage guard compare the generator's
                        # training images with evaluated ones without this data folder
                        "image_signatures": image_signatures(ds.samples)},
               "record": run_record(t.seed), "world_size": dd.world, "device": str(dev),
               "precision": {**describe(prec, dev), "requested": requested or t.precision},
               "memory_format": "channels_last" if channels_last else "contiguous", "status": "running"}
    # labelled images behind this generator: its data's (none when they are pseudo-labelled photographs, see
    # `retinasynth pseudo-label`) plus those of the run it started from
    pseudo = (Path(data_root) / "pseudo.json").is_file()
    payload["data"]["labels"] = "pseudo" if pseudo else "given"
    payload["labelled_images"] = (0 if pseudo else len(train) + len(val)) + (
        (init_info or {}).get("labelled_images") or 0)
    if init_info is not None:
        payload["init_from"] = init_info
        # the starting run's training images count as this generator's too (the benchmark's leakage guard)
        for i, sig in (init_info.pop("image_signatures") or {}).items():
            payload["data"]["image_signatures"][f"init:{i}"] = sig
    elif resume and t.init_from and (out / ck.CONFIG).is_file():  # keep what the first start recorded
        prior = json.loads((out / ck.CONFIG).read_text())
        payload["init_from"] = prior.get("init_from")
        payload["data"]["image_signatures"].update(
            {k: v for k, v in ((prior.get("data") or {}).get("image_signatures") or {}).items()
             if k.startswith("init:")})
    st = ck.load_checkpoint(out, G, ema) if resume else None
    if st is not None:
        # runs started before the FOV masks were hashed recorded the legacy fingerprint
        if st.get("data_fingerprint") not in (data_fp, ds.legacy_fingerprint()):
            raise RetinaSynthError(f"{data_root}: training data differ from those the run in {out} started "
                                   "with (fingerprint mismatch); resume with the same data folder.")
        try:
            D.load_state_dict(st["discriminator"])
            for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sch_g, "sch_g"), (sch_d, "sch_d"),
                             (scaler, "scaler")):
                obj.load_state_dict(st[key])
            torch.set_rng_state(st["rng_cpu"])
            if dev.type == "cuda" and "rng_cuda" in st:
                torch.cuda.set_rng_state(st["rng_cuda"], dev)
        except Exception as e:  # noqa: BLE001 - a state of another model or a damaged entry
            raise RetinaSynthError(f"{out / ck.STATE}: does not fit this run ({type(e).__name__}); restore the "
                                   "run directory or start a new run.") from None
        start = int(st["step"])
        payload["record"]["resumed_from_step"] = start
        _truncate_log(out / "log.jsonl", start)
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        ck.write_run_config(out, payload)

    seg = _consistency_segmenter(cfg, train, out, dev, dd, progress, prec) if t.consistency > 0 else None

    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dd.local_rank] if dev.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if t.compile:
        G, D = torch.compile(G), torch.compile(D)

    def checkpoint(step: int) -> None:
        if not dd.main:
            return
        state = {"step": step, "discriminator": ck.unwrap(D).state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "sch_g": sch_g.state_dict(), "sch_d": sch_d.state_dict(),
                 "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
                 "data_fingerprint": data_fp}
        if dev.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(dev)
        ck.save_checkpoint(out, G, ema, state)

    loop = dict(seg=seg, ref=ref, G=G, D=D, ema=ema, opt_g=opt_g, opt_d=opt_d, sch_g=sch_g, sch_d=sch_d,
                scaler=scaler, precision=prec, channels_last=channels_last, dev=dev, train=train, val=val, dd=dd)
    end = min(t.steps, stop_at) if stop_at else t.steps
    _train_loop(cfg, out, start, end, checkpoint, progress, **loop)
    if dd.main and end == t.steps:
        payload["status"] = "complete"
        ck.write_run_config(out, payload)
    if dd.world > 1:
        dist.barrier()
    return out


def _init_weights(run: Path, cfg, depth: int, G, D, ema) -> dict:
    """Load a finished run's generator, EMA and discriminator into ``G``, ``ema``, ``D`` (``train.init_from``).
    One-line errors for a folder that is no fit run, a run with other model settings or without a checkpoint.
    Returns what the new run records about it (its training images' signatures included)."""
    conf = run / ck.CONFIG
    if not conf.is_file():
        raise RetinaSynthError(f"train.init_from {run}: not a fit run (no {ck.CONFIG}); pass the folder of a "
                               "finished `retinasynth fit`.")
    try:
        prior = json.loads(conf.read_text())
        model, gdepth = prior["config"]["model"], prior["generator"]["depth"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RetinaSynthError(f"train.init_from {conf}: unreadable or damaged run config; pass the folder of a "
                               "finished `retinasynth fit`.") from None
    mine = cfg.to_dict()["model"]
    diff = sorted(k for k in set(mine) | set(model) if mine.get(k) != model.get(k))
    if diff or gdepth != depth:
        what = ", ".join(f"model.{k}={model.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:4]) or \
            f"generator depth {gdepth} there, {depth} here (crop/size differ)"
        raise RetinaSynthError(f"train.init_from {run}: another generator ({what}); fine-tune with the run's own "
                               f"settings: --config {conf}.")
    st = ck.load_checkpoint(run, G, ema)
    if st is None:
        raise RetinaSynthError(f"train.init_from {run}: no checkpoint to start from; let that fit finish first.")
    try:
        D.load_state_dict(st["discriminator"])
    except Exception as e:  # noqa: BLE001 - a state of another discriminator
        raise RetinaSynthError(f"train.init_from {run}: its discriminator does not fit this one "
                               f"({type(e).__name__}); fine-tune with --config {conf}.") from None
    data = prior.get("data") or {}
    return {"run": str(run.resolve()), "step": int(st.get("step", 0)),
            "generator_sha256": (st.get("weights_sha256") or {}).get(ck.WEIGHTS_EMA),
            "labelled_images": prior.get("labelled_images",
                                         len(data.get("train_ids") or []) + len(data.get("val_ids") or [])),
            "data": {k: data.get(k) for k in ("root", "layout", "train_ids", "val_ids", "fingerprint")},
            "image_signatures": data.get("image_signatures")}


def _anchor_reference(run: Path, like: torch.nn.Module) -> torch.nn.Module:
    """The generator ``train.init_from`` ended with (its EMA weights), frozen: what ``train.disc_anchor`` keeps
    inside the disc plane. Loaded from that run on a fresh start and on a resume alike (``like``: a generator of
    the same architecture, only copied; no random numbers drawn)."""
    scratch, ref = copy.deepcopy(like), copy.deepcopy(like)
    if ck.load_checkpoint(run, scratch, ref) is None:
        raise RetinaSynthError(f"train.init_from {run}: no checkpoint, and train.disc_anchor needs that run's "
                               "generator; restore the run or set -o train.disc_anchor=0.")
    return ref.eval().requires_grad_(False)


def _resolve_run_precision(requested: str, explicit: str | None, dev: torch.device, resumed: Path | None) -> str:
    """The precision this fit runs at. A new run resolves its request for ``dev``; a resumed run keeps the
    precision it recorded (``requested`` is then that resolved value), refusing a different explicit one and a
    device that cannot run it."""
    if resumed is None:
        return resolve_precision(requested, dev)
    if explicit is not None and explicit not in PRECISIONS:
        resolve_precision(explicit, dev)  # the one-line error for an unknown name
    try:
        prec = resolve_precision(requested, dev)
    except ConfigError as e:
        raise ConfigError(f"{resumed}: the run trains at precision {requested} (recorded in config.json), which "
                          f"this {dev.type} cannot run ({str(e).split(';')[0]}); resume it on a device that "
                          "can, or start a new run.") from None
    if explicit not in (None, "auto", prec):
        raise ConfigError(f"{resumed}: the run trains at precision {prec} (recorded in config.json); --resume "
                          f"cannot switch it to {explicit}: drop --precision or start a new run.")
    return prec


def _consistency_segmenter(cfg, train, out: Path, dev, dd, progress: bool, precision: str = "fp32",
                           ) -> ConsistencyLoss:
    """The vessel-consistency loss around its frozen reader: a small smp U-Net trained on this fit's own
    training images (never on held-out or test ones), saved in the run so that a resume reuses it.

    It reads RGB as stored (no CLAHE, which is not differentiable); with its gradient the generator learns to
    draw every vessel of the mask visibly enough to be segmented, and nothing vessel-like where there is none.
    """
    from retinasynth.segmenter import load_segmenter, save_segmenter, train_reader

    path = out / "consistency_segmenter.safetensors"
    if dd.main and not path.is_file():
        model, bc = train_reader(train, cfg.data.size, cfg.train.consistency_steps, cfg.train.seed, dev,
                                 progress=progress, desc="consistency segmenter", precision=precision)
        save_segmenter(path, model, bc)
    if dd.world > 1:
        dist.barrier()
    # Loading initialises a network first: kept off the fit's generator, so that a resumed run, which only
    # loads it, continues exactly like an uninterrupted one.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        model, _ = load_segmenter(path, dev)
    return ConsistencyLoss(model, precision).to(dev)


class ConsistencyLoss(torch.nn.Module):
    """Dice + BCE of a frozen segmenter on G's output against the condition's vessel mask (channel 0).

    The segmenter's forward pass runs at ``precision`` (resolved; autocast), the loss in fp32."""

    def __init__(self, seg: torch.nn.Module, precision: str = "fp32") -> None:
        from retinasynth.segmenter.model import SegLoss
        from retinasynth.segmenter.sampling import MEAN, STD

        super().__init__()
        self.precision = precision
        self.seg = seg.eval().requires_grad_(False)
        self.loss = SegLoss()
        self.register_buffer("mean", torch.as_tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = ((fake.float() + 1) / 2 - self.mean) / self.std  # G's [-1, 1] -> the reader's ImageNet input
        with autocast(self.precision, x.device):
            logits = self.seg(x)
        return self.loss(logits.float(), (cond[:, :1].float() > 0).float())


def _train_loop(cfg, out, start, end, checkpoint, progress, *, seg, ref, G, D, ema, opt_g, opt_d, sch_g, sch_d, scaler,
                precision, channels_last, dev, train, val, dd) -> None:
    t = cfg.train
    gan = GANLoss(t.gan_loss)
    pipe = gan_augmentation(None, cfg.data.size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    bar = _progress(range(start, end), start, t.steps, progress and dd.main)
    t0, logged, planes = time.perf_counter(), start, {}
    for step in bar:
        cond, real = (x.to(dev, non_blocking=True).to(memory_format=fmt)
                      for x in _batch(train, cfg, step, pipe, dd.rank, dd.world, planes))
        # Forward passes of G and D under autocast (fp32: none); every loss in fp32 (.float() is a no-op there).
        with autocast(precision, dev):
            fake = G(cond)
            d_real, d_fake = scales(D(torch.cat([cond, real], 1))), scales(D(torch.cat([cond, fake.detach()], 1)))
        # Discriminator: real pairs -> real, generated pairs -> fake (0.5 weight as in pix2pix), mean over scales.
        d_loss = 0.5 * (gan_mean(gan, d_real, True) + gan_mean(gan, d_fake, False))
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)
        fm = t.feature_matching > 0
        with autocast(precision, dev):
            d_gen = scales(D(torch.cat([cond, fake], 1), features=fm))  # with fm: (logits, activations) per scale
            if fm:  # the updated D's activations on the real pair: the target, without gradient
                with torch.no_grad():
                    d_ref = scales(D(torch.cat([cond, real], 1), features=True))
        fake = fake.float()
        g_gan = gan_mean(gan, [x[0] for x in d_gen] if fm else d_gen, True, for_disc=False)
        target = real
        if ref is not None:  # train.disc_anchor: inside the disc plane (last channel), the start's own render
            with torch.no_grad(), autocast(precision, dev):
                kept = ref(cond)
            target = anchored_target(real, kept, cond, t.disc_anchor)
        g_l1 = reconstruction_l1(fake, target, cond, t.vessel_l1)
        g_loss = g_gan + t.l1_weight * g_l1
        if fm:
            g_fm = feature_matching(d_gen, d_ref)
            g_loss = g_loss + t.feature_matching * g_fm
        if seg is not None:
            g_cons = seg(fake, cond)  # the segmenter's forward at the same precision, its loss in fp32
            g_loss = g_loss + t.consistency * g_cons
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        scaler.update()
        sch_g.step()
        sch_d.step()
        _ema_update(ema, G, min(t.ema_decay, (1 + step) / (10 + step)))
        done = step + 1
        if not dd.main:
            continue
        if done % t.log_every == 0 or done == t.steps:
            losses = {"d": d_loss.item(), "g_gan": g_gan.item(), "g_l1": g_l1.item()}
            if seg is not None:
                losses["g_consistency"] = g_cons.item()
            if fm:
                losses["g_fm"] = g_fm.item()
            if not all(np.isfinite(v) for v in losses.values()):
                raise RetinaSynthError(f"training diverged at step {done} (losses {losses}); lower train.lr "
                                       "or try train.gan_loss=lsgan, then start a new run.")
            rate = (done - logged) / max(1e-9, time.perf_counter() - t0)
            rec = {"step": done, **losses, "lr": sch_g.get_last_lr()[0], "steps_per_s": rate}
            if done % t.sample_every == 0 or done == t.steps:
                grid, val_l1 = _sample_grid(ema, val, cfg, dev, precision)
                write_png_atomic(out / "samples" / f"step_{done:06d}.png", grid)
                rec["val_l1_ema"] = val_l1
            _append_log(out / "log.jsonl", rec)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(d=f"{losses['d']:.3f}", g=f"{losses['g_gan']:.2f}", l1=f"{losses['g_l1']:.3f}")
        if done % t.ckpt_every == 0 or done == end:
            checkpoint(done)


def _progress(it, start: int, total: int, show: bool):
    if not show:
        return it
    from retinasynth.progress import progress

    return progress(it, initial=start, total=total, desc="fit", unit="step", dynamic_ncols=True)


def _append_log(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """After a resume from ``step``, drop log lines written after that checkpoint."""
    if not path.is_file():
        return
    def step_of(line: str) -> int | None:
        try:
            rec = json.loads(line)
            return int(rec["step"]) if isinstance(rec, dict) else None
        except (ValueError, KeyError, TypeError):
            return None  # a line cut short by a kill, or damage: dropped

    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    keep = [ln for ln in lines if ln.strip() and (s := step_of(ln)) is not None and s <= step]
    from retinasynth.provenance import write_text_atomic

    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


def _flatten(config: dict) -> list[str]:
    """A saved config as `section.key=value` overrides (to rebuild it exactly on resume)."""
    out = []
    for section, values in config.items():
        if isinstance(values, dict):
            out += [f"{section}.{k}={json.dumps(v)}" for k, v in values.items()]
    return out
