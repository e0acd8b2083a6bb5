"""N ranks of one run as N threads of this process that take turns: a policy or learner is
unit-tested against a real multi-rank group without starting processes.

`LockstepRanks(2).run(fn)` calls `fn(comm)` on two threads, one per rank, each with its own
`Communicator`. Exactly one thread runs at a time: a rank runs until its next collective,
deposits its part and hands the turn to the next rank; once the last rank has deposited, the
first continues with the result. So the ranks execute as separate processes would, with the
same collectives in the same order, and each rank keeps its own global random state (torch's,
Python's and NumPy's generators are saved when a rank hands over its turn and restored when it
takes it back): the draws a policy makes from the global generators are every rank's own,
as in processes started from the same seed. Sums add the ranks' parts in rank order, as gloo
does for two ranks, so results match a real two-process run to float rounding.
"""
from __future__ import annotations

import copy
import random
import threading
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import Tensor

from metaaugment.parallel.comm import Communicator, differentiable_sum

T = TypeVar("T")
WAIT_SECONDS = 600.0  # a rank waiting longer for the others is a collective called out of order


class _Turns:
    """Whose turn it is, the parts deposited per collective, and each rank's random state."""

    def __init__(self, world_size: int, start_state: tuple[Any, Any, Any]):
        self.world_size = world_size
        self.lock = threading.Condition()
        self.turn = 0
        self.finished = [False] * world_size
        self.rounds = [0] * world_size  # collectives each rank has called
        self.deposits: dict[int, list[Any]] = {}
        self.results: dict[int, tuple[list[Any], list[int]]] = {}  # round -> (parts, ranks yet to read)
        self.states = [start_state] * world_size
        self.error: BaseException | None = None

    def _wait_for_turn(self, rank: int, ready: Callable[[], bool] = lambda: True) -> None:
        if not self.lock.wait_for(lambda: self.error is not None or (self.turn == rank and ready()), WAIT_SECONDS):
            self.error = RuntimeError(f"rank {rank} waited {WAIT_SECONDS:.0f} s for the other ranks: a collective "
                                      f"called by some ranks only")
            self.lock.notify_all()
        if self.error is not None:
            raise RuntimeError("another rank failed") from self.error
        _set_random_state(self.states[rank])

    def _hand_over(self, rank: int) -> None:
        self.states[rank] = _random_state()
        for step in range(1, self.world_size + 1):
            following = (rank + step) % self.world_size
            if not self.finished[following]:
                self.turn = following
                break
        self.lock.notify_all()

    def start(self, rank: int) -> None:
        with self.lock:
            self._wait_for_turn(rank)

    def finish(self, rank: int, error: BaseException | None = None) -> None:
        with self.lock:
            self.finished[rank] = True
            if error is not None and self.error is None:
                self.error = error
            self._hand_over(rank)

    def exchange(self, rank: int, part: Any) -> list[Any]:
        """Every rank's `part` of this collective, in rank order."""
        with self.lock:
            round_ = self.rounds[rank]
            self.rounds[rank] += 1
            parts = self.deposits.setdefault(round_, [None] * self.world_size)
            parts[rank] = part
            if rank == self.world_size - 1:
                self.results[round_] = (self.deposits.pop(round_), list(range(self.world_size)))
            self._hand_over(rank)
            self._wait_for_turn(rank, lambda: round_ in self.results)
            result, readers = self.results[round_]
            readers.remove(rank)
            if not readers:
                del self.results[round_]
            return result


def _random_state() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_random_state(state: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


class _LockstepRank(Communicator):
    """One rank of a LockstepRanks group."""

    def __init__(self, turns: _Turns, rank: int):
        self.turns, self.rank, self.world_size = turns, rank, turns.world_size

    def sum(self, tensor: Tensor) -> Tensor:
        parts = self.turns.exchange(self.rank, tensor.detach().clone())
        total = parts[0].clone()
        for part in parts[1:]:
            total += part.to(total.device)
        with torch.no_grad():
            tensor.copy_(total)
        return tensor

    def sum_differentiable(self, tensor: Tensor) -> Tensor:
        return differentiable_sum(tensor, self)

    def gather_rows(self, tensor: Tensor) -> Tensor:
        return torch.cat([part.to(tensor.device) for part in self.turns.exchange(self.rank, tensor.detach().clone())])

    def broadcast_object(self, value: T) -> T:
        return copy.deepcopy(self.turns.exchange(self.rank, value)[0])  # a copy, as pickling would make

    def broadcast_tensor(self, tensor: Tensor) -> None:
        source = self.turns.exchange(self.rank, tensor.detach().clone())[0]
        with torch.no_grad():
            tensor.copy_(source)


class LockstepRanks:
    """`world_size` ranks in this process, one thread each, taking turns at every collective."""

    def __init__(self, world_size: int = 2):
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1 (got {world_size})")
        self.world_size = world_size

    def run(self, function: Callable[[Communicator], T]) -> list[T]:
        """`function(comm)` on every rank, each starting from this thread's random state;
        returns each rank's result in rank order, or raises the first rank's error. This
        thread's random state is left as it was."""
        saved = _random_state()
        turns = _Turns(self.world_size, saved)
        results: list[Any] = [None] * self.world_size

        def rank_body(rank: int) -> None:
            error = None
            try:
                turns.start(rank)
                results[rank] = function(_LockstepRank(turns, rank))
            except BaseException as caught:  # noqa: BLE001 (handed to the caller below)
                error = caught
            finally:
                turns.finish(rank, error)

        threads = [threading.Thread(target=rank_body, args=(rank,), name=f"rank{rank}")
                   for rank in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _set_random_state(saved)
        if turns.error is not None:
            raise turns.error
        return results
