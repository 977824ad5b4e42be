"""Generator, discriminator, GAN losses and the factory that builds them from a ModelConfig."""

from retinasynth.models.factory import (
    DISCRIMINATORS,
    GENERATORS,
    ModelConfig,
    create_discriminator,
    create_generator,
)
from retinasynth.models.losses import GAN_LOSSES, GANLoss, feature_matching
from retinasynth.models.networks import (
    MultiscaleDiscriminator,
    PatchDiscriminator,
    UnetGenerator,
    init_weights,
)

__all__ = ["DISCRIMINATORS", "GANLoss", "GAN_LOSSES", "GENERATORS", "ModelConfig", "MultiscaleDiscriminator",
           "PatchDiscriminator", "UnetGenerator", "create_discriminator", "create_generator", "feature_matching",
           "init_weights"]
