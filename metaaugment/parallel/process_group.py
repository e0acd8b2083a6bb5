"""The one place that joins torch.distributed's process group and answers "am I rank 0".

Under torchrun (`metaaug run --nproc-per-node N`, or torchrun itself) the environment names
this process's rank; `communicator(device)` joins the group (NCCL on CUDA, gloo otherwise)
and returns the run's Communicator. Outside torchrun it is `SINGLE_PROCESS`. Importing this
module does not import torch (the CLI asks "am I rank 0" before anything else is loaded).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from metaaugment.parallel.comm import Communicator


def _joined_group() -> Any:
    """torch.distributed when this process joined its group, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def launched_by_torchrun() -> bool:
    """True when the environment of torch.distributed's launcher is set (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """The rank on this node (LOCAL_RANK from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (the process that prints and writes): the joined group's answer, or before it is
    joined, torchrun's environment; True outside torchrun."""
    dist = _joined_group()
    if dist is not None:
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout")


def peer_failure(error: BaseException) -> str | None:
    """One line for the error a rank gets when another process of its run died (a collective's
    connection closed: gloo's or NCCL's error), or None for any other error."""
    if not launched_by_torchrun() or not isinstance(error, RuntimeError):
        return None
    import torch.distributed as dist

    text = " ".join(str(error).split())
    signs = [sign for sign in PEER_SIGNS if sign in text]
    if not (isinstance(error, getattr(dist, "DistError", ())) or signs):
        return None
    reason = signs[0] if signs else type(error).__name__
    return (f"another process of this run stopped, so rank {os.environ.get('RANK', '?')} stops too ({reason}); "
            f"the last checkpoint is kept: rerun with --resume")


def leave() -> None:
    """Leave the process group, if this process joined one: after a barrier, so that no rank
    tears its connections down while another still talks (gloo aborts the process then)."""
    dist = _joined_group()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()


def communicator(device: torch.device) -> Communicator:
    """This run's Communicator: the torchrun group (joined here if it is not yet: NCCL on
    CUDA, gloo otherwise), or SINGLE_PROCESS outside torchrun."""
    import torch.distributed as dist

    from metaaugment.parallel.comm import SINGLE_PROCESS, ProcessGroup

    if not launched_by_torchrun():
        return SINGLE_PROCESS

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup()
