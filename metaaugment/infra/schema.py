"""Typed checks of plain data: what a config, sweep or record file holds, and option values.

Files hand the program plain data (JSON or YAML: mappings, lists, strings, numbers, booleans,
null). Before any of it is used, `check_value` holds each value to the type its consumer
declares, the same annotation the CLI reads to parse `--set key=value`: a RunConfig field's
type, or a factory's keyword option's. A value of another type is one error naming the key
and what it must be ("compile must be true or false (got 'no')"), never a silent coercion:
YAML's `'no'` is a string, not false, and `true` is not the integer 1.

The only conversions are the lossless ones JSON forces: an integer where a number is
declared becomes a float, a list where a tuple is declared becomes a tuple.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

MAX_SHOWN = 60  # characters of a rejected value shown in an error line


class SchemaError(ValueError):
    """A value that does not have its declared type; the message names the key."""


def short(value: Any, limit: int = MAX_SHOWN) -> str:
    """repr(value), cut to `limit` characters: an error line stays one readable line whatever
    a file holds (an alias-expanded YAML value prints as millions of characters)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deeply>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters (an error message quoting another)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(annotation: Any) -> str:
    """What a value of `annotation` looks like, in the words of an error message."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if annotation is type(None) or annotation is None:
        return "null"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation is Path:
        return "a path (a string)"
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return f"a list of {_plural(inner)}"
    if origin is dict:
        key, value = args if args else (str, Any)
        return f"a mapping of {describe(key).removeprefix('a ').removeprefix('an ')}: {describe(value)}"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def _plural(annotation: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(annotation, "values")


def check_value(value: Any, annotation: Any, name: str) -> Any:
    """`value` held to `annotation` (bool, int, float, str, Path, None, unions, tuple[X, ...],
    list[X], dict[K, V], Literal, Any); returns it, converted only where JSON forces it (int
    -> float, list -> tuple). Raises SchemaError "NAME must be ... (got ...)"."""
    checked = _check(value, annotation)
    if checked is _INVALID:
        raise SchemaError(f"{name} must be {describe(annotation)} (got {short(value)})")
    return checked


_INVALID = object()


def _check(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            checked = _check(value, arg)
            if checked is not _INVALID:
                return checked
        return _INVALID
    if annotation is type(None) or annotation is None:
        return value if value is None else _INVALID
    if annotation is bool:
        return value if type(value) is bool else _INVALID
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _INVALID
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            return _INVALID
    if annotation is str:
        return value if isinstance(value, str) else _INVALID
    if annotation is Path:
        return value if isinstance(value, (str, Path)) else _INVALID
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return _INVALID
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[X, Y]: fixed length
            if len(value) != len(args):
                return _INVALID
            items = [_check(v, a) for v, a in zip(value, args)]
        else:
            inner = args[0] if args else Any
            items = [_check(v, inner) for v in value]
        if any(item is _INVALID for item in items):
            return _INVALID
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        if not isinstance(value, dict):
            return _INVALID
        key_type, value_type = args if args else (Any, Any)
        result = {}
        for key, item in value.items():
            checked_key, checked_item = _check(key, key_type), _check(item, value_type)
            if checked_key is _INVALID or checked_item is _INVALID:
                return _INVALID
            result[checked_key] = checked_item
        return result
    if origin is typing.Literal:
        return value if value in args else _INVALID
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else _INVALID
    return value  # an annotation this checker does not know (a string forward reference): unchecked


def count_values(data: Any, limit: int) -> int:
    """How many values `data` holds, counting a value shared by several places (a YAML alias)
    once per place; stops and raises SchemaError past `limit` (an alias bomb: a few lines that
    expand to billions of values), or for a structure that contains itself."""
    count, stack, depth_limit = 0, [(data, 0)], 100
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > limit:
            raise SchemaError(f"holds more than {limit} values once its aliases are expanded")
        if depth > depth_limit:
            raise SchemaError(f"is nested more than {depth_limit} levels deep")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
    return count
