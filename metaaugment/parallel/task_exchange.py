"""Episodes of the meta-batch held by other ranks: what a policy that pairs tasks (MLTI) asks
for, moved by one `select_rows` per tensor of an episode.

Tasks are held round-robin (`Communicator.local_items`: task t on rank t % world_size). Each
rank stacks its episodes, padded to ceil(total / world_size), in its own order; padded row k
of rank r is task k * world_size + r. Every rank knows which task each task of the meta-batch
asks for (the policy draws that for the whole meta-batch from the keys), so `select_rows`
moves each asked episode from the rank holding it to the rank asking, and nothing else.

Bytes per step: a rank receives, for each of its tasks whose partner lives on another rank,
that episode's four tensors (support and query inputs and targets): for 5-way 1-shot tasks
with 15 queries of 84x84 RGB images in float32, 80 * 84 * 84 * 3 * 4 B = 6.8 MB per task.
A rank holding fewer tasks than the most loaded one also receives one padding episode per
missing task. Before the exchange, rank 0's episode shapes are broadcast (a few hundred bytes).
"""
from __future__ import annotations

from typing import Sequence

import torch

from metaaugment.batch import Episode, Tasks
from metaaugment.parallel.comm import Communicator

FIELDS = ("support_inputs", "support_targets", "query_inputs", "query_targets")


def asked_episodes(tasks: Tasks, asked: Sequence[int], comm: Communicator) -> list[Episode]:
    """For each task this rank holds (in `tasks` order), the episode of the meta-batch at
    position `asked[t]` (t its place; `asked` has one entry per task of the meta-batch, the
    same on every rank), as it was given to this step: tensors only (info is not carried
    across ranks). All ranks call it together when distributed."""
    if len(asked) != tasks.total:
        raise ValueError(f"asked has {len(asked)} entries for a meta-batch of {tasks.total} tasks")
    if not comm.distributed:
        held = dict(zip(tasks.index, tasks))
        return [held[asked[t]] for t in tasks.index]
    world, total = comm.world_size, tasks.total
    per_rank = -(-total // world)
    # a rank may hold no task (fewer tasks than ranks): rank 0 holds task 0 and says the shapes
    shapes = comm.broadcast_object([(tuple(getattr(tasks[0], f).shape), getattr(tasks[0], f).dtype)
                                    for f in FIELDS] if comm.is_main else None)
    device = comm.collective_device if not tasks else tasks[0].support_inputs.device
    index = torch.zeros(world * per_rank, dtype=torch.int64)
    for t in range(total):  # position (rank r, k-th task) asks for task asked[t]'s padded row
        rank, k, wanted = t % world, t // world, asked[t]
        index[rank * per_rank + k] = (wanted % world) * per_rank + wanted // world
    received = []
    for name, (shape, dtype) in zip(FIELDS, shapes):
        stack = torch.zeros((per_rank, *shape), dtype=dtype, device=device)
        for k, episode in enumerate(tasks):
            stack[k] = getattr(episode, name)
        received.append(comm.select_rows(stack, index))
    return [Episode(*(rows[k] for rows in received)) for k in range(len(tasks))]
