"""Configuration of `retinasynth benchmark-downstream`: one frozen dataclass and named profiles."""

from __future__ import annotations

from dataclasses import dataclass

from retinasynth.config import apply_overrides, from_dict, load_file, to_dict
from retinasynth.errors import ConfigError
from retinasynth.profiles import BENCH_PROFILES, check_registry

ARMS = ("real", "real+synth", "synth", "pretrain", "real-2x")
EVAL_MODES = ("test", "val")
PREPROCESS = ("rgb", "green_clahe")
LR_SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
_UNET_DECODER = (256, 128, 64, 32, 16)


def _as_tuple(value, name: str) -> tuple:
    """Lists from JSON/YAML and comma-separated override strings ('real,synth') become tuples."""
    if isinstance(value, str):
        from retinasynth.config import parse_value

        value = [parse_value(v.strip()) for v in value.split(",") if v.strip()]  # '2,5' -> [2, 5]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"bench.{name} must be a list, got {value!r}.")
    return tuple(value)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def smp_architectures() -> list[str]:
    import segmentation_models_pytorch as smp

    return list(smp.MODEL_ARCHITECTURES_MAPPING)


def smp_encoders() -> list[str]:
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


def _valid_encoder(name: str) -> bool:
    if name in smp_encoders():
        return True
    if name.startswith("tu-"):  # any timm model through smp's universal encoder
        import timm

        return bool(timm.list_models(name[3:]))
    return False


@dataclass(frozen=True)
class BenchConfig:
    """The downstream protocol: a segmenter trained per (arm, regime, seed), scored on real test images.

    Attributes:
        arch / encoder / encoder_depth / decoder_channels: the smp model (trained from scratch:
            ``encoder_weights`` must stay null, the benchmark never downloads weights).
        patch / batch_size / steps / lr / weight_decay / lr_schedule: the optimisation, identical in
            every arm (AdamW on Dice + BCE; cosine decay after a short warm-up, or constant).
        arms: 'real' (real patches only), 'real+synth' (each batch element synthetic with probability
            ``synth_ratio``), 'synth' (synthetic only), 'pretrain' (the 'synth' model of the same seed,
            fine-tuned on the real subset with the 'real' arm's schedule: twice the steps in all),
            'real-2x' (real patches only with twice the steps: the compute-matched control of 'pretrain';
            its cell at the largest regime is also the plateau run).
        finetune_lr: peak learning rate of the 'pretrain' arm's real fine-tune (same warm-up and schedule);
            None: ``lr``, the 'real' arm's. Fine-tuning a pretrained network usually takes a smaller one.
        pretrain_mix: share of real patches in the 'pretrain' arm's pretraining batches. 0: synthetic only
            (the pretraining is the 'synth' arm's model, shared by every regime); > 0: each batch element
            is a real patch of the regime's subset with this probability, so the pretraining is trained
            per regime and seed (same steps: 'real-2x' stays the compute-matched control).
        augment: 'strong' (geometry, elastic, photometric, noise) or 'light' (flips, rot90, mild
            brightness/contrast); the same in every arm.
        preprocess: 'rgb' (as stored) or 'green_clahe' (the green channel with CLAHE, as grey RGB),
            applied identically to real and synthetic, training and evaluated images.
        infer_tile / infer_overlap: sliding-window inference with tiles of this side (None: whole
            image in one pass) overlapping by this share, blended with Gaussian weights.
        eval: 'test' scores the dataset's test split; 'val' never loads it: ``val_count`` training
            images drawn with ``val_seed`` are held out and scored, the regimes come from the rest.
        plateau: number of seeds for which 'real' at the largest regime is also trained with twice the
            steps (the plateau check: more compute alone should not move Dice).
        regimes: numbers of real training images; for each seed a seeded subset of that size, the same
            for every arm.
        seeds: one run per seed and (arm, regime); the seed sets the subset, the initialisation and
            the batches.
        size: working resolution (images loaded with ``DataConfig(size=size)``); scores are computed at
            native resolution inside the FOV.
        min_fov: a training patch is redrawn (up to 10 times) while less than this share lies in the FOV.
        bootstrap: resamples of the test images for the paired confidence intervals.
        amp: CUDA only ('auto': bf16 where supported, else fp16); CPU always runs fp32.
        threads: CPU threads for torch; None = all cores.
    """

    profile: str = "cpu"
    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] | None = (128, 64, 32, 16)
    encoder_weights: str | None = None
    patch: int = 96
    batch_size: int = 8
    steps: int = 400
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    finetune_lr: float | None = None
    pretrain_mix: float = 0.0
    arms: tuple[str, ...] = ("real", "real+synth", "synth")
    synth_ratio: float = 0.5
    regimes: tuple[int, ...] = (2, 5, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 512
    threshold: float = 0.5
    cldice: bool = True
    min_fov: float = 0.5
    bootstrap: int = 2000
    amp: str = "auto"
    threads: int | None = None
    preprocess: str = "rgb"
    augment: str = "strong"
    infer_tile: int | None = None
    infer_overlap: float = 0.5
    eval: str = "test"
    val_count: int = 5
    val_seed: int = 0
    plateau: int = 0

    def __post_init__(self) -> None:
        for name in ("arms", "regimes", "seeds"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name))
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", _as_tuple(self.decoder_channels, "decoder_channels"))
        for name in ("patch", "batch_size", "steps", "size", "encoder_depth", "bootstrap"):
            v = getattr(self, name)
            if not _positive_int(v):
                raise ConfigError(f"bench.{name} must be a positive integer, got {v!r}.")
        if self.encoder_weights is not None:
            raise ConfigError(f"bench.encoder_weights must be null (got {self.encoder_weights!r}): the benchmark "
                              "trains from scratch and never downloads weights.")
        archs = smp_architectures()
        if not isinstance(self.arch, str) or self.arch.lower() not in archs:
            raise ConfigError(f"unknown bench.arch {self.arch!r}; valid (smp): {', '.join(archs)}.")
        if not isinstance(self.encoder, str) or not _valid_encoder(self.encoder):
            raise ConfigError(f"unknown bench.encoder {self.encoder!r}; valid (smp): {', '.join(smp_encoders())}, "
                              "or tu-<timm model>.")
        if not 1 <= self.encoder_depth <= 5:
            raise ConfigError(f"bench.encoder_depth must be in 1..5, got {self.encoder_depth!r}.")
        if self.decoder_channels is not None:
            if not all(_positive_int(c) for c in self.decoder_channels):
                raise ConfigError(f"bench.decoder_channels must be positive integers, got {self.decoder_channels!r}.")
            if self.arch.lower() in ("unet", "unetplusplus", "manet") and \
                    len(self.decoder_channels) != self.encoder_depth:
                raise ConfigError(f"bench.decoder_channels needs one entry per encoder stage "
                                  f"(encoder_depth={self.encoder_depth}), got {list(self.decoder_channels)}.")
        m = self.multiple
        if self.patch % m:
            raise ConfigError(f"bench.patch ({self.patch}) must be a multiple of 2**encoder_depth = {m} "
                              f"(valid: {m}, {2 * m}, {3 * m}, ...).")
        if self.patch > self.size:
            raise ConfigError(f"bench.patch ({self.patch}) is larger than bench.size ({self.size}).")
        if self.size < 16:
            raise ConfigError(f"bench.size must be >= 16, got {self.size!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"bench.lr must be > 0, got {self.lr!r}.")
        if self.finetune_lr is not None and not (isinstance(self.finetune_lr, (int, float))
                                                 and not isinstance(self.finetune_lr, bool) and self.finetune_lr > 0):
            raise ConfigError(f"bench.finetune_lr must be null or > 0, got {self.finetune_lr!r}.")
        if not (isinstance(self.pretrain_mix, (int, float)) and not isinstance(self.pretrain_mix, bool)
                and 0.0 <= self.pretrain_mix < 1.0):
            raise ConfigError(f"bench.pretrain_mix must be in [0, 1) (share of real patches in the pretraining "
                              f"batches), got {self.pretrain_mix!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"bench.weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown bench.lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}.")
        if not self.arms or any(a not in ARMS for a in self.arms) or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"bench.arms must be distinct names from {', '.join(ARMS)}, got {list(self.arms)}.")
        if not 0.0 < self.synth_ratio < 1.0:
            raise ConfigError(f"bench.synth_ratio must be in (0, 1) (share of synthetic patches in "
                              f"real+synth batches), got {self.synth_ratio!r}.")
        if not self.regimes or not all(_positive_int(n) for n in self.regimes) or \
                len(set(self.regimes)) != len(self.regimes):
            raise ConfigError(f"bench.regimes must be distinct positive integers (numbers of real training "
                              f"images), got {list(self.regimes)}.")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                     for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"bench.seeds must be distinct integers >= 0, got {list(self.seeds)}.")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"bench.threshold must be in (0, 1), got {self.threshold!r}.")
        if not isinstance(self.cldice, bool):
            raise ConfigError(f"bench.cldice must be true or false, got {self.cldice!r}.")
        if not 0.0 <= self.min_fov <= 1.0:
            raise ConfigError(f"bench.min_fov must be in [0, 1], got {self.min_fov!r}.")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown bench.amp {self.amp!r}; valid: {', '.join(AMP_MODES)}.")
        if self.augment not in ("strong", "light"):
            raise ConfigError(f"unknown bench.augment {self.augment!r}; valid: strong, light.")
        if self.preprocess not in PREPROCESS:
            raise ConfigError(f"unknown bench.preprocess {self.preprocess!r}; valid: {', '.join(PREPROCESS)}.")
        if self.infer_tile is not None and (not _positive_int(self.infer_tile) or self.infer_tile % m):
            raise ConfigError(f"bench.infer_tile must be null or a positive multiple of {m} (2**encoder_depth), "
                              f"got {self.infer_tile!r}.")
        if not (isinstance(self.infer_overlap, (int, float)) and 0.0 <= self.infer_overlap < 1.0):
            raise ConfigError(f"bench.infer_overlap must be in [0, 1), got {self.infer_overlap!r}.")
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
        if self.threads is not None and not _positive_int(self.threads):
            raise ConfigError(f"bench.threads must be a positive integer or null, got {self.threads!r}.")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (the encoder's total stride)."""
        return 2 ** self.encoder_depth

    def model_kwargs(self) -> dict:
        """Keyword arguments for ``smp.create_model`` beyond arch/encoder/weights/channels."""
        kw: dict = {"encoder_depth": self.encoder_depth}
        if self.arch.lower() in ("unet", "unetplusplus", "manet"):
            kw["decoder_channels"] = list(self.decoder_channels or _UNET_DECODER[5 - self.encoder_depth:])
        return kw

    def to_dict(self) -> dict:
        return to_dict(self)


# The dataclass defaults are the "cpu" profile, chosen with benchmarks/bench_segmenter_speed.py on the
# 2-core reference machine: Unet/resnet18, encoder_depth 4, decoder (128, 64, 32, 16) takes ~0.22 s per
# step of 8 patches of 96 px with 2 idle threads, and ~7 s to score the 20 DRIVE test images, so one run
# is ~1.6 min; the 21 distinct runs of the protocol (the synth arm is trained once per seed) take ~36 min
# with loading, ~45 min even if all 27 were trained: room for a busy machine within the 60 min budget.
PROFILES: dict[str, dict] = {
    # The default protocol, chosen on validation images (benchmarks/RESULTS.md section 8 lists every
    # configuration measured, with Dice, the learning-curve gap and minutes): the one closest to the bars
    # of Dice >= 0.80 at n=20, a learning-curve gap >= 0.02 and <= 90 min for all four arms x 3 regimes
    # x 3 seeds on 2 CPU cores.
    "cpu": {"arms": ["real", "real+synth", "synth", "pretrain"], "preprocess": "green_clahe", "size": 576,
            "patch": 96, "batch_size": 8, "steps": 800, "augment": "light", "infer_tile": 192,
            "infer_overlap": 0.5, "plateau": 1},
    # The protocol before the data-bound one (RESULTS.md section 6): compute-bound, kept reproducible.
    "quick": {},
    # GPU scale: a standard U-Net/ResNet34 recipe on 256 patches.
    "full": {"encoder": "resnet34", "encoder_depth": 5, "decoder_channels": [256, 128, 64, 32, 16],
             "patch": 256, "batch_size": 16, "steps": 4000, "lr": 1e-3},
    # `retinasynth demo` on 128x128 phantom data: a few minutes on 2 CPU cores.
    "demo": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [64, 32, 16], "patch": 64,
             "batch_size": 8, "steps": 150, "size": 128, "regimes": [2, 8], "seeds": [0, 1], "bootstrap": 1000},
    # Seconds, for tests and `retinasynth demo --quick`.
    "tiny": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8], "patch": 32,
             "batch_size": 2, "steps": 2, "size": 64, "regimes": [1, 2], "seeds": [0, 1], "bootstrap": 200},
}


check_registry("bench", PROFILES, BENCH_PROFILES)


def build_bench_config(profile: str = "cpu", config_file: str | None = None,
                       overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
    """Profile defaults, then a config file (keys at top level or under ``bench:``), then overrides
    (``bench.key=value`` or ``key=value``)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}.")
    data = {"bench": apply_overrides(PROFILES[profile], [])}
    if config_file:
        loaded = load_file(config_file)
        section = loaded.pop("bench", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{config_file}: section 'bench' must be a mapping.")
        loaded.pop("profile", None)
        data["bench"].update({**loaded, **section})
    keyed = [o if "=" not in o or "." in o.split("=", 1)[0] else "bench." + o for o in overrides]
    data = apply_overrides(data, keyed)
    extra = sorted(set(data) - {"bench"})
    if extra:
        raise ConfigError(f"unknown config section(s) {', '.join(extra)}; valid: bench (e.g. -o bench.steps=100).")
    return from_dict(BenchConfig, {**data["bench"], "profile": profile}, "bench.")
