"""The inner loop of MAML and Meta-SGD, behind one object: `clone` the meta-parameters and
`adapt` the clone on a support set (learn2learn's protocol), with two implementations.

- `HigherInnerLoop` ("higher", the default): `higher.innerloop_ctx` unrolls a differentiable
  copy of a torch optimizer (SGD, momentum or Adam, each with weight decay), Meta-SGD's
  learned rates given through `override`.
- `Learn2LearnInnerLoop` ("learn2learn", pip install 'metaaugment[learn2learn]'):
  learn2learn's `MAML` / `MetaSGD` wrappers and their `clone()` / `adapt()`, plain SGD.

With SGD both compute the same losses and meta-gradients (tests/test_meta_learners.py). A
learner picks one by name from INNER_LOOPS; nothing else asks which it is.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn

from metaaugment.infra.dependencies import learn2learn
from metaaugment.steptools.hidden_mix import Forward, plain_forward


class MetaParameters(nn.Module):
    """What MAML meta-learns: the initial weights of `module`, wrapped as learn2learn's MAML
    wraps them (state_dict keys `module.*`), so checkpoints load with either inner loop."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


class MetaSGDParameters(MetaParameters):
    """What Meta-SGD meta-learns: the initial weights (`module.*`) and `lrs`, one inner
    learning rate per weight, each a tensor of its weight's shape filled with `lr` at the
    start (learn2learn's MetaSGD keys and initial values)."""

    def __init__(self, module: nn.Module, lr: float):
        super().__init__(module)
        self.lrs = nn.ParameterList([nn.Parameter(torch.ones_like(p) * lr) for p in module.parameters()])


class InnerLoop(ABC):
    """How a gradient meta-learner adapts its meta-parameters to a task.

    `wrap` builds the meta-parameters around the task network (the module the outer
    optimizer steps and the checkpoint holds); `initial` is the un-adapted network (the
    pre-update scores); `adapted` clones the meta-parameters, adapts the clone on the support
    set and yields it, differentiable with respect to the meta-parameters when `training`.
    """

    name: ClassVar[str]
    # the inner optimizers an implementation can unroll (the option inner_optimizer)
    optimizers: ClassVar[tuple[str, ...]] = ("sgd",)

    @abstractmethod
    def wrap(self, model: nn.Module, inner_lr: float, learned_rates: bool, first_order: bool) -> nn.Module:
        """The meta-parameters around `model`: its initial weights, and with `learned_rates`
        one inner rate per weight initialized to `inner_lr` (Meta-SGD)."""

    def initial(self, wrapper: nn.Module) -> nn.Module:
        """The network before any adaptation."""
        return wrapper.module

    @abstractmethod
    def adapted(self, wrapper: nn.Module, support_inputs: Tensor, support_targets: Tensor, *, steps: int,
                training: bool, first_order: bool, loss_fn: Callable[[Tensor, Tensor], Tensor],
                make_optimizer: Callable[[nn.Module, bool], torch.optim.Optimizer],
                forward: Forward = plain_forward) -> contextlib.AbstractContextManager[Callable[[Tensor], Tensor]]:
        """A context yielding the network adapted by `steps` inner steps on the support set, as
        a function of inputs. `make_optimizer(module, per_parameter_rates)` is the inner torch
        optimizer (higher's); `forward(network, inputs)` runs a copy of the task network (an
        interpolating forward for an episode with a HiddenMix)."""


class HigherInnerLoop(InnerLoop):
    """The inner loop through `higher`: any differentiable torch optimizer."""

    name = "higher"
    optimizers = ("sgd", "momentum", "adam")

    def wrap(self, model: nn.Module, inner_lr: float, learned_rates: bool, first_order: bool) -> nn.Module:
        return MetaSGDParameters(model, inner_lr) if learned_rates else MetaParameters(model)

    @contextlib.contextmanager
    def adapted(self, wrapper: nn.Module, support_inputs: Tensor, support_targets: Tensor, *, steps: int,
                training: bool, first_order: bool, loss_fn: Callable[[Tensor, Tensor], Tensor],
                make_optimizer: Callable[[nn.Module, bool], torch.optim.Optimizer],
                forward: Forward = plain_forward) -> Iterator[Any]:
        import higher

        module = wrapper.module
        rates = list(wrapper.lrs) if isinstance(wrapper, MetaSGDParameters) else None
        override = {"lr": rates} if rates is not None else None
        # first order: the inner gradients as constants (the update still depends on the
        # initial weights and the rates, as in learn2learn's first_order adapt)
        constant_gradients = (lambda grads: [g.detach() for g in grads]) if first_order else None
        # evaluation needs gradients for adaptation but no graph through the inner loop
        with higher.innerloop_ctx(module, make_optimizer(module, rates is not None), copy_initial_weights=False,
                                  track_higher_grads=training) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(loss_fn(forward(fmodel, support_inputs), support_targets), override=override,
                             grad_callback=constant_gradients)
            yield lambda inputs: forward(fmodel, inputs)


class Learn2LearnInnerLoop(InnerLoop):
    """learn2learn's `clone()` / `adapt()` (plain SGD)."""

    name = "learn2learn"

    def __init__(self) -> None:
        learn2learn()  # not installed: one line naming the extra, before anything starts

    def wrap(self, model: nn.Module, inner_lr: float, learned_rates: bool, first_order: bool) -> nn.Module:
        algorithms = learn2learn().algorithms
        return (algorithms.MetaSGD if learned_rates else algorithms.MAML)(model, lr=inner_lr, first_order=first_order)

    @contextlib.contextmanager
    def adapted(self, wrapper: nn.Module, support_inputs: Tensor, support_targets: Tensor, *, steps: int,
                training: bool, first_order: bool, loss_fn: Callable[[Tensor, Tensor], Tensor],
                make_optimizer: Callable[[nn.Module, bool], torch.optim.Optimizer],
                forward: Forward = plain_forward) -> Iterator[Any]:
        clone = wrapper.clone()
        # learn2learn's wrappers call their `module`: run the cloned task network itself, so
        # that a layer name means the same module as in the model
        for _ in range(steps):
            clone.adapt(loss_fn(forward(clone.module, support_inputs), support_targets), first_order=first_order)
        yield lambda inputs: forward(clone.module, inputs)


INNER_LOOPS: dict[str, type[InnerLoop]] = {loop.name: loop for loop in (HigherInnerLoop, Learn2LearnInnerLoop)}
