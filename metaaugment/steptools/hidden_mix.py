"""Interpolation inside the task network, by a forward hook: how a learner runs an episode
that carries a `HiddenMix` (MLTI's hidden-layer task interpolation).

The inputs hold 2M rows (the task's, then its partner's); the hook replaces the output of
one named module by the interpolation of its two halves, so everything after that module
sees M rows. The hook is registered on the module a learner actually runs (higher's
functional copy, learn2learn's clone or the model itself) for one forward, then removed.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from metaaugment.batch import HiddenMix
from metaaugment.infra.errors import UserError

Forward = Callable[[nn.Module, Tensor], Tensor]


def interpolate_halves(values: Tensor, lam: float) -> Tensor:
    """(2M, ...) -> (M, ...): lam * values[:M] + (1 - lam) * values[M:]."""
    rows = values.shape[0]
    if rows % 2:
        raise ValueError(f"an interpolated layer needs an even number of rows (own, then partner's); got {rows}")
    return lam * values[:rows // 2] + (1 - lam) * values[rows // 2:]


def plain_forward(module: nn.Module, inputs: Tensor) -> Tensor:
    """module(inputs): the forward of an episode without interpolation."""
    return module(inputs)


def mixed_forward(run: Forward, mix: HiddenMix | None) -> Forward:
    """`run(module, inputs)` with the output of `module`'s submodule `mix.layer` replaced by
    the interpolation of its halves (inputs (2M, ...) -> outputs of M rows), for the first
    call of that submodule in each forward; `run` itself when `mix` is None."""
    if mix is None:
        return run

    def forward(module: nn.Module, inputs: Tensor) -> Tensor:
        layer = find_layer(module, mix.layer)
        fired = [False]

        def interpolate(_: nn.Module, __: Any, output: Tensor) -> Tensor | None:
            if fired[0]:  # a module called twice in one forward mixes once, at its first call
                return None
            fired[0] = True
            return interpolate_halves(output, mix.lam)

        handle = layer.register_forward_hook(interpolate)
        try:
            out = run(module, inputs)
        finally:
            handle.remove()
        if not fired[0]:
            raise UserError(f"the interpolated layer '{mix.layer}' did not run in the task network's forward")
        return out

    return forward


def find_layer(module: nn.Module, name: str) -> nn.Module:
    """The submodule `name` of `module`, or one line naming the layers there are."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        raise UserError(f"the task network has no layer '{name}' to interpolate at; it has: "
                        f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}") from None
