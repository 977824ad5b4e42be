"""The segmenter's own configuration: the smp model, its training and its inference, nothing of a protocol.

:class:`SegmenterConfig` is what `retinasynth.segmenter` trains, scores and saves with a model; the benchmark's
:class:`~retinasynth.bench.config.BenchConfig` extends it with the protocol (arms, regimes, seeds, evaluation),
and `fit` / `evaluate` build one for their reader (:data:`READER`). Error messages name the settings as the
benchmark's (``bench.KEY``), the only place a user sets them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from retinasynth.config import to_dict
from retinasynth.errors import ConfigError
from retinasynth.precision import LEGACY_AMP, PRECISIONS

PREPROCESS = ("rgb", "green_clahe")
LR_SCHEDULES = ("cosine", "constant", "wsd")
AUGMENTS = ("strong", "light", "camera")
# How an image is brought to the working resolution: the whole frame squashed to size x size, or the FOV's
# bounding box padded to a square (aspect kept), so that the FOV diameter is `size` px in every dataset.
SCALES = {"frame": {"fit": "squash", "crop_fov": False}, "fov": {"fit": "pad", "crop_fov": True}}
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
class SegmenterConfig:
    """One segmenter: model, optimisation, augmentation, input preprocessing and inference.

    Attributes:
        arch / encoder / encoder_depth / decoder_channels: the smp model (trained from scratch:
            ``encoder_weights`` must stay null, nothing is ever downloaded).
        patch / batch_size / steps / lr / weight_decay / lr_schedule: AdamW on Dice + BCE; after a short
            warm-up, 'cosine' decay, 'constant', or 'wsd' (warm-up, stable, decay: constant, then a linear decay
            over the last 20% of the steps; a shorter budget branches off the same run, see
            :func:`~retinasynth.segmenter.model.train_segmenter`).
        synth_ratio: share of synthetic patches when a batch mixes real and synthetic pools.
        augment: 'strong' (geometry, elastic, photometric, noise), 'light' (flips, rot90, mild
            brightness/contrast) or 'camera' (strong geometry and photometry aimed at camera shift).
        preprocess: 'rgb' (as stored) or 'green_clahe' (the green channel with CLAHE, as grey RGB), applied to
            every training and scored image.
        size: working resolution; scores are computed at native resolution inside the FOV.
        scale: 'frame' (the whole frame squashed to ``size`` x ``size``) or 'fov' (the FOV's bounding box, padded
            to a square, resized so that the FOV diameter is ``size`` px whatever the camera's resolution).
        min_fov: a training patch is redrawn (up to 10 times) while less than this share lies in the FOV.
        infer_tile / infer_overlap: sliding-window inference with tiles of this side (None: whole image in one
            pass) overlapping by this share, blended with Gaussian weights.
        threshold / cldice: binarisation threshold of the scores; whether clDice is computed.
        precision: 'auto' (bf16 autocast where the hardware has native bf16, else fp32; see
            :mod:`retinasynth.precision`), or 'fp32' / 'bf16' / 'fp16' (CUDA) to force one. Weights,
            optimiser state and losses stay fp32.
        channels_last: keep weights and activations in NHWC memory order (same maths, other kernels):
            1.11-1.12x faster training steps at fp32 and bf16 on the 2-core EPYC (RESULTS.md section 17), and
            the layout cuDNN's tensor-core kernels prefer.
    """

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
    synth_ratio: float = 0.5
    size: int = 512
    threshold: float = 0.5
    cldice: bool = True
    min_fov: float = 0.5
    precision: str = "auto"
    preprocess: str = "rgb"
    augment: str = "strong"
    infer_tile: int | None = None
    infer_overlap: float = 0.5
    channels_last: bool = True
    scale: str = "frame"

    def __post_init__(self) -> None:
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", _as_tuple(self.decoder_channels, "decoder_channels"))
        for name in ("patch", "batch_size", "steps", "size", "encoder_depth"):
            v = getattr(self, name)
            if not _positive_int(v):
                raise ConfigError(f"bench.{name} must be a positive integer, got {v!r}.")
        if self.encoder_weights is not None:
            raise ConfigError(f"bench.encoder_weights must be null (got {self.encoder_weights!r}): the segmenter is "
                              "trained from scratch and never downloads weights.")
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
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"bench.weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown bench.lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}.")
        if not 0.0 < self.synth_ratio < 1.0:
            raise ConfigError(f"bench.synth_ratio must be in (0, 1) (share of synthetic patches in "
                              f"real+synth batches), got {self.synth_ratio!r}.")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"bench.threshold must be in (0, 1), got {self.threshold!r}.")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"bench.channels_last must be true or false, got {self.channels_last!r}.")
        if not isinstance(self.cldice, bool):
            raise ConfigError(f"bench.cldice must be true or false, got {self.cldice!r}.")
        if not 0.0 <= self.min_fov <= 1.0:
            raise ConfigError(f"bench.min_fov must be in [0, 1], got {self.min_fov!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown bench.precision {self.precision!r}; valid: {', '.join(PRECISIONS)}.")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"unknown bench.augment {self.augment!r}; valid: {', '.join(AUGMENTS)}.")
        if self.scale not in SCALES:
            raise ConfigError(f"unknown bench.scale {self.scale!r}; valid: {', '.join(SCALES)} (fov: the FOV "
                              "diameter becomes bench.size px in every dataset).")
        if self.preprocess not in PREPROCESS:
            raise ConfigError(f"unknown bench.preprocess {self.preprocess!r}; valid: {', '.join(PREPROCESS)}.")
        if self.infer_tile is not None and (not _positive_int(self.infer_tile) or self.infer_tile % m):
            raise ConfigError(f"bench.infer_tile must be null or a positive multiple of {m} (2**encoder_depth), "
                              f"got {self.infer_tile!r}.")
        if not (isinstance(self.infer_overlap, (int, float)) and 0.0 <= self.infer_overlap < 1.0):
            raise ConfigError(f"bench.infer_overlap must be in [0, 1), got {self.infer_overlap!r}.")

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

    def data_config(self, native: bool = False):
        """How a dataset is read for this segmenter: at the working resolution, or (``native``) at native
        resolution in the same frame (the FOV crop of scale 'fov', padded square), where it is scored."""
        from retinasynth.data.dataset import DataConfig

        return DataConfig(size=None if native else self.size, **SCALES[self.scale])

    def to_dict(self) -> dict:
        return to_dict(self)

    def segmenter(self) -> SegmenterConfig:
        """This configuration's segmenter part alone (drops any protocol fields of a subclass)."""
        return SegmenterConfig(**{f.name: getattr(self, f.name) for f in fields(SegmenterConfig)})


SEGMENTER_FIELDS = tuple(f.name for f in fields(SegmenterConfig))


def upgrade_legacy(data: dict) -> dict:
    """Settings saved before ``precision`` existed: the CUDA-only ``amp`` becomes ``precision`` (the CPU then
    always ran fp32, which ``resolve_precision`` of 'auto' would now change, so 'auto' saved on a CPU run is
    read back by the caller as it ran)."""
    data = dict(data)
    if "amp" in data and "precision" not in data:
        data["precision"] = LEGACY_AMP.get(data.pop("amp"), "auto")
    data.pop("amp", None)
    return data


# `fit`'s vessel-consistency loss and `evaluate`'s proxy read generated images with this segmenter (light
# augmentation, 96-px patches); the caller sets size, steps, preprocess and precision.
READER: dict = {"augment": "light", "patch": 96, "channels_last": False}  # contiguous: fits and fidelity proxies
# recorded before the segmenter's channels_last keep their numbers
