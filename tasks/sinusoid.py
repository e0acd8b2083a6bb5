"""Sinusoid regression, y = A sin(x - phi): the non-mutually-exclusive version of
Rajendran et al. (2020) and the standard MAML version (Finn et al. 2017). Embedded.

Non-mutually-exclusive (`sinusoid`): [-5, 5] holds 10 disjoint intervals [s, s + 0.5],
s = -5, -4, ..., 4; each interval is one task with a fixed (A, phi), A ~ U[0.1, 5],
phi ~ U[0, pi] drawn once from `sine_seed`. Following the authors' public code
(google-research/meta_augmentation, data_generator.py), the intervals are visited in the
fixed order of starts 4, -1, -2, 1, 3, -3, -5, 2, 0, -4 and split 6 meta-train / 2 meta-val /
2 meta-test. Since x identifies the interval and so the task, one network can fit all
meta-train tasks without reading the support set.

Standard (`sinusoid-standard`): each task draws A, phi afresh and x ~ U[-5, 5].
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch

from metaaugment.batch import Episode
from metaaugment.data.regression import RegressionTasks
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
INTERVAL_STARTS = (4.0, -1.0, -2.0, 1.0, 3.0, -3.0, -5.0, 2.0, 0.0, -4.0)
INTERVAL_WIDTH = 0.5
SPLIT_BINS = {"train": range(0, 6), "val": range(6, 8), "test": range(8, 10)}
SPEC = TaskSpec(num_classes=None, input_shape=(1,), mean=(0.0,), std=(1.0,))


def sinusoid(x: torch.Tensor, amplitude: float, phase: float) -> torch.Tensor:
    """A sin(x - phi), elementwise."""
    return amplitude * torch.sin(x - phase)


class SinusoidTasks(RegressionTasks):
    """Sinusoid tasks; `mutually_exclusive=False` gives the paper's 10 fixed interval tasks."""

    def __init__(self, mutually_exclusive: bool = False, sine_seed: int = 0):
        self.spec = SPEC
        self.mutually_exclusive = mutually_exclusive
        rng = np.random.default_rng(sine_seed)
        self.amplitudes = rng.uniform(*AMPLITUDE, size=len(INTERVAL_STARTS)).tolist()
        self.phases = rng.uniform(*PHASE, size=len(INTERVAL_STARTS)).tolist()

    def sample(self, split: str, shots: int, query_shots: int) -> Episode:
        n = shots + query_shots
        if self.mutually_exclusive:
            amplitude, phase = random.uniform(*AMPLITUDE), random.uniform(*PHASE)
            x = torch.tensor([random.uniform(-5.0, 5.0) for _ in range(n)]).unsqueeze(1)
            info = {"amplitude": amplitude, "phase": phase}
        else:
            task = random.choice(SPLIT_BINS[split])
            amplitude, phase = self.amplitudes[task], self.phases[task]
            start = INTERVAL_STARTS[task]
            x = torch.tensor([start + random.uniform(0.0, INTERVAL_WIDTH) for _ in range(n)]).unsqueeze(1)
            info = {"task": task, "amplitude": amplitude, "phase": phase}
        y = sinusoid(x, amplitude, phase)
        return Episode(x[:shots], y[:shots], x[shots:], y[shots:], info=info)


@BENCHMARKS.register("sinusoid")
def sinusoid_benchmark() -> Benchmark:
    """Sinusoid regression: the paper's 10 fixed non-mutually-exclusive interval tasks (6/2/2), embedded; MAML."""
    return Benchmark(name="sinusoid", load=lambda root: SinusoidTasks(mutually_exclusive=False), kind="regression",
                     default_model="mlp", default_epochs=10, default_batch_size=6, default_learner="maml",
                     default_learner_options={"inner_lr": 0.001, "inner_steps": 1, "eval_inner_steps": 10},
                     default_ways=1, default_shots=10, default_query_shots=10, default_steps_per_epoch=200)


@BENCHMARKS.register("sinusoid-standard")
def sinusoid_standard_benchmark() -> Benchmark:
    """Sinusoid regression with A, phi and x drawn afresh per task (MAML's version), embedded; MAML."""
    return Benchmark(name="sinusoid-standard", load=lambda root: SinusoidTasks(mutually_exclusive=True),
                     kind="regression", default_model="mlp", default_epochs=10, default_batch_size=25,
                     default_learner="maml",
                     default_learner_options={"inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 10},
                     default_ways=1, default_shots=10, default_query_shots=10, default_steps_per_epoch=200)

