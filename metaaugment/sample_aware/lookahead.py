"""The bilevel step of MetaAugment (Eqs. 2-3): validation-loss gradients for the sample weights
and the learnable inner learning rate alpha, through a one-step lookahead of the task network.

Lookahead (Eq. 2, with weights w_i normalized to sum to 1 over the batch):
    w_hat = w - alpha * sum_i w_i grad L_i(w)
Both engines return dL_val(w_hat)/dw_i (B,) and dL_val(w_hat)/dalpha; the caller chains the
former into the policy network with `weights.backward(grad)`. The weights are treated as
constants of w (the paper does not differentiate P with respect to w), and the task
network's parameters are left untouched: the real update (Eq. 4) happens afterwards.

- `higher_lookahead`: the reference, built on `higher` (any number of inner steps);
  differentiates through the unrolled inner SGD step.
- `fast_lookahead`: exact for one SGD step without second-order backward. Because w_hat
  is linear in the weights,
      dL_val/dw_i  = -alpha * <grad L_val(w_hat), grad L_i(w)>
      dL_val/dalpha = -<sum_i w_i grad L_i(w), grad L_val(w_hat)>,
  and the per-sample dot products are one Jacobian-vector product of the per-sample losses
  along grad L_val(w_hat) ("jvp", exact) or one extra forward pass at w + h grad L_val
  ("fd", finite difference). It reuses the training forward pass and copies no model.
- `last_layer` (cheap approximation): the same formulas restricted to the parameters of
  the model's head (`forward_head`), with the features held fixed.

The lookahead step is plain SGD at rate alpha (`lookahead_optimizer=sgd`, the paper's Eq. 2)
or the task network's own SGD update at rate alpha (`lookahead_optimizer=task`): weight
decay, momentum with the optimizer's current buffer, dampening, Nesterov. With the buffer
and weight decay fixed, that step is still linear in the weights (`InnerStep`):
    w_hat = w - alpha * (s * sum_i w_i grad L_i(w) + o)
with a per-parameter scale s and offset o (s = 1, o = 0 for plain SGD), so the fast engine
stays exact:
    dL_val/dw_i  = -alpha * <s * grad L_val(w_hat), grad L_i(w)>
    dL_val/dalpha = -(sum_i w_i <s * grad L_val(w_hat), grad L_i(w)> + <o, grad L_val(w_hat)>),
and the `higher` engine unrolls the very same torch optimizer (its state copied by `higher`).

The lookahead passes run on scratch copies of the buffers (BatchNorm running statistics),
so they leave no trace in the model, and consume no randomness of the run. Stochastic layers
(dropout, stochastic depth) see the training forward's masks in every pass over the training
batch: `random_state` (ForwardOutput.random_state, captured by `forward_pass`) is replayed
(`scratch.replayed`), so the finite difference compares two passes under one mask, the
Jacobian-vector product differentiates that pass, and `higher` unrolls it; without it, the
fast engine takes one more training forward under a state it captures. The validation pass
draws from the generators' state at the call, the same for every engine.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.steptools.scratch import RandomState, replayed, scratch_buffers

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> (B,) per-sample losses


@dataclass
class InnerStep:
    """The lookahead's update direction for each parameter p, linear in the weighted gradient
    g_p = sum_i w_i grad_p L_i(w): direction_p = scales[p] * g_p + offsets[p] (None = 0)."""

    scales: list[float]
    offsets: list[Tensor | None]

    def direction(self, grads: tuple[Tensor, ...]) -> list[Tensor]:
        """(scale * g + offset) per parameter; exactly g where scale is 1 and offset None."""
        return [g if (scale == 1 and offset is None) else (scale * g if offset is None else scale * g + offset)
                for scale, offset, g in zip(self.scales, self.offsets, grads)]


def sgd_step(count: int) -> InnerStep:
    """Plain SGD (the paper's Eq. 2): w_hat = w - alpha * g for `count` parameters."""
    return InnerStep([1.0] * count, [None] * count)


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> InnerStep:
    """The next update torch.optim.SGD would make to `params` (a subset of its parameters),
    as an InnerStep: with d = g + wd * w and the current momentum buffer b (dampening delta,
    momentum mu), the direction is d (no momentum, or no buffer yet and no Nesterov),
    (1 + mu) d (Nesterov, no buffer yet), (1 - delta) d + mu b (buffer), or
    (1 + mu (1 - delta)) d + mu^2 b (Nesterov with a buffer)."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise ValueError(f"lookahead_optimizer=task follows torch.optim.SGD, not {type(optimizer).__name__}")
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    scales: list[float] = []
    offsets: list[Tensor | None] = []
    for p in params:
        group = group_of[id(p)]
        if group.get("maximize", False):
            raise ValueError("lookahead_optimizer=task does not follow an optimizer that maximizes")
        mu, delta, decay = group["momentum"], group["dampening"], group["weight_decay"]
        buffer = optimizer.state.get(p, {}).get("momentum_buffer") if mu != 0 else None
        if mu == 0:
            scale, carried = 1.0, None
        elif buffer is None:  # torch starts the buffer at d itself
            scale, carried = (1.0 + mu if group["nesterov"] else 1.0), None
        elif group["nesterov"]:
            scale, carried = 1.0 + mu * (1.0 - delta), (mu * mu) * buffer.detach()
        else:
            scale, carried = 1.0 - delta, mu * buffer.detach()
        offset = scale * decay * p.detach() if decay != 0 else None
        if carried is not None:
            offset = carried if offset is None else offset + carried
        scales.append(scale)
        offsets.append(offset)
    return InnerStep(scales, offsets)


@dataclass
class LookaheadGradients:
    """dL_val/dweights (B,), dL_val/dalpha (scalar) and the validation loss at w_hat."""

    weights: Tensor
    alpha: Tensor
    val_loss: float


def fast_lookahead(model: nn.Module, train_losses: Tensor, weights: Tensor, alpha: Tensor,
                   train_inputs: Tensor, train_targets: Tensor, val_inputs: Tensor, val_targets: Tensor,
                   loss_fn: LossFn, mode: str = "fd", fd_step: float = 1e-3,
                   optimizer: torch.optim.Optimizer | None = None, val_count: int | None = None,
                   comm: Communicator = SINGLE_PROCESS, random_state: RandomState | None = None) -> LookaheadGradients:
    """The one-step lookahead gradients without a second-order backward.

    train_losses: (B,) per-sample losses of the training forward pass, still attached to the
    model's parameters (the graph is retained for the real update). weights: (B,) sample
    weights (normalized); alpha: scalar inner learning rate. optimizer: None for a plain SGD
    step, or the task network's torch.optim.SGD, whose next update (`optimizer_step`) the
    lookahead then takes. mode "fd" moves the parameters by a step of norm `fd_step` along
    s * grad L_val(w_hat) (one forward pass); "jvp" is exact. random_state: the generators'
    state before the training forward that computed train_losses, replayed in the passes over
    the training batch (dropout's masks); None: train_losses are computed again under a
    captured state (one more forward), so that every pass sees one mask.

    On many ranks (`comm`) the inputs are this rank's rows, the weights are normalized over the
    global batch and val_count is the global validation batch's size: the weighted gradient
    and the validation gradient are summed over ranks before use (two all-reduces of the
    parameters' size), the per-sample dots stay local, alpha's gradient is summed.
    """
    if mode not in ("jvp", "fd"):
        raise ValueError("mode must be 'jvp' or 'fd'")
    with replayed(None):  # the run's random numbers stay as they were
        return _fast_lookahead(model, train_losses, weights, alpha, train_inputs, train_targets, val_inputs,
                               val_targets, loss_fn, mode, fd_step, optimizer, val_count, comm, random_state)


def _fast_lookahead(model: nn.Module, train_losses: Tensor, weights: Tensor, alpha: Tensor, train_inputs: Tensor,
                    train_targets: Tensor, val_inputs: Tensor, val_targets: Tensor, loss_fn: LossFn, mode: str,
                    fd_step: float, optimizer: torch.optim.Optimizer | None, val_count: int | None,
                    comm: Communicator, random_state: RandomState | None) -> LookaheadGradients:
    val_state = RandomState.capture(val_inputs.device)
    if random_state is None:  # the training forward's draws are unknown: one forward under known ones
        random_state = RandomState.capture(train_inputs.device)
        with replayed(random_state), scratch_buffers(model):
            train_losses = loss_fn(model(train_inputs), train_targets)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    step = optimizer_step(optimizer, list(params)) if optimizer is not None else sgd_step(len(params))
    w_fixed, alpha_fixed = weights.detach(), alpha.detach()
    val_count = val_count or val_inputs.shape[0]
    weighted_grad = comm.sum_all(torch.autograd.grad((w_fixed * train_losses).sum(), params, retain_graph=True))
    with scratch_buffers(model):
        lookahead = {n: (p.detach() - alpha_fixed * d).requires_grad_()
                     for n, p, d in zip(names, params, step.direction(weighted_grad))}
        with replayed(val_state):
            val_outputs = functional_call(model, lookahead, (val_inputs,))
        val_loss = share_of_mean(loss_fn(val_outputs, val_targets), val_count, comm)
        val_grad = comm.sum_all(torch.autograd.grad(val_loss, list(lookahead.values())))
        # dw_hat / dw_i = -alpha * s * grad L_i: the per-sample dots are taken along s * grad L_val
        tangent = [g if scale == 1 else scale * g for scale, g in zip(step.scales, val_grad)]
        base = {n: p.detach() for n, p in zip(names, params)}
        if mode == "jvp":
            def per_sample(*values: Tensor) -> Tensor:
                # buffers created inside the transformed function: BatchNorm may update them
                buffers = {n: b.clone() for n, b in model.named_buffers()}
                out = functional_call(model, {**dict(zip(names, values)), **buffers}, (train_inputs,))
                return loss_fn(out, train_targets)

            with warnings.catch_warnings(), replayed(random_state):  # the training forward's masks
                warnings.simplefilter("ignore", FutureWarning)  # torch.func's first call warns about torch.jit
                _, dots = jvp(per_sample, tuple(base.values()), tuple(tangent))
        else:
            norm = torch.sqrt(sum((g * g).sum() for g in tangent)).clamp_min(1e-12)
            h = fd_step / norm  # a parameter step of norm fd_step, whatever the gradient's scale
            shifted = {n: base[n] + h * g for n, g in zip(names, tangent)}
            with torch.no_grad(), replayed(random_state):  # the training forward's masks: one function differenced
                losses_shifted = loss_fn(functional_call(model, shifted, (train_inputs,)), train_targets)
            dots = (losses_shifted - train_losses.detach()) / h
    dots = dots.detach()
    alpha_grad = comm.sum(-(w_fixed * dots).sum())
    val_loss = comm.sum(val_loss.detach())
    offsets = [(o * g).sum() for o, g in zip(step.offsets, val_grad) if o is not None]
    if offsets:
        alpha_grad = alpha_grad - torch.stack(offsets).sum()
    return LookaheadGradients(weights=-alpha_fixed * dots, alpha=alpha_grad, val_loss=float(val_loss.detach()))


def last_layer_lookahead(head: nn.Module, features: Tensor, weights: Tensor, alpha: Tensor, train_targets: Tensor,
                         val_features: Tensor, val_targets: Tensor, loss_fn: LossFn,
                         mode: str = "fd", optimizer: torch.optim.Optimizer | None = None,
                         val_count: int | None = None, comm: Communicator = SINGLE_PROCESS,
                         random_state: RandomState | None = None) -> LookaheadGradients:
    """The cheap approximation: the lookahead of the head alone on fixed features (B, D);
    with `optimizer`, the head's step follows it (`optimizer_step`). random_state: replayed
    in the head's passes over the training features (None: a state captured here)."""
    features, val_features = features.detach(), val_features.detach()
    with replayed(None):
        random_state = random_state or RandomState.capture(features.device)
        with replayed(random_state):
            losses = loss_fn(head(features), train_targets)
        return fast_lookahead(head, losses, weights, alpha, features, train_targets, val_features, val_targets,
                              loss_fn, mode, optimizer=optimizer, val_count=val_count, comm=comm,
                              random_state=random_state)


def higher_lookahead(model: nn.Module, weights: Tensor, alpha: Tensor, train_inputs: Tensor, train_targets: Tensor,
                     val_inputs: Tensor, val_targets: Tensor, loss_fn: LossFn, steps: int = 1,
                     optimizer: torch.optim.Optimizer | None = None, val_count: int | None = None,
                     comm: Communicator = SINGLE_PROCESS,
                     random_state: RandomState | None = None) -> LookaheadGradients:
    """The reference: unroll `steps` differentiable steps at rate alpha with `higher` (plain
    SGD, or a differentiable copy of `optimizer` with its current state: momentum buffers,
    weight decay, Nesterov) and differentiate the validation loss with respect to the weights
    and alpha.

    On many ranks (`comm`; this rank's rows; val_count the global validation batch's size) each
    inner gradient is summed over ranks by a differentiable all-reduce, whose backward
    brings every rank's share of dL_val/dw_i to the rank that holds sample i. random_state: the
    training forward's generators' state, replayed in every unrolled pass over the training
    batch (None: the draws that come next, the same in each step)."""
    with replayed(None):  # the run's random numbers stay as they were
        return _higher_lookahead(model, weights, alpha, train_inputs, train_targets, val_inputs, val_targets,
                                 loss_fn, steps, optimizer, val_count, comm, random_state)


def _higher_lookahead(model: nn.Module, weights: Tensor, alpha: Tensor, train_inputs: Tensor, train_targets: Tensor,
                      val_inputs: Tensor, val_targets: Tensor, loss_fn: LossFn, steps: int,
                      optimizer: torch.optim.Optimizer | None, val_count: int | None, comm: Communicator,
                      random_state: RandomState | None) -> LookaheadGradients:
    import higher

    val_state = RandomState.capture(val_inputs.device)
    random_state = random_state or RandomState.capture(train_inputs.device)
    weights_leaf = weights.detach().requires_grad_()
    alpha_leaf = alpha.detach().requires_grad_()
    inner = optimizer or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    with scratch_buffers(model), higher.innerloop_ctx(model, inner, copy_initial_weights=True,
                                                        track_higher_grads=True) as (fmodel, diffopt):
        for _ in range(steps):
            with replayed(random_state):
                losses = loss_fn(fmodel(train_inputs), train_targets)
            diffopt.step((weights_leaf * losses).sum(), override={"lr": [alpha_leaf] * len(inner.param_groups)},
                         grad_callback=comm.sum_all_differentiable if comm.distributed else None)
        with replayed(val_state):
            val_outputs = fmodel(val_inputs)
        val_loss = share_of_mean(loss_fn(val_outputs, val_targets), val_count or val_inputs.shape[0], comm)
        grad_w, grad_alpha = torch.autograd.grad(val_loss, [weights_leaf, alpha_leaf])
    return LookaheadGradients(weights=grad_w.detach(), alpha=comm.sum(grad_alpha.detach()),
                              val_loss=float(comm.sum(val_loss.detach())))


def share_of_mean(losses: Tensor, count: int, comm: Communicator = SINGLE_PROCESS) -> Tensor:
    """This rank's share of the mean of a global batch of `count` (b,) losses: the plain mean
    on one rank, sum / count on many (the shares sum to the global mean)."""
    return losses.sum() / count if comm.distributed else losses.mean()


def input_lookahead(model: nn.Module, train_inputs: Tensor, train_targets: Tensor, val_inputs: Tensor,
                    val_targets: Tensor, loss_fn: LossFn, lr: float, wrt: Sequence[Tensor], engine: str = "fast",
                    optimizer: torch.optim.Optimizer | None = None, train_count: int | None = None,
                    val_count: int | None = None, comm: Communicator = SINGLE_PROCESS,
                    random_state: RandomState | None = None) -> tuple[tuple[Tensor, ...], float]:
    """MADAug's hypergradient: the training inputs depend on a policy (train_inputs carries
    its graph); one lookahead step of the task network on their mean loss,
        w_hat = w - lr * (s * grad_w L_train(w, x(phi)) + o)      (InnerStep of `optimizer`)
    and dL_val(w_hat)/dphi for the policy's tensors `wrt` (this rank's share; the caller sums
    it over ranks). Returns those gradients and the validation loss at w_hat.

    engine "fast" (exact, no copy of the model): with u = s * grad L_val(w_hat),
        dL_val/dphi = -lr * d/dphi <u, grad_w L_train(w, x(phi))>,
    the training gradient's dot with u differentiated in phi. A finite difference along u, as
    MetaAugment's fd engine takes, is not used: differentiated in the inputs it jumps wherever
    a ReLU or max-pool switches between w and w + h u. engine "higher" (the reference) unrolls
    the step with `higher`. The task network's
    parameters and buffers are left untouched; random_state (the generators' state to replay
    in passes over the training batch, dropout's masks) is captured here when None."""
    if engine not in ("fast", "higher"):
        raise ValueError("engine must be 'fast' or 'higher'")
    with replayed(None):
        random_state = random_state or RandomState.capture(train_inputs.device)
        val_state = RandomState.capture(val_inputs.device)
        train_count = train_count or train_inputs.shape[0]
        val_count = val_count or val_inputs.shape[0]
        if engine == "higher":
            return _higher_input_lookahead(model, train_inputs, train_targets, val_inputs, val_targets, loss_fn, lr,
                                           wrt, optimizer, train_count, val_count, comm, random_state, val_state)
        names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
        step = optimizer_step(optimizer, list(params)) if optimizer is not None else sgd_step(len(params))
        with scratch_buffers(model):
            # the training gradient with its graph (to phi through the inputs, and to w)
            with replayed(random_state):  # the training forward's masks
                attached_loss = share_of_mean(loss_fn(model(train_inputs), train_targets), train_count, comm)
            attached_grad = torch.autograd.grad(attached_loss, params, create_graph=True)
            train_grad = comm.sum_all(tuple(g.detach() for g in attached_grad))
            lookahead = {n: (p.detach() - lr * d).requires_grad_()
                         for n, p, d in zip(names, params, step.direction(train_grad))}
            with replayed(val_state):
                val_loss = share_of_mean(loss_fn(functional_call(model, lookahead, (val_inputs,)), val_targets),
                                         val_count, comm)
            val_grad = comm.sum_all(torch.autograd.grad(val_loss, list(lookahead.values())))
            tangent = tuple(g if scale == 1 else scale * g for scale, g in zip(step.scales, val_grad))

            # d/dphi <u, grad_w L_train(w, x(phi))>: the training gradient's dot with u
            # differentiated once more (reverse over reverse; torch's forward-mode batch_norm
            # drops the batch statistics' dependence on the inputs when differentiated again, so
            # a jvp here is off by 1e-3 with BatchNorm)
            directional = sum((u * g).sum() for u, g in zip(tangent, attached_grad))
            policy_grads = torch.autograd.grad(-lr * directional, list(wrt), allow_unused=True)
        return _zeros_for_unused(policy_grads, wrt), float(comm.sum(val_loss.detach()))


def _zeros_for_unused(grads: Sequence[Tensor | None], wrt: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))


def _higher_input_lookahead(model: nn.Module, train_inputs: Tensor, train_targets: Tensor, val_inputs: Tensor,
                            val_targets: Tensor, loss_fn: LossFn, lr: float, wrt: Sequence[Tensor],
                            optimizer: torch.optim.Optimizer | None, train_count: int, val_count: int,
                            comm: Communicator, random_state: RandomState,
                            val_state: RandomState) -> tuple[tuple[Tensor, ...], float]:
    import higher

    inner = optimizer or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    with scratch_buffers(model), higher.innerloop_ctx(model, inner, copy_initial_weights=True,
                                                        track_higher_grads=True) as (fmodel, diffopt):
        with replayed(random_state):
            loss = share_of_mean(loss_fn(fmodel(train_inputs), train_targets), train_count, comm)
        diffopt.step(loss, override={"lr": [lr] * len(inner.param_groups)},
                     grad_callback=comm.sum_all_differentiable if comm.distributed else None)
        with replayed(val_state):
            val_loss = share_of_mean(loss_fn(fmodel(val_inputs), val_targets), val_count, comm)
        grads = torch.autograd.grad(val_loss, list(wrt), allow_unused=True)
    return _zeros_for_unused(grads, wrt), float(comm.sum(val_loss.detach()))
