"""Configuration of `retinasynth benchmark-downstream`: one frozen dataclass and named profiles."""

from __future__ import annotations

from dataclasses import dataclass

from retinasynth.bench.arms import ARMS
from retinasynth.config import apply_overrides, from_dict, load_config_file, resolve_profile
from retinasynth.errors import ConfigError
from retinasynth.profiles import BENCH_PROFILES, check_registry
from retinasynth.segmenter.config import SegmenterConfig, _as_tuple, _positive_int, upgrade_legacy

EVAL_MODES = ("test", "val")


@dataclass(frozen=True)
class BenchConfig(SegmenterConfig):
    """The downstream protocol: the segmenter (see :class:`SegmenterConfig`, whose fields it inherits) trained
    per (arm, regime, seed) and scored on real images.

    Attributes:
        arms: names from the arm registry (:mod:`retinasynth.bench.arms`): 'real', 'real-2x' (twice the
            steps: the compute-matched control), 'real+aug' (camera-shift augmentation, twice the steps: the
            control a synthetic arm must beat on unseen cameras), 'real+synth', 'synth', 'pretrain',
            'pretrain+aug' (the pretraining fine-tuned with real+aug's augmentation; control: 'real+aug').
        finetune_lr: peak learning rate of the 'pretrain' arm's real fine-tune (same warm-up and schedule);
            None: ``lr``, the 'real' arm's.
        pretrain_mix: share of real patches in the 'pretrain' arm's pretraining batches. 0: synthetic only
            (the pretraining is the 'synth' arm's model, shared by every regime); > 0: trained per regime and
            seed (same steps: 'real-2x' stays the compute-matched control).
        eval: 'test' scores the dataset's test split; 'val' never loads it: ``val_count`` training
            images drawn with ``val_seed`` are held out and scored, the regimes come from the rest.
        plateau: number of seeds for which 'real' at the largest regime is also trained with twice the
            steps when 'real-2x' is not an arm (the plateau check).
        regimes: numbers of real training images; for each seed a seeded subset of that size, the same
            for every arm.
        seeds: one run per seed and (arm, regime); the seed sets the subset, the initialisation and
            the batches.
        bootstrap: resamples of the crossed bootstrap behind every confidence interval.
        threads: CPU threads for torch; None = all cores.
        fda_beta: the 'real+fda' arm's swapped low-frequency square, half side as a share of the shorter side.
        adapt_looks: target photographs drawn per real image for the 'real+fda' and 'real+hist' arms (each real
            image is trained on in that many target looks).
        curve: shorter budgets read off every model's run, as fractions of its steps (of the fine-tune for
            'pretrain' arms), e.g. [0.25, 0.5]: each is scored like the full model and the report plots Dice
            against steps per arm and states each arm's last doubling (its plateau). Needs
            ``lr_schedule='wsd'``, whose shorter runs are branches of the longer one (~1.2x the cost for three
            budgets, see :func:`~retinasynth.segmenter.model.train_segmenter`). Empty: the final model only.
    """

    profile: str = "cpu"
    finetune_lr: float | None = None
    pretrain_mix: float = 0.0
    arms: tuple[str, ...] = ("real", "real+synth", "synth")
    regimes: tuple[int, ...] = (2, 5, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    bootstrap: int = 10000
    threads: int | None = None
    eval: str = "test"
    val_count: int = 5
    val_seed: int = 0
    plateau: int = 0
    curve: tuple[float, ...] = ()
    fda_beta: float = 0.01
    adapt_looks: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("arms", "regimes", "seeds", "curve"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name))
        if isinstance(self.fda_beta, bool) or not isinstance(self.fda_beta, (int, float)) \
                or not 0.0 < self.fda_beta <= 0.5:
            raise ConfigError(f"bench.fda_beta must lie in (0, 0.5] (the swapped low-frequency square's half side "
                              f"as a share of the image side; FDA uses 0.01-0.09), got {self.fda_beta!r}.")
        if not _positive_int(self.adapt_looks):
            raise ConfigError(f"bench.adapt_looks must be a positive integer (target photographs per real image "
                              f"for the real+fda and real+hist arms), got {self.adapt_looks!r}.")
        if not _positive_int(self.bootstrap):
            raise ConfigError(f"bench.bootstrap must be a positive integer, got {self.bootstrap!r}.")
        if self.finetune_lr is not None and not (isinstance(self.finetune_lr, (int, float))
                                                 and not isinstance(self.finetune_lr, bool) and self.finetune_lr > 0):
            raise ConfigError(f"bench.finetune_lr must be null or > 0, got {self.finetune_lr!r}.")
        if not (isinstance(self.pretrain_mix, (int, float)) and not isinstance(self.pretrain_mix, bool)
                and 0.0 <= self.pretrain_mix < 1.0):
            raise ConfigError(f"bench.pretrain_mix must be in [0, 1) (share of real patches in the pretraining "
                              f"batches), got {self.pretrain_mix!r}.")
        if not self.arms or any(a not in ARMS for a in self.arms) or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"bench.arms must be distinct names from {', '.join(ARMS)}, got {list(self.arms)}.")
        if not self.regimes or not all(_positive_int(n) for n in self.regimes) or \
                len(set(self.regimes)) != len(self.regimes):
            raise ConfigError(f"bench.regimes must be distinct positive integers (numbers of real training "
                              f"images), got {list(self.regimes)}.")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                     for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"bench.seeds must be distinct integers >= 0, got {list(self.seeds)}.")
        if self.eval not in EVAL_MODES:
            raise ConfigError(f"unknown bench.eval {self.eval!r}; valid: {', '.join(EVAL_MODES)} (val holds out "
                              "bench.val_count training images and never loads the test split).")
        if not _positive_int(self.val_count):
            raise ConfigError(f"bench.val_count must be a positive integer, got {self.val_count!r}.")
        if not (isinstance(self.val_seed, int) and not isinstance(self.val_seed, bool) and self.val_seed >= 0):
            raise ConfigError(f"bench.val_seed must be an integer >= 0, got {self.val_seed!r}.")
        if not (isinstance(self.plateau, int) and not isinstance(self.plateau, bool)
                and 0 <= self.plateau <= len(self.seeds)):
            raise ConfigError(f"bench.plateau must be an integer in 0..{len(self.seeds)} (seeds with a 2x-steps "
                              f"run of 'real' at the largest regime), got {self.plateau!r}.")
        if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0 for f in self.curve) \
                or len(set(self.curve)) != len(self.curve):
            raise ConfigError(f"bench.curve must be distinct fractions in (0, 1) of each model's steps (e.g. "
                              f"0.25,0.5), got {list(self.curve)}.")
        if self.curve and self.lr_schedule != "wsd":
            raise ConfigError(f"bench.curve {list(self.curve)} reads shorter budgets off one run, which needs "
                              f"bench.lr_schedule=wsd (got {self.lr_schedule!r}); add -o bench.lr_schedule=wsd.")
        if self.threads is not None and not _positive_int(self.threads):
            raise ConfigError(f"bench.threads must be a positive integer or null, got {self.threads!r}.")


# The benchmark's profiles. Retired ones are recorded configs under benchmarks/configs/ (bench-quick.json: the
# dataclass defaults, the protocol of 2026-11-27; bench-cpu-v1.json: the 800-step protocol of benchmarks/results/
# drive-cpu and its siblings); a results.json rebuilds its own protocol (--config OUT/results.json).
PROFILES: dict[str, dict] = {
    # The default protocol, chosen on validation images (benchmarks/RESULTS.md lists every configuration measured).
    # 'real-2x' is an arm: the compute-matched control of every arm at twice the steps; its n=20 cells are the
    # plateau runs. The second control, 'real+aug' (camera-shift augmentation at the same compute), is opt-in.
    "cpu": {"arms": ["real", "real+synth", "synth", "pretrain", "real-2x"], "preprocess": "green_clahe", "size": 576,
            "patch": 96, "batch_size": 8, "steps": 800, "augment": "light", "infer_tile": 192,
            "infer_overlap": 0.5, "plateau": 1},
    # One GPU: a standard U-Net/ResNet34 recipe on 256 patches.
    "gpu": {"encoder": "resnet34", "encoder_depth": 5, "decoder_channels": [256, 128, 64, 32, 16],
            "patch": 256, "batch_size": 16, "steps": 4000, "lr": 1e-3},
    # `retinasynth demo` on 128x128 phantom data: a few minutes on 2 CPU cores.
    "demo": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [64, 32, 16], "patch": 64,
             "batch_size": 8, "steps": 150, "size": 128, "regimes": [2, 8], "seeds": [0, 1], "bootstrap": 1000},
    # Seconds, for tests and `retinasynth demo --quick`.
    "tiny": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8], "patch": 32,
             "batch_size": 2, "steps": 2, "size": 64, "regimes": [1, 2], "seeds": [0, 1], "bootstrap": 200},
}


check_registry("bench", PROFILES, BENCH_PROFILES)


def build_bench_config(profile: str | None = None, config_file: str | None = None,
                       overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
    """Profile defaults, then a config file (keys at top level or under ``bench:``; a benchmark's results.json
    or a recorded config under benchmarks/configs/ rebuilds its protocol), then overrides (``bench.key=value``
    or ``key=value``). ``profile`` None: the profile the config file records, else 'cpu'."""
    loaded, recorded = load_config_file(config_file) if config_file else ({}, None)
    if isinstance(loaded.get("bench"), dict):
        recorded = loaded["bench"].pop("profile", recorded)
    base, name = resolve_profile("benchmark", PROFILES, profile, recorded)
    data = {"bench": apply_overrides(base, [])}
    if config_file:
        section = loaded.pop("bench", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{config_file}: section 'bench' must be a mapping.")
        data["bench"].update(upgrade_legacy({**loaded, **section}))
    from retinasynth.config import qualify_overrides

    keyed = [o if "=" in o and "." in o.split("=", 1)[0] else qualify_overrides(BenchConfig, [o], "bench.")[0]
             for o in overrides]
    data = apply_overrides(data, keyed)
    extra = sorted(set(data) - {"bench"})
    if extra:
        raise ConfigError(f"unknown config section(s) {', '.join(extra)}; valid: bench (e.g. -o bench.steps=100).")
    return from_dict(BenchConfig, upgrade_legacy({**data["bench"], "profile": name}), "bench.")
