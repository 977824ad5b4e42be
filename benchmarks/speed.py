"""Training and inference speed of the Pix2Pix networks, with achieved GFLOP/s against a matmul peak.

For each configuration (the `cpu` and `paper` profiles' networks) and side (256, 512) it times
  * a training step (G forward, D on real and fake, both backward passes, both Adam steps), batch 1,
  * generator inference (eval mode, no grad), batch 1,
along the path `retinasynth fit` takes on this device (CPU: fp32 eager; CUDA: autocast bf16/fp16 +
channels_last), and, in the same process, the same network in plain fp32 eager mode. FLOPs per step
are counted once with torch.utils.flop_counter. The machine's practical peak is the GFLOP/s of a
large fp32 (CPU) / bf16 (CUDA) matrix multiply.

Usage:  python benchmarks/speed.py [--steps 4] [--sides 256 512] [--profiles cpu paper] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from retinasynth.models import GANLoss, create_discriminator, create_generator
from retinasynth.train import build_fit_config


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(profile: str, side: int, device: torch.device, fast: bool):
    cfg = build_fit_config(profile)
    depth = cfg.model.resolved_depth(cfg.train.crop or cfg.data.size)
    torch.manual_seed(0)
    G, D = create_generator(cfg.model, depth).to(device), create_discriminator(cfg.model).to(device)
    fmt = torch.channels_last if (fast and device.type == "cuda") else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    amp = None
    if fast and device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    cond = torch.randn(1, cfg.model.in_channels, side, side, device=device).to(memory_format=fmt)
    real = torch.randn(1, 3, side, side, device=device).to(memory_format=fmt)
    return cfg, G, D, cond, real, amp


def train_step_fn(G, D, cond, real, amp):
    gan = GANLoss("vanilla")
    og = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    ctx = (lambda: torch.autocast("cuda", dtype=amp)) if amp else contextlib.nullcontext

    def step():
        with ctx():
            fake = G(cond)
            ld = 0.5 * (gan(D(torch.cat([cond, real], 1)), True) + gan(D(torch.cat([cond, fake.detach()], 1)), False))
        od.zero_grad()
        scaler.scale(ld).backward()
        scaler.step(od)
        with ctx():
            lg = gan(D(torch.cat([cond, fake], 1)), True, False) + 100 * (fake.float() - real.float()).abs().mean()
        og.zero_grad()
        scaler.scale(lg).backward()
        scaler.step(og)
        scaler.update()

    return step


def timed(fn, steps: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / steps


def measure(profile: str, side: int, device: torch.device, steps: int) -> dict:
    row = {"profile": profile, "side": side}
    for mode, fast in (("fit_path", True), ("fp32_eager", False)):
        cfg, G, D, cond, real, amp = build(profile, side, device, fast)
        step = train_step_fn(G, D, cond, real, amp)
        if mode == "fit_path":
            with FlopCounterMode(display=False) as fc:
                step()
            row["train_gflop_per_step"] = fc.get_total_flops() / 1e9
            G.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as fi:
                G(cond)
            row["infer_gflop_per_image"] = fi.get_total_flops() / 1e9
            G.train()
        s = timed(step, steps, device)
        G.eval()
        def infer(G=G, cond=cond, amp=amp):  # bound now: called within this iteration only
            ctx = torch.autocast("cuda", dtype=amp) if amp else contextlib.nullcontext()
            with torch.no_grad(), ctx:
                G(cond)

        si = timed(infer, max(steps, 3), device)
        row[mode] = {"train_s_per_step": s, "train_steps_per_s": 1 / s,
                     "train_gflops": row["train_gflop_per_step"] / s,
                     "infer_images_per_s": 1 / si, "infer_gflops": row["infer_gflop_per_image"] / si,
                     "amp": str(amp) if amp else "fp32", "channels_last": fast and device.type == "cuda"}
        row["ngf"] = cfg.model.ngf
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--profiles", nargs="+", default=["cpu", "paper"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = torch.device(a.device)
    peak = matmul_peak(dev)
    machine = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {machine}; matmul peak {peak:.1f} GFLOP/s")
    rows = [measure(p, s, dev, a.steps) for p in a.profiles for s in a.sides]
    print("| config | side | GFLOP/step | path | train s/step | train GFLOP/s | % of peak | infer img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for mode in ("fit_path", "fp32_eager"):
            m = r[mode]
            print(f"| {r['profile']} (ngf {r['ngf']}) | {r['side']} | {r['train_gflop_per_step']:.1f} | "
                  f"{mode} ({m['amp']}{', channels_last' if m['channels_last'] else ''}) | "
                  f"{m['train_s_per_step']:.3f} | {m['train_gflops']:.1f} | {100 * m['train_gflops'] / peak:.0f}% | "
                  f"{m['infer_images_per_s']:.2f} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine": machine, "matmul_peak_gflops": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
