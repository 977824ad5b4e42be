"""Planning the benchmark: which models exist (:class:`Cell`), what trains each one (its training key) and
what scores it (its score key), and how cells are shared out between processes.

A cell is one (arm, regime, seed). Its **training key** hashes everything its weights depend on: the segmenter
settings its arm reads, the arm's behaviour (registry fields, not its name, so that 'real-2x' and a 2x 'real'
plateau run are one model), the seed, the real subset and the synthetic set when the arm uses them (content
fingerprints that include the FOV masks), the resolved precision and device kind, the versions of the libraries
that compute it and a hash of the source of the modules that train it. Its **score key**, one per evaluation
set, adds the scoring settings, the evaluation set's fingerprint (working and native resolution, FOV included)
and the source of the modules that score. Models are cached by training key and scores by score key, so adding
an evaluation set scores the saved models and retrains nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from retinasynth.bench.arms import Arm, get_arm
from retinasynth.bench.config import BenchConfig
from retinasynth.errors import ConfigError
from retinasynth.provenance import fingerprint_arrays, key_versions, source_hash
from retinasynth.segmenter.config import SEGMENTER_FIELDS
from retinasynth.segmenter.sampling import real_subset

KEY_FORMAT = 3
# What trains a cell and what scores it (module names below the retinasynth package).
TRAIN_CODE = ("segmenter.model", "segmenter.sampling", "segmenter.config", "data.transforms", "data.preprocess",
              "bench.runner")
SCORE_CODE = ("segmenter.model", "metrics.seg", "data.preprocess", "bench.runner")
# Segmenter settings that change only how a model is scored, not how it is trained.
SCORE_ONLY = ("threshold", "cldice", "infer_tile", "infer_overlap")


def run_name(arm: str, regime: int, seed: int) -> str:
    return f"{arm}_n{regime}_s{seed}"


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def samples_fingerprint(samples) -> str:
    """Content of a list of samples: ids, images, vessel masks and FOV masks."""
    items = []
    for s in samples:
        items += [(s.id + ":image", s.image), (s.id + ":mask", s.mask), (s.id + ":fov", s.fov)]
    return fingerprint_arrays(items)


@dataclass(frozen=True)
class Environment:
    """What every key shares: resolved precision, device kind, library versions, code hashes."""

    precision: str
    device_type: str
    versions: dict = field(default_factory=key_versions)
    train_code: str = field(default_factory=lambda: source_hash(TRAIN_CODE))
    score_code: str = field(default_factory=lambda: source_hash(SCORE_CODE))


@dataclass(frozen=True)
class Cell:
    """One model of the plan: an arm at a regime and seed, with the keys that cache it."""

    arm: str
    regime: int
    seed: int
    train_key: str
    subset: tuple = field(repr=False, compare=False, default=())
    plateau: bool = False  # a 2x-steps 'real' run made only for the plateau check (not an arm of the report)
    source: str | None = None  # the cell whose run's branch is this cell's model (see :func:`branch_source`)

    @property
    def name(self) -> str:
        return run_name(self.arm, self.regime, self.seed)

    @property
    def spec(self) -> Arm:
        return get_arm(self.arm)


def training_settings(cfg: BenchConfig, arm: Arm) -> dict:
    """The settings a model of ``arm`` is trained with: the segmenter's (less scoring-only ones and those
    the arm ignores), steps scaled by the arm, and the arm's own settings away from their defaults."""
    c = {k: v for k, v in cfg.to_dict().items() if k in SEGMENTER_FIELDS and k not in SCORE_ONLY
         and k not in arm.ignores and k != "precision"}
    c["steps"] = cfg.steps  # the arm's multiple is part of its behaviour below
    if arm.augment is not None:
        c["augment"] = arm.augment
    for k, default in arm.config_keys.items():
        v = getattr(cfg, k)
        if v != default:
            c[k] = v
    if cfg.curve:  # left out when empty: keys recorded before the setting existed stay valid
        c["curve"] = sorted(cfg.curve)
    return c


def branch_budgets(cfg: BenchConfig, steps: int) -> tuple[int, ...]:
    """The shorter budgets (``bench.curve`` fractions of ``steps``) read off a run of ``steps`` steps."""
    return tuple(sorted({int(round(f * steps)) for f in cfg.curve} - {0, steps}))


def branch_key(tkey: str, budget: int) -> str:
    """The key of the model a run with training key ``tkey`` had after its ``budget``-step branch."""
    return _sha({"run": tkey, "branch": budget})


def arm_behaviour(arm: Arm) -> dict:
    """What an arm does, as data (its name and wording stay out of its key)."""
    base = get_arm(arm.same_model_as) if arm.same_model_as else arm
    out = {"sampling": base.sampling, "steps": arm.steps, "uses_real": arm.uses_real,
           "uses_synth": arm.uses_synth, "pretrain": arm.pretrain}
    if arm.adapt is not None:  # left out otherwise: keys recorded before adaptation arms existed stay valid
        out["adapt"] = arm.adapt
    return out


def train_key(cfg: BenchConfig, arm: Arm, regime: int, seed: int, subset_fp: str | None, synth_fp: str | None,
              env: Environment) -> str:
    return _sha({"format": KEY_FORMAT, "config": training_settings(cfg, arm), "arm": arm_behaviour(arm),
                 "seed": seed, "regime": regime if arm.uses_real else None,
                 "real": subset_fp if arm.uses_real else None, "synth": synth_fp if arm.uses_synth else None,
                 "precision": env.precision, "device": env.device_type, "versions": env.versions,
                 "code": env.train_code})


def pretrain_key(cfg: BenchConfig, seed: int, synth_fp: str | None, env: Environment,
                 subset_fp: str | None = None) -> str:
    """What the synthetic pretraining of the 'pretrain' arm depends on: with ``pretrain_mix`` 0 it is the
    'synth' arm's model (same key), else it also draws real patches of the regime's subset."""
    if not cfg.pretrain_mix:
        return train_key(cfg, get_arm("synth"), 0, seed, None, synth_fp, env)
    return _sha({"format": KEY_FORMAT, "config": training_settings(cfg, get_arm("synth")), "seed": seed,
                 "synth": synth_fp, "pretrain_mix": cfg.pretrain_mix, "real": subset_fp,
                 "precision": env.precision, "device": env.device_type, "versions": env.versions,
                 "code": env.train_code})


def scoring_settings(cfg: BenchConfig) -> dict:
    return {k: getattr(cfg, k) for k in (*SCORE_ONLY, "preprocess", "size", "multiple")}


def score_key(cfg: BenchConfig, tkey: str, eval_fp: dict, env: Environment) -> str:
    return _sha({"format": KEY_FORMAT, "model": tkey, "scoring": scoring_settings(cfg), "eval": eval_fp,
                 "precision": env.precision, "device": env.device_type, "versions": env.versions,
                 "code": env.score_code})


def branch_source(cfg: BenchConfig, arm: Arm, arms: list[Arm]) -> Arm | None:
    """The arm among ``arms`` whose run, at the same regime and seed, passes through ``arm``'s model: an arm
    that is ``arm`` at more steps (``same_model_as``) and has a ``bench.curve`` branch at exactly ``arm``'s
    steps, with the same warm-up. That branch is bitwise the model a run of ``arm`` ends with
    (:func:`retinasynth.segmenter.train_segmenter`), so ``arm`` is read off it instead of trained: e.g. 'real'
    off 'real-2x' with curve 0.5, which saves a third of the real-image arms' steps."""
    from retinasynth.segmenter.model import WSD_WARMUP

    if not cfg.curve or cfg.lr_schedule != "wsd":
        return None
    steps = arm.steps * cfg.steps
    for other in arms:
        if other.same_model_as != arm.name or other.name == arm.name:
            continue
        longer = other.steps * cfg.steps
        if steps in branch_budgets(cfg, longer) and min(WSD_WARMUP, steps // 10) == min(WSD_WARMUP, longer // 10):
            return other
    return None


# What trains an adaptation arm besides TRAIN_CODE (kept out of the other arms' keys).
ADAPT_CODE = ("data.adapt", "bench.adapt")


def adapt_subset_key(subset_fp: str, adapt_fp: str) -> str:
    """What an adaptation arm's model depends on besides the real subset: the target photographs (their
    content) and the code that adapts to them."""
    return _sha({"real": subset_fp, "target": adapt_fp, "code": source_hash(ADAPT_CODE)})


def make_plan(cfg: BenchConfig, train_samples: list, synth_fp: str | None, env: Environment,
              adapt_fp: str | None = None) -> list[Cell]:
    """Every cell of the protocol, 'synth' before 'pretrain' in each (regime, seed) (it is the pretraining),
    an arm read off a longer arm's branch (:func:`branch_source`) after that arm, then the plateau runs when
    'real-2x' is not an arm (``plateau`` seeds of 'real' at twice the steps at the largest regime)."""
    arms = [get_arm(a) for a in cfg.arms]
    needs = [a.name for a in arms if a.adapt is not None]
    if needs and adapt_fp is None:
        raise ConfigError(f"arms {', '.join(needs)} adapt to a target camera: pass --adapt NAME=DIR (unlabelled "
                          "photographs of that camera, none of them scored), or drop those arms.")
    sources = {a.name: branch_source(cfg, a, arms) for a in arms}
    order = sorted(arms, key=lambda a: (a.pretrain, sources[a.name] is not None))
    plan: list[Cell] = []
    for n in cfg.regimes:
        for seed in cfg.seeds:
            subset = tuple(real_subset(train_samples, n, seed))
            fp = samples_fingerprint(subset)
            for arm in order:
                src = sources[arm.name]
                afp = adapt_subset_key(fp, adapt_fp) if arm.adapt is not None else fp
                plan.append(Cell(arm.name, n, seed, train_key(cfg, arm, n, seed, afp, synth_fp, env), subset,
                                 source=run_name(src.name, n, seed) if src is not None else None))
    if "real-2x" not in cfg.arms:
        n = max(cfg.regimes)
        for seed in cfg.seeds[:cfg.plateau]:
            subset = tuple(real_subset(train_samples, n, seed))
            key = train_key(cfg, get_arm("real-2x"), n, seed, samples_fingerprint(subset), None, env)
            plan.append(Cell("real-2x", n, seed, key, subset, plateau=True))
    return plan


def cell_groups(plan: list[Cell]) -> list[list[int]]:
    """Indices of ``plan`` grouped so that cells sharing work stay together: equal training keys, and per
    seed the cells that train or read the synthetic pretraining. Groups are in plan order, each sorted; every
    index is in exactly one group."""
    parent = list(range(len(plan)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for i, c in enumerate(plan):
        spec = c.spec
        keys = [("key", c.train_key), ("cell", c.name)]
        if c.source is not None:
            keys.append(("cell", c.source))
        if spec.pretrain or (spec.uses_synth and not spec.uses_real):
            keys.append(("pretraining", c.seed))
        for key in keys:
            if key in first:
                a, b = find(i), find(first[key])
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(plan)):
        groups.setdefault(find(i), []).append(i)
    return [groups[r] for r in sorted(groups)]


def cell_share(plan: list[Cell], part: int, parts: int) -> set[int]:
    """The plan indices that share ``part`` of ``parts`` trains: group ``g`` goes to ``g % parts``."""
    return {i for g, idx in enumerate(cell_groups(plan)) if g % parts == part for i in idx}


def val_ids(ids: list[str], cfg: BenchConfig) -> list[str]:
    """The training images held out as the evaluation set of ``eval=val``: ``val_count`` ids drawn with
    ``default_rng([val_seed, 1])`` from the sorted ids (fixed for a dataset and seed, recorded)."""
    ordered = sorted(ids)
    if cfg.val_count >= len(ordered):
        raise ConfigError(f"bench.val_count={cfg.val_count} leaves no training image of the {len(ordered)} in the "
                          "training split; lower bench.val_count.")
    idx = np.random.default_rng([cfg.val_seed, 1]).choice(len(ordered), size=cfg.val_count, replace=False)
    return sorted(ordered[int(i)] for i in idx)


def with_steps(cfg: BenchConfig, factor: int) -> BenchConfig:
    return cfg if factor == 1 else dataclasses.replace(cfg, steps=factor * cfg.steps)
