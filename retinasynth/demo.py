"""`retinasynth demo`: the whole pipeline, end to end, on phantom data or on a real dataset.

fit -> synthesize -> benchmark-downstream, each step resumable: rerunning the demo with the same
``--out`` continues where it stopped and skips finished steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from retinasynth.errors import RetinaSynthError
from retinasynth.profiles import DEFAULT_SOURCES


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of each step. ``phantom_n=0`` means a real dataset is given."""

    phantom_n: int
    phantom_size: int
    fit_profile: str
    fit_overrides: tuple[str, ...]
    synth_n: int
    synth_sources: str
    bench_profile: str
    bench_overrides: tuple[str, ...]


PLANS = {
    # ~5-8 minutes on 2 CPU cores.
    "phantom": DemoPlan(48, 128, "demo", (), 200, "perturbed:0.5,procedural:0.5", "demo", ()),
    # Seconds: checks an installation end to end.
    "quick": DemoPlan(10, 64, "tiny", ("train.steps=4",), 8, "perturbed:0.5,procedural:0.5", "tiny",
                      ("regimes=[2]", "seeds=[0]", "cldice=false")),
    # A real dataset with the cpu profiles (timings on 2 cores: README "Results" and RESULTS.md).
    "real": DemoPlan(0, 0, "cpu", (), 1000, DEFAULT_SOURCES, "cpu", ()),
}


def _done(path: Path, key: str = "status") -> bool:
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # missing or damaged: the step runs (and its own checks report the damage)
    return isinstance(rec, dict) and rec.get(key) == "complete"


def _resumable_step(echo, label: str, record: Path, what: str, found: str, run) -> None:
    """Skip a step whose ``record`` says complete; else run it, resuming where the record exists.

    ``run(resume)`` does the work; ``what`` describes it, ``found`` names what a finished step left.
    """
    if _done(record):
        echo(f"{label}: finished {found} found in {record.parent}")
        return
    resume = record.is_file()
    echo(f"{label} {what}{' resuming' if resume else ''} -> {record.parent}")
    run(resume)


def run_demo(out: str | Path = "retinasynth-demo", data: str | Path | None = None, quick: bool = False,
             progress: bool = True, echo=print) -> dict:
    """Run the pipeline into ``out``; return paths and the benchmark summary."""
    from retinasynth.bench import benchmark_downstream, build_bench_config
    from retinasynth.synth.phantom import write_phantom_dataset
    from retinasynth.synth.synthesize import SynthConfig, synthesize
    from retinasynth.train import build_fit_config, fit

    out = Path(out)
    plan = PLANS["quick" if quick else ("real" if data else "phantom")]
    t0 = time.perf_counter()
    timings = {}
    if data is None:
        data = out / "phantom-data"
        if not (data / "phantom.json").is_file():
            echo(f"[1/4] phantom data: {plan.phantom_n} fundus-like images at {plan.phantom_size}px -> {data}")
            write_phantom_dataset(data, n=plan.phantom_n, size=plan.phantom_size, seed=0, progress=progress)
        else:
            echo(f"[1/4] phantom data: found in {data}")
    else:
        data = Path(data)
        if not data.exists():
            raise RetinaSynthError(f"{data}: no such dataset folder; see README 'Datasets' for layouts.")
        echo(f"[1/4] dataset: {data}")
    timings["data_s"] = time.perf_counter() - t0

    run = out / "run"
    t = time.perf_counter()
    _resumable_step(echo, "[2/4] fit", run / "config.json", f"({plan.fit_profile} profile)", "run",
                    lambda resume: fit(build_fit_config(plan.fit_profile, None, plan.fit_overrides),
                                       None if resume else data, run, resume=resume, progress=progress))
    timings["fit_s"] = time.perf_counter() - t

    synth = out / "synth"
    t = time.perf_counter()
    synth_cfg = SynthConfig(n=plan.synth_n, sources=plan.synth_sources, seed=0)
    _resumable_step(echo, "[3/4] synthesize", synth / "synth.json", f"{plan.synth_n} pairs ({plan.synth_sources})",
                    "set", lambda resume: synthesize(run, synth, synth_cfg, resume=resume, progress=progress))
    timings["synthesize_s"] = time.perf_counter() - t

    bench = out / "benchmark"
    t = time.perf_counter()
    echo(f"[4/4] benchmark-downstream ({plan.bench_profile} profile) -> {bench}")
    result = benchmark_downstream(data, synth, bench, build_bench_config(plan.bench_profile, None,
                                                                          plan.bench_overrides),
                                  progress=progress)
    timings["benchmark_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    samples = sorted((run / "samples").glob("step_*.png"))
    summary = {"out": str(out), "data": str(data), "run": str(run), "synth": str(synth), "benchmark": str(bench),
               "sample_grid": str(samples[-1]) if samples else None, "preview": str(synth / "preview.png"),
               "report": str(bench / "report.md"), "plot": str(bench / "dice_vs_n.png"), "timings": timings,
               "bench": result}
    return summary


def format_summary(s: dict) -> str:
    report = Path(s["report"])
    table = ""
    if report.is_file():
        lines = report.read_text().splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), None)
        if start is not None:
            end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
            table = "\n".join(lines[start:end])
    t = s["timings"]
    return "\n".join([
        "", "retinasynth demo finished in {:.1f} min".format(t["total_s"] / 60),
        f"  data            {s['data']}",
        f"  generator run   {s['run']}   (sample grid: {s['sample_grid']})",
        f"  synthetic set   {s['synth']}   (preview: {s['preview']})",
        f"  benchmark       {s['benchmark']}   (report: {s['report']}, plot: {s['plot']})",
        "  time            fit {:.0f} s, synthesize {:.0f} s, benchmark {:.0f} s".format(
            t["fit_s"], t["synthesize_s"], t["benchmark_s"]),
        "", table])
