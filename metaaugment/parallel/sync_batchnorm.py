"""BatchNorm whose batch statistics span the global batch of many ranks, on any backend.

Each rank trains on its share of the global batch; plain BatchNorm would normalize by the
share's statistics, so the run would no longer be the one-process run on the global batch.
torch's SyncBatchNorm fixes that on CUDA (NCCL) only; `GlobalBatchNorm` does it with
differentiable all-reduces on any backend (gloo on CPU), in two passes (mean, then the sum
of squared deviations) for the accuracy of one-process BatchNorm, through the run's
Communicator. `synchronize_batchnorm` converts a model: torch's SyncBatchNorm on CUDA with
torch.distributed's group, GlobalBatchNorm otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator, ProcessGroup


def global_batch_statistics(inputs: Tensor, comm: Communicator) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean and biased variance of (b, C, ...) inputs over every rank's rows, and
    the global count; differentiable (their backward sums the gradients over ranks)."""
    dims = [0] + list(range(2, inputs.dim()))
    local_count = inputs.new_tensor([float(inputs.numel() // inputs.shape[1])])
    sums = comm.sum_differentiable(torch.cat([inputs.sum(dims), local_count]))  # one collective for both
    count = sums[-1]
    mean = sums[:-1] / count
    shape = [1, -1] + [1] * (inputs.dim() - 2)
    var = comm.sum_differentiable(((inputs - mean.view(shape)) ** 2).sum(dims)) / count
    return mean, var, count


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, ...) inputs with the global batch's statistics in training on many
    ranks (`comm`); plain BatchNorm otherwise (one rank, evaluation, or no running statistics)."""

    comm: Communicator = SINGLE_PROCESS

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self.comm.distributed):
            return super().forward(input)
        mean, var, count = global_batch_statistics(input, self.comm)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = [1, -1] + [1] * (input.dim() - 2)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def synchronize_batchnorm(module: nn.Module, device: torch.device, comm: Communicator) -> nn.Module:
    """`module` with every BatchNorm layer replaced by one over the global batch of `comm`'s
    ranks (parameters, buffers and names kept, so checkpoints load either way): torch's
    SyncBatchNorm on CUDA with torch.distributed's group, GlobalBatchNorm otherwise. Unchanged
    on one rank."""
    if not comm.distributed:
        return module
    if device.type == "cuda" and isinstance(comm, ProcessGroup):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module, comm)


def _convert(module: nn.Module, comm: Communicator) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, (GlobalBatchNorm, nn.SyncBatchNorm)):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        converted.comm = comm
        with torch.no_grad():
            if module.affine:
                converted.weight, converted.bias = module.weight, module.bias
            if module.track_running_stats:
                converted.running_mean, converted.running_var = module.running_mean, module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child, comm))
    return module

