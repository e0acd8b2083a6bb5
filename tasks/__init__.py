"""Benchmarks (installed as metaaugment.tasks): `create_benchmark(name)`, `list_benchmarks()`."""
from __future__ import annotations

from metaaugment.registry import BENCHMARKS, create_benchmark, list_benchmarks
from metaaugment.tasks import (  # noqa: F401  (register the benchmarks)
    cifar,
    digits,
    fonts,
    glyphs,
    image_folder,
    imagenet,
    mini_imagenet,
    omniglot,
    sinusoid,
)
from metaaugment.tasks.base import Benchmark

__all__ = ["BENCHMARKS", "Benchmark", "create_benchmark", "list_benchmarks"]
