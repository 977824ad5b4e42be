"""Pix2Pix training: config, the fit loop and run-directory checkpoints."""

from retinasynth.train.config import PROFILES, FitConfig, TrainConfig, build_fit_config
from retinasynth.train.fit import fit

__all__ = ["FitConfig", "PROFILES", "TrainConfig", "build_fit_config", "fit"]
