"""fp32 vs bf16 speed of the three hot loops, and the machine's matmul peaks, measured in ONE run.

Workloads (each timed at every precision: median of ``--reps`` timed calls after ``--warmup`` calls):
  * fit_step    one `retinasynth fit` step of the `cpu` profile's networks (ngf=ndf=48, 256 crop, batch 1),
                as fit runs it: G and D forward passes under autocast (fp32: none), losses in fp32, both
                backward passes and both Adam steps;
  * seg_step    one training step of the benchmark's segmenter (smp Unet/resnet18, encoder depth 4, decoder
                128-64-32-16; `SegmenterConfig` defaults), batch 8 x 96x96, Dice + BCE, AdamW;
  * gen_infer   generator inference (eval mode, no grad) of the `cpu` profile's generator, batch 4 x 512x512,
                as `synthesize` renders;
  * matmul      a 2048 x 2048 matrix product in fp32 and in bf16: the machine's practical peaks (GFLOP/s).

Every row reports the bf16/fp32 speed ratio (fp32 time / bf16 time); FLOPs per call are counted once
(torch.utils.flop_counter) so each timing is also given in GFLOP/s and as a share of the matmul peak of its
precision. The first lines give the CPU model, its flags that matter here (avx512_bf16, amx_bf16, ...), torch's
CPU capability and the load average: a busy machine makes every number slower (ratios suffer less).

Options: ``--channels-last`` also times the convolutional workloads with channels_last tensors; ``--compile`` also
times them as torch.compile'd modules (inductor; the first, compiling call is timed apart); ``--threads 1 2``
repeats everything for each torch.set_num_threads value. ``--quick`` uses tiny sizes and 2 reps (seconds: checks
that the script works, measures nothing). Results are written as JSON to ``--out``.

Usage (on an otherwise idle machine):
    .venv/bin/python benchmarks/speed.py --out benchmarks/results/speed_precision.json
    .venv/bin/python benchmarks/speed.py --channels-last --threads 1 2 --out /tmp/speed.json
    .venv/bin/python benchmarks/speed.py --quick --out /tmp/speed_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from retinasynth.errors import ConfigError
from retinasynth.models import GANLoss, create_discriminator, create_generator
from retinasynth.models.losses import gan_mean, reconstruction_l1, scales
from retinasynth.precision import (
    autocast,
    cpu_flags,
    cpu_native_bf16,
    describe,
    grad_scaler,
    resolve_precision,
)
from retinasynth.train import build_fit_config

FULL = {"fit_side": 256, "fit_batch": 1, "fit_ngf": None, "seg_batch": 8, "seg_patch": 96, "seg_image": 576,
        "infer_batch": 4,
        "infer_side": 512, "matmul_n": 2048, "reps": 7, "warmup": 2, "conv_channels": 64, "conv_batch": 8,
        "conv_side": 96}
QUICK = {"fit_side": 64, "fit_batch": 1, "fit_ngf": 8, "seg_batch": 2, "seg_patch": 32, "seg_image": 64,
         "infer_batch": 1,
         "infer_side": 64, "matmul_n": 256, "reps": 2, "warmup": 1, "conv_channels": 8, "conv_batch": 1,
         "conv_side": 16}
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd",
         "bf16", "sve")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int, warmup: int) -> dict:
    """Median (and all) seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "times_s": times}


def count_gflop(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 1e9


# ----------------------------------------------------------------------------------------------- workloads


def _maybe_compile(module, compiled: bool):
    """torch.compile (inductor, default mode) when asked: on CPU it needs a C++ compiler; the first calls compile."""
    return torch.compile(module) if compiled else module


def _fmt(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


def _pix2pix(sz: dict, side_for_depth: int):
    cfg = build_fit_config("cpu")
    model = cfg.model if sz["fit_ngf"] is None else type(cfg.model)(**{**cfg.model.__dict__, "ngf": sz["fit_ngf"],
                                                                       "ndf": sz["fit_ngf"]})
    return cfg, model, model.resolved_depth(side_for_depth)


def fit_step(sz: dict, device: torch.device, precision: str, channels_last: bool, compiled: bool = False):
    """A closure running one fit step of the cpu profile at ``precision`` (the loop of retinasynth.train.fit)."""
    cfg, model, depth = _pix2pix(sz, sz["fit_side"])
    torch.manual_seed(0)
    fmt = _fmt(channels_last)
    G = create_generator(model, depth).to(device, memory_format=fmt)
    D = create_discriminator(model).to(device, memory_format=fmt)
    G, D = _maybe_compile(G, compiled), _maybe_compile(D, compiled)
    t = cfg.train
    og = torch.optim.Adam(G.parameters(), t.lr, betas=(t.beta1, t.beta2))
    od = torch.optim.Adam(D.parameters(), t.lr, betas=(t.beta1, t.beta2))
    scaler, gan = grad_scaler(precision, device), GANLoss(t.gan_loss)
    b, s = sz["fit_batch"], sz["fit_side"]
    cond = torch.randn(b, model.in_channels, s, s, device=device).to(memory_format=fmt)
    real = torch.randn(b, 3, s, s, device=device).to(memory_format=fmt)

    def step():
        with autocast(precision, device):
            fake = G(cond)
            d_real, d_fake = scales(D(torch.cat([cond, real], 1))), scales(D(torch.cat([cond, fake.detach()], 1)))
        d_loss = 0.5 * (gan_mean(gan, d_real, True) + gan_mean(gan, d_fake, False))
        od.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(od)
        with autocast(precision, device):
            d_gen = scales(D(torch.cat([cond, fake], 1)))
        fake = fake.float()
        g_loss = gan_mean(gan, d_gen, True, for_disc=False) + t.l1_weight * reconstruction_l1(fake, real, cond)
        og.zero_grad(set_to_none=True)
        scaler.scale(g_loss).backward()
        scaler.step(og)
        scaler.update()

    return step, {"ngf": model.ngf, "ndf": model.ndf, "depth": depth, "batch": b, "side": s}


def seg_step(sz: dict, device: torch.device, precision: str, channels_last: bool, compiled: bool = False):
    """A closure running one training step of the benchmark's default segmenter at ``precision``."""
    from retinasynth.segmenter import SegmenterConfig, create_segmenter
    from retinasynth.segmenter.model import SegLoss

    cfg = SegmenterConfig(batch_size=sz["seg_batch"], patch=sz["seg_patch"])
    torch.manual_seed(0)
    fmt = _fmt(channels_last)
    model = create_segmenter(cfg).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    model = _maybe_compile(model, compiled)
    scaler, loss_fn = grad_scaler(precision, device), SegLoss().to(device)
    x = torch.randn(cfg.batch_size, 3, cfg.patch, cfg.patch, device=device).to(memory_format=fmt)
    y = (torch.rand(cfg.batch_size, 1, cfg.patch, cfg.patch, device=device) > 0.88).float()

    def step():
        with autocast(precision, device):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step, {"arch": cfg.arch, "encoder": cfg.encoder, "encoder_depth": cfg.encoder_depth,
                  "decoder_channels": list(cfg.decoder_channels), "batch": cfg.batch_size, "patch": cfg.patch,
                  "optimizer": "AdamW"}


def gen_infer(sz: dict, device: torch.device, precision: str, channels_last: bool, compiled: bool = False):
    """A closure rendering a batch with the cpu profile's generator (trained on crops: the crop's depth)."""
    _, model, depth = _pix2pix(sz, sz["fit_side"])
    torch.manual_seed(0)
    fmt = _fmt(channels_last)
    G = _maybe_compile(create_generator(model, depth).to(device, memory_format=fmt).eval(), compiled)
    b, s = sz["infer_batch"], sz["infer_side"]
    cond = torch.randn(b, model.in_channels, s, s, device=device).to(memory_format=fmt)

    @torch.no_grad()
    def infer():
        with autocast(precision, device):
            out = G(cond)
        out.float()

    return infer, {"ngf": model.ngf, "depth": depth, "batch": b, "side": s}


def seg_data(sz: dict, device: torch.device, precision: str, channels_last: bool, compiled: bool = False):
    """A closure drawing one training batch of the benchmark's segmenter as `train_segmenter` does (the `cpu`
    profile's light augmentation on 576-px fundus-like images, 8 x 96-px patches): the data path of a step,
    which runs in the training process and adds to every step's time (precision does not apply to it)."""
    import numpy as np

    from retinasynth.data.dataset import Sample
    from retinasynth.segmenter.sampling import PatchSampler, draw_batch

    side = sz["seg_image"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    fov = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) < (0.45 * side) ** 2
    samples = [Sample(f"s{i}", "train", rng.integers(0, 255, (side, side, 3), dtype=np.uint8),
                      rng.random((side, side)) > 0.88, fov, "", "given", (side, side))
               for i in range(4)]
    sampler = PatchSampler(sz["seg_patch"], side, 0.5, "light")
    state = {"step": 0}

    def draw():
        state["step"] += 1
        draw_batch(samples, [], "real", 0.5, sz["seg_batch"], 0, state["step"], sampler)

    return draw, {"image": side, "patch": sz["seg_patch"], "batch": sz["seg_batch"], "augment": "light"}


def conv3x3(sz: dict, device: torch.device, precision: str, channels_last: bool, compiled: bool = False):
    """A closure running one 64->64 3x3 convolution (padding 1) on 8 x 64 x 96 x 96, forward only: the conv peak
    of the machine at ``precision`` and memory format, next to the matmul peak."""
    torch.manual_seed(0)
    fmt = _fmt(channels_last)
    c, n, s = sz["conv_channels"], sz["conv_batch"], sz["conv_side"]
    conv = _maybe_compile(torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, memory_format=fmt), compiled)
    x = torch.randn(n, c, s, s, device=device).to(memory_format=fmt)

    @torch.no_grad()
    def call():
        with autocast(precision, device):
            conv(x)

    return call, {"batch": n, "channels": c, "side": s}


WORKLOADS = {"conv3x3": conv3x3, "fit_step": fit_step, "seg_step": seg_step, "seg_data": seg_data, "gen_infer": gen_infer}


def matmul(n: int, device: torch.device, precision: str, reps: int, warmup: int) -> dict:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    r = timed(lambda: a @ b, device, reps, warmup)
    return {**r, "gflops": 2 * n**3 / r["median_s"] / 1e9}


# ------------------------------------------------------------------------------------------------ machine


def machine(device: torch.device) -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    info = {"cpu_model": model, "cpu_flags": [f for f in FLAGS if f in flags], "cpu_native_bf16": cpu_native_bf16(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def usable(precisions: list[str], device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions this device runs natively; the others with the one-line reason."""
    ok, skipped = [], {}
    for p in precisions:
        try:
            if resolve_precision(p, device) == p:
                ok.append(p)
        except ConfigError as e:
            skipped[p] = str(e)
    return ok, skipped


def _ratio(rec: dict, num: str, den: str) -> float | None:
    a, b = rec.get(num), rec.get(den)
    return a["median_s"] / b["median_s"] if a and b else None


def run(args) -> dict:
    dev = torch.device(args.device)
    sz = dict(QUICK if args.quick else FULL)
    if args.reps:
        sz["reps"] = args.reps
    if args.warmup is not None:
        sz["warmup"] = args.warmup
    precisions, skipped = usable(args.precisions, dev)
    base = "fp32" if "fp32" in precisions else precisions[0]
    threads0 = torch.get_num_threads()
    from retinasynth.provenance import process_record

    result = {"provenance": process_record(), "machine": machine(dev), "sizes": sz, "quick": args.quick, "precisions": precisions,
              "precision_describe": {p: describe(p, dev) for p in precisions}, "skipped_precisions": skipped,
              "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "runs": []}
    m = result["machine"]
    print(f"command: {result['command']}")
    print(f"cpu: {m['cpu_model']} | flags: {' '.join(m['cpu_flags']) or '-'} | native bf16: {m['cpu_native_bf16']} | "
          f"torch {m['torch']} capability {m['cpu_capability']} | cores {m['cpu_count']} | "
          f"load {' '.join(f'{x:.2f}' for x in m.get('loadavg', []))}" + (f" | {m['cuda_device']}" if 'cuda_device' in m
                                                                          else ""))
    for p, why in skipped.items():
        print(f"skipped {p}: {why}")
    layouts = [(False, False)] + ([(True, False)] if args.channels_last else []) + \
        ([(False, True)] if args.compile else [])
    for threads in args.threads or [threads0]:
        torch.set_num_threads(threads)
        mm = {p: matmul(sz["matmul_n"], dev, p, sz["reps"], sz["warmup"]) for p in precisions}
        block = {"threads": threads, "matmul": {"n": sz["matmul_n"], **{p: mm[p] for p in precisions}}, "rows": []}
        for p in precisions:
            if p != base:
                block["matmul"][f"{p}_over_{base}"] = mm[p]["gflops"] / mm[base]["gflops"]
        for name, make in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            for cl, comp in layouts:
                if comp and name == "seg_data":
                    continue  # no model on the data path
                row = {"workload": name, "threads": threads, "channels_last": cl, "compiled": comp}
                for p in precisions:
                    fn, shape = make(sz, dev, p, cl, comp)
                    if "gflop" not in row:
                        row["shape"] = shape
                        row["gflop"] = count_gflop(make(sz, dev, "fp32", cl)[0])
                    first = None
                    if comp:  # the first call compiles: timed apart, then the usual warm-up and timed calls
                        t0 = time.perf_counter()
                        try:
                            fn()
                        except Exception as e:  # a compiler that fails here is a result, not a crash
                            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
                            print(f"{name} compiled at {p}: {row['error']}")
                            break
                        _sync(dev)
                        first = time.perf_counter() - t0
                    r = timed(fn, dev, sz["reps"], sz["warmup"])
                    if first is not None:
                        r["first_call_s"] = first
                    r["gflops"] = row["gflop"] / r["median_s"]
                    r["share_of_matmul_peak"] = r["gflops"] / mm[p]["gflops"]
                    row[p] = r
                if "error" in row:
                    block["rows"].append(row)
                    continue
                for p in precisions:
                    if p != base:
                        row[f"{p}_speedup"] = _ratio(row, base, p)  # base time / p time: > 1 means p is faster
                block["rows"].append(row)
        result["runs"].append(block)
    torch.set_num_threads(threads0)
    for block in result["runs"]:  # compiled vs eager (contiguous) at each precision: > 1 means compiled is faster
        eager = {r["workload"]: r for r in block["rows"] if not r["channels_last"] and not r.get("compiled")}
        for r in block["rows"]:
            if r.get("compiled") and "error" not in r and r["workload"] in eager:
                r["compile_speedup"] = {p: eager[r["workload"]][p]["median_s"] / r[p]["median_s"] for p in precisions}
    if args.channels_last:  # channels_last vs contiguous at each precision
        for block in result["runs"]:
            by = {(r["workload"], r["channels_last"]): r for r in block["rows"] if not r.get("compiled")}
            for (w, cl), r in by.items():
                if cl and (w, False) in by:
                    # contiguous time / channels_last time: > 1 means channels_last is faster
                    r["channels_last_speedup"] = {p: by[(w, False)][p]["median_s"] / r[p]["median_s"]
                                                  for p in precisions}
    return result


def report(result: dict) -> None:
    ps = result["precisions"]
    base = "fp32" if "fp32" in ps else ps[0]
    others = [p for p in ps if p != base]
    for block in result["runs"]:
        mm = block["matmul"]
        print(f"\nthreads {block['threads']}: matmul {mm['n']}x{mm['n']}: "
              + ", ".join(f"{p} {mm[p]['gflops']:.1f} GFLOP/s" for p in ps)
              + "".join(f"; {p}/{base} {mm[f'{p}_over_{base}']:.2f}x" for p in others))
        head = (["workload", "layout", "GFLOP/call"] + [f"{p} s (GFLOP/s, % peak)" for p in ps]
                + [f"{p} speedup" for p in others] + [f"NHWC/NCHW {p}" for p in ps])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in block["rows"]:
            if "error" in r:
                print(f"| {r['workload']} | compiled | failed: {r['error']} |")
                continue
            layout = "channels_last" if r["channels_last"] else "contiguous"
            if r.get("compiled"):
                layout += ", compiled (first call " + "/".join(f"{r[p]['first_call_s']:.0f}" for p in ps) + " s)"
            cells = [r["workload"], layout, f"{r['gflop']:.2f}"]
            cells += [f"{r[p]['median_s']:.4f} ({r[p]['gflops']:.1f}, {100 * r[p]['share_of_matmul_peak']:.0f}%)"
                      for p in ps]
            cells += [f"{r[f'{p}_speedup']:.2f}x" for p in others]
            cl = r.get("channels_last_speedup") or {}
            cells += [f"{cl[p]:.2f}x" if p in cl else "" for p in ps]
            print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device [cpu]")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                    help="precisions to time (those the device cannot run natively are skipped) [fp32 bf16]")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per measurement [7; --quick 2]")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first [2; --quick 1]")
    ap.add_argument("--channels-last", action="store_true", help="also time channels_last tensors")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd models (fit_step, seg_step, gen_infer); the first call is timed apart")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch.set_num_threads values to repeat everything with [the current one]")
    ap.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=None, help="time only these workloads")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and reps: checks the script, measures nothing")
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    result = run(args)
    report(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten to {args.out}")
    return result


if __name__ == "__main__":
    main()
