"""The bottom layer of many processes: what a training step needs to know about ranks.

One run on N processes is one run on the global batch (docs/scale.md). Policies and learners
never ask which rank they are on: they receive a `Communicator` in their step context
(`StepContext.comm`) and use its collectives and its share of the rows; the run loop builds
the communicator once (`process_group.communicator`), and the CLI launcher starts the
processes. Everything else in the library knows no ranks.

- `comm`: the Communicator interface, `SingleProcess` (the identity) and `ProcessGroup`
  (torch.distributed: gloo on CPU, NCCL on CUDA);
- `lockstep`: `LockstepRanks`, N ranks as N threads of one process taking turns, so a policy
  is unit-tested against a two-rank group without starting processes;
- `process_group`: the one place that initialises torch.distributed and answers "am I rank 0";
- `sync_batchnorm`: BatchNorm whose statistics span the global batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["SINGLE_PROCESS", "Communicator", "ProcessGroup", "SingleProcess"]


def __getattr__(name: str) -> Any:  # comm imports torch: only when its names are asked for
    if name not in __all__:
        raise AttributeError(f"module 'metaaugment.parallel' has no attribute {name!r}")
    from metaaugment.parallel import comm

    return getattr(comm, name)


if TYPE_CHECKING:
    from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator, ProcessGroup, SingleProcess  # noqa: F401
