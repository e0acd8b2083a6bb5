"""The `mlti` task policy: every meta-training task interpolated with a partner task of the
same meta-batch (MLTI, Yao et al. 2022, Algorithm 1 and 2), for MAML, Meta-SGD and ProtoNets.

Per task t of the meta-batch, from its key alone (so every rank draws the same): a partner
j, uniform over the meta-batch's tasks; lambda ~ Beta(alpha, alpha), shared by support and
query; a layer, uniform over `layers`; and for classification the pairing of classes (a
random permutation of the partner's N classes). A partner held by another rank comes
through `ctx.comm` (metaaugment.parallel.task_exchange).

At the input the interpolated task is an ordinary episode. At a hidden layer the learner runs
both tasks' rows and interpolates the layer's outputs by a forward hook: MAML and Meta-SGD
through their initial weights on the support set and their adapted weights on the query set
(the paper's Algorithm 1), ProtoNets through the embedding network on both (Algorithm 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from metaaugment.batch import Tasks
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.mlti.interpolation import block_outputs, interpolate_tasks
from metaaugment.parallel.task_exchange import asked_episodes
from metaaugment.policy import StepContext, TaskPolicy
from metaaugment.registry import POLICIES
from metaaugment.steptools.hidden_mix import find_layer

INPUT = "input"  # the layer name of interpolation at the input
AUTO = "auto"    # the input and the outputs of the network's blocks (mlti.interpolation.block_outputs)


@dataclass
class TaskDraw:
    """What MLTI draws for one task of the meta-batch from its key: the partner's place, lambda,
    the layer (None: the input), and the generator that then draws the class pairing."""

    partner: int
    lam: float
    layer: str | None
    generator: np.random.Generator


@POLICIES.register("mlti")
class MLTI(TaskPolicy):
    """MLTI (Yao et al. 2022): each task interpolated with a partner task of the meta-batch, at the input or a layer.

    Classification tasks pair class by class and make new classes (non-label-sharing);
    regression tasks interpolate their targets (label-sharing).

    Options:
        alpha: lambda ~ Beta(alpha, alpha), once per task, shared by its support and query sets
        layers: where a task may be interpolated, one drawn per task: auto (the input and the
            outputs of the network's blocks: conv4's first three, the MLP's hidden ReLUs), input,
            or names of the task network's modules (comma-separated; input for the input)
    """

    benchmark_kinds = ("few-shot", "regression")
    relative_cost = 1.5  # the layers before the interpolation run on both tasks' rows

    def __init__(self, *, alpha: float = 2.0, layers: tuple[str, ...] = (AUTO,)):
        super().__init__()
        check_option(representable(alpha) and alpha > 0, "alpha", alpha, "a positive number")
        check_option(len(layers) > 0 and (AUTO not in layers or len(layers) == 1), "layers", layers,
                     "auto, input, or module names of the task network (comma-separated)")
        self.alpha, self.layers = float(alpha), tuple(layers)
        self.layer_names: list[str | None] = []

    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        names = [INPUT, *block_outputs(ctx.model)] if self.layers == (AUTO,) else list(self.layers)
        for name in names:
            if name != INPUT:
                find_layer(ctx.model, name)  # a name the network lacks: one line listing its layers
        self.layer_names = [None if name == INPUT else name for name in names]

    def draw(self, key: int, total: int) -> TaskDraw:
        """The partner, lambda and layer of a task from its key (then its class pairing)."""
        generator = np.random.default_rng(key)
        partner = int(generator.integers(total))
        lam = float(generator.beta(self.alpha, self.alpha))
        layer = self.layer_names[int(generator.integers(len(self.layer_names)))]
        return TaskDraw(partner, lam, layer, generator)

    def augment_tasks(self, tasks: Tasks, keys: Sequence[int], ctx: StepContext) -> Tasks:
        spec = self.require_spec()
        if not self.layer_names:
            raise RuntimeError("call MLTI.setup(ctx) before augment_tasks")
        draws = [self.draw(keys[t], tasks.total) for t in range(tasks.total)]
        partners = asked_episodes(tasks, [d.partner for d in draws], ctx.comm)
        interpolated = []
        for index, episode, partner in zip(tasks.index, tasks, partners):
            d = draws[index]
            permutation = None
            if not spec.predicts_values:
                ways = int(episode.support_targets.max()) + 1
                permutation = d.generator.permutation(ways).tolist()
            try:
                task = interpolate_tasks(episode, partner, d.lam, label_sharing=spec.predicts_values,
                                         permutation=permutation, layer=d.layer)
            except ValueError as error:
                raise UserError(f"mlti: {error}") from None
            task.info["partner"] = d.partner
            interpolated.append(task)
        return Tasks(interpolated, tasks.index, tasks.total)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "layers": list(self.layers),
                "interpolated_at": [name or INPUT for name in self.layer_names]}
