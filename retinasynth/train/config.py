"""Configuration of `retinasynth fit`: data, model and training sections, and named profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from retinasynth.config import apply_overrides, from_dict, load_config_file, resolve_profile, to_dict
from retinasynth.data.dataset import DataConfig
from retinasynth.errors import ConfigError
from retinasynth.models.factory import TUNABLE, ModelConfig
from retinasynth.models.losses import GAN_LOSSES
from retinasynth.precision import LEGACY_AMP, PRECISIONS
from retinasynth.profiles import FIT_PROFILES, check_registry


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation. ``steps`` counts generator updates; the learning rate is constant for the
    first ``decay_start`` share of them, then decays linearly to zero (pix2pix schedule)."""

    steps: int = 3000
    batch_size: int = 1
    crop: int | None = 256  # random square crop of the working-resolution image; None = whole frame
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    gan_loss: str = "vanilla"
    l1_weight: float = 100.0
    vessel_l1: float = 0.0  # extra L1 weight on vessel pixels (models.losses.reconstruction_l1); 0 = plain L1
    # Vessel consistency: a segmenter trained on this fit's training images (consistency_steps steps, then
    # frozen) reads G(mask); its Dice + BCE against the mask, times this weight, joins the generator loss.
    consistency: float = 0.0
    consistency_steps: int = 600
    # pix2pixHD's feature matching: L1 between the discriminator's activations on the generated and the real
    # pair (models.losses.feature_matching), times this weight (pix2pixHD: 10); 0 = off. A texture source:
    # it rewards the background grain and fine structure a discriminator's middle layers see.
    feature_matching: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    val_count: int = 2  # training-split images held out for sample grids and validation L1
    log_every: int = 25
    sample_every: int = 500
    ckpt_every: int = 250
    # Forward-pass precision (retinasynth.precision): auto = bf16 autocast where the hardware computes bf16
    # natively (CPUs with avx512_bf16/amx_bf16, CUDA with bf16), fp16 + grad scaler on CUDA without bf16,
    # else fp32; fp32/bf16/fp16 force one. A run's config.json holds the resolved value (what a resume uses).
    precision: str = "auto"
    # None: by device and precision (retinasynth.precision.fit_channels_last: CUDA, or a CPU at bf16); a run's
    # config.json holds the resolved value.
    channels_last: bool | None = None
    compile: bool = False
    threads: int | None = None  # CPU threads; None = all cores
    # A finished fit run whose generator, EMA and discriminator weights this run starts from (fine-tuning, e.g.
    # on a target camera's photographs paired with pseudo-labels: `retinasynth pseudo-label`); same model settings.
    init_from: str | None = None
    # Which generator parameters are updated (retinasynth.models.factory.TUNABLE): 'all', or 'norm' (only the
    # normalisation layers' scale and shift: a fine-tune that changes the look, not where things are drawn).
    tune: str = "all"
    # With init_from and model.disc_prior: inside the disc plane (its Gaussian as the pixel weight), this share of
    # the photograph in the L1 target is replaced by the starting generator's own render of the same condition
    # (frozen). A target-camera fine-tune then learns the photographs' look everywhere except where the optic
    # disc is drawn, which pseudo-masks place poorly (RESULTS.md sections 29-32). 0 = off, 1 = the start's render
    # at the plane's peak.
    disc_anchor: float = 0.0

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "log_every", "sample_every", "ckpt_every", "consistency_steps")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {v!r}.")
        if self.crop is not None and (not isinstance(self.crop, int) or self.crop < 32):
            raise ConfigError(f"train.crop must be an integer >= 32 or null, got {self.crop!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"train.lr must be > 0, got {self.lr!r}.")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be an integer >= 0, got {self.seed!r}.")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ConfigError(f"train.decay_start must be in [0, 1], got {self.decay_start!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if self.gan_loss not in GAN_LOSSES:
            raise ConfigError(f"unknown train.gan_loss {self.gan_loss!r}; valid: {', '.join(GAN_LOSSES)}.")
        if self.tune not in TUNABLE:
            raise ConfigError(f"unknown train.tune {self.tune!r}; valid: {', '.join(TUNABLE)}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown train.precision {self.precision!r}; valid: {', '.join(PRECISIONS)}.")
        if not isinstance(self.consistency, (int, float)) or isinstance(self.consistency, bool) \
                or self.consistency < 0:
            raise ConfigError(f"train.consistency must be a number >= 0, got {self.consistency!r}.")
        if not isinstance(self.feature_matching, (int, float)) or isinstance(self.feature_matching, bool) \
                or self.feature_matching < 0:
            raise ConfigError(f"train.feature_matching must be a number >= 0, got {self.feature_matching!r}.")
        if not isinstance(self.vessel_l1, (int, float)) or isinstance(self.vessel_l1, bool) or self.vessel_l1 < 0:
            raise ConfigError(f"train.vessel_l1 must be a number >= 0, got {self.vessel_l1!r}.")
        if not isinstance(self.disc_anchor, (int, float)) or isinstance(self.disc_anchor, bool) \
                or not 0.0 <= self.disc_anchor <= 1.0:
            raise ConfigError(f"train.disc_anchor must be a number in [0, 1], got {self.disc_anchor!r}.")
        if self.l1_weight < 0:
            raise ConfigError(f"train.l1_weight must be >= 0, got {self.l1_weight!r}.")
        if not isinstance(self.val_count, int) or self.val_count < 0:
            raise ConfigError(f"train.val_count must be an integer >= 0, got {self.val_count!r}.")


@dataclass(frozen=True)
class FitConfig:
    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        side = self.train.crop or self.data.size
        if self.data.size is None:
            raise ConfigError("data.size must be set for training (a square working resolution, e.g. 512).")
        if self.train.crop is not None and self.train.crop > self.data.size:
            raise ConfigError(f"train.crop ({self.train.crop}) is larger than data.size ({self.data.size}).")
        if self.train.disc_anchor > 0 and not (self.train.init_from and self.model.disc_prior):
            raise ConfigError("train.disc_anchor needs a run to start from (train.init_from, `fit --init RUN`) "
                              "whose generator draws the disc plane (model.disc_prior=true); set it to 0 otherwise.")
        depth = self.model.resolved_depth(side)
        m = 2 ** depth
        if self.data.size % m or side % m:
            raise ConfigError(f"data.size {self.data.size} and crop {side} must be multiples of 2**depth = {m} "
                              f"(valid sizes: {m}, {2 * m}, {4 * m}, ...).")

    def to_dict(self) -> dict:
        return to_dict(self)


# "cpu": the generator chosen on held-out training images (benchmarks/RESULTS.md sections 18-24): ngf=ndf=48 at a
# 256 crop of 512x512 frames, 3900 steps, resize-convolution upsampling, vessel-weighted L1, the vessel-consistency
# loss at weight 1, a two-scale discriminator with pix2pixHD's feature matching, and the disc plane. The defaults it
# replaced are recorded configs under benchmarks/configs/ (fit-cpu-v1.json ... fit-cpu-v5.json).
_CPU = {"data": {"size": 512},
        "model": {"ngf": 48, "ndf": 48, "upsample": "resize", "discriminator": "multiscale", "d_scales": 2,
                  "disc_prior": True},
        "train": {"steps": 3900, "crop": 256, "batch_size": 1, "vessel_l1": 4.0, "consistency": 1.0,
                  "feature_matching": 10.0}}
PROFILES: dict[str, dict] = {
    "cpu": _CPU,
    # One GPU: the published pix2pix recipe (ngf=ndf=64, batch 1, lr 2e-4 constant then linear decay over
    # 200 epochs): 200 epochs x 18 images of 512x512 in 4 crops of 256 each ~= 14400 steps.
    "gpu": {"data": {"size": 512}, "model": {"ngf": 64, "ndf": 64},
              "train": {"steps": 14400, "crop": 256, "batch_size": 1, "sample_every": 1000,
                        "ckpt_every": 1000}},
    # `retinasynth demo` on 128x128 phantom data: about two minutes on 2 CPU cores.
    "demo": {"data": {"size": 128}, "model": {"ngf": 16, "ndf": 16},
             "train": {"steps": 600, "crop": None, "val_count": 2, "log_every": 25, "sample_every": 200,
                       "ckpt_every": 200}},
    # Seconds-long runs for tests and `retinasynth demo --quick`.
    "tiny": {"data": {"size": 64}, "model": {"ngf": 8, "ndf": 8, "n_layers": 2},
             "train": {"steps": 20, "crop": None, "val_count": 1, "log_every": 5, "sample_every": 10,
                       "ckpt_every": 10}},
}

check_registry("fit", PROFILES, FIT_PROFILES)

def build_fit_config(profile: str | None = None, config_file: str | None = None,
                     overrides: list[str] | tuple[str, ...] = (), recorded_profile: str | None = None) -> FitConfig:
    """Profile defaults, then a config file, then `section.key=value` overrides.

    ``profile`` None: the profile the config file records (a run's ``config.json`` or a recorded config under
    benchmarks/configs/, whose settings are complete, so a retired name rebuilds exactly), else
    ``recorded_profile``, else 'cpu'."""
    loaded, recorded = load_config_file(config_file) if config_file else ({}, None)
    base, name = resolve_profile("fit", PROFILES, profile, recorded or recorded_profile)
    data = apply_overrides(base, [])
    if config_file:
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{config_file}: section {section!r} must be a mapping.")
            data.setdefault(section, {}).update(values)
    from retinasynth.config import qualify_overrides

    data = apply_overrides(data, qualify_overrides(FitConfig, list(overrides)))
    data["profile"] = name
    upgrade_legacy_train(data.get("train"))
    return from_dict(FitConfig, data)


def upgrade_legacy_train(train: dict | None, device_type: str | None = None) -> dict | None:
    """Map the former ``train.amp`` setting (config files, overrides, old run directories) to ``precision``,
    in place; an explicit ``precision`` wins. ``amp`` applied to CUDA only: with ``device_type='cpu'`` (the
    device an old run recorded) the run trained fp32, whatever its ``amp``."""
    if isinstance(train, dict) and "amp" in train:
        amp = train.pop("amp")
        if "precision" not in train:
            if amp not in LEGACY_AMP:
                raise ConfigError(f"unknown train.amp {amp!r} (now train.precision); valid: "
                                  f"{', '.join(PRECISIONS)}.")
            train["precision"] = "fp32" if device_type == "cpu" else LEGACY_AMP[amp]
    return train
