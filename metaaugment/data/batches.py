"""Deterministic, resumable mini-batch ordering over in-memory and streamed splits.

On many ranks every rank computes the same global order and loads (or decodes) only its rows
of each global batch (`rows`): the returned Batch holds them with their `Share` of the global
batch, so N ranks together load each image once, as one process does."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from metaaugment.batch import Batch, Share
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
                     start: int = 0, device: torch.device | str = "cpu", workers: int = 0,
                     rows: slice | None = None) -> Iterator[Batch]:
    """The shuffled batches of one epoch, starting at batch index `start` (for resuming);
    a FileSplit's are decoded by `workers` processes, its random crops drawn per epoch.
    `rows`: this rank's rows of each global batch (only those are loaded)."""
    order = epoch_order(len(split), seed, epoch)
    chosen = [order[index * batch_size:(index + 1) * batch_size]
              for index in range(start, steps_per_epoch(len(split), batch_size))]
    yield from _shared(split, chosen, device, workers, epoch, rows)


def _shared(split: ImageSplit | FileSplit, chosen: list[Tensor], device: torch.device | str, workers: int,
            draw: int, rows: slice | None) -> Iterator[Batch]:
    """The batches of the global index chunks `chosen`, each only its `rows` (all when None),
    loaded and marked with their Share of the global batch."""
    local = [chunk if rows is None else chunk[rows] for chunk in chosen]
    if isinstance(split, FileSplit):
        loaded: Iterator[Batch] = split.batches(local, device, workers, draw=draw)
    else:
        loaded = (split.batch(indices, device, draw=draw) for indices in local)
    for chunk, batch in zip(chosen, loaded):
        yield batch if rows is None else batch.replace(share=Share.rows(rows, len(chunk)))


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
    `next(size)` gives the first `size` rows of the next global batch; `share(size)` says which
    of them this rank loads (None: all), so on many ranks each loads only its share.
    """

    def __init__(self, split: ImageSplit | FileSplit, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 workers: int = 0, share: Callable[[int], slice | None] = lambda size: None):
        self.split, self.seed, self.device, self.workers, self.share = split, seed, device, workers, share
        self.batch_size = min(batch_size, len(split))
        self.epoch, self.position = 0, 0
        self._order: tuple[int, Tensor] | None = None  # (epoch, permutation): drawn once per pass
        # a FileSplit's batches from the stream's position on, over many passes, decoded ahead by
        # `workers` processes, for one requested size
        self._files: Iterator[Batch] | None = None
        self._files_size: int | None = None

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.split), self.seed + 7919, epoch))
        return self._order[1]

    def _chunk(self, epoch: int, position: int) -> Tensor:
        return self._epoch_order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]

    def next(self, size: int | None = None) -> Batch:
        """The next mini-batch (its first `size` rows, this rank's share of them), reshuffling
        after each pass over the split."""
        size = self.batch_size if size is None else min(size, self.batch_size)
        rows = self.share(size)
        steps = steps_per_epoch(len(self.split), self.batch_size)
        if self.position >= steps:
            self.epoch, self.position = self.epoch + 1, 0
        epoch, position = self.epoch, self.position
        self.position += 1
        if isinstance(self.split, FileSplit):
            if self._files is not None and self._files_size != size:
                self._files = None  # decoded ahead for another size
            if self._files is None:
                # The rest of this pass and the passes after it, at least FILE_BATCHES_AHEAD batches
                # for one set of workers: starting workers forks this process, whose every page
                # written while they live is then copied, so a small split (one batch a pass)
                # would pay that at every step (2x the run's time measured, docs/scale.md).
                chunks = []
                while position < steps or len(chunks) < FILE_BATCHES_AHEAD:
                    if position >= steps:
                        epoch, position = epoch + 1, 0
                    chunks.append(self._chunk(epoch, position)[:size])
                    position += 1
                self._files, self._files_size = _shared(self.split, chunks, self.device, self.workers, 0, rows), size
            batch = next(self._files, None)
            if batch is None:  # those batches are spent: the next ones from where the stream stands
                self._files, self.position = None, self.position - 1
                return self.next(size)
            return batch
        return next(_shared(self.split, [self._chunk(epoch, position)[:size]], self.device, 0, 0, rows))

    def state_dict(self) -> dict[str, int]:
        """Position in the stream."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by `state_dict`."""
        self.epoch, self.position, self._files = state["epoch"], state["position"], None
