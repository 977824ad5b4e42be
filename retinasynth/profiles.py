"""Names of the configuration profiles, without importing torch (the CLI's --help reads them).

``retinasynth.train.config.PROFILES`` and ``retinasynth.bench.config.PROFILES`` hold the settings under
exactly these names; both registries check that at import.
"""

from __future__ import annotations

# One meaning per name in every command: the scale of the machine a run is sized for.
PROFILE_HELP: dict[str, str] = {
    "cpu": "sized for a 2-core CPU (the default)",
    "gpu": "sized for one GPU (published recipes' scale)",
    "demo": "128x128 phantoms, minutes on a CPU",
    "tiny": "seconds, for tests",
}
FIT_PROFILES: tuple[str, ...] = tuple(PROFILE_HELP)
BENCH_PROFILES: tuple[str, ...] = tuple(PROFILE_HELP)
# Profiles retired from the interface. Each is kept as a recorded config under benchmarks/configs/ (and every run
# records its own resolved config): `fit --config benchmarks/configs/fit-cpu-v1.json`, `fit --config RUN/config.json`,
# `benchmark-downstream --config OUT/results.json` rebuild it.
RETIRED: dict[str, str] = {
    "cpu-v1": "benchmarks/configs/fit-cpu-v1.json", "cpu-v2": "benchmarks/configs/fit-cpu-v2.json",
    "cpu-v3": "benchmarks/configs/fit-cpu-v3.json", "cpu-v4": "benchmarks/configs/fit-cpu-v4.json",
    "cpu-v5": "benchmarks/configs/fit-cpu-v5.json", "paper": "gpu (the same recipe)",
    "quick": "benchmarks/configs/bench-quick.json", "full": "gpu (the same recipe)",
}


def profiles_help(what: str) -> str:
    """One line per profile for a command's --help."""
    return (f"The scale {what} is sized for: " + "; ".join(f"{k}: {v}" for k, v in PROFILE_HELP.items())
            + ". A past run is rebuilt with --config from its recorded config.")


def check_registry(kind: str, registry: dict, names: tuple[str, ...]) -> None:
    """Raise if a PROFILES registry and its name tuple here have drifted apart."""
    if tuple(registry) != tuple(names):
        raise RuntimeError(f"{kind} profiles {tuple(registry)} differ from retinasynth.profiles {names}; "
                           "update both together.")

# `synthesize`'s default mask-source mix (SynthConfig.sources and the CLI's --source), kept here so the
# CLI's --help shows it without importing torch.
DEFAULT_SOURCES: str = "real:0.3,perturbed:0.7"
