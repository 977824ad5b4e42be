"""The downstream benchmark: does adding synthetic pairs improve a segmenter on real images?"""

from retinasynth.bench.arms import ARMS, Arm, register
from retinasynth.bench.benchmark import benchmark_downstream
from retinasynth.bench.config import PROFILES, BenchConfig, build_bench_config
from retinasynth.bench.plan import run_name

__all__ = ["ARMS", "Arm", "PROFILES", "BenchConfig", "benchmark_downstream", "build_bench_config", "register",
           "run_name"]
