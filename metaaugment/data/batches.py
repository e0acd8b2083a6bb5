"""Deterministic, resumable mini-batch ordering over in-memory splits."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from metaaugment.batch import Batch
from metaaugment.data.splits import ImageSplit
from metaaugment.data.streaming import FileSplit


def _generator(seed: int, stream: int) -> torch.Generator:
    # Distinct, reproducible streams per (seed, epoch) without touching the global RNG.
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """(num_samples,) permutation used in `epoch`; a pure function of (seed, epoch)."""
    return torch.randperm(num_samples, generator=_generator(seed, epoch))


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, as BatchNorm prefers)."""
    return max(1, num_samples // batch_size)


def training_batches(split: ImageSplit | FileSplit, batch_size: int, seed: int, epoch: int,
                     start: int = 0, device: torch.device | str = "cpu", workers: int = 0) -> Iterator[Batch]:
    """The shuffled batches of one epoch, starting at batch index `start` (for resuming);
    a FileSplit's are decoded by `workers` processes, its random crops drawn per epoch."""
    order = epoch_order(len(split), seed, epoch)
    chosen = (order[index * batch_size:(index + 1) * batch_size]
              for index in range(start, steps_per_epoch(len(split), batch_size)))
    if isinstance(split, FileSplit):
        yield from split.batches(list(chosen), device, workers, draw=epoch)
        return
    for indices in chosen:
        yield split.batch(indices, device)


def evaluation_batches(split: ImageSplit | FileSplit, batch_size: int, device: torch.device | str = "cpu",
                       indices: Tensor | None = None, workers: int = 0) -> Iterator[Batch]:
    """Every sample (or those at `indices`) once, in order, including the last partial batch."""
    indices = torch.arange(len(split)) if indices is None else indices
    chosen = [indices[begin:begin + batch_size] for begin in range(0, len(indices), batch_size)]
    if isinstance(split, FileSplit):
        yield from split.batches(chosen, device, workers)
        return
    for part in chosen:
        yield split.batch(part, device)


FILE_BATCHES_AHEAD = 1024  # a file stream's batches per set of decoding workers (keys only until decoded)


class BatchStream:
    """An endless stream of shuffled mini-batches whose position is checkpointable.

    Used for the held-out batches lookahead policies ask for (`StepContext.validation_batch`);
    its state is two integers, so a resumed run draws exactly the batches it would have drawn.
    """

    def __init__(self, split: ImageSplit | FileSplit, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 workers: int = 0):
        self.split, self.seed, self.device, self.workers = split, seed, device, workers
        self.batch_size = min(batch_size, len(split))
        self.epoch, self.position = 0, 0
        self._order: tuple[int, Tensor] | None = None  # (epoch, permutation): drawn once per pass
        # a FileSplit's batches from the stream's position on, over many passes, decoded ahead by
        # `workers` processes
        self._files: Iterator[Batch] | None = None

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.split), self.seed + 7919, epoch))
        return self._order[1]

    def _chunk(self, epoch: int, position: int) -> Tensor:
        return self._epoch_order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]

    def next(self) -> Batch:
        """The next mini-batch, reshuffling after each pass over the split."""
        steps = steps_per_epoch(len(self.split), self.batch_size)
        if self.position >= steps:
            self.epoch, self.position = self.epoch + 1, 0
        epoch, position = self.epoch, self.position
        self.position += 1
        if isinstance(self.split, FileSplit):
            if self._files is None:
                # The rest of this pass and the passes after it, at least FILE_BATCHES_AHEAD batches
                # for one set of workers: starting workers forks this process, whose every page
                # written while they live is then copied, so a small split (one batch a pass)
                # would pay that at every step (2x the run's time measured, docs/scale.md).
                chunks = []
                while position < steps or len(chunks) < FILE_BATCHES_AHEAD:
                    if position >= steps:
                        epoch, position = epoch + 1, 0
                    chunks.append(self._chunk(epoch, position))
                    position += 1
                self._files = self.split.batches(chunks, self.device, self.workers)
            batch = next(self._files, None)
            if batch is None:  # those batches are spent: the next ones from where the stream stands
                self._files, self.position = None, self.position - 1
                return self.next()
            return batch
        return self.split.batch(self._chunk(epoch, position), self.device)

    def state_dict(self) -> dict[str, int]:
        """Position in the stream."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by `state_dict`."""
        self.epoch, self.position, self._files = state["epoch"], state["position"], None
