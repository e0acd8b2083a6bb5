"""MLTI's task interpolation as pure functions on episodes (Yao, Zhang and Finn, ICLR 2022,
"Meta-Learning with Fewer Tasks through Task Interpolation", Sec. 3).

Two tasks i and j of a meta-batch make a new task, with one lambda for support and query:

- label-sharing (regression; every task shares one label space): row r of task i with row r
  of task j, inputs (or a hidden layer's outputs) and targets alike:
  x_cr = lam x_i + (1 - lam) x_j,  y_cr = lam y_i + (1 - lam) y_j   (Eq. 3);
- non-label-sharing (N-way classification; label n means another class in every task):
  class n of task i is paired with class permutation[n] of task j, their k-th samples
  interpolated, and the pair is class n of the new task (Eq. 4: the one-hot labels of the
  pair are both e_n once paired, so the interpolated label is e_n).

Interpolating at the input gives a plain episode; at a hidden layer, an episode whose inputs
hold both tasks' rows and a `HiddenMix` that tells the learner where to interpolate.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from metaaugment.batch import Episode, HiddenMix


def class_pairing(labels: Tensor, partner_labels: Tensor, permutation: Sequence[int]) -> Tensor:
    """(M,) labels in [0, N) of a task, (M',) labels of its partner, and the pairing
    (class n of the task with class permutation[n] of the partner) -> (M,) int64: for each
    row, the partner row it interpolates with: the k-th row of class permutation[n] for the
    k-th row of class n. ValueError when a paired class has another number of rows."""
    rows = torch.empty_like(labels)
    for own_class, partner_class in enumerate(permutation):
        own = (labels == own_class).nonzero().flatten()
        theirs = (partner_labels == partner_class).nonzero().flatten()
        if len(own) != len(theirs):
            raise ValueError(f"class {own_class} has {len(own)} rows but the partner's class {partner_class} has "
                             f"{len(theirs)}: task interpolation needs the same number of samples per class")
        rows[own] = theirs.to(rows.device)
    return rows


def interpolate_inputs(inputs: Tensor, partner_inputs: Tensor, lam: float, layer: str | None
                       ) -> tuple[Tensor, HiddenMix | None]:
    """(M, ...) inputs and the (M, ...) partner rows they pair with -> the episode's inputs:
    lam * inputs + (1 - lam) * partner_inputs at the input (`layer` None), else both stacked,
    (2M, ...), with the HiddenMix that interpolates them at `layer`."""
    if layer is None:
        return lam * inputs + (1 - lam) * partner_inputs, None
    return torch.cat([inputs, partner_inputs]), HiddenMix(layer, lam)


def interpolate_tasks(episode: Episode, partner: Episode, lam: float, *, label_sharing: bool,
                      permutation: Sequence[int] | None = None, layer: str | None = None) -> Episode:
    """The task interpolated from `episode` (task i) and `partner` (task j) with weight `lam`
    on task i, at the input (`layer` None) or at the task network's module `layer`.

    label_sharing: pair rows in order and interpolate the targets (regression: (M, 1) floats);
    else pair class n with the partner's class permutation[n] and keep the labels (N-way
    classification: (M,) int64). The new episode's info records the pairing."""
    if label_sharing:
        for name in ("support_targets", "query_targets"):
            if getattr(partner, name).shape != getattr(episode, name).shape:
                raise ValueError("label-sharing interpolation needs tasks of the same size")
        support_rows = torch.arange(len(episode.support_targets), device=episode.support_targets.device)
        query_rows = torch.arange(len(episode.query_targets), device=episode.query_targets.device)
        support_targets = lam * episode.support_targets + (1 - lam) * partner.support_targets
        query_targets = lam * episode.query_targets + (1 - lam) * partner.query_targets
    else:
        if permutation is None:
            raise ValueError("non-label-sharing interpolation pairs classes: give the permutation")
        support_rows = class_pairing(episode.support_targets, partner.support_targets, permutation)
        query_rows = class_pairing(episode.query_targets, partner.query_targets, permutation)
        support_targets, query_targets = episode.support_targets, episode.query_targets
    support_inputs, mix = interpolate_inputs(episode.support_inputs, partner.support_inputs[support_rows], lam, layer)
    query_inputs, _ = interpolate_inputs(episode.query_inputs, partner.query_inputs[query_rows], lam, layer)
    info = {**episode.info, "lam": lam, "layer": layer or "input"}
    if permutation is not None:
        info["class_pairing"] = list(permutation)
    return Episode(support_inputs, support_targets, query_inputs, query_targets, info=info, mix=mix)


def block_outputs(model: nn.Module) -> list[str]:
    """The hidden layers MLTI interpolates at by default: the children of the first
    nn.Sequential of `model` with two or more children that are blocks (modules with
    children of their own) or activations, but its last child (conv4: body.0, body.1, body.2;
    the sinusoid MLP: net.1, net.3, its ReLUs)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2:
            prefix = f"{name}." if name else ""
            return [prefix + child for child, layer in list(module.named_children())[:-1]
                    if next(layer.children(), None) is not None or type(layer).__module__ == nn.ReLU.__module__]
    return []
