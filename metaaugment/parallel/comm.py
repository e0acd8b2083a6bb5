"""The Communicator: the ranks of one run as a training step sees them.

The data-parallel contract, the same for every policy family:
- every rank holds the same model, policy and learner state and the same random state, and
  sees the same global batch (or meta-batch); the policy's random draws for the global batch
  are therefore the same on every rank, as in one process;
- each rank trains on its contiguous share of the global batch (`local_rows`), or on its
  share of the meta-batch's tasks (`local_items`), and the gradients are summed over ranks
  (`sum_gradients`) before the optimizer steps, so the update is the one-process update on
  the global batch;
- rank 0 alone writes the run folder.

Why not DistributedDataParallel's wrapper: the learners call `forward_features` /
`forward_head` and `torch.func.functional_call` on the model, which bypass the wrapper's
forward hooks, and MetaAugment's lookahead takes gradients with `torch.autograd.grad`,
which DDP does not reduce. The gradients are therefore reduced explicitly, in one
flattened all-reduce per step (DDP's result without its overlap of communication and
backward).

Every collective must be called by every rank in the same order, as torch.distributed's.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable, Sequence, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")


class Communicator(ABC):
    """The ranks of one run: this one's index and count, its share of the global batch, and
    the collectives a step uses. `SingleProcess` is rank 0 of 1, where every collective is the
    identity; `ProcessGroup` is torch.distributed's; `LockstepRanks` (tests) runs N ranks as
    threads of one process.

    rank: this process's index in [0, world_size).
    world_size: the number of ranks.
    """

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    def local_rows(self, count: int) -> slice:
        """This rank's contiguous share of a global batch of `count` rows, in rank order
        (shares differ by at most one row when `count` does not divide by the ranks)."""
        return slice(self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size)

    def local_items(self, items: Sequence[T]) -> list[T]:
        """This rank's tasks of a meta-batch: every world_size-th, starting at its rank."""
        return list(items[self.rank::self.world_size])

    # -- collectives ------------------------------------------------------------------------------
    @abstractmethod
    def sum(self, tensor: Tensor) -> Tensor:
        """The sum over ranks of `tensor` (in place; returned). Not differentiable."""

    @abstractmethod
    def sum_differentiable(self, tensor: Tensor) -> Tensor:
        """The sum over ranks, differentiable: its backward sums the incoming gradients over
        ranks (each rank differentiates its own share of a global quantity, and the gradient
        with respect to a rank's input is the sum of every rank's), and its forward-mode
        derivative (torch.func.jvp) is the sum of the tangents."""

    @abstractmethod
    def gather_rows(self, tensor: Tensor) -> Tensor:
        """(b, ...) per rank -> (world_size * b, ...), in rank order: the global batch's rows."""

    def select_rows(self, tensor: Tensor, index: Tensor) -> Tensor:
        """This rank's rows of `global_rows[index]`: `global_rows` (B, ...) is every rank's
        (b, ...) `tensor` in rank order (B = world_size * b) and `index` (B',) int64, the same
        on every rank, says which global row each position takes; this rank gets positions
        `local_rows(B')`, (b', ...). Implementations move only those rows (a mixing partner's
        image), not the whole global batch."""
        return self.gather_rows(tensor)[index[self.local_rows(len(index))].to(tensor.device)]

    @abstractmethod
    def broadcast_object(self, value: T) -> T:
        """Rank 0's picklable value on every rank (status messages, not tensors)."""

    @abstractmethod
    def broadcast_tensor(self, tensor: Tensor) -> None:
        """Rank 0's values of `tensor` on every rank, in place."""

    # -- built on the collectives -------------------------------------------------------------------
    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over ranks (one collective for the whole dict)."""
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        summed = self.sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                       device=self.collective_device))
        return dict(zip(keys, summed.tolist()))

    def sum_all(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Each tensor summed over ranks, in one flattened collective (new tensors)."""
        if not self.distributed:
            return list(tensors)
        flat = self.sum(torch.cat([t.reshape(-1) for t in tensors]))
        return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum_all_differentiable(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """`sum_all` that autograd differentiates through (higher's inner gradients)."""
        if not self.distributed:
            return list(tensors)
        flat = self.sum_differentiable(torch.cat([t.reshape(-1) for t in tensors]))
        return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Sum the parameters' .grad over ranks in one flattened collective (a parameter without
        a gradient on every rank counts as zero)."""
        if not self.distributed:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for p, summed in zip(params, self.sum_all([p.grad for p in params])):
            p.grad.copy_(summed)

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                self.broadcast_tensor(tensor.data)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, as DistributedDataParallel
        does at each forward, in one flattened broadcast per dtype."""
        if not self.distributed:
            return
        groups: dict[torch.dtype, list[Tensor]] = {}
        for buffer in module.buffers():
            groups.setdefault(buffer.dtype, []).append(buffer)
        with torch.no_grad():
            for buffers in groups.values():
                flat = torch.cat([b.reshape(-1) for b in buffers])
                self.broadcast_tensor(flat)
                for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers])):
                    buffer.copy_(part.view_as(buffer))

    @property
    def collective_device(self) -> torch.device:
        """Where tensors made for a collective live (NCCL: the current CUDA device)."""
        return torch.device("cpu")


class SingleProcess(Communicator):
    """One process: rank 0 of 1; every collective is the identity."""

    rank, world_size = 0, 1

    def sum(self, tensor: Tensor) -> Tensor:
        return tensor

    def sum_differentiable(self, tensor: Tensor) -> Tensor:
        return tensor

    def gather_rows(self, tensor: Tensor) -> Tensor:
        return tensor

    def broadcast_object(self, value: T) -> T:
        return value

    def broadcast_tensor(self, tensor: Tensor) -> None:
        return None


SINGLE_PROCESS = SingleProcess()


class _SumOverRanks(torch.autograd.Function):
    """comm.sum forward; comm.sum of the incoming gradients backward; the sum of the tangents
    forward-mode (the sum is linear)."""

    @staticmethod
    def forward(tensor: Tensor, comm: Communicator) -> Tensor:  # noqa: D102
        return comm.sum(tensor.clone(memory_format=torch.contiguous_format))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Communicator], output: Tensor) -> None:  # noqa: D102
        ctx.comm = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return _SumOverRanks.apply(grad, ctx.comm), None

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, _: Any) -> Tensor:  # noqa: D102
        return _SumOverRanks.apply(tangent, ctx.comm)


def differentiable_sum(tensor: Tensor, comm: Communicator) -> Tensor:
    """`comm.sum` as an autograd function (the implementations' `sum_differentiable`)."""
    return _SumOverRanks.apply(tensor, comm)


class ProcessGroup(Communicator):
    """The default torch.distributed process group (joined by `process_group.communicator`)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def sum(self, tensor: Tensor) -> Tensor:
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return tensor

    def sum_differentiable(self, tensor: Tensor) -> Tensor:
        return differentiable_sum(tensor, self)

    def gather_rows(self, tensor: Tensor) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def select_rows(self, tensor: Tensor, index: Tensor) -> Tensor:
        # one all-to-all: each rank sends every other rank the rows it asked for and owns
        held, ranks = tensor.shape[0], self.world_size
        index = index.cpu()
        owner = index // held  # the rank holding each global row
        wanted = [index[slice(r * len(index) // ranks, (r + 1) * len(index) // ranks)] for r in range(ranks)]
        sends = [asked[asked // held == self.rank] - self.rank * held for asked in wanted]
        mine = owner[self.local_rows(len(index))]
        received = torch.empty((len(mine), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        self._dist.all_to_all_single(received, tensor[torch.cat(sends).to(tensor.device)].contiguous(),
                                     output_split_sizes=torch.bincount(mine, minlength=ranks).tolist(),
                                     input_split_sizes=[len(s) for s in sends])
        rows = torch.empty_like(received)  # received grouped by sender; back to the asked order
        rows[torch.argsort(mine, stable=True).to(tensor.device)] = received
        return rows

    def broadcast_object(self, value: T) -> T:
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensor(self, tensor: Tensor) -> None:
        self._dist.broadcast(tensor, src=0)

    @property
    def collective_device(self) -> torch.device:
        if self._dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
