"""Benchmarks (installed as metaaugment.tasks): `create_benchmark(name)`, `list_benchmarks()`."""
from __future__ import annotations

from metaaugment.registry import Entry

from . import cifar, digits, glyphs, image_folder, mini_imagenet, omniglot, sinusoid  # noqa: F401  (register the benchmarks)
from .base import BENCHMARKS, Benchmark


def create_benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name`; unknown names raise UserError with the choices."""
    return BENCHMARKS.create(name)


def list_benchmarks() -> list[Entry[Benchmark]]:
    """Every registered benchmark with its one-line summary."""
    return list(BENCHMARKS)


__all__ = ["BENCHMARKS", "Benchmark", "create_benchmark", "list_benchmarks"]
