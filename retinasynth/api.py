"""The Python API in one shape: every call takes its inputs, then its output folder, then ``config``.

``config`` is the command's frozen dataclass (:class:`~retinasynth.train.FitConfig`,
:class:`~retinasynth.synth.synthesize.SynthConfig`, :class:`~retinasynth.bench.BenchConfig`), a profile name
(``"cpu"``, ``"gpu"``, ``"demo"``, ``"tiny"``), a list of ``key=value`` overrides of the default profile, or a
``(profile, overrides)`` pair; None is the default. Keyword options (``progress``, ``device``, ``resume``, ...) pass
through to the function underneath. Every name here is importable from :mod:`retinasynth` directly::

    import retinasynth as rs
    run = rs.fit("data/DRIVE", "runs/g", ("tiny", ["train.steps=4"]))
    rs.synthesize(run, "runs/synth", ["n=8"])
    rs.benchmark("data/DRIVE", "runs/synth", "runs/bench", ("tiny", ["regimes=2"]))
"""

from __future__ import annotations

from pathlib import Path

from retinasynth.errors import ConfigError

Config = "None | str | Sequence[str] | tuple[str, Sequence[str]] | Any"


def _split(config: Config, kind: str) -> tuple[str | None, list[str]]:
    """(profile, overrides) of a config given as a name, overrides or a pair."""
    if config is None:
        return None, []
    if isinstance(config, str):
        return config, []
    if isinstance(config, tuple) and len(config) == 2 and isinstance(config[0], str) and "=" not in config[0] \
            and not isinstance(config[1], str):
        return config[0], [str(o) for o in config[1]]
    if isinstance(config, (list, tuple)) and all(isinstance(o, str) for o in config):
        return None, list(config)
    raise ConfigError(f"{kind} config must be a {kind} dataclass, a profile name, a list of key=value overrides or a "
                      f"(profile, overrides) pair; got {type(config).__name__}.")


def fit_config(config: Config = None):
    from retinasynth.train.config import FitConfig, build_fit_config

    if isinstance(config, FitConfig):
        return config
    profile, overrides = _split(config, "fit")
    return build_fit_config(profile, None, overrides)


def synth_config(config: Config = None):
    from retinasynth.config import apply_overrides, from_dict, to_dict
    from retinasynth.synth.synthesize import SynthConfig

    if isinstance(config, SynthConfig):
        return config
    profile, overrides = _split(config, "synthesize")
    if profile is not None:
        raise ConfigError(f"synthesize has no profiles (got {profile!r}); give SynthConfig(...) or key=value overrides.")
    return from_dict(SynthConfig, apply_overrides(to_dict(SynthConfig()), overrides), "synth.")


def bench_config(config: Config = None):
    from retinasynth.bench.config import BenchConfig, build_bench_config

    if isinstance(config, BenchConfig):
        return config
    profile, overrides = _split(config, "benchmark")
    return build_bench_config(profile, None, overrides)


def fit(data: str | Path, out: str | Path, config: Config = None, **options) -> Path:
    """Train a generator on ``data``'s training split into the run folder ``out``; returns ``out``."""
    from retinasynth.train.fit import fit as _fit

    return _fit(fit_config(config), data, out, **options)


def synthesize(run: str | Path, out: str | Path, config: Config = None, **options) -> dict:
    """Render a synthetic set with the generator of ``run`` into ``out``; returns its summary."""
    from retinasynth.synth.synthesize import synthesize as _synthesize

    return _synthesize(run, out, synth_config(config), **options)


def benchmark(data: str | Path, synth: str | Path | None, out: str | Path, config: Config = None, **options) -> dict:
    """The downstream benchmark (real ``data``, synthetic set ``synth``) into ``out``; returns its results."""
    from retinasynth.bench.benchmark import benchmark_downstream

    return benchmark_downstream(data, synth, out, bench_config(config), **options)


def evaluate(run: str | Path, data: str | Path, out: str | Path | None = None, config: dict | None = None,
             **options) -> dict:
    """Score the generator of ``run`` on ``data`` (``config``: evaluate's keyword settings as a dict, e.g.
    ``{"split": "val"}``); written to ``out`` (default ``RUN/eval-SPLIT``)."""
    from retinasynth.train.evaluate import evaluate as _evaluate

    return _evaluate(run, data, out=out, **(config or {}), **options)
