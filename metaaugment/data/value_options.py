"""`ValueOptions`: the base of benchmark option classes (`--benchmark-set`), which are plain
values: config.json records them, a resumed run compares them, and `metaaug list` prints them."""
from __future__ import annotations


class ValueOptions:
    """Options compared and printed by their values: equal when of the same class with equal
    attributes; repr 'Name(key=value, ...)' in the order the attributes were set."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"
