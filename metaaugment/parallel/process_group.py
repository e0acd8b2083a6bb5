"""The one place that joins torch.distributed's process group and answers "am I rank 0".

Under torchrun (`metaaug run --nproc-per-node N`, or torchrun itself) the environment names
this process's rank; `communicator(device)` joins the group (NCCL on CUDA, gloo otherwise)
and returns the run's Communicator. Outside torchrun it is `SINGLE_PROCESS`.
"""
from __future__ import annotations

import os

import torch

from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator, ProcessGroup


def launched_by_torchrun() -> bool:
    """True when the environment of torch.distributed's launcher is set (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """The rank on this node (LOCAL_RANK from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (the process that prints and writes): the joined group's answer, or before it is
    joined, torchrun's environment; True outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def leave() -> None:
    """Leave the process group, if this process joined one: after a barrier, so that no rank
    tears its connections down while another still talks (gloo aborts the process then)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def communicator(device: torch.device) -> Communicator:
    """This run's Communicator: the torchrun group (joined here if it is not yet: NCCL on
    CUDA, gloo otherwise), or SINGLE_PROCESS outside torchrun."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup()
