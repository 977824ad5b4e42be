"""retinasynth: synthetic fundus image / vessel mask pairs for retinal vessel segmentation.

The public API is imported lazily so that ``import retinasynth`` stays cheap (no torch import).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "retinasynth.data",
    "DataConfig": "retinasynth.data",
    "detect_layout": "retinasynth.data",
    "inspect_dataset": "retinasynth.data",
    "RetinaSynthError": "retinasynth.errors",
    # one call shape: inputs, output folder, config (retinasynth.api)
    "fit": "retinasynth.api",
    "synthesize": "retinasynth.api",
    "benchmark": "retinasynth.api",
    "evaluate": "retinasynth.api",
    "FitConfig": "retinasynth.train.config",
    "SynthConfig": "retinasynth.synth.synthesize",
    "BenchConfig": "retinasynth.bench.config",
    "PairDataset": "retinasynth.data.torchdata",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retinasynth' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
