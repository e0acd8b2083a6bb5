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

The lookahead passes run on scratch copies of the buffers (BatchNorm running statistics),
so they leave no trace in the model.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from metaaugment.models import scratch_buffers

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> (B,) per-sample losses


@dataclass
class LookaheadGradients:
    """dL_val/dweights (B,), dL_val/dalpha (scalar) and the validation loss at w_hat."""

    weights: Tensor
    alpha: Tensor
    val_loss: float


def fast_lookahead(model: nn.Module, train_losses: Tensor, weights: Tensor, alpha: Tensor,
                   train_inputs: Tensor, train_targets: Tensor, val_inputs: Tensor, val_targets: Tensor,
                   loss_fn: LossFn, mode: str = "fd", fd_step: float = 1e-3) -> LookaheadGradients:
    """The one-step lookahead gradients without a second-order backward.

    train_losses: (B,) per-sample losses of the training forward pass, still attached to the
    model's parameters (the graph is retained for the real update). weights: (B,) sample
    weights (normalized); alpha: scalar inner learning rate. mode "fd" moves the parameters
    by a step of norm `fd_step` along grad L_val(w_hat) (one forward pass); "jvp" is exact.
    """
    if mode not in ("jvp", "fd"):
        raise ValueError("mode must be 'jvp' or 'fd'")
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    w_fixed, alpha_fixed = weights.detach(), alpha.detach()
    weighted_grad = torch.autograd.grad((w_fixed * train_losses).sum(), params, retain_graph=True)
    with scratch_buffers(model):
        lookahead = {n: (p.detach() - alpha_fixed * g).requires_grad_()
                     for n, p, g in zip(names, params, weighted_grad)}
        val_loss = loss_fn(functional_call(model, lookahead, (val_inputs,)), val_targets).mean()
        val_grad = torch.autograd.grad(val_loss, list(lookahead.values()))
        base = {n: p.detach() for n, p in zip(names, params)}
        if mode == "jvp":
            def per_sample(*values: Tensor) -> Tensor:
                # buffers created inside the transformed function: BatchNorm may update them
                buffers = {n: b.clone() for n, b in model.named_buffers()}
                out = functional_call(model, {**dict(zip(names, values)), **buffers}, (train_inputs,))
                return loss_fn(out, train_targets)

            with warnings.catch_warnings():  # torch.func's first call warns about torch.jit internals
                warnings.simplefilter("ignore", FutureWarning)
                _, dots = jvp(per_sample, tuple(base.values()), tuple(val_grad))
        else:
            norm = torch.sqrt(sum((g * g).sum() for g in val_grad)).clamp_min(1e-12)
            h = fd_step / norm  # a parameter step of norm fd_step, whatever the gradient's scale
            shifted = {n: base[n] + h * g for n, g in zip(names, val_grad)}
            with torch.no_grad():
                losses_shifted = loss_fn(functional_call(model, shifted, (train_inputs,)), train_targets)
            dots = (losses_shifted - train_losses.detach()) / h
    dots = dots.detach()
    return LookaheadGradients(weights=-alpha_fixed * dots, alpha=-(w_fixed * dots).sum(),
                              val_loss=float(val_loss.detach()))


def last_layer_lookahead(head: nn.Module, features: Tensor, weights: Tensor, alpha: Tensor, train_targets: Tensor,
                         val_features: Tensor, val_targets: Tensor, loss_fn: LossFn,
                         mode: str = "fd") -> LookaheadGradients:
    """The cheap approximation: the lookahead of the head alone on fixed features (B, D)."""
    features, val_features = features.detach(), val_features.detach()
    losses = loss_fn(head(features), train_targets)
    return fast_lookahead(head, losses, weights, alpha, features, train_targets, val_features, val_targets, loss_fn,
                          mode)


def higher_lookahead(model: nn.Module, weights: Tensor, alpha: Tensor, train_inputs: Tensor, train_targets: Tensor,
                     val_inputs: Tensor, val_targets: Tensor, loss_fn: LossFn, steps: int = 1) -> LookaheadGradients:
    """The reference: unroll `steps` differentiable SGD steps at rate alpha with `higher`
    and differentiate the validation loss with respect to the weights and alpha."""
    import higher

    weights_leaf = weights.detach().requires_grad_()
    alpha_leaf = alpha.detach().requires_grad_()
    inner = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    with scratch_buffers(model), higher.innerloop_ctx(model, inner, copy_initial_weights=True,
                                                        track_higher_grads=True) as (fmodel, diffopt):
        for _ in range(steps):
            losses = loss_fn(fmodel(train_inputs), train_targets)
            diffopt.step((weights_leaf * losses).sum(), override={"lr": [alpha_leaf]})
        val_loss = loss_fn(fmodel(val_inputs), val_targets).mean()
        grad_w, grad_alpha = torch.autograd.grad(val_loss, [weights_leaf, alpha_leaf])
    return LookaheadGradients(weights=grad_w.detach(), alpha=grad_alpha.detach(), val_loss=float(val_loss.detach()))
