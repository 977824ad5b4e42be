"""`retinasynth env`: what ``auto`` resolves to on this machine, and (``--measure``) what a benchmark will cost.

Everything here is read off the machine (CPU flags, torch's build, CUDA) or measured on it in a few seconds; the
same resolution functions run inside `fit`, `synthesize`, `evaluate` and the benchmark, so what this prints is
what they do.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from retinasynth.device import pick_device
from retinasynth.precision import (
    NATIVE_BF16_FLAGS,
    cpu_flags,
    fit_channels_last,
    infer_channels_last,
    resolve_precision,
)

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_units(cfg) -> dict:
    """The models a benchmark of ``cfg`` trains and their optimiser steps (from the arm registry)."""
    from retinasynth.bench.arms import get_arm

    models, steps = 0, 0
    synth_shared = not cfg.pretrain_mix and any(get_arm(a).uses_synth and not get_arm(a).uses_real for a in cfg.arms)
    seen_synth = False
    for a in cfg.arms:
        arm = get_arm(a)
        cells = len(cfg.seeds) * (len(cfg.regimes) if arm.uses_real else 1)
        mult = arm.steps
        if arm.pretrain and synth_shared:
            mult -= 1  # the pretraining is the 'synth' arm's model, trained once per seed
        if arm.pretrain and not synth_shared and not cfg.pretrain_mix and not seen_synth:
            models += len(cfg.seeds)  # the pretraining models
            steps += len(cfg.seeds) * cfg.steps
            seen_synth = True
            mult -= 1
        models += cells
        steps += cells * mult * cfg.steps
    if "real-2x" not in cfg.arms and cfg.plateau:
        models += cfg.plateau
        steps += cfg.plateau * 2 * cfg.steps
    return {"models": models, "steps": steps}


def seg_step_seconds(cfg, device: torch.device, reps: int = 4) -> float:
    """Median seconds of one training step of ``cfg``'s segmenter (random data, its precision and memory format)."""
    from retinasynth.precision import autocast
    from retinasynth.segmenter.model import SegLoss, create_segmenter, memory_format

    prec = resolve_precision(cfg.precision, device)
    fmt = memory_format(cfg)
    torch.manual_seed(0)
    model = create_segmenter(cfg).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = SegLoss()
    x = torch.randn(cfg.batch_size, 3, cfg.patch, cfg.patch, device=device).to(memory_format=fmt)
    y = (torch.rand(cfg.batch_size, 1, cfg.patch, cfg.patch, device=device) > 0.9).float()
    times = []
    for i in range(reps + 1):
        t = time.perf_counter()
        with autocast(prec, device):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def describe_env(device: str | None = None, profile: str = "cpu", measure: bool = False) -> dict:
    from retinasynth import __version__
    from retinasynth.bench import build_bench_config

    dev = pick_device(device)
    prec = resolve_precision("auto", dev)
    flags = cpu_flags()
    cfg = build_bench_config(profile)
    info = {
        "retinasynth": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_flags": [f for f in FLAGS if f in flags], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(flags & set(NATIVE_BF16_FLAGS)),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "device": str(dev), "precision": prec,
        "memory_format": {"fit": "channels_last" if fit_channels_last(dev, prec) else "contiguous",
                          "synthesize/evaluate": "channels_last" if infer_channels_last(dev, prec) else "contiguous",
                          "benchmark segmenter": "channels_last" if cfg.channels_last else "contiguous"},
        "benchmark": {"profile": profile, **bench_units(cfg), "arms": list(cfg.arms), "regimes": list(cfg.regimes),
                      "seeds": list(cfg.seeds), "steps_per_model": cfg.steps, "patch": cfg.patch,
                      "batch": cfg.batch_size},
    }
    if measure:
        s = seg_step_seconds(cfg, dev)
        info["benchmark"]["seconds_per_step"] = s
        info["benchmark"]["training_hours_estimate"] = s * info["benchmark"]["steps"] / 3600
    return info


def format_env(info: dict) -> str:
    b = info["benchmark"]
    lines = [
        f"retinasynth {info['retinasynth']}, torch {info['torch']}, Python {info['python']}",
        f"cpu        {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}), "
        f"capability {info['cpu_capability']}",
        f"cpu flags  {' '.join(info['cpu_flags']) or '-'}; native bf16: {'yes' if info['native_bf16'] else 'no'}",
        f"cuda       {', '.join(info['cuda']) or 'none'}",
        f"device     auto -> {info['device']}",
        f"precision  auto -> {info['precision']}",
        "memory     " + "; ".join(f"{k}: {v}" for k, v in info["memory_format"].items()),
        f"benchmark  --profile {b['profile']}: {b['models']} models, {b['steps']} optimiser steps in all "
        f"({', '.join(b['arms'])}; n = {', '.join(map(str, b['regimes']))}; seeds {', '.join(map(str, b['seeds']))}; "
        f"{b['steps_per_model']} steps of {b['batch']} x {b['patch']}^2 per model)",
    ]
    if "seconds_per_step" in b:
        lines.append(f"measured   {b['seconds_per_step']:.3f} s per segmenter step -> about "
                     f"{b['training_hours_estimate']:.1f} h of training (scoring adds a few minutes per model)")
    return "\n".join(lines)
