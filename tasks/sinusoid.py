"""Sinusoid regression, y = A sin(x - phi): the non-mutually-exclusive version of
Rajendran et al. (2020) and the standard MAML version (Finn et al. 2017). Embedded.

Non-mutually-exclusive (`sinusoid`): [-5, 5] holds 10 disjoint intervals [s, s + 0.5],
s = -5, -4, ..., 4; each interval is one task with a fixed (A, phi), A ~ U[0.1, 5],
phi ~ U[0, pi] drawn once from `sine_seed`. Following the authors' public code
(google-research/meta_augmentation, data_generator.py), the intervals are visited in the
fixed order of starts 4, -1, -2, 1, 3, -3, -5, 2, 0, -4 and split 6 meta-train / 2 meta-val /
2 meta-test. Since x identifies the interval and so the task, one network can fit all
meta-train tasks without reading the support set.

Standard (`sinusoid-standard`): each task draws A, phi afresh and x ~ U[-5, 5]. Its option
`meta_train_tasks=N` (--benchmark-set) meta-trains on N fixed (A, phi) pairs drawn once by
`subset_seed` (x still drawn afresh): the few-task regime of MLTI (Yao et al. 2022).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch

from metaaugment.batch import Episode
from metaaugment.data.regression import RegressionTasks
from metaaugment.data.subsets import SUBSET_SEED, check_subset_options
from metaaugment.data.value_options import ValueOptions
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
    """Sinusoid tasks; `mutually_exclusive=False` gives the paper's 10 fixed interval tasks.

    train_tasks: with `mutually_exclusive`, the meta-training tasks' (A, phi) pairs: tasks of
    the train split draw one of them uniformly (None: A and phi afresh, as the other splits).
    """

    def __init__(self, mutually_exclusive: bool = False, sine_seed: int = 0,
                 train_tasks: list[tuple[float, float]] | None = None):
        self.spec = SPEC
        self.mutually_exclusive = mutually_exclusive
        rng = np.random.default_rng(sine_seed)
        self.amplitudes = rng.uniform(*AMPLITUDE, size=len(INTERVAL_STARTS)).tolist()
        self.phases = rng.uniform(*PHASE, size=len(INTERVAL_STARTS)).tolist()
        self.train_tasks = train_tasks

    def sample(self, split: str, shots: int, query_shots: int) -> Episode:
        n = shots + query_shots
        if self.mutually_exclusive:
            if split == "train" and self.train_tasks:
                amplitude, phase = random.choice(self.train_tasks)
            else:
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


class SinusoidOptions(ValueOptions):
    """sinusoid-standard's options (`--benchmark-set`).

    Options:
        meta_train_tasks: meta-train on this many fixed tasks ((A, phi) pairs drawn once by
            subset_seed; x still drawn afresh per task); 0: A and phi afresh for every task.
            Meta-validation and meta-test tasks are unchanged
        subset_seed: the seed that draws the fixed tasks: the same tasks for every policy and --seed
    """

    def __init__(self, *, meta_train_tasks: int = 0, subset_seed: int = SUBSET_SEED):
        check_subset_options(meta_train_tasks, subset_seed, "meta_train_tasks")
        self.meta_train_tasks, self.subset_seed = meta_train_tasks, subset_seed

    def train_tasks(self) -> list[tuple[float, float]] | None:
        """The fixed meta-training tasks' (A, phi) pairs, or None for tasks drawn afresh."""
        if not self.meta_train_tasks:
            return None
        rng = np.random.default_rng(self.subset_seed)
        return [(float(rng.uniform(*AMPLITUDE)), float(rng.uniform(*PHASE))) for _ in range(self.meta_train_tasks)]


def load_sinusoid_standard(root: object, options: SinusoidOptions | None = None) -> SinusoidTasks:
    """sinusoid-standard's tasks, with its meta-training tasks capped as `options` say."""
    return SinusoidTasks(mutually_exclusive=True, train_tasks=(options or SinusoidOptions()).train_tasks())


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
    return Benchmark(name="sinusoid-standard", load=load_sinusoid_standard, options=SinusoidOptions,
                     kind="regression", default_model="mlp", default_epochs=10, default_batch_size=25,
                     default_learner="maml",
                     default_learner_options={"inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 10},
                     default_ways=1, default_shots=10, default_query_shots=10, default_steps_per_epoch=200)

