"""Mixed precision for the task network's passes: `--precision {32,bf16,16}`.

"bf16" and "16" run the task network's training forward and its evaluation under
torch.autocast (matrix products and convolutions in bfloat16 / float16, reductions and the
loss in float32); "16" also scales the loss with a GradScaler, whose state the checkpoint
keeps. The optimizer's weights stay float32. MetaAugment's lookahead always runs in float32
(its finite-difference engine differences two losses at a parameter step of 1e-3, below
bfloat16's resolution), see docs/scale.md.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast(device: torch.device, precision: str) -> ContextManager:
    """torch.autocast on `device` at `precision` ("32": no autocast)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device) -> ContextManager:
    """Autocast off: what runs inside computes in the tensors' own (float32) precision."""
    return torch.autocast(device_type=device.type, enabled=False)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """The loss scaler float16 needs (its gradients underflow otherwise); None for 32 and bf16."""
    return torch.amp.GradScaler(device.type) if precision == "16" else None


def precision_note(device: torch.device, precision: str) -> str | None:
    """A line for the user when the chosen precision is much slower than float32 on `device`:
    PyTorch's float16 convolution backward on CPU takes a slow path (70x float32 measured on
    a 2-core Xeon with torch 2.14, docs/scale.md), while bfloat16 runs at float32's speed."""
    if precision == "16" and device.type == "cpu":
        return ("note: --precision 16 on CPU is far slower than 32 in PyTorch (float16 convolution "
                "gradients); use --precision bf16 on CPU")
    return None
