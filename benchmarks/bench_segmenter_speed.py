"""Seconds per training step of candidate downstream segmenters (how the `cpu` bench profile was chosen).

Times, per candidate and patch size, the benchmark's own training step (data: PatchSampler + augmentation;
model: forward, Dice+BCE, backward, AdamW) and the whole-image inference used in evaluation, and prints a
table. Also prints the load average and the CPU share this process got (cpu time / (wall x threads)):
a share well below 1 means other jobs were competing for the cores, and the wall times overstate what an
idle machine would take. On a busy machine run it with --threads 1 and read the CPU columns: 'idle 2T'
estimates an idle 2-thread step as data cpu + model cpu / --speedup (data augmentation is single-threaded).

    .venv/bin/python benchmarks/bench_segmenter_speed.py --threads 2 --steps 4
    .venv/bin/python benchmarks/bench_segmenter_speed.py --candidates r18-d4-s --patches 128 --steps 10
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from retinasynth.bench.config import build_bench_config
from retinasynth.data.dataset import Sample
from retinasynth.segmenter import SegLoss, create_segmenter, predict_prob
from retinasynth.segmenter.sampling import PatchSampler, draw_batch

CANDIDATES: dict[str, dict] = {
    "r18-d5": {"encoder": "resnet18", "encoder_depth": 5, "decoder_channels": [256, 128, 64, 32, 16]},
    "r18-d4-s": {"encoder": "resnet18", "encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]},
    "r18-d4-xs": {"encoder": "resnet18", "encoder_depth": 4, "decoder_channels": [64, 32, 16, 16]},
    "r18-d3-s": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [64, 32, 16]},
    "mbv2-d5-s": {"encoder": "mobilenet_v2", "encoder_depth": 5, "decoder_channels": [128, 64, 32, 16, 16]},
    "effb0-d5-s": {"encoder": "efficientnet-b0", "encoder_depth": 5, "decoder_channels": [128, 64, 32, 16, 16]},
    "timm-effb0-d5-s": {"encoder": "timm-efficientnet-b0", "encoder_depth": 5,
                        "decoder_channels": [128, 64, 32, 16, 16]},
    "lite0-d5-s": {"encoder": "timm-tf_efficientnet_lite0", "encoder_depth": 5,
                   "decoder_channels": [128, 64, 32, 16, 16]},
}


def _samples(data: str | None, size: int, n: int = 4) -> list[Sample]:
    if data and Path(data).is_dir():
        from retinasynth.data import DataConfig, load_dataset

        return load_dataset(data, "train", DataConfig(size=size)).samples[:n]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (0.45 * size) ** 2
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        mask = (rng.random((size, size)) > 0.88) & fov
        out.append(Sample(f"fake{i}", "train", img, mask, fov, "", "given", (size, size)))
    return out


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def measure(name: str, patch: int, batch: int, steps: int, warmup: int, samples: list[Sample], size: int,
            threads: int, eval_images: int) -> dict:
    over = [f"bench.{k}={v}" for k, v in CANDIDATES[name].items()]
    cfg = build_bench_config("cpu", None, over + [f"bench.patch={patch}", f"bench.batch_size={batch}",
                                                  f"bench.size={size}"])
    torch.manual_seed(0)
    model = create_segmenter(cfg).train()
    loss_fn = SegLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = PatchSampler(patch, size, cfg.min_fov)
    data_s, data_cpu, step_wall, step_cpu = 0.0, 0.0, 0.0, 0.0
    for step in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y, _ = draw_batch(samples, samples, "real+synth", 0.5, batch, 0, step, sampler)
        t1, c1 = time.perf_counter(), time.process_time()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2, c2 = time.perf_counter(), time.process_time()
        if step >= warmup:
            data_s += t1 - t0
            data_cpu += c1 - c0
            step_wall += t2 - t1
            step_cpu += c2 - c1
    # smp keeps unused deeper encoder stages when encoder_depth < 5; count only the trained weights
    params = sum(p.numel() for p in model.parameters() if p.grad is not None) / 1e6
    model.eval()
    e0, ec = time.perf_counter(), time.process_time()
    for i in range(eval_images):
        predict_prob(model, samples[i % len(samples)].image, torch.device("cpu"), cfg.multiple)
    e1, ec1 = time.perf_counter(), time.process_time()
    return {"candidate": name, "params_M": params, "patch": patch, "batch": batch,
            "data_s": data_s / steps, "model_s": step_wall / steps, "total_s": (data_s + step_wall) / steps,
            "data_cpu": data_cpu / steps, "model_cpu": step_cpu / steps,
            "cpu_share": step_cpu / max(1e-9, step_wall * threads),
            "eval_s_img": (e1 - e0) / max(1, eval_images), "eval_cpu_img": (ec1 - ec) / max(1, eval_images),
            "eval_cpu_share": (ec1 - ec) / max(1e-9, (e1 - e0) * threads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default="r18-d5,r18-d4-s,r18-d4-xs,mbv2-d5-s,effb0-d5-s,lite0-d5-s",
                    help=f"comma-separated, from: {', '.join(CANDIDATES)}")
    ap.add_argument("--patches", default="96,128,192")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per candidate")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="working resolution (evaluation image side)")
    ap.add_argument("--eval-images", type=int, default=2, help="whole-image predictions timed per candidate")
    ap.add_argument("--data", default="../shared/data/DRIVE", help="real images if present, else random ones")
    ap.add_argument("--speedup", type=float, default=1.7,
                    help="assumed model speed-up from 1 to 2 threads, for the 'idle 2T' estimate of 1-thread runs")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    samples = _samples(a.data, a.size)
    print(f"torch {torch.__version__}, threads {a.threads}, cpu_count {os.cpu_count()}, "
          f"load average before: {_loadavg()}")
    head = (f"{'candidate':<17}{'params':>8}{'patch':>6}{'batch':>6}{'wall s/step':>12}{'cpu share':>10}"
            f"{'data cpu':>9}{'model cpu':>10}{'idle 2T':>8}{'eval wall':>10}{'eval cpu':>9}")
    print(head)
    print("-" * len(head))
    for name in a.candidates.split(","):
        for patch in (int(p) for p in a.patches.split(",")):
            r = measure(name.strip(), patch, a.batch, a.steps, a.warmup, samples, a.size, a.threads, a.eval_images)
            # On a busy machine wall times mean little; CPU seconds of a 1-thread run are close to the idle
            # 1-thread wall time, and 'idle 2T' = data cpu + model cpu / speedup estimates 2 idle threads.
            idle = r["data_cpu"] + r["model_cpu"] / (a.speedup if a.threads == 1 else 1.0)
            print(f"{r['candidate']:<17}{r['params_M']:>7.2f}M{r['patch']:>6}{r['batch']:>6}{r['total_s']:>12.3f}"
                  f"{r['cpu_share']:>10.2f}{r['data_cpu']:>9.3f}{r['model_cpu']:>10.3f}"
                  f"{idle if a.threads == 1 else float('nan'):>8.3f}{r['eval_s_img']:>10.3f}{r['eval_cpu_img']:>9.3f}",
                  flush=True)
    print(f"load average after: {_loadavg()}")


if __name__ == "__main__":
    main()
