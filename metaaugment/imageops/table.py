"""An op space as a lookup table, and per-sample draws from it.

An op space maps each op to its argument at every magnitude bin and whether its sign is
random (RandAugment's and TrivialAugment's definitions, `metaaugment.baselines.batched`).
`op_table` computes every argument the space can produce once, so drawing a batch's ops,
bins and signs is one indexing call, not one Python call per sample; `draw_ops` returns
what `apply_named_ops` takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OpSpace = dict[str, tuple[Tensor, bool]]  # op -> (argument per magnitude bin, signed)


@dataclass(frozen=True)
class OpTable:
    """An op space as `apply_named_ops` arguments: names (K,) and arguments (K, bins, 2),
    [..., 0] at each magnitude bin and [..., 1] the same negated where the op is signed."""

    names: tuple[str, ...]
    arguments: Tensor


def op_table(space: OpSpace) -> OpTable:
    """Every argument `space` can produce, computed once (`torchvision_argument`) so that a
    batch's draws are looked up in one indexing call instead of one Python call per sample."""
    num_bins = max(values.numel() for values, _ in space.values())
    rows = []
    for name, (values, signed) in space.items():
        grid = (values.tolist() if values.ndim > 0 else [0.0], signed)
        rows.append([[torchvision_argument(name, grid, min(b, len(grid[0]) - 1), flip) for flip in (False, True)]
                     for b in range(num_bins)])
    return OpTable(tuple(space), torch.tensor(rows, dtype=torch.float64))


def draw_ops(count: int, table: OpTable, magnitude_bin: int | None,
             generator: torch.Generator | None = None) -> tuple[list[str], list[float]]:
    """One op per sample, uniform over `table` (`op_table`), at magnitude bin `magnitude_bin`
    (RandAugment) or a uniform bin (None: TrivialAugment), negated with probability 1/2 where
    signed. Returns the op names and their torchvision arguments (`apply_named_ops`' units)."""
    ops = torch.randint(len(table.names), (count,), generator=generator)
    bins = (torch.full((count,), magnitude_bin, dtype=torch.int64) if magnitude_bin is not None
            else torch.randint(table.arguments.shape[1], (count,), generator=generator))
    negate = torch.randint(2, (count,), generator=generator)
    names = [table.names[op] for op in ops.tolist()]
    return names, table.arguments[ops, bins, negate].tolist()


def torchvision_argument(name: str, grid: tuple[list[float], bool], magnitude: int | None, negate: bool) -> float:
    """Op `name`'s argument in `apply_named_ops`' units at bin `magnitude` of its grid
    (values per bin, signed), negated if signed and `negate`: whole pixels for the
    translations (truncated, as torchvision), 1 + magnitude for the enhancement factors."""
    values, signed = grid
    value = float(values[magnitude]) if len(values) > 1 and magnitude is not None else values[0]
    if signed and negate:
        value = -value
    if name in ("TranslateX", "TranslateY"):
        return float(int(value))
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1.0 + value
    return value
