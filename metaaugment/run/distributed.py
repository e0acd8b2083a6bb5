"""One run on many processes (torchrun): which rank this is, and the collectives the steps use.

The data-parallel contract, the same for every policy family:
- every rank holds the same model, policy and learner state and the same random state, and
  sees the same global batch (or meta-batch); the policy's random draws for the global batch
  are therefore the same on every rank, as in one process;
- each rank trains on its contiguous share of the global batch (`local_rows`), or on its
  share of the meta-batch's tasks (`local_items`), and the gradients are summed over ranks
  (`all_reduce_gradients`) before the optimizer steps, so the update is the one-process
  update on the global batch;
- rank 0 alone writes the run folder.

Why not DistributedDataParallel's wrapper: the learners call `forward_features` /
`forward_head` and `torch.func.functional_call` on the model, which bypass the wrapper's
forward hooks, and MetaAugment's lookahead takes gradients with `torch.autograd.grad`,
which DDP does not reduce. The gradients are therefore reduced explicitly, in one
flattened all-reduce per step (DDP's result without its overlap of communication and
backward).

Outside torchrun (no process group) every function here is the identity: rank 0 of 1.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 outside torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment of torch.distributed's launcher is set (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment: NCCL on CUDA, gloo
    otherwise. A no-op outside torchrun or when already joined."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def local_rank() -> int:
    """The rank on this node (LOCAL_RANK from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_rows(count: int) -> slice:
    """This rank's contiguous share of a global batch of `count` rows, in rank order (shares
    differ by at most one row when `count` does not divide by the number of ranks)."""
    size, index = world_size(), rank()
    return slice(index * count // size, (index + 1) * count // size)


def local_items(items: Sequence[T]) -> list[T]:
    """This rank's tasks of a meta-batch: every world_size-th, starting at its rank."""
    return list(items[rank()::world_size()])


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum over ranks (in place; returned). Not differentiable: for values and gradients."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) forward; all_reduce(SUM) of the incoming gradients backward: each rank
    differentiates its own share of a global quantity, and the gradient of that quantity
    with respect to a rank's input is the sum of every rank's share's gradient. The sum is
    linear, so its forward-mode derivative (torch.func.jvp) is the sum of the tangents."""

    @staticmethod
    def forward(tensor: Tensor) -> Tensor:  # noqa: D102
        summed = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:  # noqa: D102
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # noqa: D102
        return _SumOverRanks.apply(grad)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:  # noqa: D102
        return _SumOverRanks.apply(tangent)


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """Differentiable sum over ranks: its backward sums the incoming gradients over ranks,
    so a rank's share of a global quantity receives every rank's gradient. Every rank must
    differentiate through it in the same order (as every collective)."""
    if not is_distributed():
        return tensor
    return _SumOverRanks.apply(tensor)


def sum_floats(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over ranks (one collective for the whole dict)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    summed = all_reduce_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                         device=_collective_device()))
    return dict(zip(keys, summed.tolist()))


def all_gather_rows(tensor: Tensor) -> Tensor:
    """(b, ...) per rank -> (world_size * b, ...), rank order: the global batch's rows back."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Sum the parameters' .grad over ranks in one flattened collective (a parameter without
    a gradient on every rank counts as zero)."""
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (one collective per tensor)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, as DistributedDataParallel
    does at each forward, in one flattened broadcast per dtype."""
    if not is_distributed():
        return
    groups: dict[torch.dtype, list[Tensor]] = {}
    for buffer in module.buffers():
        groups.setdefault(buffer.dtype, []).append(buffer)
    with torch.no_grad():
        for buffers in groups.values():
            flat = torch.cat([b.reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers])):
                buffer.copy_(part.view_as(buffer))


def barrier() -> None:
    """Wait for every rank."""
    if is_distributed():
        dist.barrier()


def broadcast_object(value: T) -> T:
    """Rank 0's picklable value on every rank (status messages, not tensors)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
