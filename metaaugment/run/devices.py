"""Turn a --device string into a torch.device."""
from __future__ import annotations

import torch

from metaaugment.infra.errors import UserError
from metaaugment.parallel.process_group import launched_by_torchrun, local_rank


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else MPS when available, else CPU; otherwise the
    named device, checked to exist. Under torchrun, 'auto' and 'cuda' mean cuda:LOCAL_RANK."""
    if name == "auto":
        if torch.cuda.is_available():
            # under torchrun each process of a node takes its own GPU
            return torch.device("cuda", local_rank()) if launched_by_torchrun() else torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"device '{name}' requested but MPS (Apple silicon) is not available here; "
                            "use --device cpu or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available here; use --device cpu or auto")
        if device.index is None and launched_by_torchrun():
            device = torch.device("cuda", local_rank())
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    return device
