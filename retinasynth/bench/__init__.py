"""The downstream benchmark: does adding synthetic pairs improve a segmenter on real test images?"""

from retinasynth.bench.benchmark import benchmark_downstream, run_name
from retinasynth.bench.config import ARMS, PROFILES, BenchConfig, build_bench_config

__all__ = ["ARMS", "PROFILES", "BenchConfig", "benchmark_downstream", "build_bench_config", "run_name"]
