"""The data containers policies and learners exchange: Batch (and the Share of a global
batch it holds, and the Params a policy drew for it), Episode (and the HiddenMix that may
say how its inputs mix inside the network) and Tasks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """Which rows of a global batch a Batch holds, on one of many ranks.

    index: (b,) int64 positions of the held rows in the global batch, in the held order.
    total: B, the global batch's size.

    A policy draws its randomness for all B rows, the same draws on every rank, and applies
    the draws of `index` (`take`), so N ranks together do what one process does.
    """

    index: Tensor
    total: int

    @staticmethod
    def rows(rows: slice, total: int) -> "Share":
        """The contiguous rows `rows` of a global batch of `total`."""
        return Share(torch.arange(total)[rows], total)

    def repeated(self, copies: int) -> "Share":
        """The held rows of the global batch repeated `copies` times, copy-major (copy c of
        global row i is row c * total + i of the copies' global batch)."""
        return Share(torch.cat([c * self.total + self.index for c in range(copies)]), copies * self.total)

    def take(self, values: T) -> T:
        """The held rows of `values` drawn for the global batch: a tensor whose first
        dimension is `total`, or a list of `total` items."""
        if isinstance(values, Tensor):
            return values[self.index.to(values.device)]
        return [values[i] for i in self.index.tolist()]  # type: ignore[index, return-value]


def per_sample(**kwargs: Any) -> Any:
    """A `Params` field with one entry per row of the global batch (a tensor whose first
    dimension is B, or a list of B items): `Params.rows` keeps a batch's entries."""
    return field(metadata={"per_sample": True}, **kwargs)


@dataclass
class Params:
    """What a batch policy drew for one global batch of B rows (torchvision v2's `make_params`):
    a dataclass of its own per policy, typed and replayable. Fields made with `per_sample()`
    hold one entry per row of the global batch (None: not drawn); the others are shared by the
    batch (MixUp's lambda, a permutation every rank needs whole)."""

    def rows(self, share: Share | None) -> "Params":
        """The entries of the rows `share` holds (every rank draws the same global params and
        keeps its own rows here, once); the params themselves for a whole batch (None)."""
        return self if share is None else self._per_sample(share.take)

    def subset(self, index: slice) -> "Params":
        """The entries of rows `index` of the batch these params are of (`Batch.rows`)."""
        return self._per_sample(lambda values: values[index])

    def _per_sample(self, keep: Any) -> "Params":
        """A copy with `keep` applied to every per-sample field that was drawn."""
        return dataclasses.replace(self, **{f.name: keep(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if f.metadata.get("per_sample") and getattr(self, f.name) is not None})


@dataclass
class Batch:
    """A mini-batch as policies and learners see it.

    inputs:  (B, C, H, W) float images in [0, 1] (or any (B, ...) float features).
    targets: (B,) int64 class indices, or (B, num_classes) float soft labels whose rows sum to 1.
    weights: optional (B,) non-negative per-sample loss weights; None means uniform. The loss
             is sum_i w_i L_i / sum_i w_i, so only relative weights matter.
    info:    per-sample annotations a policy keeps for logging or figures (e.g. the op pair
             applied to each sample as a (B, 2) tensor). Learners pass it through untouched.
    share:   on one of many ranks, which rows of the global batch these are (`Share`);
             None: the batch is whole (one process). `global_size` and `take` hide the
             difference from a policy.
    params:  what the policy that augmented this batch drew for its rows (its `Params`),
             read back by that policy's later hooks (`loss_weights`, `after_step`); None
             before augmentation or for a policy that draws nothing.
    """

    inputs: Tensor
    targets: Tensor
    weights: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    share: Share | None = None
    params: Params | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def global_size(self) -> int:
        """B of the global batch these rows belong to (len(self) for a whole batch)."""
        return self.share.total if self.share is not None else len(self)

    def take(self, values: T) -> T:
        """This batch's rows of `values` drawn for the whole global batch (first dimension, or
        length, `global_size`): the values themselves for a whole batch."""
        return self.share.take(values) if self.share is not None else values

    def replace(self, **changes: Any) -> "Batch":
        """A copy with some fields replaced (the original is left untouched)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with its tensors on `device`."""
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.weights),
                     {k: move(v) for k, v in self.info.items()}, self.share, self.params)

    def rows(self, index: slice) -> "Batch":
        """The batch's rows `index`: inputs, targets, weights, the per-sample params and every
        per-sample annotation (a tensor in `info` whose first dimension is B); other
        annotations are kept whole.
        The rows keep their places in the global batch (`share`)."""
        n = len(self)
        take = lambda t: t[index] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n else t  # noqa: E731
        share = Share(self.share.index[index], self.share.total) if self.share is not None else Share(
            torch.arange(n)[index], n)
        return Batch(self.inputs[index], self.targets[index], None if self.weights is None else self.weights[index],
                     {k: take(v) for k, v in self.info.items()}, share,
                     None if self.params is None else self.params.subset(index))

    @property
    def is_soft(self) -> bool:
        """True when targets are (B, num_classes) label distributions."""
        return self.targets.dim() == 2 and self.targets.is_floating_point()

    def hard_targets(self) -> Tensor:
        """(B,) class indices: the targets themselves, or the argmax of soft labels."""
        return self.targets.argmax(dim=1) if self.is_soft else self.targets


@dataclass(frozen=True)
class HiddenMix:
    """How an episode's inputs are interpolated inside the task network (MLTI's hidden-layer
    task interpolation; Manifold Mixup's mechanism, task by task).

    layer: the name of a module of the task network (as `named_modules()` gives it) whose
           output is interpolated.
    lam:   the interpolation weight of the episode's own rows.

    An episode carrying one holds 2M rows in each inputs tensor: its M rows, then the M rows
    of the partner they interpolate with, row by row. The learner runs the network with a
    forward hook on `layer` (metaaugment.steptools.hidden_mix) that replaces the layer's
    output (2M, ...) by lam * first half + (1 - lam) * second half, so the predictions and
    the targets have M rows.
    """

    layer: str
    lam: float


@dataclass
class Episode:
    """One few-shot task: adapt on the support set, evaluate on the query set.

    support_inputs: (N*K, C, H, W) or (N*K, D);  support_targets: (N*K,) int64 task-local labels
    in [0, N), or (N*K, D) float regression targets. query_* likewise with the query size.
    info: task-level annotations (e.g. the original class ids, the noise epsilon drawn).
    mix:  None, or how the inputs interpolate inside the network (`HiddenMix`): then each
          inputs tensor has twice the rows of its targets.
    """

    support_inputs: Tensor
    support_targets: Tensor
    query_inputs: Tensor
    query_targets: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    mix: HiddenMix | None = None

    def replace(self, **changes: Any) -> "Episode":
        """A copy with some fields replaced (the original is left untouched)."""
        return dataclasses.replace(self, **changes)


class Tasks(list):
    """A meta-batch of episodes, or one rank's share of it: `index[i]` is the i-th episode's
    position among the meta-batch's `total` tasks. A plain list of episodes is a whole
    meta-batch (`of`)."""

    def __init__(self, episodes: Iterable[Episode], index: Sequence[int], total: int):
        super().__init__(episodes)
        if len(self) != len(index):
            raise ValueError(f"{len(self)} episodes but {len(index)} positions")
        self.index, self.total = list(index), total

    @staticmethod
    def of(episodes: Sequence[Episode]) -> "Tasks":
        """`episodes` as Tasks: itself if it is one, else the whole meta-batch."""
        return episodes if isinstance(episodes, Tasks) else Tasks(episodes, range(len(episodes)), len(episodes))
