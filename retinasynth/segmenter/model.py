"""The downstream segmenter: an smp model trained from scratch on Dice + BCE, and its evaluation."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import torch

from retinasynth.data.dataset import Sample
from retinasynth.errors import ConfigError
from retinasynth.metrics.seg import segmentation_scores
from retinasynth.precision import autocast, grad_scaler, resolve_precision
from retinasynth.segmenter.config import READER, SEGMENTER_FIELDS, SegmenterConfig, upgrade_legacy
from retinasynth.segmenter.sampling import PatchSampler, draw_batch, to_tensor


def create_segmenter(cfg: SegmenterConfig) -> torch.nn.Module:
    """``smp.create_model(arch, encoder, encoder_weights=None, in_channels=3, classes=1)``; offline."""
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None, in_channels=3,
                                classes=1, **cfg.model_kwargs())
    except Exception as e:  # noqa: BLE001 - smp raises KeyError/ValueError/TypeError for bad combinations
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"smp cannot build arch={cfg.arch} encoder={cfg.encoder} "
                          f"encoder_depth={cfg.encoder_depth}: {msg}") from None


def save_segmenter(path, model: torch.nn.Module, cfg: SegmenterConfig, metadata: dict[str, str] | None = None) -> None:
    """Weights in safetensors, with the SegmenterConfig that rebuilds the model (and any string ``metadata``,
    e.g. the benchmark's cache key) in the file's metadata."""
    import json

    from safetensors.torch import save

    from retinasynth.provenance import write_bytes_atomic

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"segmenter_config": json.dumps(cfg.segmenter().to_dict(), default=list), **(metadata or {})}
    write_bytes_atomic(path, save(sd, metadata=meta))


def load_segmenter(path, device: torch.device | None = None) -> tuple[torch.nn.Module, SegmenterConfig]:
    """Rebuild a segmenter saved by ``save_segmenter`` (e.g. ``BENCH_OUT/models/real_n20_s0.safetensors``)."""
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    from retinasynth.config import from_dict
    from retinasynth.errors import RetinaSynthError

    path = Path(path)
    if not path.is_file():
        raise RetinaSynthError(f"{path}: segmentation checkpoint not found (benchmark-downstream writes them to "
                               "OUT/models/*.safetensors).")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        saved = json.loads(meta["segmenter_config"] if "segmenter_config" in meta else meta["bench_config"])
        # files of the benchmark before the segmenter had its own config hold the whole BenchConfig
        cfg = from_dict(SegmenterConfig, {k: v for k, v in upgrade_legacy(saved).items() if k in SEGMENTER_FIELDS})
    except Exception as e:  # noqa: BLE001 - any failure means this is not our checkpoint
        raise RetinaSynthError(f"{path}: not a retinasynth segmentation checkpoint ({type(e).__name__}); pass a "
                               "benchmark-downstream OUT/models/*.safetensors file.") from None
    model = create_segmenter(cfg)
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - truncated tensors, or weights of another architecture
        raise RetinaSynthError(f"{path}: damaged segmentation checkpoint ({type(e).__name__}); take another "
                               "OUT/models/*.safetensors or rerun benchmark-downstream to write it again.") from None
    return model.to(device or torch.device("cpu"), memory_format=memory_format(cfg)).eval(), cfg


class SegLoss(torch.nn.Module):
    """smp's binary Dice loss plus BCE, both on logits."""

    def __init__(self) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss

        self.dice = DiceLoss(mode="binary", from_logits=True)
        self.bce = SoftBCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return self.dice(logits, target) + self.bce(logits, target)


WSD_WARMUP = 50  # warm-up steps of the 'wsd' schedule (fewer for budgets under 10 x 50 steps)
WSD_DECAY = 0.2  # share of a budget spent decaying the learning rate (linearly, to 1%)


def wsd_decay_start(budget: int) -> int:
    """The step at which the 'wsd' schedule of a ``budget``-step run starts decaying."""
    return budget - int(round(WSD_DECAY * budget))


def lr_factor(cfg: SegmenterConfig, budget: int | None = None):
    """The learning-rate multiplier of each step. 'cosine' and 'constant': linear warm-up over the first 3%
    of steps, then cosine decay to 1% (or constant). 'wsd': a warm-up of ``WSD_WARMUP`` steps (at most a tenth
    of the steps), constant, then linear decay to 1% over the last ``WSD_DECAY`` of ``budget`` (default
    ``cfg.steps``). The warm-up and the stable phase do not depend on the budget, so a shorter run is the
    same run up to its decay: what lets one trajectory give several budgets."""
    if cfg.lr_schedule == "wsd":
        warm = min(WSD_WARMUP, cfg.steps // 10)
        budget = budget or cfg.steps
        start = wsd_decay_start(budget)

        def wsd(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if step < start:
                return 1.0
            return 1.0 - 0.99 * (step - start + 1) / max(1, budget - start)

        return wsd
    warm = int(0.03 * cfg.steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, cfg.steps - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def memory_format(cfg: SegmenterConfig) -> torch.memory_format:
    """NHWC (``channels_last``) or NCHW; the input of a channels_last model follows its weights' order."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def resolved_precision(cfg: SegmenterConfig, device: torch.device) -> str:
    """The precision ``cfg`` runs at on ``device`` ('fp32', 'bf16' or 'fp16'): what runs record and keys hold."""
    return resolve_precision(cfg.precision, device)


def train_segmenter(cfg: SegmenterConfig, real: list[Sample], synth: list[Sample], arm: str, seed: int,
                    device: torch.device, progress: bool = False, desc: str = "train",
                    init: dict[str, torch.Tensor] | None = None, branches: tuple[int, ...] = (),
                    on_branch=None) -> tuple[torch.nn.Module, dict]:
    """Train one segmenter for ``cfg.steps`` AdamW steps; deterministic on CPU for a given seed.

    ``arm`` chooses the pool of every batch element ('real', 'real+synth', 'synth'); ``init`` starts from
    given weights instead of a seeded random initialisation (the fine-tune phase of the 'pretrain' arm,
    which passes arm='real' and the weights of the 'synth' model).

    ``branches`` (with ``lr_schedule='wsd'``): shorter budgets read off the same run. When the run reaches the
    step where a budget ``b``'s decay starts, the model, optimiser and scaler state are copied, the decay of
    ``b`` is run on the batches a ``b``-step run would draw (batches are a function of the step), the model is
    passed to ``on_branch(b, model, log)`` in eval mode, and the copy is restored: the main run goes on as if
    nothing happened (its weights are bitwise those of a run without branches), and each branch is the model a
    separate ``b``-step run would end with (the same one whenever both warm up for ``WSD_WARMUP`` steps, i.e.
    both budgets are at least 10 x that). One trajectory gives Dice against steps at ~1.2x the cost of its
    longest budget.

    Returns the model (eval mode) and a log: final loss, a coarse loss curve, the share of synthetic
    patches actually drawn, the wall time (branches included) and one entry per branch.
    """
    if arm != "synth" and not real:
        raise ConfigError(f"arm {arm!r} needs real training images.")
    if arm != "real" and not synth:
        raise ConfigError(f"arm {arm!r} needs synthetic pairs; pass --synth DIR.")
    branches = tuple(sorted(set(int(b) for b in branches)))
    if branches and cfg.lr_schedule != "wsd":
        raise ConfigError(f"budgets read off one run (bench.curve) need bench.lr_schedule=wsd, got "
                          f"{cfg.lr_schedule!r}: a cosine run's early weights are not a shorter run's.")
    if any(not 0 < b < cfg.steps for b in branches):
        raise ConfigError(f"branch budgets must lie between 0 and the run's {cfg.steps} steps, got {list(branches)}.")
    torch.manual_seed(seed)
    model = create_segmenter(cfg)
    if init is not None:
        model.load_state_dict(init)
    fmt = memory_format(cfg)
    model = model.to(device, memory_format=fmt).train()
    loss_fn = SegLoss().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    factor = lr_factor(cfg)
    precision = resolved_precision(cfg, device)
    scaler = grad_scaler(precision, device)
    sampler = PatchSampler(cfg.patch, cfg.size, cfg.min_fov, cfg.augment)

    def one_step(step: int, f) -> tuple[float, int]:
        x, y, k = draw_batch(real, synth, arm, cfg.synth_ratio, cfg.batch_size, seed, step, sampler)
        x, y = x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f(step)
        with autocast(precision, device):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item(), k

    def branch(b: int) -> dict:
        import copy

        t_b = time.perf_counter()
        saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
                 copy.deepcopy(scaler.state_dict()) if scaler.is_enabled() else None)
        f_b, losses = lr_factor(cfg, budget=b), []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for step in range(wsd_decay_start(b), b):
                losses.append(one_step(step, f_b)[0])
        model.eval()
        blog = {"steps": b, "decay_steps": len(losses), "final_loss": float(np.mean(losses[-max(1, b // 20):])),
                "wall_s": time.perf_counter() - t_b}
        if on_branch is not None:
            on_branch(b, model, blog)
        model.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        if saved[2] is not None:
            scaler.load_state_dict(saved[2])
        model.train()
        return blog

    starts = {}
    for b in branches:
        starts.setdefault(wsd_decay_start(b), []).append(b)
    every = max(1, cfg.steps // 20)
    curve, n_synth, running, branch_logs = [], 0, [], []
    steps = range(cfg.steps)
    if progress:
        from retinasynth.progress import progress as progress_bar

        steps = progress_bar(steps, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in steps:
        for b in starts.get(step, ()):
            branch_logs.append(branch(b))
        loss, k = one_step(step, factor)
        n_synth += k
        running.append(loss)
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            curve.append([step + 1, float(np.mean(running))])
            if not np.isfinite(curve[-1][1]):
                raise ConfigError(f"training diverged at step {step + 1} (loss {curve[-1][1]}); lower bench.lr.")
            running = []
            if hasattr(steps, "set_postfix"):
                steps.set_postfix(loss=f"{curve[-1][1]:.3f}")
    model.eval()
    log = {"steps": cfg.steps, "precision": precision, "final_loss": curve[-1][1], "loss_curve": curve,
           "synth_share": n_synth / (cfg.steps * cfg.batch_size), "train_wall_s": time.perf_counter() - t0}
    if branch_logs:
        log["branches"] = branch_logs
    return model, log


def train_reader(samples: list[Sample], size: int, steps: int, seed: int, device: torch.device,
                 preprocess: str = "rgb", progress: bool = False, desc: str = "reader",
                 precision: str = "fp32") -> tuple[torch.nn.Module, SegmenterConfig]:
    """A segmenter trained on real ``samples`` only, to read generated images: the benchmark's default network,
    light augmentation, 96-px patches (or the image side), ``preprocess`` applied to its inputs. Its random
    draws are kept off the caller's generator, so a caller's own seeded sequence is unchanged by it. Used by
    `fit`'s vessel-consistency loss and by `evaluate`'s vessel-consistency proxy, each at its own precision."""
    import dataclasses

    from retinasynth.data.preprocess import enhance

    cfg = SegmenterConfig(**{**READER, "patch": min(READER["patch"], size - size % 16)}, preprocess=preprocess,
                          steps=steps, size=size, precision=precision)
    if preprocess != "rgb":
        samples = [dataclasses.replace(s, image=enhance(s.image, preprocess)) for s in samples]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model, _ = train_segmenter(cfg, samples, [], "real", seed, device, progress=progress, desc=desc)
    return model, cfg


@torch.no_grad()
def predict_prob(model: torch.nn.Module, image: np.ndarray, device: torch.device, multiple: int,
                 precision: str = "fp32", tile: int | None = None, overlap: float = 0.5, batch: int = 4) -> np.ndarray:
    """Vessel probability of a working-resolution image.

    With ``tile`` None the whole image goes through in one pass (zero-padded to a multiple of the
    stride). Otherwise a sliding window of ``tile`` px moves by ``tile * (1 - overlap)``; the last
    window of each row/column is aligned with the image's edge, and overlapping probabilities are
    blended with a Gaussian weight (sigma = tile / 4) so that tile borders, where the network sees
    least context, count least.
    """
    def ctx():
        return autocast(precision, device)

    h, w = image.shape[:2]
    if tile is None:
        ph, pw = -h % multiple, -w % multiple
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        x = to_tensor(image)[None].to(device)
        with ctx():
            logits = model(x)
        return torch.sigmoid(logits.float())[0, 0, :h, :w].cpu().numpy()
    # Pad to at least one tile; windows then tile the padded frame exactly.
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    H, W = image.shape[:2]
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(n: int) -> list[int]:
        s = list(range(0, n - tile + 1, stride))
        return s if s[-1] == n - tile else s + [n - tile]

    g = np.exp(-0.5 * ((np.arange(tile) - (tile - 1) / 2) / (tile / 4)) ** 2)
    weight = np.outer(g, g).astype(np.float32) + 1e-3
    acc = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    boxes = [(y, x) for y in starts(H) for x in starts(W)]
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        x = to_tensor(np.stack([image[y:y + tile, x0:x0 + tile] for y, x0 in chunk])).to(device)
        with ctx():
            prob = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
        for (y, x0), p in zip(chunk, prob):
            acc[y:y + tile, x0:x0 + tile] += p * weight
            norm[y:y + tile, x0:x0 + tile] += weight
    return (acc / norm)[:h, :w]


def to_native(prob: np.ndarray, native_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a working-resolution probability map to (H, W) of the original image."""
    h, w = native_shape
    if prob.shape == (h, w):
        return prob
    return np.clip(cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def segment_at_working_size(model: torch.nn.Module, cfg: SegmenterConfig, image: np.ndarray, mask: np.ndarray,
                            fov: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment an image the way the benchmark does: brought to the segmenter's working resolution
    (``cfg.size``, with its mask and FOV), with its input preprocessing and inference window.
    Returns (probability, mask, fov), all at the working resolution."""
    from retinasynth.data.preprocess import enhance, prepare

    image, mask, fov = prepare(image, mask, fov, cfg.size)
    prob = predict_prob(model, enhance(image, cfg.preprocess), device, cfg.multiple, resolved_precision(cfg, device),
                        cfg.infer_tile, cfg.infer_overlap)
    return prob, mask, fov


def evaluate_segmenter(model: torch.nn.Module, cfg: SegmenterConfig, work: list[Sample], native: dict[str, Sample],
                       device: torch.device) -> dict[str, dict[str, float]]:
    """Per-image scores at native resolution inside the FOV: {id: {metric: value}}."""
    precision = resolved_precision(cfg, device)
    out = {}
    for s in work:
        ref = native[s.id]
        prob = to_native(predict_prob(model, s.image, device, cfg.multiple, precision, cfg.infer_tile, cfg.infer_overlap),
                         ref.mask.shape)
        out[s.id] = segmentation_scores(prob, ref.mask, ref.fov, cfg.threshold, with_cldice=cfg.cldice)
    return out
