"""Read a benchmark's arms against control arms of an earlier run made with the same protocol and code, without
retraining the controls.

    python benchmarks/combine_results.py runs/bench-cpu4/results.json benchmarks/results/drive-cpu/results.json \
        --take real-2x --out benchmarks/results/drive-cpu-synth

A control model depends on the real images, the protocol and the training code, not on the synthetic set, so a
run of an earlier synthetic set holds the very models a new run would train. This script proves that before using
it: every run that both results hold (e.g. all `real` cells) must have the same training key and the same
per-image scores to the last bit, the protocol (the config, arms aside), the training- and scoring-code hashes
and evaluation-set fingerprints must agree. The package hash may differ where only code outside training and
scoring changed, so runs assembled with `--allow-mixed-code` combine (their cells' training keys hash the
training code). Then it adds
the taken arms' runs to the new ones and recomputes the summary, the paired statistics (their Bonferroni
families sized for the combined arms) and the plateau check with the benchmark's own functions, and writes
results.json (with a `combined` block naming both sources), summary.csv, report.md and dice_vs_n.png. Any
mismatch is a one-line error and exit 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retinasynth.bench.arms import ARMS
from retinasynth.bench.report import (
    paired_all,
    plateau_summary,
    plot_dice_vs_n,
    report_markdown,
    summarize,
    write_summary_csv,
)
from retinasynth.bench.stats import family_sizes, learning_curve_warnings
from retinasynth.provenance import write_json_atomic, write_text_atomic

# Fields of the bench config that may differ between the two runs: only which arms ran.
FREE_CONFIG = {"arms"}


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path}: cannot read a benchmark results.json ({e}); give the file "
                         "benchmark-downstream wrote.") from None


def check_same_protocol(new: dict, ref: dict) -> None:
    """Raise ValueError (one line) unless the two runs share the protocol (arms aside), the training and scoring
    code and the evaluation images. A run assembled with --allow-mixed-code passes: its cached cells were found
    under training keys that hash this very training code (the package hash differed only outside it)."""
    cn = {k: v for k, v in new["config"].items() if k not in FREE_CONFIG}
    cr = {k: v for k, v in ref["config"].items() if k not in FREE_CONFIG}
    if cn != cr:
        diff = sorted(k for k in set(cn) | set(cr) if cn.get(k) != cr.get(k))
        raise ValueError(f"the two runs' protocols differ in {', '.join(diff)}; only runs of one protocol combine.")
    if new["provenance"]["code"]["train"] != ref["provenance"]["code"]["train"]:
        raise ValueError("the two runs were made by different training code; retrain the arms in one run instead.")
    if new["provenance"]["code"]["score"] != ref["provenance"]["code"]["score"]:
        raise ValueError("the two runs score with different code; rescore the arms in one run instead.")
    for ev, info in new["data"]["eval"].items():
        other = ref["data"]["eval"].get(ev)
        if other is None or other["fingerprint"] != info["fingerprint"]:
            raise ValueError(f"evaluation set {ev!r} is not the same images in both runs; score both on it.")


def combine(new: dict, ref: dict, take: list[str], new_name: str, ref_name: str) -> tuple[dict, dict]:
    """The combined results, and the checks that allowed it. Raises ValueError with a one-line reason."""
    check_same_protocol(new, ref)
    ref_by_name = {r["name"]: r for r in ref["runs"]}
    new_by_name = {r["name"]: r for r in new["runs"]}
    # cells of arms that do not use the synthetic set are the same models in both runs, if the runs reproduce
    shared = sorted(n for n in set(ref_by_name) & set(new_by_name) if not ARMS[new_by_name[n]["arm"]].uses_synth)
    if not shared:
        raise ValueError("the two runs share no cell without synthetic data, so nothing proves that they reproduce "
                         "each other; run the new benchmark with the `real` arm too.")
    for name in shared:
        a, b = new_by_name[name], ref_by_name[name]
        if a["train_key"] != b["train_key"]:
            raise ValueError(f"cell {name}: training keys differ ({a['train_key'][:12]} vs {b['train_key'][:12]}), "
                             "so the runs' controls are not the same models; train the arms in the new run instead.")
        for ev in new["data"]["eval"]:
            if a["scores"][ev]["per_image"] != b["scores"][ev]["per_image"]:
                raise ValueError(f"cell {name}: the same training key scored differently on {ev}; the controls "
                                 "would not reproduce, retrain them.")
    synthetic = [a for a in take if ARMS[a].uses_synth]
    if synthetic:
        raise ValueError(f"arm(s) {', '.join(synthetic)} depend on the synthetic set; take only control arms.")
    taken = [r for r in ref["runs"] if r["arm"] in take]
    missing = [a for a in take if not any(r["arm"] == a for r in taken)]
    if missing:
        raise ValueError(f"{ref_name} has no runs of arm(s) {', '.join(missing)}; take arms that it trained.")
    clash = sorted({r["arm"] for r in taken} & {r["arm"] for r in new["runs"]})
    if clash:
        raise ValueError(f"arm(s) {', '.join(clash)} are in both runs; take only arms the new run lacks.")
    runs = new["runs"] + taken
    steps = {**ref["arm_steps"], **new["arm_steps"]}
    shas = set(new["code_revisions"]["code_sha256"]) | set(ref["code_revisions"]["code_sha256"])
    revs = set(new["code_revisions"]["git_revisions"]) | set(ref["code_revisions"]["git_revisions"])
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    regimes = list(new["config"]["regimes"])
    n_boot = new["config"]["bootstrap"]
    pairs = paired_all(runs, arms, regimes, n_boot)
    plateau_runs = [r for r in runs if r["arm"] == "real-2x" and r["regime"] == max(regimes)]
    checks = {"shared_cells": shared, "train_code": new["provenance"]["code"]["train"],
              "taken_arms": take, "taken_cells": [r["name"] for r in taken]}
    out = {**new,
           "config": {**new["config"], "arms": arms},
           "runs": runs,
           "summary": summarize(runs, arms, regimes),
           "paired": pairs,
           "n_comparisons": family_sizes(pairs),
           "warnings": new["warnings"] + learning_curve_warnings(pairs)
           + [f"arm(s) {', '.join(take)} taken from {ref_name} (same protocol, training code and cells; "
              f"{len(shared)} shared cells identical to the bit), not trained by this run."],
           "plateau": plateau_summary(runs, plateau_runs, max(regimes), n_boot) if plateau_runs else None,
           "plateau_runs": plateau_runs,
           "arm_steps": {a: steps[a] for a in arms},
           "labelled": new["labelled"] + [row for row in ref["labelled"] if row["arm"] in take],
           # the package hashes differ where code outside the training code changed; the training code did not
           "code_revisions": {"mixed": len(shas) > 1, "code_sha256": sorted(shas), "git_revisions": sorted(revs),
                              "train_code": new["provenance"]["code"]["train"]},
           "combined": {"new": new_name, "reference": ref_name, **checks}}
    return out, checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path, help="results.json of the run to complete")
    ap.add_argument("reference", type=Path, help="results.json of the earlier run that holds the control arms")
    ap.add_argument("--take", required=True, help="comma-separated arms to take from the reference, e.g. real-2x")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json, summary.csv, report.md, plot")
    a = ap.parse_args(argv)
    take = [t for t in a.take.split(",") if t]
    unknown = [t for t in take if t not in ARMS]
    if unknown:
        print(f"error: --take {','.join(unknown)}: unknown arm; valid: {', '.join(ARMS)}.")
        return 2
    try:
        res, checks = combine(_load(a.new), _load(a.reference), take, str(a.new), str(a.reference))
    except ValueError as e:
        print(f"error: {a.new} + {a.reference}: {e}")
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out / "results.json", res)
    write_summary_csv(a.out / "summary.csv", res["summary"])
    plot_dice_vs_n(a.out / "dice_vs_n.png", res["summary"], res["config"]["arms"], res["config"]["regimes"])
    write_text_atomic(a.out / "report.md", report_markdown(res))
    print(f"{len(checks['shared_cells'])} shared cells identical; took {len(checks['taken_cells'])} cells of "
          f"{', '.join(take)}; wrote {a.out}/ (results.json, summary.csv, report.md, dice_vs_n.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
