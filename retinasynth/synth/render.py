"""Inference: rebuild a trained generator from its run directory and render masks into images.

The implementation lives in :mod:`retinasynth.rundir` (shared with `retinasynth evaluate`); this module
keeps the names importable from here.
"""

from __future__ import annotations

from retinasynth.rundir import Generator, load_generator, pick_device, read_run_config

__all__ = ["Generator", "load_generator", "pick_device", "read_run_config"]
