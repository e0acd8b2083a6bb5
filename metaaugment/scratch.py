"""Passes through a model that leave no trace in it.

MetaAugment's lookahead and RL-Mixup's saliency run the task network forward between the
training forward and its backward. In training mode BatchNorm would update its running
statistics in place, which both moves them (the extra passes are not training data) and
invalidates the training forward's backward (its graph saved those tensors). `scratch_buffers`
gives every module scratch copies of its buffers for the block, through the public
`register_buffer`, and puts the originals back after.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


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
