"""Generator, discriminator, GAN losses and the factory that builds them from a ModelConfig."""

from retinasynth.models.factory import (
    DISCRIMINATORS,
    GENERATORS,
    ModelConfig,
    create_discriminator,
    create_generator,
)
from retinasynth.models.losses import GAN_LOSSES, GANLoss
from retinasynth.models.networks import PatchDiscriminator, UnetGenerator, init_weights

__all__ = ["DISCRIMINATORS", "GANLoss", "GAN_LOSSES", "GENERATORS", "ModelConfig", "PatchDiscriminator",
           "UnetGenerator", "create_discriminator", "create_generator", "init_weights"]
