"""Names of the configuration profiles, without importing torch (the CLI's --help reads them).

``retinasynth.train.config.PROFILES`` and ``retinasynth.bench.config.PROFILES`` hold the settings under
exactly these names; both registries check that at import.
"""

from __future__ import annotations

FIT_PROFILES: tuple[str, ...] = ("cpu", "cpu-v5", "cpu-v4", "cpu-v3", "cpu-v2", "cpu-v1", "paper", "demo", "tiny")
BENCH_PROFILES: tuple[str, ...] = ("cpu", "quick", "full", "demo", "tiny")


def check_registry(kind: str, registry: dict, names: tuple[str, ...]) -> None:
    """Raise if a PROFILES registry and its name tuple here have drifted apart."""
    if tuple(registry) != tuple(names):
        raise RuntimeError(f"{kind} profiles {tuple(registry)} differ from retinasynth.profiles {names}; "
                           "update both together.")

# `synthesize`'s default mask-source mix (SynthConfig.sources and the CLI's --source), kept here so the
# CLI's --help shows it without importing torch.
DEFAULT_SOURCES: str = "real:0.3,perturbed:0.7"
