"""Passes through a model that leave no trace in it.

MetaAugment's lookahead and RL-Mixup's saliency run the task network forward between the
training forward and its backward. In training mode BatchNorm would update its running
statistics in place, which both moves them (the extra passes are not training data) and
invalidates the training forward's backward (its graph saved those tensors). `scratch_buffers`
gives every module scratch copies of its buffers for the block, through the public
`register_buffer`, and puts the originals back after.

Stochastic layers (dropout, stochastic depth) draw new masks in every pass. A pass that
differentiates or differences the training forward must see its masks: `RandomState.capture`
records the generators before the training forward, and `replayed` runs a block that draws
those same numbers again, leaving the generators as they were (the extra pass consumes no
randomness of the run).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def scratch_buffers(model: nn.Module) -> Iterator[None]:
    """Give every module scratch copies of its buffers for the block, then put the original
    tensors back (their persistence kept). The originals are never written in place."""
    persistent = set(model.state_dict(keep_vars=True))
    originals = []
    for prefix, module in model.named_modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            kept = (f"{prefix}.{name}" if prefix else name) in persistent
            originals.append((module, name, buffer, kept))
            module.register_buffer(name, buffer.detach().clone(), persistent=kept)
    try:
        yield
    finally:
        for module, name, buffer, kept in originals:
            module.register_buffer(name, buffer, persistent=kept)


@dataclass(frozen=True)
class RandomState:
    """The states of the generators a forward pass on `device` draws from: the CPU's, and the
    CUDA device's when it is one (`accelerator`, None otherwise)."""

    cpu: Tensor
    device: torch.device
    accelerator: Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device | str) -> "RandomState":
        """The generators' states now (before a forward pass whose draws are to be replayed)."""
        device = torch.device(device)
        on_cuda = device.type == "cuda"
        return cls(torch.get_rng_state(), device, torch.cuda.get_rng_state(device) if on_cuda else None)


@contextlib.contextmanager
def replayed(state: RandomState | None) -> Iterator[None]:
    """A block that draws the random numbers `state` was captured before (None: those that
    come next), then puts the generators back as they were before the block."""
    cuda = [state.device] if state is not None and state.accelerator is not None else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        if state is not None:
            torch.set_rng_state(state.cpu)
            if state.accelerator is not None:
                torch.cuda.set_rng_state(state.accelerator, state.device)
        yield
