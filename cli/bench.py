"""``retinasynth benchmark-downstream``: flags -> BenchConfig -> one call to the library.

Registered in cli/main.py with ``main.add_command(benchmark_downstream)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from retinasynth.errors import RetinaSynthError, Stopped
from retinasynth.profiles import BENCH_PROFILES, profiles_help


@click.command("benchmark-downstream", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_path", type=click.Path(path_type=str), required=True,
              help="Real dataset root (any supported layout): its train split feeds the regimes, its test split "
                   "is scored.")
@click.option("--synth", "synth_dir", type=click.Path(path_type=str), default=None,
              help="Synthetic set written by `retinasynth synthesize` (needed unless only arm 'real' is run).")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True,
              help="Output folder; completed runs found in OUT/runs are reused (resume). Create OUT/STOP to stop "
                   "before the next model (exit 75); delete it and rerun to continue.")
@click.option("--profile", default=None, metavar="|".join(BENCH_PROFILES),
              help=profiles_help("the protocol") + " Default: cpu, or the profile --config records.")
@click.option("--config", "config_file", type=click.Path(path_type=str), default=None,
              help="JSON/YAML file with a 'bench' section (or top-level keys) overriding the profile, or a "
                   "benchmark's results.json (rebuilds its protocol; benchmarks/configs/ holds the retired profiles).")
@click.option("-o", "--option", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting: SECTION.KEY=VALUE, or KEY=VALUE where only one section has KEY, e.g. "
                   "-o bench.steps=300 -o bench.arms=real,real+synth (repeatable).")
@click.option("--test-data", "test_data", multiple=True, metavar="NAME[:SPLIT]=PATH",
              help="An external evaluation set (repeatable): another dataset's test split, or all of it if it has "
                   "none, scored and reported apart under NAME (a bare PATH is named after its folder). NAME:SPLIT "
                   "(test, train or all; seeded 75/25 where the dataset has no official split) scores only that "
                   "part, e.g. to take synthesize --style from the rest. Adding one to a finished benchmark "
                   "scores the saved models and retrains nothing.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="Segmenter precision; default: the profile's (auto: bf16 autocast where the hardware has native "
                   "bf16, else fp32). Same as -o bench.precision=...; recorded and part of every cache key.")
@click.option("--allow-mixed-code", is_flag=True,
              help="Assemble the report even if cached runs in OUT were made by different versions of the code "
                   "(recorded in results.json); refused otherwise.")
@click.option("--allow-unverified-synth", is_flag=True,
              help="Use a synthetic folder without manifest.jsonl/synth.json; recorded as a warning. Detected "
                   "leakage is refused regardless.")
@click.option("--cells", default=None, metavar="i/N",
              help="Train only share i of N of the runs (e.g. a SLURM array task) and write no report; a final "
                   "run without --cells finds every run cached and writes it. Under torchrun each rank takes "
                   "RANK/WORLD_SIZE by itself.")
@click.option("--adapt", "adapt", default=None, metavar="NAME[:SPLIT]=DIR",
              help="Unlabelled photographs of a target camera (a folder of images, or NAME:SPLIT=DIR for a split "
                   "of a dataset folder, labels unused) for the domain-adaptation arms real+fda, real+hist and "
                   "self-train; refused if any of them is scored.")
@click.option("--records", "records_dir", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="A durable folder for the small records (training records and scores, no weights): restored "
                   "into OUT first, and every new one copied there after each model, so a protocol longer than one "
                   "machine's life continues elsewhere from DIR (e.g. committed to git).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N", help="auto (cuda if available, else cpu), cpu, "
              "cuda or cuda:N; checked before anything runs.")
def benchmark_downstream(data_path, synth_dir, out_dir, profile, config_file, overrides, test_data, precision,
                         allow_mixed_code, allow_unverified_synth, cells, adapt, records_dir, quiet, device) -> None:
    """Train segmenters on real, real+synthetic and synthetic pairs; score them on REAL test images."""
    from retinasynth.bench import benchmark_downstream as run_bench
    from retinasynth.bench import build_bench_config
    from retinasynth.bench.report import eval_names, paired_table, scores_table

    try:
        if precision:
            overrides = (*overrides, f"bench.precision={precision}")
        cfg = build_bench_config(profile, config_file, overrides)
        res = run_bench(data_path, synth_dir, out_dir, cfg, test_data=list(test_data) or None, progress=not quiet,
                        allow_unverified_synth=allow_unverified_synth, device=device, cells=cells,
                        allow_mixed_code=allow_mixed_code, records=records_dir, adapt=adapt)
    except RetinaSynthError as e:
        from retinasynth.progress import ensure_line_start

        ensure_line_start()  # after a progress bar, the message still starts its own line
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except Stopped as e:
        from retinasynth.progress import ensure_line_start

        ensure_line_start()
        click.echo(f"stopped: {e}", err=True)
        sys.exit(75)  # EX_TEMPFAIL: not done yet, rerun to continue
    except KeyboardInterrupt:
        click.echo(f"interrupted; completed runs are kept in {Path(out_dir) / 'runs'}: rerun the same command to "
                   "continue.", err=True)
        sys.exit(130)
    if "cells" in res:  # one share (--cells, or a torchrun rank > 0): no report here
        if not cells:
            return  # torchrun rank > 0: rank 0 prints the report
        click.echo(f"cells {res['cells']}: {len(res['runs'])} run(s), {res['trained']} trained, {res['cached']} cached, "
                   f"{res['reused']} reused" + (f", {len(res['busy'])} left to other processes" if res.get("busy") else "") +
                   f"; in {Path(out_dir) / 'runs'}. The report: rerun without --cells.")
        return
    for ev in eval_names(res["runs"]):
        click.echo(f"\n{ev} ({res['data']['eval'][ev]['n']} images, native resolution, inside the FOV):\n")
        click.echo(scores_table(res["summary"], ev))
        pt = paired_table(res["paired"], ev)
        if pt:
            click.echo("\n" + pt)
    for p in (res.get("plateau") or {}).get("paired", []):
        if p["metric"] == "dice":
            lo, hi = p["ci95"]
            click.echo(f"\nplateau check, {p['eval']}: {p['comparison']}: ΔDice {p['mean_diff']:+.4f} "
                       f"[{lo:+.4f}, {hi:+.4f}] (seeds {p['seeds']}); arms with more steps than 'real' "
                       f"({', '.join(f'{a} {n}' for a, n in res.get('arm_steps', {}).items())}) are compared against this.")
    for w in res["warnings"]:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    out = Path(out_dir)
    click.echo(f"\nwritten: {out / 'report.md'}, {out / 'results.json'}, {out / 'summary.csv'}, "
               f"{out / 'dice_vs_n.png'}")
